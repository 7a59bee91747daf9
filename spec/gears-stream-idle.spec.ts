import { expect } from "chai";
import { Redis } from "ioredis";
import { TestClients } from "./support/test-clients.js";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { ChildProxy, stopChildProxies } from "./support/child-proxy.js";
import { eventually, sessions } from "./support/registrations.js";

/**
 * Session 14, "streams cost little when idle": a StreamReader's streams are read many to a
 * command and looked at for a dead consumer's entries once per StreamClaimIdleMS/2, not each
 * every second; what that must keep: entries a dead consumer left pending are still taken
 * over within about StreamClaimIdleMS, in order; and a `sync` write waits for the entries
 * notified before it, not for the consumer to rest.
 */

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe("gears StreamReader: idle streams, orphaned entries and sync writes", function () {
  this.timeout(120_000);
  let redis: RedisNode;
  let direct: Redis;
  const clients = new TestClients();
  const proxies: RunningProxy[] = [];

  const client = (port: number): Redis => clients.quiet(port);

  before(async () => {
    redis = await startRedis();
    direct = client(redis.port);
  });

  afterEach(async () => {
    await stopChildProxies();
    for (const p of proxies.splice(0)) await p.close();
    await direct.flushall();
  });

  after(async () => {
    clients.closeAll();
    await redis?.stop();
  });

  it("1,000 idle streams: Redis runs a few commands a second for them, not several per stream", async () => {
    const p = direct.pipeline();
    for (let i = 0; i < 1000; i++) p.xadd(`idle:${i}`, "*", "n", String(i));
    await p.exec();
    const proxy = await startProxy([{ port: redis.port }]);
    proxies.push(proxy);
    const io = client(proxy.port);
    await io.call(
      "RG.EXECUTE",
      "GB('StreamReader').foreach(x => execute('INCR', 'seen')).register('idle:*')",
    );
    await eventually(
      async () => Number(await direct.get("seen")),
      (n) => n === 1000,
      "every stream's entry handled",
      60_000,
    );
    await sleep(2500);
    const calls = async (): Promise<number> => {
      const info = await direct.info("commandstats");
      let total = 0;
      for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm))
        if (m[1] !== "info") total += Number(m[2]);
      return total;
    };
    const before = await calls();
    await sleep(4000);
    const perSecond = ((await calls()) - before) / 4;
    // Before: an XREADGROUP and an XAUTOCLAIM per stream a second and a lease renewal per
    // stream every 1.7 s: some 3,300/s. Now: one XREADGROUP a second for all of them, a
    // liveness renewal, and 1,000 XPENDING (in scripts) per StreamClaimIdleMS/2 (15 s).
    expect(perSecond, "commands/s at rest").to.be.below(200);
    // Still read: an entry written straight to Redis (its notification is enough, but the sweep reads it too).
    await direct.xadd("idle:500", "*", "n", "again");
    await eventually(
      async () => Number(await direct.get("seen")),
      (n) => n === 1001,
      "the new entry handled",
    );
  });

  it("entries a dead consumer left pending on a stream this proxy holds are claimed within about StreamClaimIdleMS, in order", async () => {
    const claimIdleMs = 1500;
    const proxy = await startProxy([{ port: redis.port }], {
      gearsConfig: { StreamClaimIdleMS: String(claimIdleMs) },
    });
    proxies.push(proxy);
    const io = client(proxy.port);
    await io.call(
      "RG.EXECUTE",
      "GB('StreamReader').foreach(x => execute('RPUSH', 'order', x.value.n)).register('orph')",
      "ID",
      "orph",
    );
    await direct.xadd("orph", "*", "n", "0");
    await eventually(
      () => direct.lrange("order", 0, -1),
      (l) => l.length === 1,
      "the first entry handled (the proxy holds the stream)",
    );
    const group = "gears-proxy:orph:0";
    // A consumer that then died (a proxy that read past its lease, then was SIGKILLed): 20
    // entries read by it and never acknowledged. No notification reaches the proxy for them.
    await direct.xgroup("CREATECONSUMER", "orph", group, "dead-proxy");
    // Added and read by it in one transaction: the proxy, notified, finds nothing new to read.
    const m = direct.multi();
    for (let i = 1; i <= 20; i++) m.xadd("orph", "*", "n", String(i));
    m.xreadgroup("GROUP", group, "dead-proxy", "COUNT", 100, "STREAMS", "orph", ">");
    await m.exec();
    const start = Date.now();
    const pending = (await direct.xpending("orph", group)) as [number, ...unknown[]];
    expect(pending[0]).to.equal(20);
    await eventually(
      () => direct.lrange("order", 0, -1),
      (l) => l.length === 21,
      "the orphaned entries handled",
      20_000,
    );
    const took = Date.now() - start;
    // Idle for claimIdleMs, then found by the next look at the stream (every claimIdleMs/2,
    // at a sweep): within about 1.5x claimIdleMs plus a sweep, and some slack for a busy machine.
    expect(took, "ms to claim").to.be.below(claimIdleMs * 1.5 + 1000 + 2500);
    expect(await direct.lrange("order", 0, -1)).to.deep.equal(
      Array.from({ length: 21 }, (_, i) => String(i)),
    );
    // Acknowledged once its batch has run: just after the handler's last write.
    await eventually(
      async () => ((await direct.xpending("orph", group)) as [number])[0],
      (n) => n === 0,
      "the claimed entries acknowledged",
    );
  });

  it("a sync StreamReader consumer kept busy by writes straight to Redis does not hold a write through the proxy until it rests", async () => {
    // One 30 ms execution per batch, whatever its size: with an entry every 2 ms the consumer
    // keeps up, but it is never idle while the writer goes on (entries arrive during every run).
    const proxy = await startProxy([{ port: redis.port }]);
    proxies.push(proxy);
    const io = client(proxy.port);
    await io.call(
      "RG.EXECUTE",
      "GB('StreamReader').count().foreach(n => { const t = Date.now(); while (Date.now() - t < 30) {} execute('INCRBY', 'handled', n); })" +
        ".register('busy', {mode: 'sync', batch: 10000, duration: 1, trimStream: false})",
    );
    let writing = true;
    // At most 6 s: without the fix, a write through the proxy waits for the writer's end.
    const stopAt = Date.now() + 6000;
    const writer = (async () => {
      while (writing && Date.now() < stopAt) {
        await direct.xadd("busy", "*", "n", "1");
        await sleep(2);
      }
    })();
    try {
      await sleep(1000);
      const probes: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t = Date.now();
        const id = await io.xadd("busy", "*", "n", "probe");
        probes.push(Date.now() - t);
        // Sync still: the probe and every entry before it are handled when XADD returns.
        const upTo = Number(await direct.get("handled"));
        const before = ((await direct.call("XRANGE", "busy", "-", id as string)) as unknown[]).length;
        expect(upTo, "entries handled when the probe's XADD returned").to.be.at.least(before);
        const t2 = Date.now();
        await io.set("probe", String(i));
        probes.push(Date.now() - t2);
      }
      // Before: each waited for a moment with no stream consumer busy, which never came while
      // the writer went on (seconds, up to the writer's end). Now: the entries notified before it.
      expect(Math.max(...probes), `ms each write waited: ${probes.join(", ")}`).to.be.below(1000);
    } finally {
      writing = false;
      await writer;
    }
  });

  it("two proxies, many streams: each stream read by one of them, the other takes them all over when the holder is SIGKILLed", async () => {
    const CONFIG = { EventLeaseMS: "1000", StreamClaimIdleMS: "120000" };
    const a = await ChildProxy.start({ upstreams: [{ port: redis.port }], gearsConfig: CONFIG });
    const script =
      "GB('StreamReader').foreach(x => execute('RPUSH', 'got:' + x.key, x.value.n)).register('many:*')";
    expect(await client(a.port).call("RG.EXECUTE", script, "ID", "many")).to.equal("OK");
    const N = 200;
    const p = direct.pipeline();
    for (let i = 0; i < N; i++) p.xadd(`many:${i}`, "*", "n", "0");
    await p.exec();
    await eventually(
      async () => (await direct.keys("got:*")).length,
      (n) => n === N,
      "A handled every stream's first entry",
    );
    const proxyB = await startProxy([{ port: redis.port }], { gearsConfig: CONFIG });
    proxies.push(proxyB);
    const b = client(proxyB.port);
    await eventually(
      async () => (await sessions(b)).map((s) => s.id),
      (ids) => ids.includes("many"),
      "B restored the session",
    );
    await sleep(1500);
    await a.kill();
    const w = direct.pipeline();
    for (let i = 0; i < N; i++) for (let n = 1; n <= 5; n++) w.xadd(`many:${i}`, "*", "n", String(n));
    await w.exec();
    await eventually(
      async () => {
        const q = direct.pipeline();
        for (let i = 0; i < N; i++) q.llen(`got:many:${i}`);
        const lens = ((await q.exec()) ?? []).map(([, v]) => Number(v));
        return lens.filter((l) => l >= 6).length;
      },
      (n) => n === N,
      "B handled every stream's later entries",
      30_000,
    );
    const q = direct.pipeline();
    for (let i = 0; i < N; i++) q.lrange(`got:many:${i}`, 0, -1);
    const lists = ((await q.exec()) ?? []).map(([, v]) => v as string[]);
    // In order per stream (an entry handled twice would show as a repeat, which at-least-once allows, but not a reorder).
    for (const l of lists) {
      const firsts = l.filter((v, i) => l.indexOf(v) === i);
      expect(firsts).to.deep.equal(["0", "1", "2", "3", "4", "5"]);
    }
  });
});
