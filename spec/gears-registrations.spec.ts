import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import {
  sleep,
  asArray,
  num,
  registrations,
  registrationsOf,
  onlyRegistrationOf,
  statsOf,
  sessions,
  execute,
  rejection,
  eventually,
  stable,
} from "./support/registrations.js";

/**
 * Event registrations (RG.EXECUTE scripts that call register()) against real redis-server,
 * standalone and a 3-master cluster: KeysReader registrations fed by keyspace notifications
 * (writes through the proxy and writes straight to the shards), their filters and records,
 * failures and time-outs, sessions (ID, UPGRADE, REPLACE_WITH, globals), RG.UNREGISTER,
 * RG.DUMPREGISTRATIONS / RG.DUMPSESSIONS / RG.CLEARREGISTRATIONSSTATS, CommandReader triggers,
 * and `sync` mode. Keys a handler writes never match its own prefix (no event loops).
 */

/** How long a negative check waits for an event that must not be handled. */
const SETTLE_MS = 400;

const REG_ID = /^[0-9a-f]{40}-\d+$/;

/** A JSON record a handler pushed on a log list. */
type LoggedRecord = Record<string, unknown>;

const ALL_KEYS =
  "GB().filter(x => x.key !== 'all_keys').foreach(x => execute('SADD', 'all_keys', x.key)).register()";

