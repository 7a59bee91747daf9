import { expect } from "chai";
import { encodeCommand, encodeMany } from "../src/resp/encode.js";
import { executeMany, PrefetchingBridge, type ManyOutcomes } from "../src/gears/read-ahead.js";
import { RawJson, type HostBridge, type JsonValue } from "../src/sandbox/types.js";
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

/**
 * PrefetchingBridge (src/gears/read-ahead.ts): a step's executeMany over a batch is answered
 * from replies read when the reader had the batch, once the step's command is known, and
 * never after a host call that may write.
 */
describe("read-ahead: replies read a batch early (gears/read-ahead.ts, PrefetchingBridge)", () => {
  /** `many` answers each key with `early:<key>` and fails key "bad"; the inner bridge answers `inner`. */
  function setup() {
    const early: JsonValue[][] = [];
    const inner: { name: string; args: JsonValue[] }[] = [];
    const many = (args: JsonValue[]): Promise<ManyOutcomes> => {
      early.push(args);
      const keys = args[3] as string[];
      const errors: [number, string][] = [];
      const texts = keys.map((k, i) => {
        if (k !== "bad") return JSON.stringify(`early:${k}`);
        errors.push([i, JSON.stringify("ERR bad")]);
        return "null";
      });
      return Promise.resolve({ texts, errors });
    };
    const bridge: HostBridge = {
      callSync: (name, args) => {
        inner.push({ name, args });
        return Promise.resolve(new RawJson('"inner"'));
      },
      callAsync: (calls) => {
        for (const c of calls) inner.push(c);
        return Promise.resolve(calls.map(() => ({ ok: null })));
      },
      notify: () => {},
    };
    return { early, inner, pb: new PrefetchingBridge(bridge, many) };
  }

  /** A step's executeMany of `HGET <key> genres` over `keys` of partition `p`. */
  const stepCall = (p: number, keys: string[]): JsonValue[] => [p, ["HGET", keys[0], "genres"], [1], keys];

  it("answers the step's executeMany over later batches, and runs of them, from replies read when the batch came", async () => {
    const { early, inner, pb } = setup();
    pb.start();
    const first = pb.read(0, 2, () => ["a", "b"]);
    const second = pb.read(0, 4, () => ["c", "bad", "d", "e"]);
    const other = pb.read(1, 1, () => ["x"]);
    expect(early).to.deep.equal([]);
    // The step's first call goes to Redis as it is, then the batches it does not cover are read.
    expect(await pb.callSync("executeMany", stepCall(0, ["a", "b"]))).to.deep.equal(new RawJson('"inner"'));
    expect(inner.map((c) => c.name)).to.deep.equal(["executeMany"]);
    expect(early).to.deep.equal([
      [0, ["HGET", "a", "genres"], [1], ["c", "bad", "d", "e"]],
      [1, ["HGET", "a", "genres"], [1], ["x"]],
    ]);
    pb.done(first);
    const whole = (await pb.callSync("executeMany", stepCall(0, ["c", "bad", "d", "e"]))) as RawJson;
    expect(JSON.parse(whole.json)).to.deep.equal([["early:c", null, "early:d", "early:e"], [[1, "ERR bad"]]]);
    // A batch fed in several entries asks for the rest of it: the same replies, indexed from there.
    const rest = (await pb.callSync("executeMany", stepCall(0, ["bad", "d"]))) as RawJson;
    expect(JSON.parse(rest.json)).to.deep.equal([[null, "early:d"], [[0, "ERR bad"]]]);
    const elsewhere = (await pb.callSync("executeMany", stepCall(1, ["x"]))) as RawJson;
    expect(JSON.parse(elsewhere.json)).to.deep.equal([["early:x"], []]);
    // Another command, keys that are not a run of the batch, or another partition: Redis is asked.
    await pb.callSync("executeMany", [0, ["HGET", "c", "title"], [1], ["c"]]);
    await pb.callSync("executeMany", stepCall(0, ["c", "d"]));
    await pb.callSync("executeMany", stepCall(2, ["c"]));
    expect(inner).to.have.length(4);
    // A batch read from now on is read at once.
    pb.read(1, 1, () => ["y"]);
    expect(early[2]).to.deep.equal([1, ["HGET", "a", "genres"], [1], ["y"]]);
    pb.done(second);
    pb.done(other);
  });

  it("a host call that may write stops the early reads and drops those not used; a read does not", async () => {
    const { early, inner, pb } = setup();
    pb.start();
    pb.read(0, 1, () => ["a"]);
    await pb.callSync("executeMany", stepCall(0, ["a"]));
    pb.read(0, 1, () => ["b"]);
    await pb.callSync("execute", [0, "HGET", "z", "f"]);
    await pb.callSync("configGet", ["ExecutionMaxIdleTime"]);
    pb.read(0, 1, () => ["c"]);
    expect(early.map((a) => a[3])).to.deep.equal([["b"], ["c"]]);
    await pb.callSync("execute", [0, "HSET", "b", "genres", "new"]);
    // b was read before the write: its step asks Redis again.
    expect(await pb.callSync("executeMany", stepCall(0, ["b"]))).to.deep.equal(new RawJson('"inner"'));
    expect(pb.read(0, 1, () => ["d"])).to.equal(null);
    expect(early).to.have.length(2);
    expect(inner.map((c) => c.name)).to.deep.equal([
      "executeMany",
      "execute",
      "configGet",
      "execute",
      "executeMany",
    ]);
  });

  it("an execute() batch that may write stops them too; none start before start()", async () => {
    const { early, pb } = setup();
    expect(pb.read(0, 1, () => ["a"])).to.equal(null);
    pb.start();
    pb.read(0, 1, () => ["a"]);
    await pb.callSync("executeMany", stepCall(0, ["a"]));
    await pb.callAsync([{ name: "execute", args: [0, "DEL", "a"] }]);
    expect(pb.read(0, 1, () => ["b"])).to.equal(null);
    expect(early).to.deep.equal([]);
  });
});
