import { expect } from "chai";
import { Redis } from "ioredis";
import { GearsGuest, type GuestOutcome } from "../src/gears/gears-guest.js";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually, execute, registrations } from "./support/registrations.js";

/**
 * Issue 14: the results of a registration's executions cross from the guest as one JSON text
 * and become strings only when RG.GETRESULTS asks for them; with MaxExecutionsPerRegistration 0
 * (nothing can ask) the guest hands over only their count. What RG.GETRESULTS answers is what
 * it answered when the guest made each string itself, for every kind of result.
 */

/** One event gives one result of each kind: the strings the guest has always made of them. */
const PLAIN =
  "GB().flatmap(x => ['plain', 1.5, -0, 1e21, true, null, undefined, " +
  "{a: 'é\\u2028\"q\\ud800', n: [1, {b: null}], '2': 'x'}, [1, 'two', undefined], x.key]).register('kinds:*')";

const PLAIN_STRINGS = [
  "plain",
  "1.5",
  "0",
  "1e+21",
  "true",
  null,
  null,
  '{"2":"x","a":"é\u2028\\"q\\ud800","n":[1,{"b":null}]}',
  '[1,"two",null]',
  "kinds:1",
];

/** Results whose string is not their place in a JSON list: the guest makes each one's string itself. */
const SPECIAL =
  "GB().flatmap(x => [NaN, -Infinity, new Date(0), {toJSON() { return 'tj'; }}, new String('boxed'), " +
  "function f() {}, 'plain']).register('special:*')";

const SPECIAL_STRINGS = ["NaN", "-Infinity", '"1970-01-01T00:00:00.000Z"', '"tj"', '"boxed"', null, "plain"];

/** The outcomes the guest hands the host, seen from inside this process (the proxy runs here). */
const outcomes: GuestOutcome[] = [];
/** The inputs of every once() entry: [partition, batch] each. */
const inputs: unknown[][] = [];
const realOnce = GearsGuest.prototype.once;
const realFinish = GearsGuest.prototype.finish;

