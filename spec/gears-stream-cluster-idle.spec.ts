import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { Redis } from "ioredis";
import { TestClients } from "./support/test-clients.js";
import {
  startCluster,
  startProxy,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
} from "./harness/index.js";
import { eventually, sleep } from "./support/registrations.js";
import { startRawMonitor } from "./support/raw-client.js";
import { deleteLibraries, tfLibrary } from "./support/tf.js";

/**
 * Session 15, "idle streams in a cluster cost per node": the sweep reads every idle stream a
 * master owns, whatever their slots, in one script call per node (Redis >= 7.0,
 * allow-cross-slot-keys), not one XREADGROUP per slot (about one per stream, their slots
 * being all different). What that must keep: new entries still reach the handler at once, a
 * slot migrated under it still delivers every entry once and in order, and a node that
 * refuses the script (an ACL user without EVALSHA) is read per slot, the script not tried
 * again every second.
 */

/** `calls` and `rejected_calls` of one command, summed over the nodes (INFO commandstats). */
async function calls(nodes: RedisNode[], command: string): Promise<{ calls: number; rejected: number }> {
  let total = 0;
  let rejected = 0;
  for (const node of nodes) {
    const text = String(await node.call("INFO", "commandstats"));
    const m = new RegExp(`^cmdstat_${command}:calls=(\\d+).*?rejected_calls=(\\d+)`, "m").exec(text);
    if (m !== null) {
      total += Number(m[1]);
      rejected += Number(m[2]);
    }
  }
  return { calls: total, rejected };
}

/** XREADGROUPs the nodes receive from clients (not those a script runs) over `ms`, by MONITOR. */
async function clientReads(nodes: RedisNode[], ms: number): Promise<number> {
  const monitors = await Promise.all(nodes.map((node) => startRawMonitor(node.port)));
  await sleep(ms);
  for (const m of monitors) m.close();
  // A line: +<time> [<db> <source>] "XREADGROUP" ...; a script's calls show source "lua".
  return monitors
    .flatMap((m) => m.lines)
    .filter((line) => /^\+\S+ \[\d+ (\S+)\] "xreadgroup"/i.test(line) && !/^\+\S+ \[\d+ lua\]/.test(line))
    .length;
}

