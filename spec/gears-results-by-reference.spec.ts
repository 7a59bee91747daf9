import { expect } from "chai";
import { Redis } from "ioredis";
import { GearsGuest, type GuestOutcome } from "../src/gears/gears-guest.js";
import {
  startCluster,
  startProxy,
  startRedis,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
} from "./harness/index.js";
import { eventually, execute, registrations } from "./support/registrations.js";

/**
 * Issue 14: a registration's results that are its event records, fed as rows and unchanged
 * (the all-keys registration's filter and foreach pass them on as they are), leave the guest
 * as the places of the host's records they are (Outcome.refs) instead of one JSON text of
 * them; the host makes each one's string only when RG.GETRESULTS asks. What RG.GETRESULTS
 * answers is what it answered when they crossed as text. Any record a step changed (a field
 * set, added, deleted and added again, a toJSON, a record given twice, a value read lazily)
 * sends the execution's results as text, as before.
 */

/** The outcomes the guest hands the host, seen from inside this process (the proxy runs here). */
const outcomes: GuestOutcome[] = [];
const realOnce = GearsGuest.prototype.once;
const realFinish = GearsGuest.prototype.finish;

function spy(): void {
  GearsGuest.prototype.once = async function (this: GearsGuest, ...args: Parameters<typeof realOnce>) {
    const out = await realOnce.apply(this, args);
    outcomes.push(out);
    return out;
  };
  GearsGuest.prototype.finish = async function (this: GearsGuest, ...args: Parameters<typeof realFinish>) {
    const out = await realFinish.apply(this, args);
    outcomes.push(out);
    return out;
  };
}

function unspy(): void {
  GearsGuest.prototype.once = realOnce;
  GearsGuest.prototype.finish = realFinish;
}

/** How each outcome handed its results over. */
function forms(): string[] {
  return outcomes.map((o) => (o.refs !== undefined ? "refs" : o.json !== undefined ? "json" : "values"));
}

/** The string RG.GETRESULTS gives of an event record `{key, type, event, value}`. */
function recordText(key: string, event: string, value: string): string {
  return JSON.stringify({ key, type: "string", event, value });
}

/** Every registered execution's results and errors (RG.DUMPEXECUTIONS, RG.GETRESULTS), oldest first. */
async function allResults(
  io: Redis | import("ioredis").Cluster,
): Promise<{ results: unknown[]; errors: unknown[] }> {
  const ids = ((await io.call("RG.DUMPEXECUTIONS")) as unknown[][])
    .filter((e) => e[5] === 1)
    .map((e) => String(e[1]));
  const results: unknown[] = [];
  const errors: unknown[] = [];
  for (const id of ids) {
    const [r, e] = (await io.call("RG.GETRESULTS", id)) as [unknown[], unknown[]];
    results.push(...r);
    errors.push(...e);
  }
  return { results, errors };
}

