import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { Redis } from "ioredis";
import { DEFAULT_CONFIG } from "../src/config.js";
import { waitUntil } from "./support/polling.js";
import {
  startCluster,
  startProxy,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
} from "./harness/index.js";

/*
 * Cluster resilience against real clusters: a slot resharded by hand under load (ASK, then
 * MOVED), a master killed under write load and failed over to its replica, a master without
 * replica killed and restarted, and TRYAGAIN while a slot's keys are split between two nodes.
 */

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const rand = (n: number): number => Math.floor(Math.random() * n);

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A plain (non-cluster) ioredis client on the proxy that never retries or resends on its own. */
async function connectClient(port: number, opened: Redis[]): Promise<Redis> {
  const client = new Redis({
    port,
    host: "127.0.0.1",
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    retryStrategy: () => null,
  });
  client.on("error", () => {});
  opened.push(client);
  await client.connect();
  return client;
}

/** Rejects when `promise` has not settled within `ms` (a hang is a failure, not a slow pass). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no reply within ${ms} ms (hang)`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One counter of INFO, e.g. stat(node, "errorstats", "errorstat_ASK", "count"); 0 when absent. */
async function stat(node: RedisNode, section: string, name: string, field: string): Promise<number> {
  const text = String(await node.call("INFO", section));
  const m = new RegExp(`^${name}:(?:[^\\r\\n]*,)?${field}=(\\d+)`, "m").exec(text);
  return m === null ? 0 : Number(m[1]);
}

async function nodeId(node: RedisNode): Promise<string> {
  return String(await node.call("CLUSTER", "MYID"));
}

/** The slot -> master port map, as one running node's CLUSTER SLOTS reports it. */
async function slotOwners(cluster: RedisCluster): Promise<(slot: number) => number> {
  const node = cluster.nodes.find((n) => n.running);
  if (node === undefined) throw new Error("no running node");
  const reply = await node.call("CLUSTER", "SLOTS");
  const ranges: [number, number, number][] = [];
  if (Array.isArray(reply)) {
    for (const r of reply) {
      if (Array.isArray(r) && Array.isArray(r[2])) ranges.push([Number(r[0]), Number(r[1]), Number(r[2][1])]);
    }
  }
  return (slot) => ranges.find(([start, end]) => start <= slot && slot <= end)?.[2] ?? -1;
}

/** The replica currently replicating from `master`. */
async function replicaOf(cluster: RedisCluster, master: RedisNode): Promise<RedisNode> {
  for (const replica of await cluster.replicas()) {
    const text = String(await replica.call("INFO", "replication"));
    if (new RegExp(`^master_port:${master.port}\\r?$`, "m").test(text)) return replica;
  }
  throw new Error(`no replica of ${master.port}`);
}

/** Opens the migration of `slot` from `source` to `target` (IMPORTING first, then MIGRATING). */
async function openMigration(source: RedisNode, target: RedisNode, slot: number): Promise<void> {
  await target.call("CLUSTER", "SETSLOT", String(slot), "IMPORTING", await nodeId(source));
  await source.call("CLUSTER", "SETSLOT", String(slot), "MIGRATING", await nodeId(target));
}

async function migrateKeys(source: RedisNode, target: RedisNode, keys: string[]): Promise<void> {
  const reply = await source.call(
    "MIGRATE",
    "127.0.0.1",
    String(target.port),
    "",
    "0",
    "5000",
    "KEYS",
    ...keys,
  );
  expect(reply, `MIGRATE ${keys.join(" ")}`).to.equal("OK");
}

/** Ends a migration: the slot belongs to `target`, told to the target, the source, then the others. */
async function closeMigration(cluster: RedisCluster, source: RedisNode, target: RedisNode, slot: number) {
  const id = await nodeId(target);
  const others = (await cluster.masters()).filter((n) => n !== source && n !== target);
  for (const node of [target, source, ...others]) {
    await node.call("CLUSTER", "SETSLOT", String(slot), "NODE", id);
  }
}

