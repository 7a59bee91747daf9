import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually, execute, registrations } from "./support/registrations.js";

/**
 * Issues 12 and 14: writes through the proxy become events from the proxy's own record of
 * them (its write journal), in every database and inside MULTI/EXEC, whether or not their
 * keyspace notification comes; when it does come it is swallowed, so each write reaches a
 * registration exactly once. A registration counts every event it sees per key and event
 * name; the counts must be exactly one.
 */

const COUNT_EVENTS =
  "GB().foreach(x => execute('HINCRBY', 'seen', x.key + ' ' + x.event, 1)).register('k:*')";

/** HGETALL of `seen`, counts as numbers. */
async function seen(c: Redis): Promise<Record<string, number>> {
  const raw = await c.hgetall("seen");
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, Number(v)]));
}

describe("gears write journal: events of writes through the proxy, once each (one redis-server)", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let db0: Redis;
  let db3: Redis;
  let direct0: Redis;
  let direct3: Redis;
  let marker = 0;

  /**
   * Waits until a write made straight to the server (its notification queued after those
   * of every earlier write) has been handled in `direct`'s database: every event before it
   * has been handled by then, duplicates included.
   */
  async function drained(direct: Redis): Promise<void> {
    const key = `k:marker:${++marker}`;
    await direct.set(key, "1");
    await eventually(
      () => direct.hget("seen", `${key} set`),
      (v) => v !== null,
      `marker ${key} handled`,
    );
    await direct.hdel("seen", `${key} set`);
  }

  /** Waits until every event of `expected` has been handled in `direct`'s database. */
  async function handled(direct: Redis, expected: Record<string, number>, what: string): Promise<void> {
    await eventually(
      () => seen(direct),
      (s) => Object.keys(expected).every((k) => k in s),
      what,
    );
  }

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
    db0 = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    db3 = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0, db: 3 });
    direct0 = new Redis({ port: redis.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    direct3 = new Redis({ port: redis.port, host: "127.0.0.1", maxRetriesPerRequest: 0, db: 3 });
    await execute(db0, COUNT_EVENTS);
    await execute(db3, COUNT_EVENTS);
  });

  afterEach(async () => {
    await direct0.config("SET", "notify-keyspace-events", "AE");
    await drained(direct0);
    await drained(direct3);
    await direct0.flushall();
  });

  after(async () => {
    for (const c of [db0, db3]) {
      for (const r of await registrations(c)) await c.call("RG.UNREGISTER", r.id);
    }
    for (const c of [db0, db3, direct0, direct3]) c.disconnect();
    await proxy?.close();
    await redis?.stop();
  });

  it("notifications flowing: writes in db 0, db 3 and MULTI/EXEC, pipelined ones too, each handled once", async () => {
    await db0.set("k:a", "1");
    await db0.incr("k:b");
    await db0.hset("k:c", "f", "v");
    await db0.sadd("k:d", "m");
    await db0.sadd("k:d", "m"); // changes nothing: no event
    await db0.set("k:e", "v", "EX", 100); // "set" and "expire", from their notifications
    expect(
      await db0.multi().set("k:m1", "1").incr("k:m2").set("k:m3", "v", "NX").set("k:m1", "2", "NX").exec(),
    ).to.deep.equal([
      [null, "OK"],
      [null, 1],
      [null, "OK"],
      [null, null],
    ]);
    const pipeline = db0.pipeline();
    for (let i = 0; i < 300; i++) pipeline.set(`k:p:${i % 100}`, String(i));
    await pipeline.exec();
    await db3.set("k:a3", "1");
    await db3.multi().set("k:m31", "1").hset("k:m32", "f", "v").exec();
    await drained(direct0);
    await drained(direct3);

    const expected0: Record<string, number> = {
      "k:a set": 1,
      "k:b incrby": 1,
      "k:c hset": 1,
      "k:d sadd": 1,
      "k:e set": 1,
      "k:e expire": 1,
      "k:m1 set": 1,
      "k:m2 incrby": 1,
      "k:m3 set": 1,
    };
    for (let i = 0; i < 100; i++) expected0[`k:p:${i} set`] = 3;
    expect(await seen(direct0)).to.deep.equal(expected0);
    expect(await seen(direct3)).to.deep.equal({ "k:a3 set": 1, "k:m31 set": 1, "k:m32 hset": 1 });
  });

  it("notifications cut: writes through the proxy in MULTI/EXEC and in db 3 still reach their registration, exactly once", async () => {
    await direct0.config("SET", "notify-keyspace-events", "");
    await db0.multi().set("k:m1", "1").incr("k:m2").hset("k:m3", "f", "v").exec();
    await db0.set("k:plain", "1");
    await db0.expire("k:plain", 100); // its event is not known from the reply: settled later
    await db3.set("k:a3", "1");
    await db3.multi().sadd("k:m31", "x").del("k:a3").exec();
    const expected0 = {
      "k:m1 set": 1,
      "k:m2 incrby": 1,
      "k:m3 hset": 1,
      "k:plain set": 1,
      "k:plain expire": 1,
    };
    const expected3 = { "k:a3 set": 1, "k:m31 sadd": 1, "k:a3 del": 1 };
    await handled(direct0, expected0, "db 0 writes handled without notifications");
    await handled(direct3, expected3, "db 3 writes handled without notifications");
    // Notifications back on: anything handled twice would be there before the markers.
    await direct0.config("SET", "notify-keyspace-events", "AE");
    await drained(direct0);
    await drained(direct3);
    expect(await seen(direct0)).to.deep.equal(expected0);
    expect(await seen(direct3)).to.deep.equal(expected3);
  });

  it("notifications cut: the writes after a TFCALL inside MULTI/EXEC (run by the proxy after the cut) reach their registration, exactly once", async () => {
    const lib = "#!js api_version=1.0 name=journal\nredis.registerFunction('one', function(){ return 1; });";
    expect(await db0.call("TFUNCTION", "LOAD", "REPLACE", lib)).to.equal("OK");
    await direct0.config("SET", "notify-keyspace-events", "");
    const out = await db0
      .multi()
      .set("k:before", "1")
      .call("TFCALL", "journal.one", "0")
      .set("k:after", "1")
      .hset("k:after2", "f", "v")
      .exec();
    expect(out).to.deep.equal([
      [null, "OK"],
      [null, 1],
      [null, "OK"],
      [null, 1],
    ]);
    const expected = { "k:before set": 1, "k:after set": 1, "k:after2 hset": 1 };
    await handled(direct0, expected, "the transaction's writes handled without notifications");
    await direct0.config("SET", "notify-keyspace-events", "AE");
    await drained(direct0);
    expect(await seen(direct0)).to.deep.equal(expected);
    await db0.call("TFUNCTION", "DELETE", "journal");
  });

  it("notifications cut: writes sent while WATCHing, outside MULTI, reach their registration once", async () => {
    await direct0.config("SET", "notify-keyspace-events", "");
    await db0.watch("k:w");
    await db0.set("k:w1", "1");
    await db0.hset("k:w2", "f", "v");
    await db0.unwatch();
    const expected0 = { "k:w1 set": 1, "k:w2 hset": 1 };
    await handled(direct0, expected0, "writes while WATCHing handled without notifications");
    await direct0.config("SET", "notify-keyspace-events", "AE");
    await drained(direct0);
    expect(await seen(direct0)).to.deep.equal(expected0);
  });

  it("notifications cut: a GEOADD's event is named as Redis names it (zadd), once", async () => {
    await direct0.config("SET", "notify-keyspace-events", "");
    await db0.geoadd("k:geo", 13.36, 38.11, "palermo");
    const expected0 = { "k:geo zadd": 1 };
    await handled(direct0, expected0, "the GEOADD handled without its notification");
    await direct0.config("SET", "notify-keyspace-events", "AE");
    await drained(direct0);
    expect(await seen(direct0)).to.deep.equal(expected0);
  });

  it("a transaction that does not run (EXECABORT, DISCARD) produces no event", async () => {
    await db0.multi().set("k:discarded", "1").discard();
    await db0
      .multi()
      .set("k:aborted", "1")
      .call("NO-SUCH-COMMAND")
      .exec()
      .catch(() => {});
    await drained(direct0);
    expect(await seen(direct0)).to.deep.equal({});
    expect(await direct0.exists("k:discarded", "k:aborted")).to.equal(0);
  });
});