describe("gears registration results named by reference (one redis-server)", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let io: Redis;

  async function handled(n: number): Promise<void> {
    await eventually(
      () => registrations(io),
      (all) => all.length === 1 && all[0].stats.numSuccess + all[0].stats.numFailures >= n,
      `${n} events handled`,
    );
  }

  before(async () => {
    spy();
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
    io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
  });

  afterEach(async () => {
    for (const r of await registrations(io)) await io.call("RG.UNREGISTER", r.id);
    await io.call("RG.CONFIGSET", "MaxExecutionsPerRegistration", "100");
    await io.flushall();
    outcomes.length = 0;
  });

  after(async () => {
    unspy();
    io?.disconnect();
    await proxy?.close();
    await redis?.stop();
  });

  it("records a filter passes on unchanged cross as their places, and read back as the texts of the records", async () => {
    await execute(io, "GB().filter(x => x.key !== 'ref:skip').register('ref:*')");
    await io.set("ref:a", "1");
    await handled(1);
    const keys = ["ref:é", "ref:skip", 'ref:\u2028q"', "ref:b"];
    const values = ["v\u00e9\u{1f600}", "x", "line\nbreak", ""];
    const pipe = io.pipeline();
    keys.forEach((k, i) => pipe.set(k, values[i]));
    await pipe.exec();
    await handled(5);
    const { results, errors } = await allResults(io);
    expect(errors).to.deep.equal([]);
    expect(results).to.have.members([
      recordText("ref:a", "set", "1"),
      recordText("ref:é", "set", values[0]),
      recordText('ref:\u2028q"', "set", values[2]),
      recordText("ref:b", "set", ""),
    ]);
    expect(results).to.have.length(4);
    // The base build sends these as one JSON text: "json" each.
    expect(forms()).to.satisfy((f: string[]) => f.length > 0 && f.every((x) => x === "refs"));
    // Asked twice, the same.
    const again = await allResults(io);
    expect(again.results).to.deep.equal(results);
  });

  it("batches past one entry's 256 records (fed in several entries) name their records by place too", async () => {
    await execute(
      io,
      "GB().filter(x => x.key !== 'big:set').foreach(x => execute('SADD', 'big:set', x.key)).register('big:*')",
    );
    const n = 2000;
    const pipe = io.pipeline();
    for (let i = 0; i < n; i++) pipe.set(`big:${i}`, `v${i}`);
    await pipe.exec();
    await eventually(
      () => io.scard("big:set"),
      (c) => c === n,
      "every key in the set",
    );
    await eventually(
      () => registrations(io),
      (all) =>
        all[0].stats.numTriggered === 2 * n && all[0].stats.numSuccess + all[0].stats.numFailures === 2 * n,
      "every event counted",
    );
    const { results, errors } = await allResults(io);
    expect(errors).to.deep.equal([]);
    // RG.DUMPEXECUTIONS keeps the last 100 executions: those it lists read back in full.
    const expected = new Set(Array.from({ length: n }, (_, i) => recordText(`big:${i}`, "set", `v${i}`)));
    for (const r of results) expect(expected.has(String(r)), String(r)).to.equal(true);
    expect(new Set(results).size).to.equal(results.length);
    expect(outcomes.some((o) => (o.count ?? 0) > 256)).to.equal(true);
    expect(forms()).to.satisfy((f: string[]) => f.length > 0 && f.every((x) => x === "refs"));
  });

  for (const [what, step, expected] of [
    [
      "a field set to another value",
      "map(x => { x.value = 'changed'; return x; })",
      '{"key":"chg:1","type":"string","event":"set","value":"changed"}',
    ],
    [
      "a field set to the same value, then another added",
      "map(x => { x.value = x.value; x.extra = 1; return x; })",
      '{"key":"chg:1","type":"string","event":"set","value":"v","extra":1}',
    ],
    [
      "a field deleted and added again (its place moves)",
      "map(x => { const k = x.key; delete x.key; x.key = k; return x; })",
      '{"type":"string","event":"set","value":"v","key":"chg:1"}',
    ],
    [
      "a non-enumerable toJSON",
      "map(x => { Object.defineProperty(x, 'toJSON', {value: () => 'own'}); return x; })",
      '"own"',
    ],
    [
      "a field deleted",
      "map(x => { delete x.event; return x; })",
      '{"key":"chg:1","type":"string","value":"v"}',
    ],
  ] as const) {
    it(`a record whose step changed it (${what}) is sent as text, and reads back as changed`, async () => {
      await execute(io, `GB().${step}.register('chg:*')`);
      await io.set("chg:1", "v");
      await handled(1);
      const { results, errors } = await allResults(io);
      expect(errors).to.deep.equal([]);
      expect(results).to.deep.equal([expected]);
      // A toJSON makes each result's string the per-result way ("values"), as before.
      expect(forms()).to.deep.equal([what.includes("toJSON") ? "values" : "json"]);
    });
  }

  it("a record given another prototype reads back as its own fields; one whose prototype has a toJSON as that gives", async () => {
    await execute(
      io,
      "GB().map(x => x.key === 'proto:2' ? Object.setPrototypeOf(x, {toJSON() { return 'tj'; }}) : Object.setPrototypeOf(x, {extra: 1})).register('proto:*')",
    );
    await io.set("proto:1", "v");
    await handled(1);
    await io.set("proto:2", "v");
    await handled(2);
    const { results } = await allResults(io);
    expect(results).to.deep.equal([recordText("proto:1", "set", "v"), '"tj"']);
    // JSON.stringify reads only a record's own fields and a toJSON: the first is named by place.
    expect(forms()).to.deep.equal(["refs", "values"]);
  });

  it("a record given twice, records out of order, and an unchanged one beside a changed one: text, as before", async () => {
    await execute(io, "GB().flatmap(x => [x, x]).register('twice:*')");
    await io.set("twice:1", "v");
    await handled(1);
    expect((await allResults(io)).results).to.deep.equal([
      recordText("twice:1", "set", "v"),
      recordText("twice:1", "set", "v"),
    ]);
    expect(forms()).to.deep.equal(["json"]);
    for (const r of await registrations(io)) await io.call("RG.UNREGISTER", r.id);
    outcomes.length = 0;

    await execute(io, "GB().map(x => { if (x.key === 'mix:2') x.value = 'w'; return x; }).register('mix:*')");
    const pipe = io.pipeline();
    for (let i = 1; i <= 3; i++) pipe.set(`mix:${i}`, "v");
    await pipe.exec();
    await eventually(
      () => registrations(io),
      (all) => all[0].stats.numSuccess === 3,
      "handled",
    );
    const { results } = await allResults(io);
    expect(results).to.have.members([
      recordText("mix:1", "set", "v"),
      '{"key":"mix:2","type":"string","event":"set","value":"w"}',
      recordText("mix:3", "set", "v"),
    ]);
  });

  it("records of other values (a hash, a lazily read set) are sent as text, with their values as read", async () => {
    await execute(io, "GB().register('kinds:*')");
    await io.hset("kinds:h", "f", "v");
    await handled(1);
    const members = Array.from({ length: 1001 }, (_, i) => `m${i}`);
    await io.sadd("kinds:big", ...members);
    await handled(2);
    const { results } = await allResults(io);
    expect(results).to.have.length(2);
    expect(JSON.parse(String(results[0]))).to.deep.equal({
      key: "kinds:h",
      type: "hash",
      event: "hset",
      value: { f: "v" },
    });
    const big = JSON.parse(String(results[1])) as { key: string; value: string[] };
    expect(big.key).to.equal("kinds:big");
    expect(big.value).to.have.length(1001);
    expect(forms()).to.deep.equal(["json", "json"]);
  });

  it("MaxExecutionsPerRegistration 0: unchanged records hand over only their count", async () => {
    await io.call("RG.CONFIGSET", "MaxExecutionsPerRegistration", "0");
    await execute(io, "GB().register('none:*')");
    for (let i = 0; i < 5; i++) await io.set(`none:${i}`, `v${i}`);
    await handled(5);
    for (const o of outcomes) {
      expect(o.results).to.deep.equal([]);
      expect(o.json).to.equal(undefined);
      expect(o.refs).to.equal(undefined);
    }
    expect(outcomes.reduce((n, o) => n + (o.count ?? 0), 0)).to.equal(5);
  });
});