describe("gears StreamReader in a cluster: idle streams read by one script per node", function () {
  this.timeout(120_000);
  let cluster: RedisCluster;
  let masters: RedisNode[];
  let proxy: RunningProxy | undefined;
  const clients = new TestClients();

  const client = (port: number): Redis => clients.quiet(port);

  before(async () => {
    cluster = await startCluster({ masters: 3 });
    masters = await cluster.masters();
  });

  afterEach(async () => {
    clients.closeAll();
    await proxy?.close();
    proxy = undefined;
    for (const node of masters) {
      await node.call("ACL", "SETUSER", "default", "+@all");
      await node.call("FLUSHALL");
    }
  });

  after(async () => {
    await cluster?.stop();
  });

  /**
   * `n` streams `${prefix}<i>` (and the `extra` ones) with one entry each, written through the
   * proxy, and a registration counting entries.
   */
  async function idleStreams(prefix: string, n: number, extra: string[] = []): Promise<Redis> {
    proxy = await startProxy([{ port: masters[0].port }]);
    const io = client(proxy.port);
    const p = io.pipeline();
    for (let i = 0; i < n; i++) p.xadd(`${prefix}${i}`, "*", "n", String(i));
    for (const key of extra) p.xadd(key, "*", "n", "extra");
    await p.exec();
    await io.call(
      "RG.EXECUTE",
      `GB('StreamReader').foreach(x => execute('INCR', '{seen}')).register('${prefix}*')`,
    );
    await eventually(
      async () => Number(await io.get("{seen}")),
      (v) => v === n + extra.length,
      "every stream's entry handled",
      60_000,
    );
    return io;
  }

  it("300 idle streams on some 300 slots: a few EVALSHA a second per node, no XREADGROUP per stream", async () => {
    const n = 300;
    const slots = new Set(Array.from({ length: n }, (_, i) => calculateSlot(`idle:${i}`)));
    expect(slots.size, "distinct slots").to.be.above(250);
    const io = await idleStreams("idle:", n - 1, ["idle:{r}"]);
    await sleep(2500);
    const before = await calls(masters, "evalsha");
    await sleep(4000);
    const after = await calls(masters, "evalsha");
    const perSecond = (after.calls - before.calls) / 4;
    // One read a second on each of the 3 masters, and now and then a look for pending entries.
    expect(perSecond, "EVALSHA/s summed over the masters").to.be.within(2, 12);
    expect(after.rejected, "EVALSHA refused").to.equal(0);
    // Before: one XREADGROUP a second per slot, here about 300 a second.
    const reads = await clientReads(masters, 2500);
    expect(reads, "XREADGROUPs sent by clients in 2.5 s").to.be.below(20);
    // The scripts gone from the servers (a restart, a failover, SCRIPT FLUSH): NOSCRIPT, loaded
    // again, not taken for a refusal.
    for (const node of masters) await node.call("SCRIPT", "FLUSH");
    await sleep(1500);
    expect(await clientReads(masters, 2000), "XREADGROUPs sent by clients after SCRIPT FLUSH").to.be.below(
      20,
    );
    // An entry no notification tells of (the stream replaced by RESTORE: a "restore" event,
    // not "xadd"): the sweep alone finds it, and it reads by script.
    await io.call("COPY", "idle:{r}", "tmp:{r}");
    await io.xadd("tmp:{r}", "*", "n", "restored");
    const restored = Date.now();
    await io.call("RESTORE", "idle:{r}", "0", await io.dumpBuffer("tmp:{r}"), "REPLACE");
    await eventually(
      async () => Number(await io.get("{seen}")),
      (v) => v === n + 1,
      "the restored entry handled",
    );
    expect(Date.now() - restored, "ms to find the restored entry").to.be.below(2500);
    // A new entry still reaches the handler at once.
    const start = Date.now();
    await io.xadd("idle:150", "*", "n", "again");
    await eventually(
      async () => Number(await io.get("{seen}")),
      (v) => v === n + 2,
      "the new entry handled",
    );
    expect(Date.now() - start, "ms to handle the new entry").to.be.below(2000);
  });

  it("a slot migrated while entries are written: every entry handled once, in order", async () => {
    const n = 60;
    const io = await idleStreams("mig:", n);
    await io.call(
      "RG.EXECUTE",
      "GB('StreamReader').foreach(x => execute('RPUSH', '{order}:' + x.key, x.value.n)).register('mig:*')",
      "ID",
      "order",
    );
    const key = "mig:7";
    const slot = calculateSlot(key);
    const source = await cluster.nodeForSlot(slot);
    const target = masters.find((m) => m.port !== source.port)!;
    const written: string[] = [];
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        await io.xadd(key, "*", "n", String(i));
        written.push(String(i));
        await sleep(5);
      }
    })();
    await sleep(1500);
    const id = async (node: RedisNode): Promise<string> => String(await node.call("CLUSTER", "MYID"));
    await target.call("CLUSTER", "SETSLOT", String(slot), "IMPORTING", await id(source));
    await source.call("CLUSTER", "SETSLOT", String(slot), "MIGRATING", await id(target));
    await sleep(1000);
    expect(
      await source.call("MIGRATE", "127.0.0.1", String(target.port), "", "0", "5000", "KEYS", key),
    ).to.equal("OK");
    await sleep(1000);
    for (const node of [target, source, ...masters.filter((m) => m !== source && m !== target)])
      await node.call("CLUSTER", "SETSLOT", String(slot), "NODE", await id(target));
    await sleep(1500);
    stop = true;
    await writer;
    // The registration made before the migration reads the other streams too: only mig:7 had new entries.
    const order = await eventually(
      () => io.lrange(`{order}:${key}`, 0, -1),
      (l) => l.length >= written.length,
      "every entry of the migrated stream handled",
      30_000,
    );
    await sleep(1500);
    // Not its first entry (n 7): the first registration handled it, and trimmed the stream, before.
    const expected = written;
    expect(await io.lrange(`{order}:${key}`, 0, -1), "once each, in order").to.deep.equal(expected);
    expect(order.length).to.equal(expected.length);
    expect(written.length, "entries written").to.be.above(100);
  });

  it("a T&F stream trigger on 200 streams of many slots: read by the per-node script too", async () => {
    proxy = await startProxy([{ port: masters[0].port }]);
    const io = client(proxy.port);
    const p = io.pipeline();
    for (let i = 0; i < 199; i++) p.xadd(`tf:${i}`, "*", "n", String(i));
    p.xadd("tf:{r}", "*", "n", "r");
    await p.exec();
    const code = tfLibrary(
      "idlecount",
      `redis.registerStreamTrigger('t', 'tf:', function(client, data){ client.call('incr', '{tfseen}'); });`,
    );
    expect(await io.call("TFUNCTION", "LOAD", code)).to.equal("OK");
    try {
      await eventually(
        async () => Number(await io.get("{tfseen}")),
        (v) => v === 200,
        "every stream's entry handled",
        60_000,
      );
      await sleep(2500);
      const before = await calls(masters, "evalsha");
      await sleep(3000);
      expect(((await calls(masters, "evalsha")).calls - before.calls) / 3, "EVALSHA/s").to.be.within(2, 12);
      expect(await clientReads(masters, 2000), "XREADGROUPs sent by clients in 2 s").to.be.below(20);
      // An entry no xadd notification tells of (see the first test): the script finds it.
      await io.call("COPY", "tf:{r}", "tmp:{r}");
      await io.xadd("tmp:{r}", "*", "n", "restored");
      await io.call("RESTORE", "tf:{r}", "0", await io.dumpBuffer("tmp:{r}"), "REPLACE");
      await eventually(
        async () => Number(await io.get("{tfseen}")),
        (v) => v === 201,
        "the restored entry handled",
      );
    } finally {
      await deleteLibraries(io);
    }
  });

  it("a user that may not EVALSHA: streams read per slot, the script not tried again every second", async () => {
    for (const node of masters) await node.call("ACL", "SETUSER", "default", "-evalsha");
    const n = 100;
    const io = await idleStreams("acl:", n);
    await sleep(2500);
    const before = await calls(masters, "evalsha");
    // Tried once per node (a read, and maybe a look for pending entries), then not again for a while.
    expect(before.rejected, "EVALSHA refused so far").to.be.within(1, 6);
    const reads = await clientReads(masters, 3000);
    const after = await calls(masters, "evalsha");
    expect(after.rejected - before.rejected, "EVALSHA tried again within 3 s").to.equal(0);
    // The per-slot path: about one XREADGROUP a second per stream.
    expect(reads, "XREADGROUPs sent by clients in 3 s").to.be.above(150);
    await io.xadd("acl:42", "*", "n", "again");
    await eventually(
      async () => Number(await io.get("{seen}")),
      (v) => v === n + 1,
      "the new entry handled",
    );
  });
});
