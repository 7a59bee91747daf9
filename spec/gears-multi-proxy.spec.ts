/**
 * Several gears-proxies in front of one Redis (issue #5): sessions stored in Redis come back
 * after a crash and are picked up by the other proxies; KeysReader events and timers run on
 * the proxy holding the shard's lease, and move to a survivor when it dies; StreamReader
 * registrations share one consumer group, so each entry is handled once.
 *
 * Proxies that must die like a crash are child processes (SIGKILL); the others run in process.
 */
import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { Cluster, Redis } from "ioredis";
import {
  startCluster,
  startProxy,
  startRedis,
  type RedisCluster,
  type RedisNode,
  type RespValue,
  type RunningProxy,
} from "./harness/index.js";
import { ChildProxy, stopChildProxies } from "./support/child-proxy.js";
import { asArray, connect, execAll, str } from "./support/gears.js";
import { eventually } from "./support/polling.js";

/** Short leases and claim times so a takeover is seen within a test. */
const LEASE_MS = 1000;
const FAST = { EventLeaseMS: String(LEASE_MS), StreamClaimIdleMS: "1000" };
/** How long another proxy may take to see a session stored or changed by one proxy. */
const SYNC_MS = 3000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function regIds(dump: unknown): string[] {
  return asArray(dump, "RG.DUMPREGISTRATIONS").map((entry) => str(asArray(entry, "registration")[1]));
}

async function registrations(c: Redis): Promise<string[]> {
  return regIds(await c.call("RG.DUMPREGISTRATIONS"));
}

