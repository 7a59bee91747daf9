import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import {
  eventually,
  execute,
  registrations,
  rejection,
  sleep,
  stable,
  statsOf,
  type RegistrationInfo,
} from "./support/registrations.js";

/**
 * StreamReader registrations (a consumer group per registration, batch and duration, the
 * failure policies, trimStream, pause), KeysReader `commands` with overrideReply, and
 * async_local, against real redis-server, standalone and a 3-master cluster.
 */

/** The spec's example: every field of every entry becomes a key, on the shard of that key. */
const APPLY_STREAM =
  "GB('StreamReader').flatmap(x => Object.entries(x.value)).filter(([f]) => f !== 'streamId')" +
  ".repartition(([f]) => f).foreach(([f, v]) => execute('SET', f, v)).register('inputStream')";

/** How long a negative check waits for something that must not happen. */
const SETTLE_MS = 500;

for (const mode of BACKEND_MODES) {
  describe(`gears StreamReader registrations and reply overrides: ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let io: Redis;
    const clients: Redis[] = [];

    function client(): Redis {
      const c = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      clients.push(c);
      return c;
    }

    async function only(): Promise<RegistrationInfo> {
      const regs = await registrations(io);
      expect(regs).to.have.length(1);
      return regs[0];
    }

    async function statusOf(id: string): Promise<string> {
      const reg = (await registrations(io)).find((r) => r.id === id);
      return String(reg?.data.get("status"));
    }

    before(async function () {
      this.timeout(90_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      io = client();
    });

    afterEach(async () => {
      for (const r of await registrations(io)) expect(await io.call("RG.UNREGISTER", r.id)).to.equal("OK");
      for (const node of await backend.masters()) {
        const direct = new Redis({ port: node.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
        await direct.flushall();
        direct.disconnect();
      }
    });

    after(async () => {
      for (const c of clients) c.disconnect();
      await proxy?.close();
      await backend?.stop();
    });

    it("applies a stream to keys: 5,000 XADDs of two fields become keys on their shards, and trimStream empties the stream", async function () {
      this.timeout(120_000);
      expect(await execute(io, APPLY_STREAM)).to.equal("OK");
      const writer = client();
      const total = 5000;
      for (let start = 0; start < total; start += 500) {
        const p = writer.pipeline();
        for (let i = start; i < start + 500; i++)
          p.xadd("inputStream", "*", `f:${i}`, `v${i}`, `g:${i}`, `w${i}`);
        await p.exec();
      }
      await eventually(
        async () => (await statsOf(io, (await only()).id)).numSuccess,
        (n) => n === total,
        "entries handled",
        60_000,
      );
      // Every key is where Redis Cluster says it belongs: read from the owning master directly.
      for (let i = 0; i < total; i += 97) {
        for (const [key, value] of [
          [`f:${i}`, `v${i}`],
          [`g:${i}`, `w${i}`],
        ]) {
          const node = await backend.nodeOf(key);
          const direct = new Redis({ port: node.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
          expect(await direct.get(key), key).to.equal(value);
          direct.disconnect();
        }
      }
      expect(await io.get(`f:${total - 1}`)).to.equal(`v${total - 1}`);
      await eventually(
        () => io.xlen("inputStream"),
        (n) => n === 0,
        "stream trimmed",
      );
      const stats = await statsOf(io, (await only()).id);
      expect(stats.numFailures).to.equal(0);
      expect(stats.numTriggered).to.equal(total);
    });

    it("processes the entries already in a stream when it registers; RG.DUMPREGISTRATIONS shows the StreamReader layout", async () => {
      for (let i = 0; i < 5; i++) await io.xadd("old:1", "*", "n", String(i));
      expect(
        await execute(
          io,
          "GB('StreamReader').foreach(x => execute('RPUSH', 'seen', x.key + '/' + x.value.n)).register('old:*', {trimStream: false})",
        ),
      ).to.equal("OK");
      await eventually(
        () => io.llen("seen"),
        (n) => n === 5,
        "old entries handled",
      );
      await io.xadd("old:2", "*", "n", "new");
      await eventually(
        () => io.lrange("seen", 0, -1),
        (l) => l.includes("old:2/new"),
        "a new stream's entry",
      );
      expect(await io.lrange("seen", 0, 4)).to.deep.equal([0, 1, 2, 3, 4].map((i) => `old:1/${i}`));
      // trimStream false: the entries stay.
      expect(await io.xlen("old:1")).to.equal(5);
      const reg = await only();
      expect(reg.reader).to.equal("StreamReader");
      const keys = [...reg.data.keys()];
      expect(keys.indexOf("lastEstimatedLagMS")).to.be.above(keys.indexOf("avgRunDurationMS"));
      expect(keys.indexOf("avgEstimatedLagMS")).to.equal(keys.indexOf("lastEstimatedLagMS") + 1);
      expect(keys.indexOf("lastError")).to.equal(keys.indexOf("avgEstimatedLagMS") + 1);
      expect(keys[keys.length - 1]).to.equal("status");
      expect(reg.data.get("status")).to.equal("OK");
      expect(Object.fromEntries(reg.args)).to.deep.equal({
        batchSize: 1,
        durationMS: 0,
        stream: "old:*",
        trimStream: 0,
        onFailedPolicy: "continue",
        retryInterval: 1,
      });
    });

    it("each registration has its own consumer group: two registrations on one stream both see every entry, and trimming waits for both", async () => {
      await execute(io, "GB('StreamReader').foreach(x => execute('INCR', 'one')).register('shared')");
      await execute(io, "GB('StreamReader').foreach(x => execute('INCR', 'two')).register('shared')");
      for (let i = 0; i < 20; i++) await io.xadd("shared", "*", "i", String(i));
      await eventually(
        async () => [await io.get("one"), await io.get("two")],
        (v) => v[0] === "20" && v[1] === "20",
        "both registrations saw all",
      );
      const groups = (await io.xinfo("GROUPS", "shared")) as unknown[][];
      expect(groups).to.have.length(2);
      await eventually(
        () => io.xlen("shared"),
        (n) => n === 0,
        "trimmed once both processed",
      );
      // Unregistering one removes its group; the other keeps reading.
      const [first] = await registrations(io);
      expect(await io.call("RG.UNREGISTER", first.id)).to.equal("OK");
      await eventually(
        async () => ((await io.xinfo("GROUPS", "shared")) as unknown[]).length,
        (n) => n === 1,
        "group destroyed",
      );
    });

    it("a stream deleted and written again gets a new group and is read on", async () => {
      await execute(io, "GB('StreamReader').foreach(x => execute('INCR', 'count')).register('gone')");
      await io.xadd("gone", "*", "i", "1");
      await eventually(
        () => io.get("count"),
        (v) => v === "1",
        "first entry",
      );
      await io.del("gone");
      await sleep(1500); // a poll or two meets the missing key
      await io.xadd("gone", "*", "i", "2");
      await eventually(
        () => io.get("count"),
        (v) => v === "2",
        "entry of the new stream",
      );
      expect(((await io.xinfo("GROUPS", "gone")) as unknown[]).length).to.equal(1);
    });

    it("batch and duration: an execution fires at `batch` entries, or `duration` ms after the first of an incomplete batch", async () => {
      await execute(
        io,
        "GB('StreamReader').accumulate((a, x) => (a || 0) + 1).foreach(n => execute('RPUSH', 'sizes', String(n))).register('b5', {batch: 5})",
      );
      await execute(
        io,
        "GB('StreamReader').accumulate((a, x) => (a || 0) + 1).foreach(n => execute('RPUSH', 'dsizes', String(n))).register('d', {batch: 100, duration: 300})",
      );
      for (let i = 0; i < 3; i++) await io.xadd("b5", "*", "i", String(i));
      const started = Date.now();
      for (let i = 0; i < 3; i++) await io.xadd("d", "*", "i", String(i));
      await sleep(SETTLE_MS);
      expect(await io.lrange("sizes", 0, -1), "3 of 5: not yet").to.deep.equal([]);
      await eventually(
        () => io.lrange("dsizes", 0, -1),
        (l) => l.length === 1,
        "duration fired",
      );
      expect(Date.now() - started).to.be.at.least(250);
      expect(await io.lrange("dsizes", 0, -1)).to.deep.equal(["3"]);
      await io.xadd("b5", "*", "i", "3");
      await io.xadd("b5", "*", "i", "4");
      await eventually(
        () => io.lrange("sizes", 0, -1),
        (l) => l.length === 1,
        "batch of 5 fired",
      );
      expect(await io.lrange("sizes", 0, -1)).to.deep.equal(["5"]);
    });

    it("onFailedPolicy 'continue' acknowledges a failed batch and goes on; the failure counts with its error", async () => {
      await execute(
        io,
        "GB('StreamReader').foreach(x => { if (x.value.bad) throw new Error('bad entry'); execute('INCR', 'ok') }).register('c')",
      );
      await io.xadd("c", "*", "good", "1");
      await io.xadd("c", "*", "bad", "1");
      await eventually(
        async () => (await only()).stats.numFailures,
        (n) => n === 1,
        "the failure counted",
      );
      let reg = await only();
      expect(reg.stats.lastError).to.match(/^Error: bad entry in foreach at script:1/);
      await io.xadd("c", "*", "good", "2");
      await eventually(
        () => io.get("ok"),
        (v) => v === "2",
        "good entries",
      );
      // The next success clears lastError, as in RedisGears; the failure stays counted. The
      // INCR lands before its batch is counted a success, so wait for the count.
      await eventually(
        async () => (await only()).stats.numSuccess,
        (n) => n === 2,
        "the second success counted",
      );
      reg = await only();
      expect(reg.stats.numFailures).to.equal(1);
      expect(reg.stats.numSuccess).to.equal(2);
      expect(reg.stats.lastError).to.equal(null);
      expect(reg.data.get("status")).to.equal("OK");
      await eventually(
        () => io.xlen("c"),
        (n) => n === 0,
        "all acknowledged and trimmed",
      );
    });

    it("onFailedPolicy 'abort' stops the registration at the failed batch (ABORTED, entries kept); unpausing retries from it", async () => {
      await execute(
        io,
        "GB('StreamReader').foreach(x => { if (x.value.bad && execute('GET', 'fixed') === null) throw new Error('bad'); execute('RPUSH', 'done', x.id) }).register('a', {onFailedPolicy: 'abort'})",
      );
      const first = await io.xadd("a", "*", "good", "1");
      const bad = await io.xadd("a", "*", "bad", "1");
      await eventually(
        async () => statusOf((await only()).id),
        (s) => s === "ABORTED",
        "aborted",
      );
      const after = await io.xadd("a", "*", "good", "2");
      await sleep(SETTLE_MS);
      expect(await io.lrange("done", 0, -1)).to.deep.equal([first]);
      expect(await io.xlen("a")).to.equal(2);
      await io.set("fixed", "1");
      expect(await io.call("RG.UNPAUSEREGISTRATIONS", (await only()).id)).to.equal("OK");
      await eventually(
        () => io.lrange("done", 0, -1),
        (l) => l.length === 3,
        "resumed",
      );
      expect(await io.lrange("done", 0, -1)).to.deep.equal([first, bad, after]);
      expect(await statusOf((await only()).id)).to.equal("OK");
    });

    it("onFailedPolicy 'retry' re-runs the same batch every onFailedRetryInterval seconds until it succeeds", async () => {
      await execute(
        io,
        "GB('StreamReader').foreach(x => { execute('INCR', 'attempts'); if (execute('GET', 'fixed') === null) throw new Error('not yet'); execute('RPUSH', 'done', x.id) }).register('r', {onFailedPolicy: 'retry', onFailedRetryInterval: 0.2})",
      );
      const id = await io.xadd("r", "*", "x", "1");
      await eventually(
        async () => statusOf((await only()).id),
        (s) => s === "WAITING_FOR_RETRY_ON_FAILURE",
        "waiting for retry",
      );
      await eventually(
        () => io.get("attempts"),
        (n) => Number(n) >= 3,
        "retried",
      );
      expect(await io.lrange("done", 0, -1)).to.deep.equal([]);
      await io.set("fixed", "1");
      await eventually(
        () => io.lrange("done", 0, -1),
        (l) => l.length === 1,
        "succeeded",
      );
      expect(await io.lrange("done", 0, -1)).to.deep.equal([id]);
      await eventually(
        async () => statusOf((await only()).id),
        (s) => s === "OK",
        "status back to OK",
      );
      await eventually(
        () => io.xlen("r"),
        (n) => n === 0,
        "trimmed after success",
      );
    });

    it("RG.PAUSEREGISTRATIONS stops reading (PAUSED) and RG.UNPAUSEREGISTRATIONS resumes; other readers and unknown ids are errors", async () => {
      await execute(io, "GB('StreamReader').foreach(x => execute('INCR', 'n')).register('p')");
      await execute(io, "GB().foreach(x => execute('INCR', 'k')).register('keys:*')");
      const regs = await registrations(io);
      const stream = regs.find((r) => r.reader === "StreamReader")!;
      const keys = regs.find((r) => r.reader === "KeysReader")!;
      await io.xadd("p", "*", "i", "0");
      await eventually(
        () => io.get("n"),
        (v) => v === "1",
        "first entry",
      );
      expect(await io.call("RG.PAUSEREGISTRATIONS", stream.id)).to.equal("OK");
      expect(await statusOf(stream.id)).to.equal("PAUSED");
      await io.xadd("p", "*", "i", "1");
      await sleep(SETTLE_MS);
      expect(await io.get("n")).to.equal("1");
      expect(await io.call("RG.UNPAUSEREGISTRATIONS", stream.id)).to.equal("OK");
      await eventually(
        () => io.get("n"),
        (v) => v === "2",
        "resumed",
      );
      expect(await rejection(io.call("RG.PAUSEREGISTRATIONS", keys.id))).to.equal(
        "ERR Reader KeysReader does not support pause",
      );
      expect(await rejection(io.call("RG.PAUSEREGISTRATIONS", "nope"))).to.equal(
        "ERR Execution nope does not exists",
      );
      expect(await rejection(io.call("RG.UNPAUSEREGISTRATIONS"))).to.match(/wrong number of arguments/);
    });

    it("refuses a sync StreamReader registration with a policy other than continue, and an unknown mode", async () => {
      expect(
        await rejection(
          execute(io, "GB('StreamReader').register('s', {mode: 'sync', onFailedPolicy: 'retry'})"),
        ),
      ).to.equal("ERR ExecutionMode sync can only be combined with OnFailedPolicy Continue");
      expect(await rejection(execute(io, "GB().register('x', {mode: 'sometimes'})"))).to.match(
        /^ERR Unknown execution mode 'sometimes'/,
      );
      expect(await registrations(io)).to.deep.equal([]);
    });

    it("a sync StreamReader registration: right after XADD returns, the entry's effect is visible", async () => {
      await execute(
        io,
        "GB('StreamReader').foreach(x => execute('SET', 'last', x.id)).register('sy', {mode: 'sync'})",
      );
      const c = client();
      for (let i = 0; i < 30; i++) {
        const id = await c.xadd("sy", "*", "i", String(i));
        expect(await c.get("last")).to.equal(id);
      }
    });

    it("overrideReply on a keymiss of GET (commands: ['get']): a missing key's reply is computed; a present key and other commands are untouched", async () => {
      expect(
        await execute(
          io,
          "GB().foreach(x => overrideReply('computed:' + x.key)).register('cache:*', {commands: ['get'], eventTypes: ['keymiss']})",
        ),
      ).to.equal("OK");
      expect(await io.get("cache:1")).to.equal("computed:cache:1");
      await io.set("cache:2", "real");
      expect(await io.get("cache:2")).to.equal("real");
      expect(await io.get("other")).to.equal(null);
      // The notification class for keymiss was turned on where it is needed.
      for (const node of await backend.masters()) {
        const direct = new Redis({ port: node.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
        const [, flags] = (await direct.config("GET", "notify-keyspace-events")) as string[];
        direct.disconnect();
        expect(flags).to.include("m");
      }
      // The registration sees only its commands' events: a SET through the proxy does not run it.
      const reg = await only();
      expect(reg.stats.numTriggered).to.equal(1);
      expect(reg.args.get("hookCommands")).to.deep.equal(["get"]);
    });

    it("overrideReply changes a write's reply for events of commands named in `commands`; outside that it is an error", async () => {
      await execute(
        io,
        "GB().foreach(x => { execute('SET', 'audit:' + x.key, x.event); overrideReply('+STORED') }).register('doc:*', {commands: ['hset']})",
      );
      expect(await io.hset("doc:1", "a", "1")).to.equal("STORED");
      expect(await io.get("audit:doc:1")).to.equal("hset");
      await execute(io, "GB().foreach(x => overrideReply('nope')).register('plain:*')");
      await io.set("plain:1", "x");
      await eventually(
        async () =>
          (await registrations(io)).find((r) => r.args.get("regex") === "plain:*")?.stats.lastError ?? "",
        (e) => e.includes("overrideReply() can only be called"),
        "overrideReply outside commands is an error",
      );
    });

    it("an event on a key too big to send along (over 1,000 elements) gets its value when the handler reads it", async () => {
      const p = io.pipeline();
      for (let i = 0; i < 1500; i++) p.sadd("big:set", `m${i}`);
      await p.exec();
      await execute(
        io,
        "GB().foreach(x => execute('RPUSH', 'sizes', x.key + '=' + (x.type === 'set' ? x.value.length : JSON.stringify(x.value)))).register('big:*')",
      );
      await io.sadd("big:set", "one-more");
      await io.set("big:str", "small");
      const sizes = await eventually(
        () => io.lrange("sizes", 0, -1),
        (l) => l.length === 2,
        "both handled",
      );
      expect(sizes.sort()).to.deep.equal(["big:set=1501", 'big:str="small"']);
      expect((await only()).stats.numFailures).to.equal(0);
    });

    it("runs over the keyspace leave out the proxy's own keys (stored sessions, leases)", async () => {
      await execute(io, "GB().foreach(x => execute('INCR', 'n')).register('own:*')");
      await io.set("own:1", "x");
      await eventually(
        () => io.get("n"),
        (v) => v === "1",
        "handled",
      );
      const stored = await io.call("EXISTS", "{gears-proxy}:sessions", "{gears-proxy}:lease:0");
      expect(stored, "the proxy's keys exist").to.be.at.least(1);
      for (const reader of ["KeysOnlyReader", "KeysReader"]) {
        const reply = (await io.call(
          "RG.EXECUTE",
          `GB('${reader}').map(r => typeof r === 'string' ? r : r.key).run('*')`,
        )) as [string[], string[]];
        expect(reply[1], reader).to.deep.equal([]);
        expect([...reply[0]].sort(), reader).to.deep.equal(["n", "own:1"]);
      }
    });

    it("a registration's executions are listed as registered, at most MaxExecutionsPerRegistration, and readable and droppable by id", async () => {
      expect(await io.call("RG.CONFIGSET", "MaxExecutionsPerRegistration", "3")).to.deep.equal(["OK"]);
      try {
        await execute(io, "GB('StreamReader').map(x => x.value.n).register('ex')");
        for (let i = 0; i < 5; i++) await io.xadd("ex", "*", "n", String(i));
        await eventually(
          async () => (await only()).stats.numSuccess,
          (n) => n === 5,
          "handled",
        );
        const registered = async (): Promise<string[]> =>
          ((await io.call("RG.DUMPEXECUTIONS")) as unknown[][])
            .filter((e) => e[5] === 1)
            .map((e) => String(e[1]));
        const ids = await stable(registered, "registered executions");
        expect(ids).to.have.length(3);
        const last = ids[ids.length - 1];
        expect(await io.call("RG.GETRESULTS", last)).to.deep.equal([["4"], []]);
        const plan = (await io.call("RG.GETEXECUTION", last)) as unknown[][];
        expect(plan[0][3]).to.include("done");
        expect(await io.call("RG.DROPEXECUTION", last)).to.equal("OK");
        expect(await registered()).to.deep.equal(ids.slice(0, 2));
      } finally {
        await io.call("RG.CONFIGSET", "MaxExecutionsPerRegistration", "100");
      }
    });

    it("async_local runs each shard's events in order, beside the other shards'", async () => {
      await execute(
        io,
        "GB().foreach(x => execute('RPUSH', 'order:' + x.key.split(':')[1], x.key)).register('al:*', {mode: 'async_local'})",
      );
      const c = client();
      for (let i = 0; i < 30; i++) await c.set(`al:{t}:${String(i).padStart(2, "0")}`, "1");
      const got = await eventually(
        () => io.lrange("order:{t}", 0, -1),
        (l) => l.length === 30,
        "all handled",
      );
      expect(got).to.deep.equal([...got].sort());
      expect((await only()).stats.mode).to.equal("async_local");
      expect(await stable(async () => (await only()).stats.numSuccess, "counter")).to.equal(30);
    });
  });
}