/**
 * Issue 14: a SET, MSET or INCR through the proxy carries the value it wrote into its event's
 * record, so a registration that reads `value` gets it without the proxy reading it back
 * from Redis; writes whose value the proxy did not see (an HSET, a SET with an expiry,
 * whose event comes from its notification) are still read.
 */
describe("gears write journal: a write's value travels with its event (one redis-server)", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let io: Redis;
  let direct: Redis;

  /** Calls of `command` Redis has counted since the last CONFIG RESETSTAT (scripts' calls included). */
  async function calls(command: string): Promise<number> {
    const info = await direct.info("commandstats");
    const m = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, "m").exec(info);
    return m === null ? 0 : Number(m[1]);
  }

  async function logged(n: number, what: string): Promise<string[]> {
    return eventually(
      () => direct.lrange("vals", 0, -1),
      (l) => l.length >= n,
      what,
    );
  }

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
    io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    direct = new Redis({ port: redis.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    await execute(
      io,
      "GB().foreach(x => execute('RPUSH', 'vals', x.key + '=' + JSON.stringify(x.value) + ' ' + x.type + ' ' + x.event)).register('v:*')",
    );
  });

  after(async () => {
    for (const r of await registrations(io)) await io.call("RG.UNREGISTER", r.id);
    io.disconnect();
    direct.disconnect();
    await proxy?.close();
    await redis?.stop();
  });

  it("SET, MSET and INCRBY events carry their values: no key is read back; an HSET or a SET with EX still is", async () => {
    await direct.config("RESETSTAT");
    await io.set("v:a", "one");
    await io.mset("v:b", "two", "v:c", "three");
    await io.set("v:d", "four", "NX");
    await io.incrby("v:i", 5);
    const first = await logged(5, "the SET, MSET and INCRBY events handled");
    expect(first.slice().sort()).to.deep.equal([
      'v:a="one" string set',
      'v:b="two" string set',
      'v:c="three" string set',
      'v:d="four" string set',
      'v:i="5" string incrby',
    ]);
    // The registration's reads (a script calling TYPE and GET) never ran.
    expect(await calls("type")).to.equal(0);
    expect(await calls("get")).to.equal(0);

    await io.hset("v:h", "f", "x");
    await io.set("v:e", "five", "EX", 100);
    const all = await logged(8, "the HSET and SET EX events handled");
    expect(all.slice(5).sort()).to.deep.equal([
      'v:e="five" string expire',
      'v:e="five" string set',
      'v:h={"f":"x"} hash hset',
    ]);
    expect(await calls("type")).to.be.greaterThan(0);
    // Each write once: counted after its execution ends, a moment after its RPUSH.
    await eventually(
      async () => (await registrations(io))[0].stats.numTriggered,
      (n) => n >= 8,
      "eight events counted",
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await registrations(io))[0].stats.numTriggered).to.equal(8);
    expect(await direct.llen("vals")).to.equal(8);
  });
});
