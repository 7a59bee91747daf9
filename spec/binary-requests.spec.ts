import { expect } from "chai";
import { Redis } from "ioredis";
import { encodeBinary } from "../src/sandbox/bjson.js";
import { Isolate } from "../src/sandbox/isolate.js";
import { SandboxError, type HostBridge, type JsonValue } from "../src/sandbox/types.js";
import { GearsGuest } from "../src/gears/gears-guest.js";
import type { Tagged } from "../src/gears/guest/entry.js";
import { pushBatchCalls, TfGuest } from "../src/gears/tf/tf-guest.js";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually, execute, registrations } from "./support/registrations.js";
import { tfLibrary } from "./support/tf.js";

/**
 * Issues 14 and 11: an event entry's rows (GearsGuest.once) and a batch of TFCALLs
 * (TfGuest.callFunctions) enter a QuickJS isolate in its binary object format (bjson.ts),
 * not as JSON text the guest parses. What the guest sees is what it saw from the JSON: texts
 * with lone surrogates, U+2028, NULs, empty ones, texts of megabytes (past the isolate's
 * shared feed area), integers at the int32 edges and past them, -0, NaN; and an argument
 * past the memory limit fails the entry with the memory error, the isolate still answering.
 */

const bridge: HostBridge = {
  callSync: () => Promise.resolve(null),
  callAsync: (calls) => Promise.resolve(calls.map(() => ({ ok: null }))),
  notify: () => {},
};

/**
 * What a value looks like, as code units and numbers: the guest's JSON.stringify would hide
 * a lone surrogate (and a long text is summed up by its ends and length). The same function
 * runs here and, as its source, in the guest.
 */
function view(v: unknown): unknown {
  if (typeof v === "string") {
    const s = v.length > 64 ? v.slice(0, 8) + v.slice(-8) : v;
    const units: number[] = [];
    for (let i = 0; i < s.length; i++) units.push(s.charCodeAt(i));
    return ["s", v.length, units];
  }
  if (typeof v === "number") return ["n", Object.is(v, -0) ? "-0" : String(v)];
  if (Array.isArray(v)) return ["a", v.map(view)];
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return ["o", Object.keys(o).map((k) => [view(k), view(o[k])])];
  }
  return [typeof v, v];
}
const VIEW = `(${view.toString()})`;

const BIG = "x\u00e9".repeat(1024 * 1024); // 2 MB of UTF-16, 3 MB of UTF-8: past the feed area
const MID = "m".repeat(600 * 1024); // through the feed area
const SMALL = ["", "\ud800", "a\udc00b", "\ud83d\ude00", "\u2028\u2029", "nul\u0000x", "é ж 😀"];
const TEXTS = [...SMALL, MID, BIG];