describe("gears registration results named by reference (a 3-master cluster: one partition per master)", function () {
  this.timeout(120_000);
  let cluster: RedisCluster;
  let proxy: RunningProxy;
  let io: Redis;

  before(async () => {
    spy();
    cluster = await startCluster({ masters: 3 });
    proxy = await startProxy([{ port: cluster.nodes[0].port }]);
    io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
  });

  after(async () => {
    unspy();
    io?.disconnect();
    await proxy?.close();
    await cluster?.stop();
  });

  it("records of every partition, in batches of one and of many, read back as their own records", async () => {
    await execute(io, "GB().filter(x => !x.key.startsWith('skip')).register()");
    const n = 900;
    const pipe = io.pipeline();
    for (let i = 0; i < n; i++) pipe.set(i % 10 === 0 ? `skip${i}` : `k${i}`, `v${i}`);
    await pipe.exec();
    await eventually(
      () => registrations(io),
      (all) => all.length === 1 && all[0].stats.numSuccess + all[0].stats.numFailures === n,
      "handled",
    );
    const { results, errors } = await allResults(io);
    expect(errors).to.deep.equal([]);
    const expected = new Set<string>();
    for (let i = 0; i < n; i++) if (i % 10 !== 0) expected.add(recordText(`k${i}`, "set", `v${i}`));
    for (const r of results) expect(expected.has(String(r)), String(r)).to.equal(true);
    expect(new Set(results).size).to.equal(results.length);
    const multi = outcomes.filter((o) => o.refs !== undefined && partitionsOf(o.refs) > 1);
    expect(multi.length, "an execution with results in more than one partition").to.be.greaterThan(0);
    expect(forms()).to.satisfy((f: string[]) => f.every((x) => x === "refs"));
  });
});

/** How many partitions a refs list names. */
function partitionsOf(refs: number[]): number {
  let n = 0;
  for (let i = 0; i < refs.length; i += 2 + refs[i + 1]) n++;
  return n;
}
