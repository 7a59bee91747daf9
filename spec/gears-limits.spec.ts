import { performance } from "node:perf_hooks";
import { expect } from "chai";
import { Redis, type RedisOptions } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { asArray, connect, execAll, outcome, rejection, run, str, type Reply } from "./support/gears.js";

/**
 * Gears executions against real redis-server, standalone and a 3-master cluster: script limits
 * (time, memory, stack) that end one execution and nothing else, UNBLOCKING executions and the
 * commands that watch, fetch, abort and drop them, configuration, cluster info.
 */

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A flat [name, value, ...] array as a lookup. */
function fields(flat: Reply[]): Map<string, Reply> {
  const out = new Map<string, Reply>();
  for (let i = 0; i + 1 < flat.length; i += 2) out.set(str(flat[i]), flat[i + 1]);
  return out;
}

/** A step that burns `ms` of CPU per record (wall clock, so it is the same on every machine). */
const busy = (ms: number): string => `const t0 = Date.now(); while (Date.now() - t0 < ${ms}) {}`;

const SLOW_KEYS = 3000;
const MB = 1024 * 1024;

interface Load<T> {
  value: T;
  /** The slowest SET+GET round trip of the other client during the work, in ms. */
  maxLatencyMs: number;
  /** SET+GET pairs answered during the work. */
  pairs: number;
  /** Peak RSS of this process (proxy, isolates' worker threads, tests) above the start, in MB. */
  rssGrowthMb: number;
  elapsedMs: number;
}