for (const mode of BACKEND_MODES) {
  describe(`gears registrations: ${Backend.label(mode)} behind the proxy`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let io: Redis;
    /** Direct ioredis connections to every master. */
    let masters: Redis[] = [];
    /** The master connection owning each slot. */
    let slotOwner: Redis[] = [];
    const clients: Redis[] = [];
    /**
     * Unhandled promise rejections while this suite runs (the proxy runs in this process).
     * Mocha swallows them, but they end a real proxy process (Node's default).
     */
    const rejections: { test: string; reason: string }[] = [];
    let currentTest = "";
    const onRejection = (reason: unknown): void => {
      rejections.push({
        test: currentTest,
        reason: reason instanceof Error ? reason.message : String(reason),
      });
    };

    function client(): Redis {
      const c = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      clients.push(c);
      return c;
    }

    /** The direct connection to the master that owns `key`. */
    function ownerOf(key: string): Redis {
      return slotOwner[calculateSlot(key)];
    }

    async function list(key: string): Promise<string[]> {
      return io.lrange(key, 0, -1);
    }

    async function records(key: string): Promise<LoggedRecord[]> {
      return (await list(key)).map((s) => JSON.parse(s) as LoggedRecord);
    }

    /** Sorted JSON texts, to compare lists of records regardless of their order. */
    function canonical(items: LoggedRecord[]): string[] {
      const sortKeys = (v: unknown): unknown => {
        if (Array.isArray(v)) return v.map(sortKeys);
        if (v !== null && typeof v === "object") {
          const o = v as Record<string, unknown>;
          return Object.fromEntries(
            Object.keys(o)
              .sort()
              .map((k) => [k, sortKeys(o[k])]),
          );
        }
        return v;
      };
      return items.map((r) => JSON.stringify(sortKeys(r))).sort();
    }

    before(async function () {
      this.timeout(90_000);
      process.on("unhandledRejection", onRejection);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      io = client();
      const nodes = await backend.masters();
      masters = nodes.map((n) => new Redis({ port: n.port, host: "127.0.0.1", maxRetriesPerRequest: 0 }));
      if (mode === "standalone") {
        slotOwner = new Array<Redis>(16384).fill(masters[0]);
      } else {
        slotOwner = new Array<Redis>(16384);
        const ranges = asArray(await masters[0].call("CLUSTER", "SLOTS"), "CLUSTER SLOTS");
        for (const range of ranges) {
          const [start, end, master] = asArray(range, "slot range");
          const port = num(asArray(master, "slot master")[1], "port");
          const conn = masters[nodes.findIndex((n) => n.port === port)];
          if (conn === undefined) throw new Error(`no master on port ${port}`);
          for (let s = num(start, "start"); s <= num(end, "end"); s++) slotOwner[s] = conn;
        }
        expect(slotOwner.filter((c) => c !== undefined)).to.have.length(16384);
      }
    });

    beforeEach(function () {
      currentTest = this.currentTest?.title ?? "";
    });

    afterEach(async () => {
      // Every test starts with no registration and the default time limit.
      for (const r of await registrations(io)) expect(await io.call("RG.UNREGISTER", r.id)).to.equal("OK");
      expect(await registrations(io)).to.deep.equal([]);
      await io.call("RG.CONFIGSET", "ScriptTimeoutMS", "5000");
    });

    after(async () => {
      process.off("unhandledRejection", onRejection);
      for (const c of [...clients, ...masters]) c.disconnect();
      await proxy?.close();
      await backend?.stop();
    });

    it("keeps a set of all keys: 10,000 SETs through the proxy and 1,000 written to the shards directly", async function () {
      this.timeout(90_000);
      // A proxy of its own, closed at the end: whatever work this registration leaves behind
      // in a proxy goes away with it.
      const own = await startProxy([{ port: backend.seed.port }]);
      const c = new Redis({ port: own.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      try {
        expect(await execute(c, ALL_KEYS)).to.equal("OK");
        const regs = await registrations(c);
        expect(regs).to.have.length(1);
        const reg = regs[0];
        expect(reg.id).to.match(REG_ID);
        expect(reg.reader).to.equal("KeysReader");
        expect(reg.stats.mode).to.equal("async");

        const viaProxy = Array.from({ length: 10_000 }, (_, i) => `ak:p:${i}`);
        const viaShards = Array.from({ length: 1_000 }, (_, i) => `ak:d:${i}`);
        for (let i = 0; i < viaProxy.length; i += 1000) {
          const p = c.pipeline();
          for (const key of viaProxy.slice(i, i + 1000)) p.set(key, "v");
          for (const [err, reply] of (await p.exec()) ?? []) {
            expect(err).to.equal(null);
            expect(reply).to.equal("OK");
          }
        }
        const byOwner = new Map<Redis, string[]>();
        for (const key of viaShards) byOwner.set(ownerOf(key), [...(byOwner.get(ownerOf(key)) ?? []), key]);
        expect(byOwner.size, "the direct writes reach every master").to.equal(masters.length);
        await Promise.all(
          [...byOwner].map(async ([conn, keys]) => {
            const p = conn.pipeline();
            for (const key of keys) p.set(key, "d");
            for (const [err] of (await p.exec()) ?? []) expect(err).to.equal(null);
          }),
        );

        const expected = [...viaProxy, ...viaShards];
        await eventually(
          () => c.scard("all_keys"),
          (n) => n >= expected.length,
          "SCARD all_keys reaches 11,000",
          45_000,
        );
        expect((await c.smembers("all_keys")).sort()).to.deep.equal([...expected].sort());

        // The handler's own SADDs are events too (filtered out by the pipeline). A key written
        // now on all_keys' shard comes after all of them: once it is in the set, the
        // registration has caught up with every event.
        const sentinel = "{all_keys}:sentinel";
        expect(await c.set(sentinel, "v")).to.equal("OK");
        await eventually(
          () => c.sismember("all_keys", sentinel),
          (n) => n === 1,
          "the registration catches up with the events of its own SADDs",
          15_000,
        );
        expect((await c.smembers("all_keys")).sort()).to.deep.equal([...expected, sentinel].sort());

        // Counters: every event counts once (RedisGears 1.x: "each event increments numTriggered"):
        // 11,001 SETs, plus the handler's own SADDs on all_keys (filtered out, but triggered).
        const st = await stable(() => statsOf(c, reg.id), "registration counters");
        expect(st.numFailures, `lastError ${st.lastError}`).to.equal(0);
        expect(st.numAborted).to.equal(0);
        expect(st.lastError).to.equal(null);
        expect(st.numSuccess).to.equal(st.numTriggered);
        expect(st.totalRunDurationMS).to.be.at.least(st.lastRunDurationMS);
        expect(st.numTriggered, "numTriggered counts the events").to.be.within(
          expected.length + 1,
          2 * (expected.length + 1),
        );
      } finally {
        // Best effort, so that no stored session outlives this proxy; bounded in case it is busy.
        const regs = await registrations(c).catch(() => []);
        await Promise.race([
          Promise.all(regs.map((r) => c.call("RG.UNREGISTER", r.id).catch(() => null))),
          sleep(5_000),
        ]);
        c.disconnect();
        await own.close();
      }
    });

    it("an event of a key above 1,000 elements reads its value when the handler touches it; JSON and assignment see it", async () => {
      const script = `GB().foreach(x => {
          const size = x.value.length;
          const copy = JSON.parse(JSON.stringify(x));
          x.value = 'replaced';
          execute('RPUSH', 'lazy:log', JSON.stringify([x.key, x.type, x.event, size, copy.value.length, Object.keys(copy), x.value]));
        }).register('lazy:big', {eventTypes: ['rpush']})`;
      expect(await execute(io, script, "ID", "lazyvalue")).to.equal("OK");
      const members = Array.from({ length: 1500 }, (_, i) => `m${i}`);
      await io.rpush("lazy:big", ...members);
      await eventually(
        () => io.llen("lazy:log"),
        (n) => n >= 1,
        "the rpush event handled",
      );
      const [logged] = await list("lazy:log");
      expect(JSON.parse(logged)).to.deep.equal([
        "lazy:big",
        "list",
        "rpush",
        1500,
        1500,
        ["key", "type", "event", "value"],
        "replaced",
      ]);
    });

    it("KeysReader filters: prefix (glob and exact key), eventTypes, keyTypes, readValue: false; records {key, value, type, event}", async () => {
      const script = `
        function log(name) { return x => execute('RPUSH', 'flt:log:' + name, JSON.stringify(x)); }
        GB().foreach(log('hset')).register('flt:user:*', {eventTypes: ['hset'], keyTypes: ['hash']});
        GB().foreach(log('novalue')).register('flt:user:*', {readValue: false});
        GB().foreach(log('lists')).register('flt:kt:*', {keyTypes: ['list']});
        GB().foreach(log('optprefix')).register({prefix: 'flt:kt:*', keyTypes: ['list']});
        GB().foreach(log('exact')).register('flt:exact');
        GB().foreach(log('expired')).register('flt:ttl:*', {eventTypes: ['EXPIRED'], readValue: false});
      `;
      expect(await execute(io, script, "ID", "filters")).to.equal("OK");
      const regs = await registrationsOf(io, "filters");
      expect(regs).to.have.length(6);
      expect(regs.map((r) => r.args.get("regex"))).to.have.members([
        "flt:user:*",
        "flt:user:*",
        "flt:kt:*",
        "flt:kt:*",
        "flt:exact",
        "flt:ttl:*",
      ]);

      await io.hset("flt:user:1", "name", "ann", "age", "3");
      await io.set("flt:user:2", "hello");
      await io.hincrby("flt:user:6", "n", 1);
      await io.hset("flt:other:1", "f", "v");
      await io.del("flt:user:2");
      await io.hset("flt:user:3", "f", "v");
      // Straight to the shard, bypassing the proxy.
      expect(await ownerOf("flt:user:4").hset("flt:user:4", "d", "1")).to.equal(1);
      await io.lpush("flt:kt:l", "a", "b");
      await io.set("flt:kt:s", "v");
      await io.sadd("flt:kt:set", "m");
      await io.set("flt:exact", "v");
      await io.set("flt:exact2", "v");
      await io.set("flt:ttl:1", "v", "PX", 100);
      // Reading an expired key expires it (and notifies 'expired') if the server has not yet.
      await eventually(
        () => io.get("flt:ttl:1"),
        (v) => v === null,
        "flt:ttl:1 expires",
      );

      const counts = { hset: 3, novalue: 6, lists: 1, optprefix: 1, exact: 1, expired: 1 };
      for (const [name, n] of Object.entries(counts)) {
        await eventually(
          () => io.llen(`flt:log:${name}`),
          (len) => len >= n,
          `${n} record(s) in flt:log:${name}`,
        );
      }
      await sleep(SETTLE_MS);

      expect(canonical(await records("flt:log:hset"))).to.deep.equal(
        canonical([
          { key: "flt:user:1", value: { name: "ann", age: "3" }, type: "hash", event: "hset" },
          { key: "flt:user:3", value: { f: "v" }, type: "hash", event: "hset" },
          { key: "flt:user:4", value: { d: "1" }, type: "hash", event: "hset" },
        ]),
      );
      const novalue = await records("flt:log:novalue");
      expect(canonical(novalue)).to.deep.equal(
        canonical([
          { key: "flt:user:1", event: "hset" },
          { key: "flt:user:2", event: "set" },
          { key: "flt:user:6", event: "hincrby" },
          { key: "flt:user:2", event: "del" },
          { key: "flt:user:3", event: "hset" },
          { key: "flt:user:4", event: "hset" },
        ]),
      );
      // One key's events are handled in the order they happened.
      const user2 = novalue.filter((r) => r.key === "flt:user:2").map((r) => r.event);
      expect(user2).to.deep.equal(["set", "del"]);
      // register({prefix, ...}), RedisGears' Python keywords as one object, filters the same.
      for (const name of ["lists", "optprefix"])
        expect(await records(`flt:log:${name}`)).to.deep.equal([
          { key: "flt:kt:l", value: ["b", "a"], type: "list", event: "lpush" },
        ]);
      expect(await records("flt:log:exact")).to.deep.equal([
        { key: "flt:exact", value: "v", type: "string", event: "set" },
      ]);
      expect(await records("flt:log:expired")).to.deep.equal([{ key: "flt:ttl:1", event: "expired" }]);
    });

    it("a handler that throws counts in numFailures and sets lastError to its message", async () => {
      const script = "GB().foreach(x => { throw new Error('boom on ' + x.key); }).register('fail:*')";
      expect(await execute(io, script, "ID", "failing")).to.equal("OK");
      const reg = await onlyRegistrationOf(io, "failing");
      await io.set("fail:1", "v");
      const st = await eventually(
        () => statsOf(io, reg.id),
        (s) => s.numFailures >= 1,
        "numFailures counts the failure",
      );
      expect(st.numFailures).to.equal(1);
      expect(st.numSuccess).to.equal(0);
      expect(st.numTriggered).to.equal(1);
      expect(st.lastError).to.be.a("string").and.to.include("boom on fail:1");
      // The registration stays in place and keeps failing on the next event.
      await io.set("fail:2", "v");
      const next = await eventually(
        () => statsOf(io, reg.id),
        (s) => s.numFailures >= 2,
        "the second failure",
      );
      expect(next.lastError).to.include("boom on fail:2");
    });

    it("a handler stuck in while(true){} ends at ScriptTimeoutMS with the time-out as lastError; another session keeps handling its events", async () => {
      expect(await io.call("RG.CONFIGSET", "ScriptTimeoutMS", "300")).to.deep.equal(["OK"]);
      const stuck = `GB().foreach(x => {
          if (x.key === 'stk:loop') { while (true) {} }
          execute('INCR', 'stuck-ok');
        }).register('stk:*')`;
      expect(await execute(io, stuck, "ID", "stuck")).to.equal("OK");
      const alive = "GB().foreach(x => execute('INCR', 'alive-count')).register('alv:*')";
      expect(await execute(io, alive, "ID", "alive")).to.equal("OK");
      const stuckReg = await onlyRegistrationOf(io, "stuck");
      const aliveReg = await onlyRegistrationOf(io, "alive");

      const started = Date.now();
      await io.set("stk:loop", "v");
      for (let i = 0; i < 20; i++) await io.set(`alv:${i}`, "v");
      await eventually(
        () => io.get("alive-count"),
        (v) => v === "20",
        "the other session handles its 20 events",
        5_000,
      );
      const st = await eventually(
        () => statsOf(io, stuckReg.id),
        (s) => s.numFailures >= 1,
        "the stuck handler ends in a failure",
        10_000,
      );
      expect(Date.now() - started, "ended by the time limit, not much later").to.be.below(5_000);
      expect(st.numFailures).to.equal(1);
      expect(st.numSuccess).to.equal(0);
      expect(st.lastError).to.be.a("string").and.to.include("timed out after 300 ms");
      expect((await statsOf(io, aliveReg.id)).numFailures).to.equal(0);

      // Both registrations keep working after the time-out.
      await io.set("stk:fine", "v");
      await io.set("alv:more", "v");
      await eventually(
        () => io.get("stuck-ok"),
        (v) => v === "1",
        "the stuck session handles a later event",
      );
      await eventually(
        () => io.get("alive-count"),
        (v) => v === "21",
        "the other session goes on",
      );
    });

    it("writes far faster than the handler: the backlog is handled in bounded batches, every event, none failing on the isolate's memory limit", async function () {
      this.timeout(120_000);
      // The handler holds its first batch for 1.5 s while 40,000 writes arrive: they all
      // queue behind it. Taken as one batch, those records went over a 16 MB isolate (and
      // the whole batch failed); in bounded batches each fits.
      expect(await io.call("RG.CONFIGSET", "ScriptMemoryLimitMB", "16")).to.deep.equal(["OK"]);
      try {
        const slow = `GB().foreach(x => {
            if (x.key === 'bl:slow') { const t = Date.now(); while (Date.now() - t < 1500) {} }
            execute('SADD', '{bl}:all', x.key);
          }).register('bl:*')`;
        expect(await execute(io, slow, "ID", "backlog")).to.equal("OK");
        const reg = await onlyRegistrationOf(io, "backlog");
        const writer = client();
        expect(await writer.set("bl:slow", "v")).to.equal("OK");
        const keys = Array.from({ length: 40_000 }, (_, i) => `bl:${i}`);
        for (let i = 0; i < keys.length; i += 10_000) {
          const p = writer.pipeline();
          for (const key of keys.slice(i, i + 10_000)) p.set(key, "v");
          for (const [err] of (await p.exec()) ?? []) expect(err).to.equal(null);
        }
        await eventually(
          () => io.scard("{bl}:all"),
          (n) => n >= keys.length + 1,
          "every write's event handled",
          90_000,
        );
        const st = await stable(() => statsOf(io, reg.id), "registration counters");
        expect(st.numFailures, `lastError ${st.lastError}`).to.equal(0);
        expect(st.numSuccess).to.equal(st.numTriggered);
      } finally {
        await io.call("RG.CONFIGSET", "ScriptMemoryLimitMB", "64");
      }
    });

    it("a batch whose key reads fail on the shard (TYPE refused by ACL) is a failure; the proxy and the registration go on", async () => {
      const script = "GB().foreach(x => execute('INCR', 'acl-count')).register('acl:*')";
      expect(await execute(io, script, "ID", "aclfail")).to.equal("OK");
      const reg = await onlyRegistrationOf(io, "aclfail");
      const shard = ownerOf("acl:1");
      expect(await shard.call("ACL", "SETUSER", "default", "-type")).to.equal("OK");
      try {
        const before = rejections.length;
        // An HSET: its event's record needs a read (a SET through the proxy carries its value).
        await io.hset("acl:1", "f", "v");
        const seen = await eventually(
          async () => ({ stats: await statsOf(io, reg.id), unhandled: rejections.slice(before) }),
          (v) => v.stats.numFailures >= 1 || v.unhandled.length > 0,
          "the failed read counts as a failure",
        );
        expect(seen.unhandled, "unhandled promise rejections (a proxy process dies of them)").to.deep.equal(
          [],
        );
        expect(seen.stats.lastError)
          .to.be.a("string")
          .and.to.match(/NOPERM|type/i);
      } finally {
        expect(await shard.call("ACL", "SETUSER", "default", "+type")).to.equal("OK");
      }
      await io.set("acl:2", "v");
      await eventually(
        () => io.get("acl-count"),
        (v) => v === "1",
        "the next event is handled",
      );
    });

    describe("sessions", () => {
      it("a session's globals live on for its handlers; re-sending its ID without UPGRADE is refused", async () => {
        const script =
          "var n = 100; GB().foreach(x => { n++; execute('SET', 'sess-n', String(n)); }).register('sg:*')";
        expect(await execute(io, script, "ID", "glob")).to.equal("OK");
        const reg = await onlyRegistrationOf(io, "glob");
        for (let i = 0; i < 5; i++) await io.set(`sg:${i}`, "v");
        await eventually(
          () => io.get("sess-n"),
          (v) => v === "105",
          "n counts 5 events from 100",
        );
        for (let i = 5; i < 10; i++) await io.set(`sg:${i}`, "v");
        await eventually(
          () => io.get("sess-n"),
          (v) => v === "110",
          "n goes on counting",
        );

        const other = "var n = 0; GB().foreach(x => execute('SET', 'sess-n', 'other')).register('sg:*')";
        expect(await rejection(execute(io, other, "ID", "glob"))).to.include("Session glob already exists");
        expect((await registrationsOf(io, "glob")).map((r) => r.id)).to.deep.equal([reg.id]);
        await io.set("sg:10", "v");
        await eventually(
          () => io.get("sess-n"),
          (v) => v === "111",
          "the first session still handles events",
        );
        await sleep(SETTLE_MS);
        expect(await io.get("sess-n")).to.equal("111");
      });

      it("UPGRADE replaces a session's registrations; a failing upgrade leaves the old ones working", async () => {
        const v1 = "GB().foreach(x => execute('RPUSH', 'upg-log', 'v1:' + x.key)).register('up:*')";
        expect(await execute(io, v1, "ID", "upg")).to.equal("OK");
        const old = await onlyRegistrationOf(io, "upg");
        await io.set("up:a", "v");
        await eventually(
          () => list("upg-log"),
          (l) => l.length >= 1,
          "v1 handles up:a",
        );

        const v2 = `GB().foreach(x => execute('RPUSH', 'upg-log', 'v2:' + x.key)).register('up:*');
          GB('CommandReader').map(() => 'v2').register({trigger: 'upgver'});`;
        expect(await execute(io, v2, "ID", "upg", "UPGRADE")).to.equal("OK");
        const now = await registrationsOf(io, "upg");
        expect(now).to.have.length(2);
        expect(now.map((r) => r.id)).not.to.include(old.id);
        expect((await registrations(io)).map((r) => r.id)).not.to.include(old.id);
        expect(now.map((r) => r.reader)).to.have.members(["KeysReader", "CommandReader"]);
        const sess = (await sessions(io)).filter((s) => s.id === "upg");
        expect(sess).to.have.length(1);
        expect([...sess[0].registrations].sort()).to.deep.equal(now.map((r) => r.id).sort());

        await io.set("up:b", "v");
        await eventually(
          () => list("upg-log"),
          (l) => l.length >= 2,
          "v2 handles up:b",
        );
        await sleep(SETTLE_MS);
        expect(await list("upg-log")).to.deep.equal(["v1:up:a", "v2:up:b"]);
        expect(await io.call("RG.TRIGGER", "upgver")).to.deep.equal(["v2"]);

        const v3 = `GB().foreach(x => execute('RPUSH', 'upg-log', 'v3:' + x.key)).register('up:*');
          throw new Error('v3 is broken');`;
        expect(await rejection(execute(io, v3, "ID", "upg", "UPGRADE"))).to.include("v3 is broken");
        expect((await registrationsOf(io, "upg")).map((r) => r.id).sort()).to.deep.equal(
          now.map((r) => r.id).sort(),
        );
        await io.set("up:c", "v");
        await eventually(
          () => list("upg-log"),
          (l) => l.length >= 3,
          "v2 still handles up:c",
        );
        await sleep(SETTLE_MS);
        expect(await list("upg-log")).to.deep.equal(["v1:up:a", "v2:up:b", "v2:up:c"]);
      });

      it("REPLACE_WITH replaces another session", async () => {
        const oldScript = "GB().foreach(x => execute('RPUSH', 'rep-log', 'old:' + x.key)).register('rp:*')";
        expect(await execute(io, oldScript, "ID", "rep-old")).to.equal("OK");
        await io.set("rp:1", "v");
        await eventually(
          () => list("rep-log"),
          (l) => l.length >= 1,
          "the old session handles rp:1",
        );

        const newScript = "GB().foreach(x => execute('RPUSH', 'rep-log', 'new:' + x.key)).register('rp:*')";
        expect(await execute(io, newScript, "ID", "rep-new", "REPLACE_WITH", "rep-old")).to.equal("OK");
        const ids = (await sessions(io)).map((s) => s.id);
        expect(ids).to.include("rep-new");
        expect(ids).not.to.include("rep-old");
        expect(await registrationsOf(io, "rep-old")).to.deep.equal([]);
        await onlyRegistrationOf(io, "rep-new");

        await io.set("rp:2", "v");
        await eventually(
          () => list("rep-log"),
          (l) => l.length >= 2,
          "the new session handles rp:2",
        );
        await sleep(SETTLE_MS);
        expect(await list("rep-log")).to.deep.equal(["old:rp:1", "new:rp:2"]);
      });

      it("a script that throws after register() registers nothing (and its ID stays free)", async () => {
        // A live registration on the same keys: keyspace events do flow.
        const witness = "GB().foreach(x => execute('INCR', 'thr-witness')).register('thr:*')";
        expect(await execute(io, witness, "ID", "thr-witness")).to.equal("OK");
        const script = `GB().foreach(x => execute('INCR', 'thr-count')).register('thr:*');
          throw new Error('after register');`;
        expect(await rejection(execute(io, script, "ID", "thr"))).to.include("after register");
        expect(await registrationsOf(io, "thr")).to.deep.equal([]);
        expect((await sessions(io)).map((s) => s.id)).not.to.include("thr");
        await io.set("thr:1", "v");
        await eventually(
          () => io.get("thr-witness"),
          (v) => v === "1",
          "the witness sees thr:1",
        );
        await sleep(SETTLE_MS);
        expect(await io.get("thr-count")).to.equal(null);

        const fixed = "GB().foreach(x => execute('INCR', 'thr-count')).register('thr:*')";
        expect(await execute(io, fixed, "ID", "thr")).to.equal("OK");
        await io.set("thr:2", "v");
        await eventually(
          () => io.get("thr-count"),
          (v) => v === "1",
          "the fixed script handles thr:2",
        );
      });

      it("RG.UNREGISTER stops a registration's events; an unknown id is 'execution is not registered'", async () => {
        const script = "GB().foreach(x => execute('INCR', 'unr-count')).register('un:*')";
        expect(await execute(io, script, "ID", "unr")).to.equal("OK");
        const other = "GB().foreach(x => execute('INCR', 'unr-other')).register('un:*')";
        expect(await execute(io, other, "ID", "unr-other")).to.equal("OK");
        const reg = await onlyRegistrationOf(io, "unr");
        await io.set("un:1", "v");
        await eventually(
          () => io.get("unr-count"),
          (v) => v === "1",
          "un:1 handled",
        );

        expect(await io.call("RG.UNREGISTER", reg.id)).to.equal("OK");
        expect((await registrations(io)).map((r) => r.id)).not.to.include(reg.id);
        expect((await sessions(io)).flatMap((s) => s.registrations)).not.to.include(reg.id);
        await io.set("un:2", "v");
        await eventually(
          () => io.get("unr-other"),
          (v) => v === "2",
          "the other registration sees un:2",
        );
        await sleep(SETTLE_MS);
        expect(await io.get("unr-count")).to.equal("1");

        expect(await rejection(io.call("RG.UNREGISTER", reg.id))).to.include("execution is not registered");
        expect(
          await rejection(io.call("RG.UNREGISTER", "0000000000000000000000000000000000000000-999")),
        ).to.include("execution is not registered");
      });

      it("RG.DUMPSESSIONS lists sessions, their descriptions and registration ids (and SESSIONS filters)", async () => {
        const two = `GB().foreach(x => execute('INCR', 'ds-a')).register('dsa:*');
          GB('CommandReader').map(x => 'ds').register({trigger: 'dstrigger'});`;
        expect(await execute(io, two, "ID", "dsess", "DESCRIPTION", "two registrations")).to.equal("OK");
        const anon = "GB().foreach(x => execute('INCR', 'ds-b')).register('dsb:*')";
        expect(await execute(io, anon)).to.equal("OK");

        const regs = await registrations(io);
        const all = await sessions(io);
        expect(all).to.have.length(2);
        const named = all.find((s) => s.id === "dsess");
        expect(named, "session dsess").not.to.equal(undefined);
        expect(named!.description).to.equal("two registrations");
        const namedIds = regs.filter((r) => r.session === "dsess").map((r) => r.id);
        expect(namedIds).to.have.length(2);
        expect([...named!.registrations].sort()).to.deep.equal([...namedIds].sort());

        const unnamed = all.find((s) => s.id !== "dsess")!;
        expect(unnamed.id).not.to.equal("");
        const unnamedRegs = regs.filter((r) => r.session === unnamed.id);
        expect(unnamedRegs).to.have.length(1);
        expect(unnamed.registrations).to.deep.equal([unnamedRegs[0].id]);
        expect(regs.map((r) => r.session).sort()).to.deep.equal(["dsess", "dsess", unnamed.id].sort());

        const only = await sessions(io, "SESSIONS", "dsess");
        expect(only.map((s) => s.id)).to.deep.equal(["dsess"]);
      });

      it("RG.CLEARREGISTRATIONSSTATS zeroes the counters and lastError; counting resumes", async () => {
        const script =
          "GB().foreach(x => { if (x.key === 'clr:bad') throw new Error('bad key ' + x.key); }).register('clr:*')";
        expect(await execute(io, script, "ID", "clr")).to.equal("OK");
        const reg = await onlyRegistrationOf(io, "clr");
        await io.set("clr:ok", "v");
        await eventually(
          () => statsOf(io, reg.id),
          (s) => s.numSuccess >= 1,
          "a success",
        );
        await io.set("clr:bad", "v");
        const before = await eventually(
          () => statsOf(io, reg.id),
          (s) => s.numFailures >= 1,
          "a failure",
        );
        expect(before.numTriggered).to.equal(2);
        expect(before.lastError).to.include("bad key clr:bad");

        expect(await io.call("RG.CLEARREGISTRATIONSSTATS")).to.equal("OK");
        const cleared = await statsOf(io, reg.id);
        expect(cleared).to.deep.equal({
          mode: "async",
          numTriggered: 0,
          numSuccess: 0,
          numFailures: 0,
          numAborted: 0,
          lastRunDurationMS: 0,
          totalRunDurationMS: 0,
          lastError: null,
        });

        await io.set("clr:again", "v");
        const after = await eventually(
          () => statsOf(io, reg.id),
          (s) => s.numSuccess >= 1,
          "counting resumes",
        );
        expect(after.numTriggered).to.equal(1);
        expect(after.numFailures).to.equal(0);
      });
    });

    describe("CommandReader triggers", () => {
      it("RG.TRIGGER runs the registration on [name, ...args]; unknown names and throwing triggers are errors", async () => {
        const join = "GB('CommandReader').map(x => x.slice(1).join('-')).register({trigger: 'join'})";
        expect(await execute(io, join, "ID", "trg-join")).to.equal("OK");
        const explode =
          "GB('CommandReader').map(x => { throw new Error('trigger failed: ' + x[1]); }).register({trigger: 'explode'})";
        expect(await execute(io, explode, "ID", "trg-explode")).to.equal("OK");

        expect(await io.call("RG.TRIGGER", "join", "a", "b", "c")).to.deep.equal(["a-b-c"]);
        expect(await io.call("RG.TRIGGER", "join", "x")).to.deep.equal(["x"]);
        expect(await rejection(io.call("RG.TRIGGER", "nosuchtrigger", "a"))).to.equal(
          "ERR subcommand not found",
        );
        expect(await rejection(io.call("RG.TRIGGER", "explode", "q"))).to.include("trigger failed: q");

        const joinReg = await onlyRegistrationOf(io, "trg-join");
        expect(joinReg.reader).to.equal("CommandReader");
        expect(joinReg.args.get("trigger")).to.equal("join");
        expect(joinReg.stats.numTriggered).to.equal(2);
        expect(joinReg.stats.numSuccess).to.equal(2);
        const explodeReg = await onlyRegistrationOf(io, "trg-explode");
        expect(explodeReg.stats.numFailures).to.equal(1);
        expect(explodeReg.stats.lastError).to.include("trigger failed: q");
      });

      it("RG.TRIGGERONKEY runs where the key lives (execute('DBSIZE') is that shard's DBSIZE)", async () => {
        // Registered first: registering may write (the proxy persists sessions in Redis).
        const script =
          "GB('CommandReader').map(x => x[1] + '=' + execute('DBSIZE')).register({trigger: 'where'})";
        expect(await execute(io, script, "ID", "trg-where")).to.equal("OK");
        // Give the masters distinct DBSIZEs, written directly, so the shard that answered shows.
        const sizes = async (): Promise<number[]> => Promise.all(masters.map((m) => m.dbsize()));
        let n = 0;
        for (let round = 0; round < 50; round++) {
          const now = await sizes();
          const dup = now.findIndex((s, i) => now.indexOf(s) !== i);
          if (dup === -1) break;
          const target = masters[dup];
          let key: string;
          do key = `tok:${n++}`;
          while (ownerOf(key) !== target);
          await target.set(key, "v");
        }
        const dbsizes = await sizes();
        expect(new Set(dbsizes).size).to.equal(masters.length);
        // A key owned by each master.
        const keys = masters.map((m) => {
          for (let i = 0; ; i++) if (ownerOf(`where:${i}`) === m) return `where:${i}`;
        });

        for (let i = 0; i < masters.length; i++) {
          expect(await io.call("RG.TRIGGERONKEY", "where", keys[i]), `key ${keys[i]}`).to.deep.equal([
            `${keys[i]}=${dbsizes[i]}`,
          ]);
        }
        expect(await sizes()).to.deep.equal(dbsizes);
      });

      it("register() returns the registration id to the script", async () => {
        const script = `
          var id = GB('CommandReader').map(() => 'x').register({trigger: 'rid'});
          var kid = GB().foreach(x => x).register('rid:*');
          execute('SET', 'cmd-regid', id);
          execute('SET', 'cmd-kregid', kid);
        `;
        expect(await execute(io, script, "ID", "rid")).to.equal("OK");
        const regs = await registrationsOf(io, "rid");
        expect(regs).to.have.length(2);
        const trigger = regs.find((r) => r.reader === "CommandReader")!;
        const keys = regs.find((r) => r.reader === "KeysReader")!;
        expect(trigger.id).to.match(REG_ID);
        expect(await io.get("cmd-regid")).to.equal(trigger.id);
        expect(await io.get("cmd-kregid")).to.equal(keys.id);
        expect(trigger.id).not.to.equal(keys.id);
      });
    });

    describe("sync mode", () => {
      it("right after a write's reply, the handler's effect is visible to the same client (200 times, no sleeps)", async () => {
        const script = "GB().foreach(x => execute('INCR', 'seen:' + x.key)).register('s:*', {mode: 'sync'})";
        expect(await execute(io, script, "ID", "sync")).to.equal("OK");
        const reg = await onlyRegistrationOf(io, "sync");
        expect(reg.stats.mode).to.equal("sync");
        const c = client();
        for (let i = 0; i < 200; i++) {
          const key = `s:${i % 7}`;
          expect(await c.set(key, "v")).to.equal("OK");
          expect(await c.get(`seen:${key}`), `GET seen:${key} right after SET #${i}`).to.equal(
            String(Math.floor(i / 7) + 1),
          );
        }
      });

      it("a write waits for the events queued before it, not for those that keep coming from writes straight to the shard", async function () {
        this.timeout(30_000);
        // The handler takes 2 ms an event; writes straight to the shard come at about twice
        // that rate, so its queue never empties while they last.
        const script = `GB().foreach(x => {
            const t = Date.now(); while (Date.now() - t < 2) {}
            if (x.key === 'steady:{s}:mine') execute('SET', 'steady-seen:{s}', 'yes');
          }).register('steady:*', {mode: 'sync'})`;
        expect(await execute(io, script, "ID", "steady")).to.equal("OK");
        const shard = ownerOf("steady:{s}:0");
        let writing = true;
        let writerDone = false;
        const writer = (async () => {
          const until = Date.now() + 10_000;
          for (let i = 0; writing && Date.now() < until; i += 10) {
            const p = shard.pipeline();
            for (let j = i; j < i + 10; j++) p.set(`steady:{s}:${j}`, "v");
            await p.exec();
            await sleep(10);
          }
          writerDone = true;
        })();
        try {
          await sleep(500);
          const c = client();
          expect(await c.set("steady:{s}:mine", "v")).to.equal("OK");
          const stillWriting = !writerDone;
          expect(await c.get("steady-seen:{s}")).to.equal("yes");
          expect(stillWriting, "the write returned while the direct writes went on").to.equal(true);
        } finally {
          writing = false;
          await writer;
        }
      });
    });

    describe("afterwards", () => {
      // Last: Mocha runs a suite's own tests before its nested suites.
      it("no unhandled promise rejection came out of the proxy during these tests", () => {
        expect(rejections).to.deep.equal([]);
      });
    });
  });
}