/** A proxy's id: the part of its execution ids before the counter. */
async function proxyIdOf(c: Redis): Promise<string> {
  const id = str(await c.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
  await c.call("RG.GETRESULTSBLOCKING", id);
  await c.call("RG.DROPEXECUTION", id);
  return id.slice(0, id.lastIndexOf("-"));
}

type Call = (...args: string[]) => Promise<RespValue>;

/** Lease owners by lease key suffix (the first slot of the shard), read straight from Redis. */
async function leaseOwners(call: Call): Promise<Map<string, string>> {
  const keys = await call("KEYS", "{gears-proxy}:lease:*");
  const owners = new Map<string, string>();
  for (const key of Array.isArray(keys) ? keys : []) {
    const value = await call("GET", String(key));
    if (typeof value === "string") owners.set(String(key).split(":").pop() ?? "", value.split(" ")[0]);
  }
  return owners;
}

/** The node holding the {gears-proxy} keys (sessions, leases). */
async function gearsKeysCall(cluster: RedisCluster): Promise<Call> {
  const node = await cluster.nodeForSlot(calculateSlot("{gears-proxy}"));
  return (...args) => node.call(...args);
}

/** Writes `keys` (SET key 1): in a pipeline through a proxy, one command each to a cluster. */
async function setAll(c: Redis | Cluster, keys: string[]): Promise<void> {
  if (keys.length === 0) return;
  if (c instanceof Cluster) {
    await Promise.all(keys.map((k) => c.set(k, "1")));
    return;
  }
  const p = c.pipeline();
  for (const k of keys) p.set(k, "1");
  await execAll(p);
}

/** A connection that does not reconnect (its proxy may be killed on purpose). */
function connectOnce(port: number): Redis {
  const c = connect(port, { retryStrategy: () => null });
  c.on("error", () => {});
  return c;
}

function range(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${i}`);
}

describe("gears: several proxies, restarts and crashes (issue #5)", function () {
  this.timeout(60_000);

  describe("a proxy SIGKILLed and started again (one redis-server)", () => {
    let redis: RedisNode;
    let direct: Redis;
    const clients: Redis[] = [];
    const client = (port: number): Redis => {
      const c = connectOnce(port);
      clients.push(c);
      return c;
    };

    beforeEach(async () => {
      redis = await startRedis();
      direct = client(redis.port);
    });
    afterEach(async () => {
      for (const c of clients.splice(0)) c.disconnect();
      await stopChildProxies();
      await redis.stop();
    });

    it("a StreamReader registration: same ids, every entry processed (pending ones claimed), stream trimmed, new entries handled", async () => {
      const first = await ChildProxy.start({ upstreams: [{ port: redis.port }], gearsConfig: FAST });
      const a = client(first.port);
      // 2 ms per entry, so the proxy is killed while it has entries in hand.
      const script =
        "GB('StreamReader').foreach(x => { const t = Date.now(); while (Date.now() - t < 2) {} execute('SADD', 'seen', x.id); }).register('jobs')";
      expect(await a.call("RG.EXECUTE", script, "ID", "jobs")).to.equal("OK");
      const ids = await registrations(a);
      expect(ids).to.have.length(1);

      const total = 2000;
      const p = direct.pipeline();
      for (let i = 0; i < total; i++) p.xadd("jobs", "*", "n", String(i));
      const written = (await execAll(p)).map(String);

      const group = "gears-proxy:jobs:0";
      // 0 until the proxy has made its group (NOGROUP).
      const pendingOf = async (): Promise<number> =>
        Number(asArray(await direct.xpending("jobs", group).catch(() => [0]), "XPENDING")[0]);
      await eventually(
        async () => ({ seen: await direct.scard("seen"), pending: await pendingOf() }),
        (v) => v.seen > 0 && v.pending > 0,
        "the first proxy processing entries, with some pending",
        10_000,
      );
      await first.kill();
      const seenAtKill = await direct.scard("seen");
      const pendingAtKill = await pendingOf();
      expect(seenAtKill, "killed before it was done").to.be.below(total);
      expect(pendingAtKill, "entries left pending by the dead consumer").to.be.above(0);

      const second = await ChildProxy.start({ upstreams: [{ port: redis.port }], gearsConfig: FAST });
      const b = client(second.port);
      expect(await registrations(b), "the same registration ids").to.deep.equal(ids);

      await eventually(
        () => direct.scard("seen"),
        (n) => n === total,
        "every entry processed",
        30_000,
      );
      expect((await direct.smembers("seen")).sort()).to.deep.equal([...written].sort());
      await eventually(
        () => direct.xlen("jobs"),
        (n) => n === 0,
        "the stream trimmed",
        5000,
      );
      expect(await pendingOf(), "nothing left pending").to.equal(0);

      const more = [await direct.xadd("jobs", "*", "n", "new1"), await b.xadd("jobs", "*", "n", "new2")];
      await eventually(
        () => direct.scard("seen"),
        (n) => n === total + 2,
        "new entries handled",
        5000,
      );
      for (const id of more) expect(await direct.sismember("seen", String(id))).to.equal(1);
      await eventually(
        () => direct.xlen("jobs"),
        (n) => n === 0,
        "the stream trimmed again",
        5000,
      );
    });

    it("a KeysReader registration: same ids, and new writes (direct and through the proxy) are handled", async () => {
      const first = await ChildProxy.start({ upstreams: [{ port: redis.port }], gearsConfig: FAST });
      const a = client(first.port);
      const script = "GB().foreach(x => execute('SADD', 'kseen', x.key)).register('k:*')";
      expect(await a.call("RG.EXECUTE", script, "ID", "keys")).to.equal("OK");
      const ids = await registrations(a);
      await a.set("k:before", "1");
      await eventually(
        () => direct.sismember("kseen", "k:before"),
        (n) => n === 1,
        "handled before the kill",
        5000,
      );
      const firstId = await proxyIdOf(a);
      await first.kill();

      const second = await ChildProxy.start({ upstreams: [{ port: redis.port }], gearsConfig: FAST });
      const b = client(second.port);
      expect(await registrations(b), "the same registration ids").to.deep.equal(ids);
      const secondId = await proxyIdOf(b);
      expect(secondId).to.not.equal(firstId);
      await direct.set("k:direct", "1");
      await b.set("k:proxied", "1");
      await eventually(
        async () => [
          await direct.sismember("kseen", "k:direct"),
          await direct.sismember("kseen", "k:proxied"),
        ],
        (v) => v[0] === 1 && v[1] === 1,
        "writes after the restart handled",
        LEASE_MS * 3 + 2000,
      );
      const owners = await leaseOwners((...args) => redis.call(...args));
      expect([...owners.values()], "the new proxy holds the lease").to.deep.equal([secondId]);
    });
  });

  describe("two proxies in front of a 3-master cluster", () => {
    let cluster: RedisCluster;
    let direct: Cluster;
    let gearsKeys: Call;
    const clients: Redis[] = [];
    const inProcess: RunningProxy[] = [];
    const client = (port: number): Redis => {
      const c = connectOnce(port);
      clients.push(c);
      return c;
    };

    before(async function () {
      this.timeout(60_000);
      cluster = await startCluster({ masters: 3 });
      gearsKeys = await gearsKeysCall(cluster);
    });
    after(async () => {
      await cluster?.stop();
    });
    beforeEach(() => {
      direct = new Cluster([{ host: "127.0.0.1", port: cluster.nodes[0].port }], {
        redisOptions: { maxRetriesPerRequest: 0 },
      });
    });
    afterEach(async () => {
      for (const c of clients.splice(0)) c.disconnect();
      direct.disconnect();
      await stopChildProxies();
      for (const p of inProcess.splice(0)) await p.close();
      for (const m of await cluster.masters()) await m.call("FLUSHALL");
    });

    /** A: a child process (SIGKILLable); B: in this process. Both with short leases. */
    async function startA(config: Record<string, string> = FAST): Promise<{ proxy: ChildProxy; c: Redis }> {
      const proxy = await ChildProxy.start({
        upstreams: [{ port: cluster.nodes[0].port }],
        gearsConfig: config,
      });
      return { proxy, c: client(proxy.port) };
    }
    async function startB(config: Record<string, string> = FAST): Promise<{ proxy: RunningProxy; c: Redis }> {
      const proxy = await startProxy([{ port: cluster.nodes[0].port }], { gearsConfig: config });
      inProcess.push(proxy);
      return { proxy, c: client(proxy.port) };
    }

    async function counts(hash: string): Promise<Record<string, string>> {
      return direct.hgetall(hash);
    }

    it("a KeysReader registration made through A is picked up by B; each key handled once; after A is SIGKILLed B takes its shards over and no key is lost", async function () {
      this.timeout(60_000);
      const a = await startA();
      const b = await startB();
      const script =
        "GB().filter(x => x.key !== 'handled').foreach(x => execute('HINCRBY', 'handled', x.key, 1)).register()";
      expect(await a.c.call("RG.EXECUTE", script, "ID", "counting")).to.equal("OK");
      const ids = await registrations(a.c);
      await eventually(
        () => registrations(b.c),
        (v) => v.join() === ids.join(),
        "B picks the session up",
        SYNC_MS,
      );
      const idA = await proxyIdOf(a.c);
      const idB = await proxyIdOf(b.c);
      await eventually(
        () => leaseOwners(gearsKeys),
        (m) => m.size === 3,
        "a lease per shard",
        5000,
      );

      // Both alive: every key exactly once.
      const before = [...range("w:a:", 300), ...range("w:b:", 300), ...range("w:d:", 300)];
      await Promise.all([
        setAll(a.c, range("w:a:", 300)),
        setAll(b.c, range("w:b:", 300)),
        setAll(direct, range("w:d:", 300)),
      ]);
      await eventually(
        () => direct.hlen("handled"),
        (n) => n >= before.length,
        "every key handled",
        10_000,
      );
      await sleep(500); // a second handler would show up by now
      const settled = await counts("handled");
      const twice = Object.entries(settled).filter(([, n]) => n !== "1");
      expect(twice, "keys handled more than once while both proxies are alive").to.deep.equal([]);
      expect(Object.keys(settled).sort()).to.deep.equal([...before].sort());

      const owners = await leaseOwners(gearsKeys);
      const ofA = [...owners].filter(([, o]) => o === idA).map(([slot]) => slot);
      expect(
        [...owners.values()].every((o) => o === idA || o === idB),
        "leases held by A or B",
      ).to.equal(true);
      expect(ofA.length, `A owns some shards (owners: ${JSON.stringify([...owners])})`).to.be.above(0);

      // A dies; writes go on through B and straight to the shards.
      await a.proxy.kill();
      const killedAt = Date.now();
      const gap = [...range("x:gap:b:", 100), ...range("x:gap:d:", 100)];
      await Promise.all([setAll(b.c, range("x:gap:b:", 100)), setAll(direct, range("x:gap:d:", 100))]);
      const during: string[] = [];
      let takenOverAt = 0;
      for (let round = 0; Date.now() - killedAt < LEASE_MS * 5; round++) {
        const keys = range(`x:during:${round}:`, 10);
        during.push(...keys);
        await setAll(round % 2 === 0 ? b.c : direct, keys);
        const now = await leaseOwners(gearsKeys);
        if (ofA.every((slot) => now.get(slot) === idB)) {
          takenOverAt = Date.now();
          break;
        }
        await sleep(50);
      }
      const takeoverMs = takenOverAt - killedAt;
      expect(takenOverAt, "B took A's shards over").to.be.above(0);
      // The lease runs out within LEASE_MS of the kill; B tries every third of it.
      expect(takeoverMs, "takeover time").to.be.at.most(LEASE_MS + LEASE_MS / 3 + 700);
      const after = [...range("x:after:b:", 100), ...range("x:after:d:", 100)];
      await Promise.all([setAll(b.c, range("x:after:b:", 100)), setAll(direct, range("x:after:d:", 100))]);

      const missing = async (keys: string[]): Promise<string[]> => {
        const got = await counts("handled");
        return keys.filter((k) => got[k] === undefined);
      };
      await eventually(
        () => missing(after),
        (m) => m.length === 0,
        "keys written after the takeover handled",
        5000,
      );
      // Written between the kill and the takeover: only B's backlog replay can have them.
      const lost = await eventually(
        () => missing([...gap, ...during]),
        (m) => m.length === 0,
        "keys written between the kill and the takeover handled (replay)",
        3000,
      ).catch(async () => missing([...gap, ...during]));
      expect(
        lost.length,
        `keys written after the kill not handled, e.g. ${lost.slice(0, 5).join(", ")} (takeover after ${takeoverMs} ms)`,
      ).to.equal(0);
    });

    /**
     * A handles a burst of `count` keys written straight to the shards, `msPerKey` each, and
     * is SIGKILLed once `killAfter` are done: B must handle the rest (from its backlog).
     */
    async function killDuringBurst(msPerKey: number, count: number, killAfter: number): Promise<void> {
      const a = await startA();
      const b = await startB();
      const script = `GB().foreach(x => { const t = Date.now(); while (Date.now() - t < ${msPerKey}) {} execute('HINCRBY', 'handled', x.key, 1); }).register('burst:*')`;
      expect(await a.c.call("RG.EXECUTE", script, "ID", "burst")).to.equal("OK");
      const ids = await registrations(a.c);
      await eventually(
        () => registrations(b.c),
        (v) => v.join() === ids.join(),
        "B picks the session up",
        SYNC_MS,
      );
      const idA = await proxyIdOf(a.c);
      await eventually(
        () => leaseOwners(gearsKeys),
        (m) => m.size === 3 && [...m.values()].every((o) => o === idA),
        "A holds every lease",
        5000,
      );

      const keys = range("burst:", count);
      const writtenAt = Date.now();
      await setAll(direct, keys);
      await eventually(
        () => direct.hlen("handled"),
        (n) => n >= killAfter,
        "A handling the burst",
        15_000,
      );
      await a.proxy.kill();
      const handledAtKill = await direct.hlen("handled");
      const killedAfterMs = Date.now() - writtenAt;
      expect(handledAtKill, "killed before it was done").to.be.below(keys.length);

      const missing = async (): Promise<string[]> => {
        const got = await counts("handled");
        return keys.filter((k) => got[k] === undefined);
      };
      // B may handle the whole burst again (at least once), at the pace A managed: on a loaded
      // machine that is well above msPerKey.
      const perKeyMs = Math.max(msPerKey, killedAfterMs / Math.max(1, handledAtKill));
      const deadline = LEASE_MS * 2 + count * perKeyMs * 1.5 + 3000;
      const lost = await eventually(
        missing,
        (m) => m.length === 0,
        "every key of the burst handled",
        deadline,
      ).catch(missing);
      expect(
        lost.length,
        `keys not handled, e.g. ${lost.slice(0, 5).join(", ")} (${handledAtKill} of ${count} were handled when A was killed, ${killedAfterMs} ms after the burst)`,
      ).to.equal(0);
    }

    it("A SIGKILLed in the middle of a burst it was handling: B handles what A had not (at least once)", async function () {
      this.timeout(60_000);
      await killDuringBurst(3, 800, 100);
    });

    it("A SIGKILLed while more than 2 x EventLeaseMS + 2 s behind on its events: B still handles what A had not", async function () {
      this.timeout(90_000);
      // A is ~4.2 s behind when it dies: older than what B keeps of other proxies' events.
      await killDuringBurst(10, 600, 420);
    });

    it("a StreamReader registration on one stream shared by both proxies: one of them consumes it (the stream's lease), each entry processed exactly once", async () => {
      // The default claim time (30 s): nothing is claimed from a live consumer.
      const a = await startA({ EventLeaseMS: String(LEASE_MS) });
      const b = await startB({ EventLeaseMS: String(LEASE_MS) });
      const script = "GB('StreamReader').foreach(x => execute('HINCRBY', 'done', x.id, 1)).register('jobs')";
      expect(await a.c.call("RG.EXECUTE", script, "ID", "streams")).to.equal("OK");
      const ids = await registrations(a.c);
      await eventually(
        () => registrations(b.c),
        (v) => v.join() === ids.join(),
        "B picks the session up",
        SYNC_MS,
      );

      const written: string[] = [];
      for (let batch = 0; batch < 10; batch++) {
        const p = direct.pipeline();
        for (let i = 0; i < 100; i++) p.xadd("jobs", "*", "n", String(batch * 100 + i));
        written.push(...(await execAll(p)).map(String));
        await sleep(20);
      }
      await eventually(
        () => direct.hlen("done"),
        (n) => n >= written.length,
        "every entry processed",
        15_000,
      );
      await sleep(500);
      const done = await counts("done");
      expect(Object.keys(done).sort()).to.deep.equal([...written].sort());
      expect(
        Object.entries(done).filter(([, n]) => n !== "1"),
        "entries processed more than once",
      ).to.deep.equal([]);
      await eventually(
        () => direct.xlen("jobs"),
        (n) => n === 0,
        "the stream trimmed",
        5000,
      );

      const consumers = asArray(
        await direct.call("XINFO", "CONSUMERS", "jobs", "gears-proxy:streams:0"),
        "XINFO",
      )
        .map((c) => str(asArray(c, "consumer")[1]))
        .sort();
      // One consumer at a time keeps the stream's order (issue 12).
      expect(consumers, "one proxy consumes the stream").to.have.length(1);
      expect([await proxyIdOf(a.c), await proxyIdOf(b.c)]).to.include(consumers[0]);
    });

    it("registerTimeEvent runs on one proxy per period, and on the survivor once the other is SIGKILLed", async () => {
      const a = await startA();
      const b = await startB();
      const script = "registerTimeEvent(0.5, () => execute('INCR', 'ticks'))";
      expect(await a.c.call("RG.EXECUTE", script, "ID", "ticker")).to.equal("OK");
      await eventually(
        async () => JSON.stringify(await b.c.call("RG.DUMPSESSIONS")),
        (s) => s.includes("ticker"),
        "B picks the session up",
        SYNC_MS,
      );
      await eventually(
        async () => Number(await direct.get("ticks")),
        (n) => n >= 1,
        "ticking",
        5000,
      );
      await sleep(LEASE_MS); // both timers run now; only one may act per period
      const t0 = Number(await direct.get("ticks"));
      await sleep(2000);
      const ticks = Number(await direct.get("ticks")) - t0;
      expect(ticks, "ticks in 2 s at 0.5 s (4 on one proxy, 8 on both)").to.be.within(2, 5);

      await a.proxy.kill();
      const atKill = Number(await direct.get("ticks"));
      await eventually(
        async () => Number(await direct.get("ticks")),
        (n) => n >= atKill + 3,
        "ticks go on after A is killed",
        LEASE_MS * 2 + 3000,
      );
    });

    it("a sync registration holds a write through the proxy that does not own the shard until the owner has run its handler", async () => {
      const a = await startB();
      const idA = await proxyIdOf(a.c);
      const script =
        "GB().foreach(x => execute('SET', 'copy:' + x.key, x.value)).register('sync:*', {mode: 'sync'})";
      expect(await a.c.call("RG.EXECUTE", script, "ID", "syncs")).to.equal("OK");
      await eventually(
        () => leaseOwners(gearsKeys),
        (m) => m.size === 3 && [...m.values()].every((o) => o === idA),
        "A holds every lease",
        5000,
      );
      const b = await startB();
      await eventually(
        async () => (await registrations(b.c)).length,
        (n) => n === 1,
        "B picks the session up",
        SYNC_MS,
      );
      // B owns no shard: every write's handler runs on A, and B's client must still see its effect.
      for (let i = 0; i < 60; i++) {
        const key = `sync:{${i}}`;
        expect(await b.c.set(key, `v${i}`)).to.equal("OK");
        expect(await b.c.get(`copy:${key}`), key).to.equal(`v${i}`);
      }
      // The markers are the proxies' own: no user registration saw them.
      expect(await direct.keys("copy:*gears-proxy-sync*")).to.deep.equal([]);
    });

    it("RG.UNREGISTER on A: B stops handling that KeysReader registration (B holds the leases)", async () => {
      const b = await startB();
      // B registers first, so B holds every shard's lease and handles the events.
      const marks = "GB().foreach(x => execute('SADD', 'marks', x.key)).register('mark:*')";
      expect(await b.c.call("RG.EXECUTE", marks, "ID", "marks")).to.equal("OK");
      const idB = await proxyIdOf(b.c);
      await eventually(
        () => leaseOwners(gearsKeys),
        (m) => m.size === 3 && [...m.values()].every((o) => o === idB),
        "B holds every lease",
        5000,
      );
      const a = await startA();
      const script = "GB().foreach(x => execute('HINCRBY', 'u', x.key, 1)).register('u:*')";
      expect(await a.c.call("RG.EXECUTE", script, "ID", "unreg")).to.equal("OK");
      // A also restored B's session at its start: its registration ids are B's.
      const ours = (await registrations(a.c)).filter((r) => !r.startsWith(idB));
      expect(ours).to.have.length(1);
      await eventually(
        () => registrations(b.c),
        (v) => v.includes(ours[0]),
        "B picks the session up",
        SYNC_MS,
      );
      await direct.set("u:1", "1");
      await eventually(
        () => direct.hget("u", "u:1"),
        (v) => v === "1",
        "handled (by B)",
        5000,
      );

      expect(await a.c.call("RG.UNREGISTER", ours[0])).to.equal("OK");
      const started = Date.now();
      await eventually(
        () => registrations(b.c),
        (v) => !v.includes(ours[0]),
        "B drops the registration",
        SYNC_MS,
      );
      const droppedMs = Date.now() - started;
      await direct.set("u:2", "1");
      await b.c.set("u:3", "1");
      await direct.set("mark:1", "1");
      await eventually(
        () => direct.sismember("marks", "mark:1"),
        (n) => n === 1,
        "B still handles its own registration",
        5000,
      );
      await sleep(300);
      expect(
        await direct.hget("u", "u:2"),
        `handled after the unregister (B dropped it after ${droppedMs} ms)`,
      ).to.equal(null);
      expect(await direct.hget("u", "u:3")).to.equal(null);
    });

    it("RG.UNREGISTER on A of a StreamReader registration: B stops consuming (and does not bring the group back)", async () => {
      const a = await startA();
      const b = await startB();
      const script = "GB('StreamReader').foreach(x => execute('SADD', 'sdone', x.id)).register('q')";
      expect(await a.c.call("RG.EXECUTE", script, "ID", "sunreg")).to.equal("OK");
      const ids = await registrations(a.c);
      await eventually(
        () => registrations(b.c),
        (v) => v.join() === ids.join(),
        "B picks the session up",
        SYNC_MS,
      );
      await direct.xadd("q", "*", "n", "1");
      await eventually(
        () => direct.scard("sdone"),
        (n) => n === 1,
        "processed",
        5000,
      );
      // The trim follows the acknowledgement; an unregister between the two would leave entry 1.
      await eventually(
        () => direct.xlen("q"),
        (n) => n === 0,
        "the processed entry trimmed",
        5000,
      );

      expect(await a.c.call("RG.UNREGISTER", ids[0])).to.equal("OK");
      await eventually(
        () => registrations(b.c),
        (v) => v.length === 0,
        "B drops the registration",
        SYNC_MS,
      );
      await direct.xadd("q", "*", "n", "2");
      await b.c.xadd("q", "*", "n", "3");
      await sleep(1500); // a consumer polls once a second
      expect(await direct.scard("sdone"), "entries processed after the unregister").to.equal(1);
      expect(await direct.xlen("q"), "nothing trimmed").to.equal(2);
      expect(
        asArray(await direct.call("XINFO", "GROUPS", "q"), "XINFO GROUPS"),
        "the consumer group is gone",
      ).to.deep.equal([]);
    });
  });
});