describe("entry requests in the binary format: what the guest sees", function () {
  this.timeout(60_000);
  let isolate: Isolate;

  before(async () => {
    isolate = await Isolate.create({ memoryLimitMb: 32, timeoutMs: 5000 }, bridge);
    await isolate.evalScript(`globalThis.show = (a, v) => JSON.stringify([a, ${VIEW}(v)]); 0`, "show");
  });

  after(() => isolate?.dispose());

  it("texts (lone surrogates, U+2028, NUL, empty, megabytes) and numbers decode as their JSON parses", async () => {
    expect(isolate.binary).to.equal(true);
    const numbers = [0, -0, 1, -1, 2147483647, -2147483647, -2147483648, 2147483648, 1.5, -0.25, 1e21, NaN];
    const value: JsonValue = [...TEXTS, ...numbers, { "10": 1, "2": -0, k: [NaN] }];
    // What the guest would see from the JSON (JSON.stringify turns -0 into 0, NaN into null).
    const expected = view(JSON.parse(JSON.stringify(value)));
    const out = await isolate.callBinary("show", JSON.stringify(["a", null]), 1, encodeBinary(value, 64));
    const [a, seen] = JSON.parse(String(out)) as [string, unknown];
    expect(a).to.equal("a");
    expect(seen).to.deep.equal(JSON.parse(JSON.stringify(expected)));
  });

  it("GearsGuest.once and TfGuest.callFunctions ask for the binary format past a few records or calls; the guest sees the same arguments", async () => {
    const asked: (number | undefined)[] = [];
    const answers: unknown[] = [];
    const spied = Object.create(isolate) as Isolate;
    spied.call = async (path, args, options) => {
      asked.push(options?.binaryAt);
      const answer = await isolate.call(path, args, options);
      answers.push(answer);
      return answer;
    };
    await isolate.evalScript(
      `globalThis.__gears = { once: (a, t, inputs) => ({ seen: ${VIEW}(inputs) }) };
       globalThis.__tf = { callFunctions: (flat, budget) => [${VIEW}(flat), budget] }; 0`,
      "entries",
    );
    const rows: JsonValue[] = [];
    rows.push(...TEXTS, "string", "set", 0, 0);
    for (let i = 1; i < 8; i++) rows.push(...SMALL, "string", "set", i, 0);
    const few: JsonValue = [[0, { rows: [TEXTS[1], "string", "set", 0], values: ["\u2028"] }]];
    const many: JsonValue = [
      [0, { rows, values: ["\u2028", ""] }],
      [1, [{ key: TEXTS[2], type: "string", event: "set", value: TEXTS[4] }]],
    ];
    for (const inputs of [few, many]) {
      const once = await new GearsGuest(spied).once(0, { partitions: 2 } as never, inputs);
      expect((once as unknown as { seen: unknown }).seen).to.deep.equal(view(inputs));
    }
    const call: [string, Tagged[], number[]] = ["f", SMALL, [1, 16383]];
    const batches: [string, Tagged[], number[]][][] = [
      [call],
      [["g", TEXTS, [2]], ...new Array<typeof call>(15).fill(call)],
    ];
    for (const calls of batches) {
      await new TfGuest(spied).callFunctions(calls, 250);
      expect(answers[answers.length - 1]).to.deep.equal([view(pushBatchCalls([], calls)), 250]);
    }
    expect(asked).to.deep.equal([undefined, 2, undefined, 0]);
  });

  it("call() with binaryAt and without: the same answer; resumable and jobsFailAlone calls take JSON", async () => {
    const value: JsonValue = [TEXTS, { n: [1, -0, 2.5, NaN] }];
    const plain = await isolate.call("show", ["p", value]);
    expect(await isolate.call("show", ["p", value], { binaryAt: 1 })).to.equal(plain);
    expect(await isolate.call("show", ["p", value], { binaryAt: 1, jobsFailAlone: true })).to.equal(plain);
    const resumed = await isolate.call("show", ["p", value], {
      binaryAt: 1,
      resumable: { budgetMs: 100, onSuspended: () => {} },
    });
    expect(resumed).to.equal(plain);
    // An index past the arguments: null there, as JSON would have no such argument.
    expect(await isolate.call("show", ["p"], { binaryAt: 1 })).to.equal(
      await isolate.call("show", ["p", null]),
    );
  });

  it("an argument past the memory limit fails its entry with the memory error; the isolate answers after", async () => {
    const small = await Isolate.create({ memoryLimitMb: 16, timeoutMs: 5000 }, bridge);
    try {
      await small.evalScript("globalThis.len = (v) => v.length; 0", "len");
      const huge = encodeBinary("z".repeat(24 * 1024 * 1024));
      const err = await small.callBinary("len", "[null]", 0, huge).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(SandboxError);
      expect((err as SandboxError).kind).to.equal("memory");
      expect(await small.callBinary("len", "[null]", 0, encodeBinary("abc"))).to.equal(3);
    } finally {
      await small.dispose();
    }
  });

  it("a worker that dies while an entry with a binary argument waits in the queue: both fail as terminated", async () => {
    const doomed = await Isolate.create({ memoryLimitMb: 32, timeoutMs: 5000 }, bridge);
    await doomed.evalScript(
      "globalThis.spin = () => { for (;;) {} }; globalThis.len = (v) => v.length; 0",
      "spin",
    );
    const first = doomed.call("spin", []).catch((e: unknown) => e);
    const second = doomed.callBinary("len", "[null]", 0, encodeBinary(MID)).catch((e: unknown) => e);
    void doomed.dispose();
    expect(((await first) as SandboxError).kind).to.equal("terminated");
    expect(((await second) as SandboxError).kind).to.equal("terminated");
  });
});