/** The first `count` keys `${prefix}${i}` whose slot is served by a master other than `port`. */
function keysAwayFrom(
  owner: (slot: number) => number,
  port: number,
  prefix: string,
  count: number,
): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < count; i++) {
    const key = `${prefix}${i}`;
    if (owner(calculateSlot(key)) !== port) keys.push(key);
  }
  return keys;
}

describe("cluster resilience", function () {
  const clients: Redis[] = [];
  let cluster: RedisCluster | undefined;
  let proxy: RunningProxy | undefined;

  afterEach(async function () {
    this.timeout(30_000);
    for (const c of clients.splice(0)) c.disconnect();
    await proxy?.close();
    proxy = undefined;
    await cluster?.stop();
    cluster = undefined;
  });

  it("resharding under load: a slot migrated by hand (ASK, then MOVED) loses no write and returns no error", async function () {
    this.timeout(60_000);
    cluster = await startCluster({ masters: 3 });
    proxy = await startProxy([{ port: cluster.nodes[0].port }]);
    const TAG = "{mig}";
    const slot = calculateSlot(TAG);
    const source = await cluster.nodeForSlot(slot);
    const target = (await cluster.masters()).find((n) => n.port !== source.port)!;

    // Keys already in the slot, so the migration has work to do while clients use them.
    const PRE = 300;
    const loader = await connectClient(proxy.port, clients);
    const pipeline = loader.pipeline();
    for (let i = 0; i < PRE; i++) pipeline.set(`${TAG}:pre:${i}`, `v${i}`);
    for (const [err] of (await pipeline.exec()) ?? []) expect(err).to.equal(null);

    const COUNTERS = 10;
    const SET_KEYS = 20;
    const incrOk = new Map<string, number>();
    const lastSet = new Map<string, string>();
    const written = new Set<string>();
    const errors: string[] = [];
    const mismatches: string[] = [];
    const state = { stop: false, migrating: false, ops: 0, slotOpsWhileMigrating: 0 };

    const track = <T>(label: string, key: string, p: Promise<T>, onOk: (v: T) => void): Promise<void> =>
      p.then(
        (v) => {
          state.ops++;
          if (state.migrating && calculateSlot(key) === slot) state.slotOpsWhileMigrating++;
          onOk(v);
        },
        (err: unknown) => {
          errors.push(`${label} ${key}: ${message(err)}`);
        },
      );

    const worker = async (w: number, client: Redis): Promise<void> => {
      let seq = 0;
      while (!state.stop) {
        const value = `${w}:${++seq}`;
        const j1 = rand(SET_KEYS);
        const j2 = (j1 + 1 + rand(SET_KEYS - 1)) % SET_KEYS; // read a key this batch does not write
        const ops: Promise<void>[] = [];
        for (const counter of [`${TAG}:ctr:${rand(COUNTERS)}`, `other:ctr:${rand(COUNTERS)}`]) {
          written.add(counter);
          ops.push(
            track("INCR", counter, client.incr(counter), () =>
              incrOk.set(counter, (incrOk.get(counter) ?? 0) + 1),
            ),
          );
        }
        for (const prefix of [`${TAG}:set:${w}:`, `other:set:${w}:`]) {
          const setKey = `${prefix}${j1}`;
          const readKey = `${prefix}${j2}`;
          written.add(setKey);
          ops.push(track("SET", setKey, client.set(setKey, value), () => lastSet.set(setKey, value)));
          const expected = lastSet.get(readKey) ?? null;
          ops.push(
            track("GET", readKey, client.get(readKey), (got) => {
              if (got !== expected)
                mismatches.push(`GET ${readKey}: ${String(got)}, expected ${String(expected)}`);
            }),
          );
        }
        const pre = rand(PRE);
        ops.push(
          track("GET", `${TAG}:pre:${pre}`, client.get(`${TAG}:pre:${pre}`), (got) => {
            if (got !== `v${pre}`) mismatches.push(`GET ${TAG}:pre:${pre}: ${String(got)}, expected v${pre}`);
          }),
        );
        await Promise.all(ops);
      }
    };

    const workerClients = await Promise.all([0, 1, 2, 3, 4].map(() => connectClient(proxy!.port, clients)));
    const workers = workerClients.map((c, w) => worker(w, c));
    try {
      await sleep(800); // traffic flowing before the migration starts
      await Promise.all([source, target].map((n) => n.call("CONFIG", "RESETSTAT")));
      await openMigration(source, target, slot);
      state.migrating = true;
      let batches = 0;
      for (;;) {
        const keys = await source.call("CLUSTER", "GETKEYSINSLOT", String(slot), "20");
        if (!Array.isArray(keys) || keys.length === 0) break;
        await migrateKeys(source, target, keys.map(String));
        batches++;
        await sleep(40); // let clients hit the half-migrated slot (ASK)
      }
      await closeMigration(cluster, source, target, slot);
      state.migrating = false;
      expect(batches, "MIGRATE batches").to.be.at.least(10);
      await sleep(1000); // clients keep going against the new owner (MOVED, then direct)
    } finally {
      state.stop = true;
      await Promise.all(workers);
    }

    expect(errors, "errors seen by clients").to.deep.equal([]);
    expect(mismatches, "reads that missed an acknowledged write").to.deep.equal([]);
    expect(state.ops, "operations done").to.be.above(500);
    expect(state.slotOpsWhileMigrating, "operations on the slot during the migration").to.be.above(50);

    // The cluster itself shows that the proxy followed ASK (with ASKING) and then MOVED.
    expect(
      await stat(source, "errorstats", "errorstat_ASK", "count"),
      "ASK replies by the source",
    ).to.be.above(0);
    expect(
      await stat(target, "commandstats", "cmdstat_asking", "calls"),
      "ASKING sent to the target",
    ).to.be.above(0);
    const moved = await stat(source, "errorstats", "errorstat_MOVED", "count");
    expect(moved, "MOVED replies by the source").to.be.above(0);

    // No write lost: counters equal the successful INCRs, every SET's last value is there.
    const reader = await connectClient(proxy.port, clients);
    for (const [key, n] of incrOk) expect(await reader.get(key), key).to.equal(String(n));
    for (const [key, v] of lastSet) expect(await reader.get(key), key).to.equal(v);
    // The proxy now sends the slot straight to the target: no new MOVED from the source.
    expect(
      await stat(source, "errorstats", "errorstat_MOVED", "count"),
      "MOVED after the map was fixed",
    ).to.equal(moved);

    // Checked directly: the slot's keys live on the target, none on the source.
    const inSlot = [...written].filter((k) => calculateSlot(k) === slot).length + PRE;
    expect(await source.call("CLUSTER", "COUNTKEYSINSLOT", String(slot))).to.equal(0);
    expect(await target.call("CLUSTER", "COUNTKEYSINSLOT", String(slot))).to.equal(inSlot);
    for (const [key, n] of incrOk) {
      if (calculateSlot(key) === slot)
        expect(await target.call("GET", key), `${key} on the target`).to.equal(String(n));
    }
    for (const [key, v] of lastSet) {
      if (calculateSlot(key) === slot)
        expect(await target.call("GET", key), `${key} on the target`).to.equal(v);
    }
    expect((await cluster.nodeForSlot(slot)).port).to.equal(target.port);
  });

  it("failover under write load: only in-flight commands fail, the proxy follows the promoted replica", async function () {
    this.timeout(80_000);
    cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
    const RETRY_MS = 10_000;
    proxy = await startProxy([{ port: cluster.nodes[0].port }], { clusterRetryTimeoutMs: RETRY_MS });
    const KEYS = Array.from({ length: 300 }, (_, i) => `fo:${i}`);
    const DEPTH = 4;

    interface Op {
      client: number;
      key: string;
      start: number;
      end: number;
      value?: number;
      error?: string;
    }
    const ops: Op[] = [];
    const state = { stop: false };
    const worker = async (w: number, client: Redis): Promise<void> => {
      while (!state.stop) {
        const batch: Promise<void>[] = [];
        for (let d = 0; d < DEPTH; d++) {
          const op: Op = { client: w, key: KEYS[rand(KEYS.length)], start: Date.now(), end: 0 };
          ops.push(op);
          batch.push(
            client.incr(op.key).then(
              (v) => {
                op.end = Date.now();
                op.value = v;
              },
              (err: unknown) => {
                op.end = Date.now();
                op.error = message(err);
              },
            ),
          );
        }
        await Promise.all(batch);
      }
    };
    const workerClients = await Promise.all([0, 1, 2, 3, 4].map(() => connectClient(proxy!.port, clients)));
    const workers = workerClients.map((c, w) => worker(w, c));

    let victim: RedisNode;
    let replica: RedisNode;
    let victimKeys: Set<string>;
    let killStart: number;
    let killed: number;
    let healed: number;
    try {
      await sleep(1000);
      const owner = await slotOwners(cluster);
      victim = await cluster.nodeForSlot(calculateSlot(KEYS[0]));
      replica = await replicaOf(cluster, victim);
      const victimPort = victim.port;
      victimKeys = new Set(KEYS.filter((k) => owner(calculateSlot(k)) === victimPort));
      killStart = Date.now();
      await victim.kill();
      killed = Date.now();
      await cluster.waitForState(true, 30_000);
      healed = Date.now();
      // Load goes on until the promoted replica has answered some of the victim's keys (under a
      // loaded machine that can take longer than any fixed pause), then a little more.
      const promotedAt = healed;
      await waitUntil(
        "a victim-slot command started after the promotion succeeds",
        () => ops.some((o) => o.start >= promotedAt && victimKeys.has(o.key) && o.value !== undefined),
        RETRY_MS + 10_000,
      );
      await sleep(500);
    } finally {
      state.stop = true;
      await Promise.all(workers);
    }
    const failover = `kill at +0, replica promoted at +${healed - killStart} ms`;

    // Errors only for the victim's keys, only around the kill, at most a pipeline's worth per client.
    const failed = ops.filter((o) => o.error !== undefined);
    const describeOp = (o: Op): string =>
      `client ${o.client} ${o.key} started +${o.start - killStart} ended +${o.end - killStart} ms: ${o.error ?? o.value}`;
    for (const o of failed) {
      expect(o.error, describeOp(o)).to.equal("ERR upstream connection lost");
      expect(victimKeys.has(o.key), `error for a key of a live master: ${describeOp(o)}`).to.equal(true);
      expect(o.start, `error for a command sent after the kill: ${describeOp(o)} (${failover})`).to.be.below(
        killed + 500,
      );
      expect(o.end, `late error: ${describeOp(o)}`).to.be.below(killed + 1000);
    }
    // Each of the proxy's connections to the victim notices the loss on its own: a pipeline
    // sent to the second one after the first one failed is lost too (at most one per connection).
    const connections = DEFAULT_CONFIG.upstreamConnections;
    for (let w = 0; w < 5; w++) {
      expect(failed.filter((o) => o.client === w).length, `errors of client ${w}`).to.be.at.most(
        DEPTH * connections,
      );
    }
    // Commands sent during the failover were held and retried, not failed.
    const victimOps = ops.filter((o) => victimKeys.has(o.key) && o.value !== undefined);
    const held = victimOps.filter((o) => o.start >= killed && o.end >= killed + 1000);
    expect(held.length, `commands for the failed slots held until the promotion (${failover})`).to.be.above(
      0,
    );
    const slowest = Math.max(...ops.filter((o) => o.value !== undefined).map((o) => o.end - o.start));
    expect(slowest, "slowest successful command (ms)").to.be.below(RETRY_MS + 3000);
    expect(
      victimOps.filter((o) => o.start >= healed).length,
      "victim-slot commands after the promotion",
    ).to.be.above(0);

    // Every key holds exactly the successful INCRs, plus possibly some of its failed ones.
    const reader = await connectClient(proxy.port, clients);
    const wrong: string[] = [];
    for (const key of KEYS) {
      const mine = ops.filter((o) => o.key === key);
      const ok = mine.filter((o) => o.value !== undefined).length;
      const unsure = mine.length - ok;
      const value = Number((await reader.get(key)) ?? 0);
      if (value < ok || value > ok + unsure)
        wrong.push(`${key}=${value}, ${ok} acknowledged, ${unsure} failed`);
    }
    expect(wrong, "counters off").to.deep.equal([]);

    // The proxy follows the new topology and the failed-over slots take new commands.
    const victimSlot = calculateSlot(KEYS[0]);
    expect((await cluster.nodeForSlot(victimSlot)).port).to.equal(replica.port);
    const fresh = `{${KEYS[0]}}:after`; // same slot as KEYS[0]
    expect(await reader.set(fresh, "new")).to.equal("OK");
    expect(await replica.call("GET", fresh)).to.equal("new");
    const deadline = Date.now() + 5000;
    let info = "";
    while (Date.now() < deadline) {
      info = await reader.info("proxy");
      if (info.includes(`:${replica.port},`) && !info.includes(`:${victim.port},`)) break;
      await sleep(100);
    }
    expect(info, "proxy INFO upstream masters").to.include(`127.0.0.1:${replica.port},role=master`);
    expect(info, "proxy INFO upstream masters").not.to.include(`:${victim.port},`);
  });

  it("a master without replica killed: its slots fail after clusterRetryTimeoutMs, others keep working, and it comes back", async function () {
    this.timeout(60_000);
    // The node timeout of clusters with replicas: this test waits for the cluster to flag the
    // killed master failing.
    cluster = await startCluster({
      masters: 3,
      args: ["--cluster-require-full-coverage", "no", "--cluster-node-timeout", "2000"],
    });
    const RETRY_MS = 1500;
    proxy = await startProxy([{ port: cluster.nodes[0].port }], { clusterRetryTimeoutMs: RETRY_MS });
    const TAG = "{dead}";
    const victim = await cluster.nodeForSlot(calculateSlot(TAG));
    const owner = await slotOwners(cluster);
    // Hashtagged, so that `${key}:n` shares the key's slot.
    const live = keysAwayFrom(owner, victim.port, "live:", 50).map((k) => `{${k}}`);

    const victimId = await nodeId(victim);
    const probe = await connectClient(proxy.port, clients);
    expect(await probe.set(`${TAG}:before`, "1")).to.equal("OK");

    // Background load on the other masters' slots, for the whole test.
    const loadErrors: string[] = [];
    const state = { stop: false, ops: 0, slowest: 0 };
    const worker = async (client: Redis, w: number): Promise<void> => {
      const mine = live.filter((_, i) => i % 2 === w); // each worker writes its own keys
      while (!state.stop) {
        const key = mine[rand(mine.length)];
        const start = Date.now();
        try {
          await client.set(key, String(start));
          expect(await client.get(key)).to.equal(String(start));
          await client.incr(`${key}:n`);
          state.ops++;
        } catch (err) {
          loadErrors.push(`${key} at ${start}: ${message(err)}`);
        }
        state.slowest = Math.max(state.slowest, Date.now() - start);
      }
    };
    const loadClients = await Promise.all([0, 1].map(() => connectClient(proxy!.port, clients)));
    const workers = loadClients.map((c, w) => worker(c, w));

    /** Three commands for the dead slots at once: each must fail, after the retry timeout, not hang. */
    const deadSlotRound = async (round: string): Promise<void> => {
      const calls: [string, () => Promise<unknown>][] = [
        ["GET", () => probe.get(`${TAG}:before`)],
        ["SET", () => probe.set(`${TAG}:x`, "1")],
        ["INCR", () => probe.incr(`${TAG}:n`)],
      ];
      const results = await Promise.all(
        calls.map(async ([name, call]) => {
          const start = Date.now();
          try {
            const v = await within(call(), RETRY_MS + 5000, `${round} ${name}`);
            return { name, ms: Date.now() - start, error: undefined, value: v };
          } catch (err) {
            return { name, ms: Date.now() - start, error: message(err), value: undefined };
          }
        }),
      );
      for (const r of results) {
        const what = `${round} ${r.name}: ${JSON.stringify(r)}`;
        expect(r.error, what).to.be.a("string");
        expect(r.error, what).not.to.match(/no reply within|^(MOVED|ASK) /);
        expect(r.error, what).to.match(/unavailable|CLUSTERDOWN|connection/);
        expect(r.ms, what).to.be.at.least(RETRY_MS - 100);
        expect(r.ms, what).to.be.below(RETRY_MS + 2500);
      }
    };

    try {
      await sleep(300);
      await victim.kill();
      // Let the proxy see its connections close: a command written to a socket whose peer just
      // died has an unknown fate and may rightly get "connection lost" instead.
      await sleep(200);
      await deadSlotRound("right after the kill");

      // Once the cluster has flagged the node as failed, the same holds.
      const flagDeadline = Date.now() + 15_000;
      for (;;) {
        const text = String(await cluster.nodes.find((n) => n.running)!.call("CLUSTER", "NODES"));
        const line = text.split("\n").find((l) => l.startsWith(victimId)) ?? "";
        if (/\bfail\b/.test(line.split(" ")[2] ?? "")) break;
        expect(Date.now(), `node ${victim.port} never flagged fail: ${line}`).to.be.below(flagDeadline);
        await sleep(100);
      }
      await deadSlotRound("after the cluster flagged the node as failed");

      await victim.restart();
      await cluster.waitForState(true, 30_000);
      const back = Date.now();
      let attempts = 0;
      for (;;) {
        attempts++;
        try {
          expect(await within(probe.set(`${TAG}:after`, "2"), RETRY_MS + 5000, "SET after restart")).to.equal(
            "OK",
          );
          break;
        } catch (err) {
          expect(
            Date.now() - back,
            `slot of the restarted node still failing (${attempts} tries): ${message(err)}`,
          ).to.be.below(8000);
          await sleep(200);
        }
      }
      expect(await probe.get(`${TAG}:after`)).to.equal("2");
      expect(await victim.call("GET", `${TAG}:after`)).to.equal("2");
      expect(await probe.incr(`${TAG}:n`)).to.equal(1);
      await sleep(300);
    } finally {
      state.stop = true;
      await Promise.all(workers);
    }
    expect(loadErrors, "errors on the live masters' slots").to.deep.equal([]);
    expect(state.ops, "operations on the live masters' slots").to.be.above(100);
    expect(state.slowest, "slowest operation on a live master's slot (ms)").to.be.below(1000);
  });

  describe("TRYAGAIN while a slot's keys are split between two nodes", function () {
    this.timeout(60_000);
    let shared: RedisCluster | undefined;

    before(async function () {
      shared = await startCluster({ masters: 3 });
    });

    after(async function () {
      this.timeout(30_000);
      await shared?.stop();
    });

    /** A slot mid-migration: `{tag}:a` moved to the target, `{tag}:b` still on the source. */
    async function splitSlot(p: RunningProxy, tag: string) {
      const c = shared!;
      const slot = calculateSlot(tag);
      const source = await c.nodeForSlot(slot);
      const target = (await c.masters()).find((n) => n.port !== source.port)!;
      const client = await connectClient(p.port, clients);
      expect(await client.mset(`${tag}:a`, "A", `${tag}:b`, "B")).to.equal("OK");
      await openMigration(source, target, slot);
      await migrateKeys(source, target, [`${tag}:a`]);
      await Promise.all([source, target].map((n) => n.call("CONFIG", "RESETSTAT")));
      /** TRYAGAIN replies Redis gave since the split (the source or the target, by case). */
      const tryagains = async (): Promise<number> =>
        (await stat(source, "errorstats", "errorstat_TRYAGAIN", "count")) +
        (await stat(target, "errorstats", "errorstat_TRYAGAIN", "count"));
      return { slot, source, target, client, tryagains };
    }

    /** Sends MGET on a split slot and expects TRYAGAIN, no sooner than the retry timeout. */
    async function expectTryagainAfterTimeout(client: Redis, keys: string[], retryMs: number) {
      const start = Date.now();
      const error = await within(client.mget(...keys), retryMs + 5000, "MGET").then(
        (v) => `no error: answered ${JSON.stringify(v)}`,
        (err: unknown) => message(err),
      );
      const elapsed = Date.now() - start;
      expect(error, `MGET ${keys.join(" ")} after ${elapsed} ms`).to.match(/^TRYAGAIN /);
      expect(elapsed, "retried until the timeout").to.be.at.least(retryMs - 100);
      expect(elapsed, "not much later than the timeout").to.be.below(retryMs + 2500);
    }

    it("retries an MGET answered TRYAGAIN and succeeds once the migration finishes", async function () {
      proxy = await startProxy([{ port: shared!.nodes[0].port }], { clusterRetryTimeoutMs: 10_000 });
      const tag = "{try}";
      const { slot, source, target, client, tryagains } = await splitSlot(proxy, tag);

      const start = Date.now();
      const mget = within(client.mget(`${tag}:a`, `${tag}:b`), 15_000, "MGET");
      const exists = within(client.exists(`${tag}:a`, `${tag}:b`), 15_000, "EXISTS");
      void mget.catch(() => {});
      void exists.catch(() => {});
      const FINISH_AFTER = 1000;
      await sleep(FINISH_AFTER);
      // Redis has really been answering TRYAGAIN to the proxy meanwhile.
      expect(await tryagains(), "TRYAGAIN replies from Redis").to.be.above(1);
      await migrateKeys(source, target, [`${tag}:b`]);
      await closeMigration(shared!, source, target, slot);

      expect(await mget).to.deep.equal(["A", "B"]);
      expect(await exists).to.equal(2);
      const elapsed = Date.now() - start;
      expect(elapsed, "MGET waited for the migration").to.be.at.least(FINISH_AFTER);
      expect(elapsed, "MGET answered soon after the migration").to.be.below(FINISH_AFTER + 3000);
    });

    it("answers TRYAGAIN only once clusterRetryTimeoutMs has passed when the split persists (source answers TRYAGAIN)", async function () {
      const RETRY_MS = 5000;
      proxy = await startProxy([{ port: shared!.nodes[0].port }], { clusterRetryTimeoutMs: RETRY_MS });
      const tag = "{stuck}";
      const { client, tryagains } = await splitSlot(proxy, tag);
      // The source holds :b and not :a, so it answers TRYAGAIN itself.
      await expectTryagainAfterTimeout(client, [`${tag}:a`, `${tag}:b`], RETRY_MS);
      expect(await tryagains(), "TRYAGAIN replies from Redis").to.be.above(1);
    });

    it("answers TRYAGAIN only once clusterRetryTimeoutMs has passed when the split persists (target answers TRYAGAIN after ASK)", async function () {
      const RETRY_MS = 5000;
      proxy = await startProxy([{ port: shared!.nodes[0].port }], { clusterRetryTimeoutMs: RETRY_MS });
      const tag = "{asked}";
      const { target, client, tryagains } = await splitSlot(proxy, tag);
      // :a is on the target and :none exists nowhere: the source (holding neither) answers ASK,
      // the target (after ASKING) answers TRYAGAIN because :none is missing.
      await expectTryagainAfterTimeout(client, [`${tag}:a`, `${tag}:none`], RETRY_MS);
      expect(
        await stat(target, "errorstats", "errorstat_TRYAGAIN", "count"),
        "TRYAGAIN from the target",
      ).to.be.above(1);
      expect(await tryagains()).to.be.above(1);
    });
  });
});