for (const mode of BACKEND_MODES) {
  describe(`gears limits and executions: ${Backend.label(mode)} behind the proxy`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let io: Redis;
    let masters: Redis[] = [];
    const clients: Redis[] = [];

    function client(options: RedisOptions = {}): Redis {
      const c = connect(proxy.port, options);
      clients.push(c);
      return c;
    }

    /** Runs `work` while another client does SET/GET in a loop; measures its latency and RSS. */
    async function underLoad<T>(work: () => Promise<T>): Promise<Load<T>> {
      const other = client();
      await other.ping();
      const rss0 = process.memoryUsage().rss;
      let peak = rss0;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
      let stop = false;
      let maxLatencyMs = 0;
      let pairs = 0;
      const loop = (async () => {
        for (let i = 0; !stop; i++) {
          const t = performance.now();
          await other.set("load:key", String(i));
          const v = await other.get("load:key");
          maxLatencyMs = Math.max(maxLatencyMs, performance.now() - t);
          if (v !== String(i)) throw new Error(`GET gave ${v}, expected ${i}`);
          pairs++;
          await sleep(2);
        }
      })();
      const start = performance.now();
      try {
        const value = await work();
        return {
          value,
          maxLatencyMs,
          pairs,
          rssGrowthMb: (peak - rss0) / MB,
          elapsedMs: performance.now() - start,
        };
      } finally {
        stop = true;
        await loop;
        clearInterval(sampler);
        other.disconnect();
      }
    }

    /** The proxy still runs scripts correctly. */
    async function stillWorks(): Promise<void> {
      const out = await run(io, "GB('KeysOnlyReader').count().run('slow:*')");
      expect(out).to.deep.equal({ results: [String(SLOW_KEYS)], errors: [] });
    }

    async function configSet(name: string, value: string): Promise<void> {
      expect(await io.call("RG.CONFIGSET", name, value)).to.deep.equal(["OK"]);
    }

    /** The plan of RG.GETEXECUTION's first entry, as a lookup. */
    async function planOf(id: string): Promise<Map<string, Reply>> {
      const entries = asArray(await io.call("RG.GETEXECUTION", id), "RG.GETEXECUTION");
      const entry = fields(asArray(entries[0], "entry"));
      return fields(asArray(entry.get("execution_plan"), "execution_plan"));
    }

    async function statusOf(id: string): Promise<string> {
      return str((await planOf(id)).get("status"));
    }

    async function unblocking(script: string): Promise<string> {
      return str(await io.call("RG.EXECUTE", script, "UNBLOCKING"));
    }

    before(async function () {
      this.timeout(90_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      io = client();
      masters = (await backend.masters()).map((n) => connect(n.port));
      const p = io.pipeline();
      for (let i = 0; i < SLOW_KEYS; i++) p.set(`slow:${i}`, String(i));
      await execAll(p);
    });

    after(async () => {
      for (const c of [...clients, ...masters]) c.disconnect();
      await proxy?.close();
      await backend?.stop();
    });

    describe("configuration", () => {
      it("RG.CONFIGGET answers the built-in settings as integers, with the spec's defaults", async () => {
        const names = [
          "MaxExecutions",
          "MaxExecutionsPerRegistration",
          "ProfileExecutions",
          "ExecutionMaxIdleTime",
          "ScriptMemoryLimitMB",
          "ScriptTimeoutMS",
        ];
        expect(await io.call("RG.CONFIGGET", ...names)).to.deep.equal([1000, 100, 0, 5000, 64, 5000]);
        const unknown = asArray(await io.call("RG.CONFIGGET", "NoSuchSetting", "MaxExecutions"), "CONFIGGET");
        expect(unknown[0]).to.be.instanceOf(Error);
        expect((unknown[0] as Error).message).to.include("Unsupported config parameter: NoSuchSetting");
        expect(unknown[1]).to.equal(1000);
      });

      it("RG.CONFIGSET sets built-ins and stores other names, readable from a script with configGet", async () => {
        const value = `v-${process.pid}-${Date.now()}`;
        expect(await io.call("RG.CONFIGSET", "MyExtraSetting", value, "MaxExecutions", "900")).to.deep.equal([
          "OK - value was saved in extra config dictionary",
          "OK",
        ]);
        expect(await io.call("RG.CONFIGGET", "MaxExecutions", "MyExtraSetting")).to.deep.equal([900, value]);
        const bad = asArray(await io.call("RG.CONFIGSET", "MaxExecutions", "lots"), "CONFIGSET");
        expect(bad[0]).to.be.instanceOf(Error);
        expect(await io.call("RG.CONFIGGET", "MaxExecutions")).to.deep.equal([900]);
        await configSet("MaxExecutions", "1000");
        const out = await run(
          io,
          "GB('ShardsIDReader').map(() => [configGet('MyExtraSetting'), gearsConfigGet('NotSetAnywhere', 'fallback'), gearsConfigGet('MyExtraSetting', 'unused')]).run()",
        );
        expect(out.errors).to.deep.equal([]);
        expect(out.results).to.have.length(masters.length);
        for (const r of out.results) expect(JSON.parse(str(r))).to.deep.equal([value, "fallback", value]);
      });
    });

    describe("limits: each ends its own execution only", () => {
      afterEach(async () => {
        await configSet("ScriptTimeoutMS", "5000");
        await configSet("ScriptMemoryLimitMB", "64");
      });

      it("while(true){} in a step times out with 'script timed out after N ms in map at script:L'", async () => {
        await configSet("ScriptTimeoutMS", "500");
        const load = await underLoad(() =>
          run(io, "const unused = 1;\nGB('KeysOnlyReader').map(k => { while (true) {} }).run('slow:1')"),
        );
        expect(load.value.results).to.deep.equal([]);
        expect(load.value.errors).to.deep.equal(["script timed out after 500 ms in map at script:2"]);
        expect(load.elapsedMs, "time to the reply").to.be.lessThan(5000);
        expect(load.pairs, "other client's SET/GET pairs answered meanwhile").to.be.greaterThan(20);
        expect(load.maxLatencyMs, "other client's slowest SET+GET").to.be.lessThan(200);
        expect(load.rssGrowthMb, "RSS growth").to.be.lessThan(300);
        const top = await underLoad(() =>
          rejection(io.call("RG.EXECUTE", "let i = 0;\nwhile (true) { i++; }")),
        );
        expect(top.value).to.match(/^ERR script timed out after 500 ms/);
        expect(top.maxLatencyMs).to.be.lessThan(200);
        await stillWorks();
      });

      it("ScriptTimeoutMS bounds one step call, not a whole batch of records", async () => {
        await configSet("ScriptTimeoutMS", "500");
        // 100 records of 8 ms each, made by one step call: every call of the map is far below
        // 500 ms, all of them together are not.
        const records = 100;
        const out = await run(
          io,
          `GB('ShardsIDReader').collect().limit(1).flatmap(() => Array.from({length: ${records}}, (_, i) => i))
            .map(x => { ${busy(8)} return x; }).count().run()`,
        );
        expect(out).to.deep.equal({ results: [String(records)], errors: [] });
      });

      it("endless allocation of big arrays fails with the memory error", async () => {
        await configSet("ScriptMemoryLimitMB", "32");
        const load = await underLoad(() =>
          run(
            io,
            "GB('KeysOnlyReader').map(k => { const all = []; while (true) all.push(new Array(10000).fill(k)); }).run('slow:1')",
          ),
        );
        expect(load.value.results).to.deep.equal([]);
        expect(load.value.errors).to.have.length(1);
        expect(load.value.errors[0]).to.match(/script exceeded its memory limit of 32 MB/);
        expect(load.maxLatencyMs).to.be.lessThan(200);
        expect(load.rssGrowthMb).to.be.lessThan(300);
        const top = await underLoad(() =>
          rejection(
            io.call("RG.EXECUTE", "const all = [];\nwhile (true) all.push(new Array(10000).fill(1));"),
          ),
        );
        expect(top.value).to.equal("ERR script exceeded its memory limit of 32 MB");
        expect(top.maxLatencyMs).to.be.lessThan(200);
        expect(top.rssGrowthMb).to.be.lessThan(300);
        await stillWorks();
      });

      it("endless allocation of small objects and strings fails with the memory error", async () => {
        await configSet("ScriptMemoryLimitMB", "32");
        const load = await underLoad(() =>
          run(
            io,
            "GB('KeysOnlyReader').map(k => { const all = []; while (true) all.push({n: all.length, s: k + all.length}); }).run('slow:1')",
          ),
        );
        expect(load.value.results).to.deep.equal([]);
        expect(load.value.errors).to.have.length(1);
        expect(load.value.errors[0]).to.match(/script exceeded its memory limit of 32 MB/);
        expect(load.maxLatencyMs).to.be.lessThan(200);
        expect(load.rssGrowthMb).to.be.lessThan(300);
        await stillWorks();
      });

      it("running out of memory ends the execution even when the script catches the error", async () => {
        await configSet("ScriptMemoryLimitMB", "32");
        const out = await run(
          io,
          "GB('KeysOnlyReader').map(k => { const all = []; try { while (true) all.push(new Array(10000).fill(k)); } catch (e) { all.length = 0; return 'went on after ' + e; } }).run('slow:1')",
        );
        expect(out.results).to.deep.equal([]);
        expect(out.errors).to.have.length(1);
        expect(out.errors[0]).to.match(/script exceeded its memory limit of 32 MB/);
        await stillWorks();
      });

      it("deep recursion fails with a stack error", async () => {
        const load = await underLoad(() =>
          run(
            io,
            "function down(n) { return down(n + 1) + 1; }\nGB('KeysOnlyReader').map(k => down(0)).run('slow:1')",
          ),
        );
        expect(load.value.results).to.deep.equal([]);
        expect(load.value.errors).to.have.length(1);
        expect(load.value.errors[0]).to.match(/stack/i);
        expect(load.maxLatencyMs).to.be.lessThan(200);
        expect(load.rssGrowthMb).to.be.lessThan(300);
        const top = await underLoad(() =>
          rejection(io.call("RG.EXECUTE", "function down(n) { return down(n + 1) + 1; }\ndown(0);")),
        );
        expect(top.value).to.match(/^ERR .*stack/i);
        await stillWorks();
      });
    });

    describe("UNBLOCKING executions", () => {
      /** About 1,100 records of a few ms each, read 50 at a time: several seconds. */
      const SLOW = `GB('KeysOnlyReader').map(k => { ${busy(2)} return k; }).run('slow:1*', {count: 50})`;
      const slowCount = Array.from({ length: SLOW_KEYS }, (_, i) => String(i)).filter((k) =>
        k.startsWith("1"),
      ).length;

      it("RG.EXECUTE UNBLOCKING answers an id; RG.GETRESULTS gives [results, errors] once done", async () => {
        const id = await unblocking("GB('KeysOnlyReader').map(k => k.split(':')[1]).run('slow:12*')");
        expect(id).to.match(/^[0-9a-f]{40}-\d+$/);
        const done = outcome(await io.call("RG.GETRESULTSBLOCKING", id));
        const expected = Array.from({ length: SLOW_KEYS }, (_, i) => String(i)).filter((s) =>
          s.startsWith("12"),
        );
        expect(done.errors).to.deep.equal([]);
        expect(done.results.map(str).sort()).to.deep.equal(expected.sort());
        expect(outcome(await io.call("RG.GETRESULTS", id))).to.deep.equal(done);
        const second = await unblocking("GB('KeysOnlyReader').map(k => k.split(':')[1]).run('slow:12*')");
        expect(second).not.to.equal(id);
      });

      it("RG.GETRESULTSBLOCKING blocks only its client; GETRESULTS and DROPEXECUTION refuse a running one", async () => {
        const id = await unblocking(
          `GB('ShardsIDReader').collect().limit(1).map(() => { ${busy(1500)} return 'slow done'; }).run()`,
        );
        expect(await rejection(io.call("RG.GETRESULTS", id))).to.include("execution is still running");
        expect(await rejection(io.call("RG.DROPEXECUTION", id))).to.include(
          "can not drop a not yet finished execution, abort it first.",
        );
        const waiter = client();
        let answered = false;
        const blocked = waiter.call("RG.GETRESULTSBLOCKING", id).then((r) => {
          answered = true;
          return r;
        });
        const other = client();
        await sleep(100);
        for (let i = 0; i < 5; i++) {
          const t = performance.now();
          expect(await other.ping()).to.equal("PONG");
          expect(performance.now() - t, "another client's PING").to.be.lessThan(100);
          await sleep(50);
        }
        expect(answered, "GETRESULTSBLOCKING answered before the execution ended").to.equal(false);
        expect(outcome(await blocked)).to.deep.equal({ results: ["slow done"], errors: [] });
        expect(await io.call("RG.DROPEXECUTION", id)).to.equal("OK");
        expect(await rejection(io.call("RG.GETRESULTS", id))).to.include("execution plan does not exist");
      });

      it("RG.GETEXECUTION shows running with moving progress, then done with the results count", async () => {
        const id = await unblocking(SLOW);
        const running: Map<string, Reply>[] = [];
        let last = await planOf(id);
        const deadline = Date.now() + 30_000;
        while (str(last.get("status")) !== "done" && Date.now() < deadline) {
          if (str(last.get("status")) === "running") running.push(last);
          await sleep(150);
          last = await planOf(id);
        }
        expect(str(last.get("status"))).to.equal("done");
        expect(running.length, "samples while running").to.be.at.least(3);
        const shards = masters.length;
        const read = running.map((p) => Number(p.get("records_read")));
        for (const p of running) {
          expect(p.get("results"), "results while running").to.equal(-1);
          expect(p.get("shards_received")).to.equal(shards);
          expect(Number(p.get("shards_completed"))).to.be.within(0, shards - 1);
        }
        for (let i = 1; i < read.length; i++) expect(read[i]).to.be.at.least(read[i - 1]);
        expect(new Set(read).size, `records_read values seen: ${read.join(",")}`).to.be.at.least(3);
        expect(read[0]).to.be.lessThan(slowCount);
        expect(last.get("results")).to.equal(slowCount);
        expect(last.get("shards_completed")).to.equal(shards);
        expect(last.get("records_read")).to.equal(slowCount);
        expect(last.get("errors")).to.deep.equal([]);
        const results = outcome(await io.call("RG.GETRESULTS", id)).results;
        expect(results).to.have.length(slowCount);
        await io.call("RG.DROPEXECUTION", id);
      });

      it("RG.GETEXECUTION layout: one entry per shard (SHARD: one), plan fields and steps", async () => {
        const id = await unblocking(
          "GB('KeysOnlyReader').map(function named(k) { return k; }).run('slow:7*')",
        );
        await io.call("RG.GETRESULTSBLOCKING", id);
        const entries = asArray(await io.call("RG.GETEXECUTION", id), "RG.GETEXECUTION");
        expect(entries).to.have.length(masters.length);
        for (const e of entries) {
          const entry = asArray(e, "entry");
          expect([entry[0], entry[2]]).to.deep.equal(["shard_id", "execution_plan"]);
          expect(entry[1]).to.be.a("string");
          const plan = asArray(entry[3], "plan");
          const names = plan.filter((_, i) => i % 2 === 0).slice(0, 8);
          expect(names).to.deep.equal([
            "status",
            "shards_received",
            "shards_completed",
            "results",
            "errors",
            "total_duration",
            "read_duration",
            "steps",
          ]);
          const p = fields(plan);
          expect(p.get("status")).to.equal("done");
          expect(p.get("results")).to.equal(
            Array.from({ length: SLOW_KEYS }, (_, i) => String(i)).filter((s) => s.startsWith("7")).length,
          );
          expect(p.get("total_duration")).to.be.a("number");
          const steps = asArray(p.get("steps"), "steps").map((s) => asArray(s, "step"));
          for (const s of steps) {
            expect(s.filter((_, i) => i % 2 === 0)).to.deep.equal(["type", "duration", "name", "arg"]);
          }
          expect(steps.some((s) => s[1] === "map" && s[5] === "named")).to.equal(true);
        }
        const one = asArray(await io.call("RG.GETEXECUTION", id, "SHARD"), "RG.GETEXECUTION SHARD");
        expect(one).to.have.length(1);
        if (mode === "standalone") {
          expect(await rejection(io.call("RG.GETEXECUTION", id, "CLUSTER"))).to.include(
            "no cluster detected",
          );
        }
        expect(await rejection(io.call("RG.GETEXECUTION", id, "SIDEWAYS"))).to.include("unknown subcommand");
        await io.call("RG.DROPEXECUTION", id);
      });

      it("RG.DUMPEXECUTIONS lists [executionId, id, status, s, registered, 0] per kept execution", async () => {
        const running = await unblocking(SLOW);
        const done = await unblocking("GB('KeysOnlyReader').run('slow:5')");
        await io.call("RG.GETRESULTSBLOCKING", done);
        const list = asArray(await io.call("RG.DUMPEXECUTIONS"), "RG.DUMPEXECUTIONS").map((e) =>
          asArray(e, "entry"),
        );
        for (const e of list) {
          expect(e).to.have.length(6);
          expect([e[0], e[2], e[4]]).to.deep.equal(["executionId", "status", "registered"]);
          expect(e[5]).to.equal(0);
        }
        const statusOfId = new Map(list.map((e) => [str(e[1]), str(e[3])]));
        expect(statusOfId.get(done)).to.equal("done");
        expect(["created", "running"]).to.include(statusOfId.get(running));
        await io.call("RG.ABORTEXECUTION", running);
        // A blocking execution is dropped once it has answered.
        const before = new Set(statusOfId.keys());
        await run(io, "GB('KeysOnlyReader').run('slow:5')");
        const after = asArray(await io.call("RG.DUMPEXECUTIONS"), "RG.DUMPEXECUTIONS").map((e) =>
          str(asArray(e, "entry")[1]),
        );
        expect(after.filter((id) => !before.has(id))).to.deep.equal([]);
        for (const id of [running, done]) await io.call("RG.DROPEXECUTION", id);
      });

      it("RG.ABORTEXECUTION stops a running UNBLOCKING execution promptly (between records)", async () => {
        const t0 = performance.now();
        const id = await unblocking(
          `GB('KeysOnlyReader').map(k => { ${busy(3)} return k; }).run('slow:*', {count: 50})`,
        );
        await sleep(700);
        expect(await statusOf(id)).to.equal("running");
        const t1 = performance.now();
        expect(await io.call("RG.ABORTEXECUTION", id)).to.equal("OK");
        expect(performance.now() - t1, "ABORTEXECUTION reply").to.be.lessThan(1500);
        expect(await statusOf(id)).to.equal("aborted");
        // It would have taken SLOW_KEYS * 3 ms (9 s) at least.
        expect(performance.now() - t0).to.be.lessThan(4000);
        const read = Number((await planOf(id)).get("records_read"));
        await sleep(300);
        expect(Number((await planOf(id)).get("records_read")), "nothing read after the abort").to.equal(read);
        expect(await io.call("RG.DROPEXECUTION", id)).to.equal("OK");
        await stillWorks();
      });

      it("RG.ABORTEXECUTION interrupts a step that is running", async () => {
        const id = await unblocking(
          `GB('ShardsIDReader').collect().limit(1).map(() => { ${busy(4000)} return 'finished'; }).run()`,
        );
        await sleep(500);
        expect(await statusOf(id)).to.equal("running");
        const t1 = performance.now();
        expect(await io.call("RG.ABORTEXECUTION", id)).to.equal("OK");
        expect(performance.now() - t1, "ABORTEXECUTION reply").to.be.lessThan(1500);
        expect(await statusOf(id)).to.equal("aborted");
        await io.call("RG.DROPEXECUTION", id);
        await stillWorks();
      });

      it("MaxExecutions: with 3, of 5 new executions only the 3 newest remain", async () => {
        await configSet("MaxExecutions", "3");
        try {
          const ids: string[] = [];
          for (let i = 0; i < 5; i++) {
            const id = await unblocking(`GB('KeysOnlyReader').map(k => ${i}).run('slow:${i}')`);
            expect(outcome(await io.call("RG.GETRESULTSBLOCKING", id)).results).to.deep.equal([String(i)]);
            ids.push(id);
          }
          const kept = asArray(await io.call("RG.DUMPEXECUTIONS"), "RG.DUMPEXECUTIONS").map((e) =>
            str(asArray(e, "entry")[1]),
          );
          expect([...kept].sort()).to.deep.equal(ids.slice(2).sort());
          for (const id of ids.slice(0, 2)) {
            expect(await rejection(io.call("RG.GETRESULTS", id))).to.include("execution plan does not exist");
          }
          expect(outcome(await io.call("RG.GETRESULTS", ids[4])).results).to.deep.equal(["4"]);
        } finally {
          await configSet("MaxExecutions", "1000");
        }
      });
    });

    describe("cluster commands", () => {
      it("RG.INFOCLUSTER: 'no cluster mode' standalone; else MyId and each shard's id, ip, port, slots", async () => {
        const reply = await io.call("RG.INFOCLUSTER");
        if (mode === "standalone") {
          expect(reply).to.equal("no cluster mode");
          return;
        }
        const info = asArray(reply, "RG.INFOCLUSTER");
        expect(info[0]).to.equal("MyId");
        expect(info[1]).to.be.a("string");
        const shards = asArray(info[info.length - 1], "shards").map((s) => fields(asArray(s, "shard")));
        const slots = asArray(await masters[0].call("CLUSTER", "SLOTS"), "CLUSTER SLOTS");
        const expected = new Map<string, { ip: string; port: number; min: number; max: number }>();
        for (const range of slots) {
          const [start, end, owner] = asArray(range, "range");
          const [ip, port, id] = asArray(owner, "owner");
          const e = expected.get(str(id));
          if (e === undefined) {
            expected.set(str(id), { ip: str(ip), port: Number(port), min: Number(start), max: Number(end) });
          } else {
            e.min = Math.min(e.min, Number(start));
            e.max = Math.max(e.max, Number(end));
          }
        }
        expect(shards).to.have.length(expected.size);
        for (const s of shards) {
          const e = expected.get(str(s.get("id")));
          expect(e, `shard ${String(s.get("id"))}`).not.to.equal(undefined);
          expect({
            ip: s.get("ip"),
            port: s.get("port"),
            min: s.get("minHslot"),
            max: s.get("maxHslot"),
          }).to.deep.equal(e);
        }
      });

      it("RG.REFRESHCLUSTER answers OK and executions keep working", async () => {
        expect(await io.call("RG.REFRESHCLUSTER")).to.equal("OK");
        const out = await run(io, "GB('ShardsIDReader').run()");
        expect(out.results).to.have.length(masters.length);
        await stillWorks();
      });
    });
  });
}
