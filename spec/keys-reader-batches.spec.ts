import { expect } from "chai";
import { keysReader, RecordBinary, type ShardAccess } from "../src/gears/readers.js";

/**
 * The KeysReader's batches (src/gears/readers.ts) against a fake shard: which commands read a
 * partition's keys, and how large its SCAN batches are.
 */
describe("KeysReader batches: the first type from a TYPE sample, a small first SCAN (gears/readers.ts)", () => {
  const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;

  /** The arguments of each command in a payload (no argument holds CRLF here). */
  function parseCommands(payload: Buffer): string[][] {
    const out: string[][] = [];
    const lines = payload.toString().split("\r\n");
    for (let i = 0; i < lines.length - 1;) {
      const n = Number(lines[i++].slice(1));
      const argv: string[] = [];
      for (let j = 0; j < n; j++, i += 2) argv.push(lines[i + 1]);
      out.push(argv);
    }
    return out;
  }

  /**
   * A shard holding `keys` (name to type), each hash `{f: <name>}` and each string its name;
   * SCAN hands out COUNT keys a call. Every command it gets is logged by name.
   */
  function fakeShard(keys: [string, string][]) {
    const log: string[] = [];
    const scanCounts: number[] = [];
    const type = new Map(keys);
    const value = (name: string, t: string): string =>
      t === "hash" ? `*2\r\n${bulk("f")}${bulk(name)}` : t === "string" ? bulk(name) : "*0\r\n"; // streams: no entries
    const read = (argv: string[]): string => {
      const [cmd, key] = argv;
      const t = type.get(key) ?? "none";
      if (cmd === "TYPE") return `+${t}\r\n`;
      const wanted = cmd === "HGETALL" ? "hash" : cmd === "GET" ? "string" : "?";
      if (t === "none") return cmd === "GET" ? "$-1\r\n" : "*0\r\n";
      if (t !== wanted) return "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
      return value(key, t);
    };
    const shard: ShardAccess = {
      call: () => Promise.reject(new Error("not used")),
      callRaw: (payload: Buffer) => {
        const [argv] = parseCommands(payload);
        log.push(argv[0]);
        if (argv[0] === "SCAN") {
          const from = Number(argv[1]);
          const count = Number(argv[argv.indexOf("COUNT") + 1]);
          scanCounts.push(count);
          const names = keys.slice(from, from + count).map(([k]) => k);
          const next = from + count >= keys.length ? "0" : String(from + count);
          return Promise.resolve(
            Buffer.from(`*2\r\n${bulk(next)}*${names.length}\r\n${names.map(bulk).join("")}`),
          );
        }
        if (argv[0] === "EVAL") {
          const names = argv.slice(4); // EVAL script 0 0 key...
          const items = names.map((k) => {
            const t = type.get(k) ?? "none";
            return `*2\r\n${bulk(t)}${t === "none" ? "$-1\r\n" : value(k, t)}`;
          });
          return Promise.resolve(Buffer.from(`*${names.length}\r\n${items.join("")}`));
        }
        return Promise.reject(new Error(`unexpected ${argv[0]}`));
      },
      callMany: (payload: Buffer, count: number) => {
        const argvs = parseCommands(payload);
        expect(argvs.length).to.equal(count);
        for (const argv of argvs) log.push(argv[0]);
        return Promise.resolve(argvs.map((argv) => Buffer.from(read(argv))));
      },
    };
    return { shard, log, scanCounts };
  }

  async function readAll(shard: ShardAccess): Promise<number[]> {
    const sizes: number[] = [];
    const ctx = { partition: 0, shard, partitionOfSlot: () => 0, shardId: "s", binary: true };
    for await (const batch of keysReader(ctx, "*", {})) {
      expect(batch).to.be.instanceOf(RecordBinary);
      sizes.push(batch.length);
    }
    return sizes;
  }

  const names = (n: number, t: string, prefix = "k"): [string, string][] =>
    Array.from({ length: n }, (_, i): [string, string] => [`${prefix}:${i}`, t]);

  it("reads a partition of one type with TYPE of a sample and that type's command: no script", async () => {
    const { shard, log } = fakeShard(names(300, "hash"));
    expect(await readAll(shard)).to.deep.equal([250, 50]);
    expect(log).to.not.include("EVAL");
    expect(log.filter((c) => c === "TYPE").length).to.equal(32);
    expect(log.filter((c) => c === "HGETALL").length).to.equal(300);
  });

  it("sends a partition whose sample has no type to guess (streams) through the script", async () => {
    const { shard, log } = fakeShard(names(300, "stream"));
    expect(await readAll(shard)).to.deep.equal([250, 50]);
    expect(log).to.deep.equal(["SCAN", ...Array<string>(32).fill("TYPE"), "EVAL", "SCAN", "EVAL"]);
  });

  it("a wrong guess costs the misses a script read, no record", async () => {
    // The sample is all hashes; the rest of the batch strings.
    const keys = [...names(40, "hash"), ...names(200, "string", "s")];
    const { shard, log } = fakeShard(keys);
    expect(await readAll(shard)).to.deep.equal([240]);
    expect(log.filter((c) => c === "HGETALL").length).to.equal(240);
    expect(log.filter((c) => c === "EVAL").length).to.equal(1);
  });

  it("asks for 250 keys in a partition's first SCAN, 1000 in the others", async () => {
    const { shard, scanCounts } = fakeShard(names(3000, "hash"));
    expect(await readAll(shard)).to.deep.equal([250, 1000, 1000, 750]);
    expect(scanCounts).to.deep.equal([250, 1000, 1000, 1000]);
  });
});
