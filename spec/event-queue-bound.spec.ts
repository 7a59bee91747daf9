import { expect } from "chai";
import { Cluster, Redis } from "ioredis";
import v8 from "node:v8";
import vm from "node:vm";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { metricsPage, sample } from "./support/metrics.js";
import { eventually, execute, fields, num, onlyRegistrationOf, sleep } from "./support/registrations.js";
import { tfLibrary } from "./support/tf.js";

/**
 * Event queues under writes that outrun their handler (src/gears/events/event-queue.ts,
 * MaxQueuedEvents): what a queued event costs, writes through the proxy held back at the
 * bound, writes straight to the shards queuing past it (counted, none lost), for KeysReader
 * registrations and T&F keyspace triggers; against real redis-server, standalone and a
 * 3-master cluster.
 */

v8.setFlagsFromString("--expose-gc");
/** A full GC, to read the live heap (the proxy runs in this process). */
const gc = vm.runInNewContext("gc") as () => void;

/** Heap and off-heap memory (typed arrays, Buffers) live after a full GC. */
function liveBytes(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

/**
 * A handler held on its first event (`<prefix>first`) until `{<prefix>}release` exists: every
 * later event waits in the queue meanwhile. Counts the events it handles in `{<prefix>}count`:
 * an INCR each, or with `countEvery` n the session's own count, SET there at every nth event
 * (140,000 INCRs took 30 s of the memory test; the count only reaches the total once the
 * handler ran that many times either way).
 */
function heldHandler(prefix: string, mode = "async", countEvery = 1): string {
  const count =
    countEvery === 1
      ? `execute('INCR', '{${prefix}}count')`
      : `{ handled++; if (handled % ${countEvery} === 0) execute('SET', '{${prefix}}count', String(handled)); }`;
  return `var handled = 0; GB().foreach(x => {
      if (x.key === '${prefix}first')
        while (execute('GET', '{${prefix}}release') === null) { const t = Date.now(); while (Date.now() - t < 20) {} }
      else ${count};
    }).register('${prefix}*', {mode: '${mode}'})`;
}

/** RG.DUMPREGISTRATIONS' RegistrationData of a registration. */
async function dataOf(io: Redis, id: string): Promise<Map<string, unknown>> {
  const regs = (await io.call("RG.DUMPREGISTRATIONS")) as unknown[];
  for (const r of regs) {
    const f = fields(r, "registration");
    if (f.get("id") === id) return fields(f.get("RegistrationData"), "RegistrationData");
  }
  throw new Error(`no registration ${id}`);
}

for (const mode of BACKEND_MODES) {
  describe(`event queues past their bound (MaxQueuedEvents): ${Backend.label(mode)}`, function () {
    this.timeout(120_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let io: Redis;
    /** Writes straight to the shards, past the proxy. */
    let direct: Redis | Cluster;

    /** `keys` SET to "v" straight on the shards, pipelined. */
    async function writeDirect(keys: string[]): Promise<void> {
      for (let i = 0; i < keys.length; i += 5000)
        await Promise.all(keys.slice(i, i + 5000).map((k) => direct.set(k, "v")));
    }

    before(async function () {
      this.timeout(90_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }], { metricsPort: 0 });
      io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      direct =
        mode === "cluster"
          ? new Cluster([{ host: "127.0.0.1", port: backend.seed.port }], { enableAutoPipelining: true })
          : new Redis({ port: backend.seed.port, host: "127.0.0.1", enableAutoPipelining: true });
    });

    afterEach(async () => {
      for (const r of (await io.call("RG.DUMPREGISTRATIONS")) as unknown[])
        await io.call("RG.UNREGISTER", String(fields(r, "registration").get("id")));
      const libs = (await io.call("TFUNCTION", "LIST")) as unknown[][];
      for (const l of libs) await io.call("TFUNCTION", "DELETE", String(l[l.indexOf("name") + 1]));
      await io.call("RG.CONFIGSET", "MaxQueuedEvents", "100000", "ScriptTimeoutMS", "5000");
      await io.call("CONFIG", "SET", "redisgears_2.lock-redis-timeout", "500");
    });

    after(async () => {
      io?.disconnect();
      direct?.disconnect();
      await proxy?.close();
      await backend?.stop();
    });

    it("MaxQueuedEvents: 100000 by default, set with RG.CONFIGSET, at least 1", async () => {
      expect(await io.call("RG.CONFIGGET", "MaxQueuedEvents")).to.deep.equal([100000]);
      const refused = (await io.call("RG.CONFIGSET", "MaxQueuedEvents", "0")) as unknown[];
      expect(String(refused[0])).to.match(/Failed setting config value MaxQueuedEvents/);
      expect(await io.call("RG.CONFIGSET", "MaxQueuedEvents", "2000")).to.deep.equal(["OK"]);
      expect(await io.call("RG.CONFIGGET", "MaxQueuedEvents")).to.deep.equal([2000]);
    });

    // Standalone only: a queued event's cost is event-queue.ts's columns (the shard a number among
    // them), the same whatever the mode; on a cluster it took as long again (35 s of CI) for the
    // same figure. Queues on a cluster are held, bounded and drained by the tests below.
    if (mode === "standalone")
      it("a queued event costs the proxy little memory: 100,000 events waiting behind 40,000, under 120 bytes each", async () => {
        expect(await io.call("RG.CONFIGSET", "ScriptTimeoutMS", "120000")).to.deep.equal(["OK"]);
        // 140,000 events: a multiple of the count's step.
        expect(await execute(io, heldHandler("mq:", "async", 1000), "ID", "memory")).to.equal("OK");
        const reg = await onlyRegistrationOf(io, "memory");
        await io.set("mq:first", "v");
        await eventually(
          () => dataOf(io, reg.id),
          (d) => d.get("numQueued") === 1,
          "the handler holds its first event",
        );
        // The first events of a queue stay the objects they came as (event-queue.ts,
        // OBJECT_EVENTS): what is measured is the cost of each event past them.
        const first = Array.from({ length: 40_000 }, (_, i) => `mq:a${i}`);
        await writeDirect(first);
        await eventually(
          () => dataOf(io, reg.id),
          (d) => d.get("numQueued") === first.length + 1,
          "the first events queued",
          60_000,
        );
        const more = Array.from({ length: 100_000 }, (_, i) => `mq:${i}`);
        const before = liveBytes();
        await writeDirect(more);
        await eventually(
          () => dataOf(io, reg.id),
          (d) => d.get("numQueued") === first.length + more.length + 1,
          "every event queued",
          60_000,
        );
        const perEvent = (liveBytes() - before) / more.length;
        // A KeyEvent object with its key Buffer took about 230 bytes (bench/event-queue-memory.ts).
        expect(perEvent, `${perEvent.toFixed(0)} bytes per queued event`).to.be.below(120);
        const keys = [...first, ...more];
        await io.set("{mq:}release", "1");
        await eventually(
          () => io.get("{mq:}count"),
          (v) => v === String(keys.length),
          "every event handled once released",
          90_000,
        );
      });

    // async_local keeps a queue per shard (registry.ts localQueues): the bound counts them all.
    for (const [regMode, p] of [
      ["async", "bp:"],
      ["async_local", "bpl:"],
    ] as const)
      it(`${regMode}: a writer through the proxy waits at the bound until the handler catches up; every event is handled`, async () => {
        expect(
          await io.call("RG.CONFIGSET", "MaxQueuedEvents", "1000", "ScriptTimeoutMS", "60000"),
        ).to.deep.equal(["OK", "OK"]);
        expect(await execute(io, heldHandler(p, regMode), "ID", `backpressure-${regMode}`)).to.equal("OK");
        const reg = await onlyRegistrationOf(io, `backpressure-${regMode}`);
        await io.set(`${p}first`, "v");
        await eventually(
          () => dataOf(io, reg.id),
          (d) => d.get("numQueued") === 1,
          "the handler holds its first event",
        );
        // Under the bound a write through the proxy does not wait.
        expect(await io.set(`${p}under`, "v")).to.equal("OK");
        // async_local: enough that the held shard's own queue (a third of them, none taken
        // into a batch while its first event runs) is past the bound, whatever the others take.
        const keys = Array.from({ length: regMode === "async_local" ? 4500 : 1500 }, (_, i) => `${p}${i}`);
        await writeDirect(keys);
        await eventually(
          () => dataOf(io, reg.id),
          (d) => d.get("numQueued") === keys.length + 2,
          "the direct writes' events queued",
        );
        // At the bound: the write is done on the shard, its reply waits for the handler.
        const writer = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
        try {
          let answered = false;
          const reply = writer.set(`${p}held`, "v").then((r) => {
            answered = true;
            return r;
          });
          await sleep(1000);
          expect(answered, "the write through the proxy waits while the queue is at its bound").to.equal(
            false,
          );
          expect(await direct.get(`${p}held`), "the write itself is done").to.equal("v");
          const data = await dataOf(io, reg.id);
          // async_local on a cluster: each other shard's queue takes its next events (up to a
          // batch) ahead into a batch that reads their records while it waits for the isolate;
          // those wait in the batch, not in the queue, so fewer are counted past the bound.
          const over = keys.length + 2 - 1000;
          expect(num(data.get("numQueuedOverBound"), "numQueuedOverBound"), "events queued past the bound")
            .to.be.at.most(over)
            .and.at.least(regMode === "async_local" && mode === "cluster" ? 1 : over);
          await io.set(`{${p}}release`, "1");
          expect(await reply).to.equal("OK");
          // Its reply came once the events past the bound ahead of it had run.
          expect(Number(await io.get(`{${p}}count`))).to.be.at.least(keys.length + 2 - 1000);
        } finally {
          writer.disconnect();
        }
        await eventually(
          () => io.get(`{${p}}count`),
          (v) => v === String(keys.length + 2),
          "every event handled, none lost",
          60_000,
        );
        const data = await dataOf(io, reg.id);
        expect(data.get("numQueued")).to.equal(0);
        expect(num(data.get("numFailures"), "numFailures")).to.equal(0);
      });

    it("writers straight to the shards: their events queue past the bound, counted, and all run once the overload ends", async () => {
      expect(
        await io.call("RG.CONFIGSET", "MaxQueuedEvents", "1000", "ScriptTimeoutMS", "60000"),
      ).to.deep.equal(["OK", "OK"]);
      expect(await execute(io, heldHandler("ov:"), "ID", "overload")).to.equal("OK");
      const reg = await onlyRegistrationOf(io, "overload");
      await io.set("ov:first", "v");
      await eventually(
        () => dataOf(io, reg.id),
        (d) => d.get("numQueued") === 1,
        "the handler holds its first event",
      );
      const keys = Array.from({ length: 5000 }, (_, i) => `ov:${i}`);
      await writeDirect(keys);
      const over = await eventually(
        () => dataOf(io, reg.id),
        (d) => d.get("numQueued") === keys.length + 1,
        "the direct writes' events queued, past the bound",
      );
      expect(over.get("numQueuedOverBound")).to.equal(keys.length - 1000);
      const labels = `{registration="${reg.id}",reader="KeysReader"}`;
      expect(
        sample(await metricsPage(proxy), `gears_proxy_gears_registration_events_over_bound_total${labels}`),
      ).to.equal(keys.length - 1000);
      await io.set("{ov:}release", "1");
      await eventually(
        () => io.get("{ov:}count"),
        (v) => v === String(keys.length),
        "every event handled once the overload ended",
        60_000,
      );
      const data = await eventually(
        () => dataOf(io, reg.id),
        (d) => d.get("numQueued") === 0,
        "the queue empty",
      );
      expect(num(data.get("numSuccess"), "numSuccess")).to.equal(keys.length + 1);
      expect(num(data.get("numFailures"), "numFailures")).to.equal(0);
      // Under the bound again: a write through the proxy does not wait.
      expect(await io.set("ov:after", "v")).to.equal("OK");
    });

    it("a registration unregistered while its queue is past the bound holds writes through the proxy back no more", async () => {
      expect(
        await io.call("RG.CONFIGSET", "MaxQueuedEvents", "100", "ScriptTimeoutMS", "60000"),
      ).to.deep.equal(["OK", "OK"]);
      expect(await execute(io, heldHandler("ur:"), "ID", "unreg")).to.equal("OK");
      const reg = await onlyRegistrationOf(io, "unreg");
      await io.set("ur:first", "v");
      await writeDirect(Array.from({ length: 300 }, (_, i) => `ur:${i}`));
      await eventually(
        () => dataOf(io, reg.id),
        (d) => d.get("numQueued") === 301,
        "past the bound",
      );
      expect(await io.call("RG.UNREGISTER", reg.id)).to.equal("OK");
      const started = Date.now();
      expect(await io.set("ur:after", "v")).to.equal("OK");
      expect(Date.now() - started, "the write answered at once").to.be.below(1000);
    });

    it("a value over 1 KB set through the proxy (not kept in the queue) still reaches the handler, read from the key", async () => {
      const script = `GB().foreach(x => execute('RPUSH', '{lv}:lengths', String(x.value.length))).register('lv:*')`;
      expect(await execute(io, script, "ID", "longvalue")).to.equal("OK");
      expect(await io.set("lv:long", "x".repeat(5000))).to.equal("OK");
      expect(await io.set("lv:short", "y".repeat(10))).to.equal("OK");
      await eventually(
        () => io.lrange("{lv}:lengths", 0, -1),
        (v) => v.length === 2,
        "both events handled",
      );
      expect(await io.lrange("{lv}:lengths", 0, -1)).to.deep.equal(["5000", "10"]);
    });

    it("T&F: writes straight to the shards queue past the bound (num_queued_over_bound), a write through the proxy waits for them, all run", async () => {
      expect(await io.call("RG.CONFIGSET", "MaxQueuedEvents", "1000")).to.deep.equal(["OK"]);
      expect(await io.call("CONFIG", "SET", "redisgears_2.lock-redis-timeout", "5000")).to.equal("OK");
      const code = tfLibrary(
        "tq",
        `redis.registerKeySpaceTrigger('count', 'tq:', function (client, data) {
           if (data.key === 'tq:first') { const t = Date.now(); while (Date.now() - t < 2000) {} }
           else client.call('incr', '{tq}:count');
         });`,
      );
      expect(await io.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const stats = async (): Promise<Map<string, unknown>> => {
        const list = (await io.call("TFUNCTION", "LIST", "LIBRARY", "tq", "v")) as unknown[][];
        const lib = list[0];
        const triggers = lib[lib.indexOf("keyspace_triggers") + 1] as unknown[][];
        return fields(triggers[0], "trigger");
      };
      // Straight to the shard: a write through the proxy would wait for the 2 s trigger.
      await direct.set("tq:first", "v");
      await sleep(200);
      const keys = Array.from({ length: 3000 }, (_, i) => `tq:${i}`);
      await writeDirect(keys);
      await eventually(
        stats,
        (s) => s.get("num_queued_over_bound") === keys.length - 1000,
        "the events past the bound counted",
      );
      // Writes through the proxy wait for every trigger queued before them.
      expect(await io.set("tq:proxy", "v")).to.equal("OK");
      expect(Number(await io.get("{tq}:count"))).to.be.at.least(keys.length);
      await eventually(
        stats,
        (s) => s.get("num_finished") === keys.length + 2,
        "every event finished, none lost",
        60_000,
      );
      const s = await stats();
      expect(s.get("num_failed")).to.equal(0);
      expect(await io.get("{tq}:count")).to.equal(String(keys.length + 1));
    });
  });
}
