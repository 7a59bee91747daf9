import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { run } from "./support/gears.js";
import { eventually, execute, registrations, sleep } from "./support/registrations.js";

/**
 * Issue 12, "scripts run in the database the client selected" (one redis-server: a cluster
 * has database 0 only). RG.EXECUTE's readers and execute() use the client's database; a
 * registration sees the events of the database it was registered from, and its handlers
 * run there.
 */

describe("gears scripts in the client's database (one redis-server)", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let db0: Redis;
  let db3: Redis;
  /** Straight to the server, database 3. */
  let direct3: Redis;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
    db0 = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    db3 = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    expect(await db3.select(3)).to.equal("OK");
    direct3 = new Redis({ port: redis.port, host: "127.0.0.1", maxRetriesPerRequest: 0, db: 3 });
  });

  afterEach(async () => {
    for (const c of [db0, db3]) {
      for (const r of await registrations(c)) await c.call("RG.UNREGISTER", r.id);
    }
    await db0.flushall();
  });

  after(async () => {
    for (const c of [db0, db3, direct3]) c.disconnect();
    await proxy?.close();
    await redis?.stop();
  });

  it("SELECT 3, then RG.EXECUTE with a KeysReader and a KeysOnlyReader sees database 3 only", async () => {
    await db0.mset("zero:1", "a", "zero:2", "b");
    await db3.mset("three:1", "x", "three:2", "y", "three:3", "z");
    for (const reader of ["KeysReader", "KeysOnlyReader"]) {
      const out = await run(db3, `GB('${reader}').map(r => typeof r === 'string' ? r : r.key).run()`);
      expect(out.errors, reader).to.deep.equal([]);
      expect([...out.results].sort(), reader).to.deep.equal(["three:1", "three:2", "three:3"]);
    }
    const values = await run(db3, "GB().map(r => r.value).run('three:*')");
    expect([...values.results].sort()).to.deep.equal(["x", "y", "z"]);
    const zero = await run(db0, "GB('KeysOnlyReader').run()");
    expect([...zero.results].sort()).to.deep.equal(["zero:1", "zero:2"]);
  });

  it("SELECT 3, then execute('GET', ...) and execute('SET', ...) read and write database 3", async () => {
    await db0.set("k", "in-zero");
    await db3.set("k", "in-three");
    const got = await run(db3, "GB('ShardsIDReader').map(() => execute('GET', 'k')).run()");
    expect(got.results).to.deep.equal(["in-three"]);
    await run(db3, "GB('ShardsIDReader').foreach(() => execute('SET', 'written', '1')).run()");
    expect(await direct3.get("written")).to.equal("1");
    expect(await db0.exists("written")).to.equal(0);
  });

  it("a registration made from database 3 fires for database 3's events only, and its handler writes there", async () => {
    await execute(db3, "GB().foreach(x => execute('SADD', 'seen', x.key)).register('r:*')");
    await direct3.set("r:three", "1");
    await db0.set("r:zero", "1");
    await eventually(
      () => direct3.smembers("seen"),
      (m) => m.includes("r:three"),
      "the db 3 event handled in db 3",
    );
    await sleep(300);
    expect(await direct3.smembers("seen")).to.deep.equal(["r:three"]);
    expect(await db0.exists("seen")).to.equal(0);
  });
});