describe("entry requests in the binary format, through the proxy (one redis-server)", function () {
  this.timeout(120_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let io: Redis;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
    io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
  });

  after(async () => {
    io?.disconnect();
    await proxy?.close();
    await redis?.stop();
  });

  /** The binaryAt of each entry of `path` (…once, …callFunctions) the proxy (in this process) made during `run`. */
  async function entriesOf(path: string, run: () => Promise<void>): Promise<(number | undefined)[]> {
    const seen: (number | undefined)[] = [];
    const real = Isolate.prototype.call;
    Isolate.prototype.call = function (this: Isolate, p, args, options) {
      if (p.endsWith(path)) seen.push(options?.binaryAt);
      return real.call(this, p, args, options);
    };
    try {
      await run();
    } finally {
      Isolate.prototype.call = real;
    }
    return seen;
  }

  it("pipelined TFCALLs (one batch) get their arguments whole: non-ASCII, U+2028, NUL, empty, megabytes", async () => {
    const code = tfLibrary(
      "bin",
      `redis.registerFunction('echo', function(client, key, arg){
         client.call('set', key, arg);
         return [arg.length, arg, client.call('strlen', key)];
       });
       redis.registerFunction('spin', function(){ const end = Date.now() + 100; while (Date.now() < end); return 1; });`,
    );
    expect(await io.call("TFUNCTION", "LOAD", code)).to.equal("OK");
    // Valid UTF-8 only: a client's bytes cannot carry a lone surrogate as text.
    // Past BINARY_MIN_CALLS (tf-guest.ts), queued behind another database's call (which they
    // cannot join: an entry serves one database): the next entry's batch crosses in the binary format.
    const args = ["", "\u2028\u2029", "nul\u0000x", "é ж 😀", "3", "-0", MID, BIG];
    for (let i = 0; i < 24; i++) args.push(`plain ${i}`);
    let replies: [Error | null, unknown][] | null = null;
    const entries = await entriesOf(".callFunctions", async () => {
      const other = new Redis({ port: proxy.port, host: "127.0.0.1", db: 1, maxRetriesPerRequest: 0 });
      try {
        const spin = other.call("TFCALL", "bin.spin", "0");
        await new Promise((resolve) => setTimeout(resolve, 30));
        const pipe = io.pipeline();
        args.forEach((arg, i) => pipe.call("TFCALL", "bin.echo", "1", `echo:${i}`, arg));
        replies = await pipe.exec();
        expect(await spin).to.equal(1);
      } finally {
        other.disconnect();
      }
    });
    expect(entries).to.include(0);
    args.forEach((arg, i) => {
      const [err, reply] = replies![i] as [Error | null, unknown];
      expect(err, `TFCALL ${i}`).to.equal(null);
      expect(reply).to.deep.equal([arg.length, arg, Buffer.byteLength(arg)]);
    });
    for (let i = 0; i < args.length; i++) expect(await io.get(`echo:${i}`)).to.equal(args[i]);
  });

  it("a registration's event rows (once) carry non-ASCII and U+2028 keys, empty and megabyte values whole", async () => {
    await execute(io, "GB().foreach(x => execute('HSET', 'copied', x.key, x.value)).register('bin:*')");
    const keys = ["bin:é", "bin:\u2028", "bin:nul\u0000", "bin:empty", "bin:mid", "bin:big"];
    const values = ["ж😀", "\u2029", "x\u0000y", "", MID, BIG];
    // Past BINARY_MIN_VALUES (gears-guest.ts) in one pipeline: rows cross in the binary format.
    for (let i = 0; i < 100; i++) {
      keys.push(`bin:plain:${i}`);
      values.push(`v${i}`);
    }
    const entries = await entriesOf(".once", async () => {
      const pipe = io.pipeline();
      keys.forEach((k, i) => pipe.set(k, values[i]));
      await pipe.exec();
      await eventually(
        () => registrations(io),
        (all) => all.length === 1 && all[0].stats.numSuccess + all[0].stats.numFailures >= keys.length,
        "every event handled",
      );
    });
    expect(entries).to.include(2);
    const [reg] = await registrations(io);
    expect(reg.stats.numFailures, String(reg.stats.lastError)).to.equal(0);
    const copied = await io.hgetall("copied");
    expect(Object.keys(copied)).to.have.members(keys);
    keys.forEach((k, i) => expect(copied[k], k).to.equal(values[i]));
  });
});