describe("gears registration results: kept as the guest's text until asked for (one redis-server)", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let io: Redis;

  /** The registered executions listed by RG.DUMPEXECUTIONS, oldest first. */
  async function registered(): Promise<string[]> {
    return ((await io.call("RG.DUMPEXECUTIONS")) as unknown[][])
      .filter((e) => e[5] === 1)
      .map((e) => String(e[1]));
  }

  async function only(): Promise<{ numSuccess: number; numFailures: number; lastError: string | null }> {
    const all = await registrations(io);
    expect(all).to.have.length(1);
    return all[0].stats;
  }

  before(async () => {
    GearsGuest.prototype.once = async function (this: GearsGuest, ...args: Parameters<typeof realOnce>) {
      inputs.push(args[2]);
      const out = await realOnce.apply(this, args);
      outcomes.push(out);
      return out;
    };
    GearsGuest.prototype.finish = async function (this: GearsGuest, ...args: Parameters<typeof realFinish>) {
      const out = await realFinish.apply(this, args);
      outcomes.push(out);
      return out;
    };
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
    io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
  });

  afterEach(async () => {
    for (const r of await registrations(io)) await io.call("RG.UNREGISTER", r.id);
    await io.call("RG.CONFIGSET", "MaxExecutionsPerRegistration", "100");
    await io.flushall();
    outcomes.length = 0;
    inputs.length = 0;
  });

  after(async () => {
    GearsGuest.prototype.once = realOnce;
    GearsGuest.prototype.finish = realFinish;
    io?.disconnect();
    await proxy?.close();
    await redis?.stop();
  });

  it("plain results read back as the strings the guest makes of them, though they crossed as one text", async () => {
    await execute(io, PLAIN);
    await io.set("kinds:1", "v");
    await eventually(
      () => only(),
      (s) => s.numSuccess === 1,
      "handled",
    );
    const ids = await registered();
    expect(ids).to.have.length(1);
    expect(await io.call("RG.GETRESULTS", ids[0])).to.deep.equal([PLAIN_STRINGS, []]);
    // Asked twice, the same: the text is kept, not used up.
    expect(await io.call("RG.GETRESULTS", ids[0])).to.deep.equal([PLAIN_STRINGS, []]);
    const plan = (await io.call("RG.GETEXECUTION", ids[0])) as unknown[][];
    expect(JSON.stringify(plan)).to.include("done");
    expect(outcomes.map((o) => [o.results.length, typeof o.json, o.count])).to.deep.equal([
      [0, "string", PLAIN_STRINGS.length],
    ]);
  });

  it("results a JSON list would not give back as they were (NaN, a Date, toJSON, a boxed string) are made one by one, as before", async () => {
    await execute(io, SPECIAL);
    await io.set("special:1", "v");
    await eventually(
      () => only(),
      (s) => s.numSuccess === 1,
      "handled",
    );
    const ids = await registered();
    expect(await io.call("RG.GETRESULTS", ids[0])).to.deep.equal([SPECIAL_STRINGS, []]);
  });

  it("event records enter the guest as rows and are the same records: fields in order, carried, read and lazy values", async () => {
    await execute(
      io,
      "GB().map(x => JSON.stringify([Object.keys(x), x.key, x.type, x.event, Array.isArray(x.value) ? x.value.length : x.value])).register('shape:*')",
    );
    const members = Array.from({ length: 1001 }, (_, i) => `m${i}`);
    await io.set("shape:s", "v1");
    await eventually(
      () => only(),
      (s) => s.numSuccess === 1,
      "first handled",
    );
    await io.hset("shape:h", "f", "v");
    await eventually(
      () => only(),
      (s) => s.numSuccess === 2,
      "second handled",
    );
    await io.sadd("shape:big", ...members);
    await eventually(
      () => only(),
      (s) => s.numSuccess === 3,
      "third handled",
    );
    const ids = await registered();
    const got: unknown[] = [];
    for (const id of ids) {
      const [results] = (await io.call("RG.GETRESULTS", id)) as [string[]];
      got.push(...results.map((r) => JSON.parse(r) as unknown));
    }
    const fields = ["key", "type", "event", "value"];
    expect(got).to.deep.equal([
      [fields, "shape:s", "string", "set", "v1"],
      [fields, "shape:h", "hash", "hset", { f: "v" }],
      [fields, "shape:big", "set", "sadd", 1001],
    ]);
    const batches = inputs.flatMap((list) => list.map((input) => (input as [number, unknown])[1]));
    expect(batches).to.have.length(3);
    for (const batch of batches) expect(batch).to.have.property("rows").that.is.an("array");
  });

  it("a result the guest cannot make a string of fails its execution, as before; the others are kept", async () => {
    await execute(io, "GB().flatmap(x => ['ok', {n: 1n}, 2]).register('big:*')");
    await io.set("big:1", "v");
    await eventually(
      () => only(),
      (s) => s.numFailures === 1,
      "failed",
    );
    const stats = await only();
    expect(stats.lastError).to.match(/BigInt/i);
    const ids = await registered();
    const [results, errors] = (await io.call("RG.GETRESULTS", ids[0])) as [unknown[], unknown[]];
    expect(results).to.deep.equal(["ok", "2"]);
    expect(errors).to.have.length(1);
  });

  it("MaxExecutionsPerRegistration 0: no execution is kept, and the guest hands over only how many results there were", async () => {
    await io.call("RG.CONFIGSET", "MaxExecutionsPerRegistration", "0");
    await execute(io, "GB().map(x => ({key: x.key, value: x.value})).register('none:*')");
    for (let i = 0; i < 5; i++) await io.set(`none:${i}`, `v${i}`);
    await eventually(
      () => only(),
      (s) => s.numSuccess === 5,
      "handled",
    );
    expect(await registered()).to.deep.equal([]);
    expect(outcomes.length).to.be.greaterThan(0);
    for (const o of outcomes) {
      expect(o.results).to.deep.equal([]);
      expect(o.json).to.equal(undefined);
      expect(o.count).to.be.greaterThan(0);
    }
    expect(outcomes.reduce((n, o) => n + (o.count ?? 0), 0)).to.equal(5);
  });

  it("MaxExecutionsPerRegistration 0 still fails an execution whose results cannot be made strings", async () => {
    await io.call("RG.CONFIGSET", "MaxExecutionsPerRegistration", "0");
    await execute(io, "GB().map(x => ({n: 1n})).register('nonebig:*')");
    await io.set("nonebig:1", "v");
    await eventually(
      () => only(),
      (s) => s.numFailures === 1,
      "failed",
    );
    expect((await only()).lastError).to.match(/BigInt/i);
  });
});
