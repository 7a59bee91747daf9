import { expect } from "chai";
import { Redis } from "ioredis";
import { TestClients } from "./support/test-clients.js";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { ChildProxy, stopChildProxies } from "./support/child-proxy.js";
import { execAll } from "./support/gears.js";
import { eventually, sessions } from "./support/registrations.js";

/**
 * Issue 12, "stream order across proxies": two proxies share a StreamReader registration;
 * one at a time consumes a given stream (a lease per stream and group), so the stream is
 * applied in order, and a proxy SIGKILLed with entries in hand has them handled by the
 * other once its lease runs out, not after StreamClaimIdleMS.
 */

const LEASE_MS = 1000;
/** Far longer than a test: a takeover that waited for it would fail. */
const CLAIM_IDLE_MS = 120_000;
const CONFIG = { EventLeaseMS: String(LEASE_MS), StreamClaimIdleMS: String(CLAIM_IDLE_MS) };

describe("gears StreamReader across two proxies: one consumer per stream", function () {
  this.timeout(180_000);
  let redis: RedisNode;
  let direct: Redis;
  const clients = new TestClients();
  const inProcess: RunningProxy[] = [];

  const client = (port: number): Redis => clients.quiet(port);

  /** A: a child process (SIGKILLable); B: in this process; both see the session made through A. */
  async function twoProxies(script: string, id: string): Promise<{ a: ChildProxy; b: Redis }> {
    const a = await ChildProxy.start({ upstreams: [{ port: redis.port }], gearsConfig: CONFIG });
    expect(await client(a.port).call("RG.EXECUTE", script, "ID", id)).to.equal("OK");
    const proxyB = await startProxy([{ port: redis.port }], { gearsConfig: CONFIG });
    inProcess.push(proxyB);
    const b = client(proxyB.port);
    await eventually(
      async () => (await sessions(b)).map((s) => s.id),
      (ids) => ids.includes(id),
      "B restored the session",
    );
    return { a, b };
  }

  before(async () => {
    redis = await startRedis();
    direct = client(redis.port);
  });

  afterEach(async () => {
    await stopChildProxies();
    for (const p of inProcess.splice(0)) await p.close();
    await direct.flushall();
  });

  after(async () => {
    clients.closeAll();
    await redis?.stop();
  });

  it("5,000 entries that each SET the same key: the last entry's value wins, in 10 runs of 10", async () => {
    await twoProxies(
      // Batches of 100 entries per execution (RedisGears' default is 1): the order still has to
      // hold within and across batches, and CI does not spend a minute on 50,000 executions.
      "GB('StreamReader').foreach(x => execute('SET', 'last:' + x.key, x.value.n)).register('ord:*', {batch: 100, duration: 50})",
      "order",
    );
    const stale: string[] = [];
    for (let run = 0; run < 10; run++) {
      const stream = `ord:${run}`;
      const p = direct.pipeline();
      for (let i = 0; i < 5000; i++) p.xadd(stream, "*", "n", String(i));
      await execAll(p);
      // Applied and acknowledged: trimStream empties the stream once every entry is done.
      await eventually(
        () => direct.xlen(stream),
        (n) => n === 0,
        `${stream} consumed`,
        60_000,
      );
      const last = await direct.get(`last:${stream}`);
      if (last !== "4999") stale.push(`${stream}: ${last}`);
    }
    expect(stale, "runs that ended on a stale value").to.deep.equal([]);
  });

  it("the owner SIGKILLed with entries in hand: the other proxy claims and handles them within the lease time", async () => {
    // 2 ms per entry, so the owner is killed while it holds entries read but not done.
    const script =
      "GB('StreamReader').foreach(x => { const t = Date.now(); while (Date.now() - t < 2) {} execute('SADD', 'seen', x.id); }).register('job')";
    const a = await ChildProxy.start({ upstreams: [{ port: redis.port }], gearsConfig: CONFIG });
    expect(await client(a.port).call("RG.EXECUTE", script, "ID", "jobs")).to.equal("OK");
    // A takes the stream's lease with the first entry, before B exists.
    await direct.xadd("job", "*", "n", "first");
    await eventually(
      () => direct.scard("seen"),
      (n) => n === 1,
      "A handled the first entry",
    );
    expect(await direct.keys("{gears-proxy}:stream-lease:*")).to.have.length(1);
    const proxyB = await startProxy([{ port: redis.port }], { gearsConfig: CONFIG });
    inProcess.push(proxyB);
    const b = client(proxyB.port);
    await eventually(
      async () => (await sessions(b)).map((s) => s.id),
      (ids) => ids.includes("jobs"),
      "B restored the session",
    );

    const p = direct.pipeline();
    for (let i = 0; i < 1000; i++) p.xadd("job", "*", "n", String(i));
    const ids = (await execAll(p)) as string[];
    await eventually(
      () => direct.scard("seen"),
      (n) => n > 100,
      "A is handling the burst",
    );
    const pending = (await direct.xpending("job", "gears-proxy:jobs:0")) as [number, ...unknown[]];
    expect(pending[0], "entries in A's hands").to.be.above(0);
    await a.kill();
    const killed = Date.now();
    await eventually(
      () => direct.scard("seen"),
      (n) => n === ids.length + 1,
      "every entry handled",
      30_000,
    );
    const took = Date.now() - killed;
    // The lease runs out, B tries within a poll, then handles what is left (2 ms an entry on a
    // quiet machine; up to 10 with other spec files running beside this one). Far below
    // CLAIM_IDLE_MS: B claimed A's entries when it took the lease, not when they went idle.
    expect(took, "ms from the kill to the last entry handled").to.be.below(
      LEASE_MS + 1000 + 10 * ids.length + 5000,
    );
    const members = new Set(await direct.smembers("seen"));
    expect(ids.filter((id) => !members.has(id))).to.deep.equal([]);
  });
});
