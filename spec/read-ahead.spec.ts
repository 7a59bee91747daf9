import { expect } from "chai";
import { encodeCommand, encodeMany } from "../src/resp/encode.js";
import { executeMany } from "../src/gears/read-ahead.js";
import type { Partitions } from "../src/gears/partitions.js";
import type { ShardAccess } from "../src/gears/readers.js";
import { keySlot } from "../src/routing/key-slot.js";
import type { Router } from "../src/routing/router.js";
import type { ReplySink } from "../src/upstream/reply-sink.js";

/**
 * executeMany's batch path (src/gears/read-ahead.ts) with a fake router and fake partitions:
 * which keys go as one write per partition, and which the router's way.
 */
describe("read-ahead: one write per partition (gears/read-ahead.ts)", () => {
  const bulk = (s: string): Buffer => Buffer.from(`$${Buffer.byteLength(s)}\r\n${s}\r\n`);

  /** Two partitions split at slot 8192; `answer` gives each pipelined command's reply. */
  function setup(answer: (argv: string[]) => Buffer, failWrites = false) {
    const writes: { partition: number; commands: number }[] = [];
    const forwarded: string[] = [];
    const shard = (partition: number): ShardAccess => ({
      call: () => Promise.reject(new Error("not used")),
      callRaw: () => Promise.reject(new Error("not used")),
      callMany: (payload: Buffer, count: number) => {
        writes.push({ partition, commands: count });
        if (failWrites) return Promise.reject(new Error("ERR unreachable"));
        return Promise.resolve(parseCommands(payload).map(answer));
      },
    });
    const partitions = {
      db: 0,
      count: 2,
      partitionOfSlot: (slot: number) => (slot < 8192 ? 0 : 1),
      shard,
    } as unknown as Partitions;
    const router = {
      isWrite: () => false,
      slotOf: (_name: string, argv: readonly Buffer[]) => keySlot(argv[1]),
      forward: (_name: string, argv: Buffer[], _raw: Buffer | null, sink: ReplySink) => {
        forwarded.push(argv[1].toString());
        sink.reply(bulk(`routed:${argv[1].toString()}`));
      },
    } as unknown as Router;
    return { writes, forwarded, partitions, router };
  }

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

  const keys = ["k:1", "k:2", "k:3", "k:4", "k:5", "k:6"];
  /** executeMany's answer, `[values, [[index, message], ...]]`, as one `[0, value] | [1, message]` per key. */
  const run = (r: Router, p: Partitions) =>
    executeMany(r, () => p, [null, ["HGET", "?", "genres"], [1], keys]).then((raw) => {
      const [values, errors] = JSON.parse(raw.json) as [unknown[], [number, string][]];
      const out: [number, unknown][] = values.map((v) => [0, v]);
      for (const [i, message] of errors) {
        expect(values[i]).to.equal(null);
        out[i] = [1, message];
      }
      return out;
    });

  it("encodes commands back to back as encodeCommand does one by one", () => {
    const argvs = [["HGET", "k:1", "genres"], ["GET", "ключ"], ["MGET"]].map((a) =>
      a.map((s) => Buffer.from(s)),
    );
    expect(encodeMany(argvs).equals(Buffer.concat(argvs.map((a) => encodeCommand(a))))).to.equal(true);
  });

  it("sends each partition's keys as one write and gives every key its own reply, in order", async () => {
    const { writes, forwarded, partitions, router } = setup((argv) => bulk(`v:${argv[1]}`));
    const out = await run(router, partitions);
    expect(out).to.deep.equal(keys.map((k) => [0, `v:${k}`]));
    expect(forwarded).to.deep.equal([]);
    const byPartition = new Set(keys.map((k) => (keySlot(Buffer.from(k)) < 8192 ? 0 : 1)));
    expect(writes.length).to.equal(byPartition.size);
    expect(writes.reduce((n, w) => n + w.commands, 0)).to.equal(keys.length);
  });

  it("a key answered with MOVED, ASK or TRYAGAIN goes the router's way; error replies stay errors", async () => {
    const { forwarded, partitions, router } = setup((argv) =>
      argv[1] === "k:2"
        ? Buffer.from("-MOVED 1234 127.0.0.1:7001\r\n")
        : argv[1] === "k:3"
          ? Buffer.from("-ASK 1234 127.0.0.1:7001\r\n")
          : argv[1] === "k:4"
            ? Buffer.from("-TRYAGAIN Multiple keys request during rehashing of slot\r\n")
            : argv[1] === "k:5"
              ? Buffer.from("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
              : bulk(`v:${argv[1]}`),
    );
    const out = await run(router, partitions);
    expect(forwarded.sort()).to.deep.equal(["k:2", "k:3", "k:4"]);
    expect(out[0]).to.deep.equal([0, "v:k:1"]);
    expect(out[1]).to.deep.equal([0, "routed:k:2"]);
    expect(out[2]).to.deep.equal([0, "routed:k:3"]);
    expect(out[3]).to.deep.equal([0, "routed:k:4"]);
    expect(out[4][0]).to.equal(1);
    expect(out[4][1]).to.match(/^WRONGTYPE/);
    expect(out[5]).to.deep.equal([0, "v:k:6"]);
  });

  it("when a partition's write fails, its keys go the router's way", async () => {
    const { forwarded, partitions, router } = setup(() => bulk("never"), true);
    const out = await run(router, partitions);
    expect(forwarded.sort()).to.deep.equal([...keys].sort());
    expect(out).to.deep.equal(keys.map((k) => [0, `routed:${k}`]));
  });
});
