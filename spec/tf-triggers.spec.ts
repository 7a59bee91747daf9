import { expect } from "chai";
import { Redis } from "ioredis";
import { Backend, SERVERS_AND_MODES } from "./support/backend.js";
import { tfLibrary as lib, useTfProxy } from "./support/tf.js";
import { eventually } from "./support/polling.js";

/** The documentation's keyspace trigger: stamps a field on every change to a fellowship:* hash. */
const FELLOWSHIP = lib(
  "fellowship",
  `redis.registerKeySpaceTrigger('consumer', 'fellowship:', function(client, data){
     if (client.call('type', data.key) != 'hash') return;
     const count = client.call('hincrby', data.key, '_changes_', '1');
     client.call('hset', data.key, '_last_event_', data.event + ':' + count);
   }, {description: 'stamps fellowship hashes'});`,
);

// Redis, then Valkey (which loads no module either: what the proxy is for).
for (const [server, mode] of SERVERS_AND_MODES) {
  describe(`Triggers and Functions: keyspace triggers, through the proxy in front of ${Backend.label(mode, server)}`, function () {
    this.timeout(60_000);
    const t = useTfProxy(mode, { clean: false, server });

    it("the documentation's trigger: a write through the proxy sees the trigger's effect as soon as it returns; its own writes do not fire it again", async () => {
      expect(await t.c.call("TFUNCTION", "LOAD", FELLOWSHIP)).to.equal("OK");
      for (const [i, name] of ["frodo", "sam", "merry", "pippin"].entries()) {
        await t.c.hset(`fellowship:${i}`, "name", name);
        // No wait: the reply came after the trigger ran.
        expect(await t.c.hget(`fellowship:${i}`, "_last_event_")).to.equal("hset:1");
      }
      await t.c.hset("fellowship:0", "ring", "yes");
      expect(await t.c.hgetall("fellowship:0")).to.deep.equal({
        name: "frodo",
        ring: "yes",
        _changes_: "2",
        _last_event_: "hset:2",
      });
      await t.c.set("other:1", "x");
      const listed = ((await t.c.call("TFUNCTION", "LIST", "v")) as unknown[][])[0];
      const trigger = (listed[listed.indexOf("keyspace_triggers") + 1] as unknown[][])[0];
      const field = (name: string): unknown => trigger[trigger.indexOf(name) + 1];
      expect(field("name")).to.equal("consumer");
      expect(field("description")).to.equal("stamps fellowship hashes");
      expect(field("num_trigger")).to.equal(5);
      expect(field("num_success")).to.equal(5);
      expect(field("num_failed")).to.equal(0);
    });

    // A function's (or trigger's) own writes are muted for the keyspace triggers; another
    // client's write of the same key meanwhile must not be. Keys were muted by name from a
    // function's write until a barrier on the notification connections confirmed it, so a
    // client's write of the key in that window fired no trigger (a trigger's write followed by
    // the client's next write of its key: about 1 run in 8 of spec/qa5-reader-events').
    it("a client's write of a key a function is writing fires the trigger; the function's own writes do not", async () => {
      const code = lib(
        "stamp",
        `redis.registerKeySpaceTrigger('runs', 'stamp:', function(client, data){
           client.call('rpush', '{st}runs', data.event);
         });
         redis.registerFunction('burst', function(client, key){
           client.call('set', '{st}started', '1');
           // The key stays muted all along: each write's mute outlasts the next one's start.
           for (let i = 0; i < 1500; i++) client.call('hset', key, 'n', String(i));
           // The client's write came while the function wrote (what the test is about).
           return client.call('hget', key, 'client');
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      // 1,500 round trips may outlast the default 500 ms on a busy machine.
      const [, timeout] = (await t.c.call("CONFIG", "GET", "redisgears_2.lock-redis-timeout")) as string[];
      expect(await t.c.call("CONFIG", "SET", "redisgears_2.lock-redis-timeout", "10000")).to.equal("OK");
      const other = new Redis({ port: t.proxy.port });
      try {
        const burst = t.c.call("TFCALL", "stamp.burst", "1", "stamp:{st}k");
        await eventually(
          () => other.get("{st}started"),
          (v) => v === "1",
          "the function has started",
          5000,
        );
        // Answered once its trigger ran, after the function (the library runs one at a time).
        expect(await other.hset("stamp:{st}k", "client", "1")).to.equal(1);
        expect(await burst, "the client's HSET came while the function was writing").to.equal("1");
        // Time for runs of the function's own writes, which must not come.
        await new Promise((r) => setTimeout(r, 200));
        expect(await t.c.lrange("{st}runs", 0, -1)).to.deep.equal(["hset"]);
      } finally {
        other.disconnect();
        await t.c.call("CONFIG", "SET", "redisgears_2.lock-redis-timeout", timeout);
        await t.c.call("TFUNCTION", "DELETE", "stamp");
      }
    });

    it("a trigger's calls run in its event's database, whatever database the library's last TFCALL ran in", async function () {
      if (mode === "cluster") this.skip(); // a cluster has database 0 only
      const code = lib(
        "dbs",
        `redis.registerFunction('noop', function(){ return 1; });
         redis.registerKeySpaceTrigger('seen', 'dbs:', function(client, data){ client.call('set', 'seen:' + data.key, 'x'); });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const db1 = new Redis({ port: t.proxy.port, db: 1 });
      try {
        for (const [writer, other, key] of [
          [t.c, db1, "dbs:a"],
          [db1, t.c, "dbs:b"],
        ] as const) {
          // The TFCALL before runs in the other database.
          expect(await other.call("TFCALL", "dbs.noop", "0")).to.equal(1);
          expect(await writer.set(key, "1")).to.equal("OK");
          expect(await writer.get(`seen:${key}`), `${key}'s trigger wrote beside it`).to.equal("x");
          expect(await other.get(`seen:${key}`)).to.equal(null);
        }
      } finally {
        db1.disconnect();
        await t.c.call("TFUNCTION", "DELETE", "dbs");
      }
    });

    it("a write made directly on a shard reaches the trigger within a second", async () => {
      const node = await t.direct.on("fellowship:direct");
      await node.call("HSET", "fellowship:direct", "name", "gandalf");
      const started = Date.now();
      const stamped = await eventually(
        () => t.c.hget("fellowship:direct", "_last_event_"),
        (v) => v !== null,
        "the trigger's stamp",
        3000,
      );
      expect(stamped).to.equal("hset:1");
      expect(Date.now() - started).to.be.below(1000);
    });

    it("a burst of writes made directly on the shards: every event reaches the trigger, each key's in the order of its writes", async () => {
      // Many events queue at once: they run many to an entry, the calls of distinct slots
      // pipelined, and each key's one after another in order.
      const burst = lib(
        "burst",
        `redis.registerKeySpaceTrigger('order', 'burst:', function(client, data){
           client.call('rpush', 'order:{' + data.key + '}', data.event);
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", burst)).to.equal("OK");
      try {
        const keys = Array.from({ length: 300 }, (_, i) => `burst:${i}`);
        const byNode = new Map<Awaited<ReturnType<typeof t.direct.on>>, string[]>();
        for (const key of keys) {
          const node = await t.direct.on(key);
          byNode.set(node, [...(byNode.get(node) ?? []), key]);
        }
        const expected = ["set", "incrby", "append", "expire", "persist", "del"];
        await Promise.all(
          [...byNode].map(async ([node, mine]) => {
            // Pipelined: every command sent before the first reply is read.
            const commands = mine.flatMap((key) => [
              ["SET", key, "1"],
              ["INCR", key],
              ["APPEND", key, "x"],
              ["EXPIRE", key, "100"],
              ["PERSIST", key],
              ["DEL", key],
            ]);
            for (const c of commands) node.send(...c);
            for (let i = 0; i < commands.length; i++) expect(await node.next()).not.to.be.instanceOf(Error);
          }),
        );
        await eventually(
          async () => {
            let done = 0;
            for (const key of keys) if ((await t.c.llen(`order:{${key}}`)) >= expected.length) done++;
            return done;
          },
          (done) => done === keys.length,
          "every key's six events handled",
          30_000,
        );
        for (const key of keys)
          expect(await t.c.lrange(`order:{${key}}`, 0, -1), key).to.deep.equal(expected);
      } finally {
        await t.c.call("TFUNCTION", "DELETE", "burst");
      }
    });

    it("a write through the proxy waits for the triggers queued before it, not for those that keep coming from writes straight to the shard", async function () {
      this.timeout(30_000);
      // The trigger takes 2 ms an event; writes straight to the shard come at about twice
      // that rate, so its queue never empties while they last.
      const slow = lib(
        "steady",
        `redis.registerKeySpaceTrigger('slow', 'steady:', function(client, data){
           const t = Date.now(); while (Date.now() - t < 2) {}
           if (data.key === 'steady:{s}:mine') client.call('set', 'steady-seen:{s}', 'yes');
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", slow)).to.equal("OK");
      const node = await t.direct.on("steady:{s}:0");
      let writing = true;
      let writerDone = false;
      const writer = (async () => {
        const until = Date.now() + 10_000;
        for (let i = 0; writing && Date.now() < until; i += 10) {
          for (let j = i; j < i + 10; j++) node.send("SET", `steady:{s}:${j}`, "v");
          for (let j = 0; j < 10; j++) await node.next();
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        writerDone = true;
      })();
      try {
        await new Promise((resolve) => setTimeout(resolve, 500));
        expect(await t.c.set("steady:{s}:mine", "v")).to.equal("OK");
        const stillWriting = !writerDone;
        // Its own trigger ran before its reply.
        expect(await t.c.get("steady-seen:{s}")).to.equal("yes");
        expect(stillWriting, "the write returned while the direct writes went on").to.equal(true);
      } finally {
        writing = false;
        await writer;
        await t.c.call("TFUNCTION", "DELETE", "steady");
      }
    });

    it("an async trigger holds its write only until its first await: the rest runs in the background, and counts when it settles", async () => {
      const code = lib(
        "later",
        `redis.registerKeySpaceTrigger('bg', 'later:', async function(client, data){
           client.block((c) => c.call('set', 'first:' + data.key, '1'));
           await client.callAsync('blpop', 'later-never:{l}', '1');
           client.block((c) => c.call('set', 'last:' + data.key, '1'));
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const stats = async (): Promise<[unknown, unknown]> => {
        const listed = ((await t.c.call("TFUNCTION", "LIST", "LIBRARY", "later", "v")) as unknown[][])[0];
        const trigger = (listed[listed.indexOf("keyspace_triggers") + 1] as unknown[][])[0];
        return [trigger[trigger.indexOf("num_finished") + 1], trigger[trigger.indexOf("num_success") + 1]];
      };
      try {
        const began = Date.now();
        expect(await t.c.set("later:{l}:a", "v")).to.equal("OK");
        // A second write while the first callback still awaits: answered as promptly.
        expect(await t.c.set("later:{l}:b", "v")).to.equal("OK");
        expect(Date.now() - began, "answered before the BLPOP's second").to.be.below(800);
        expect(await t.c.get("first:later:{l}:a")).to.equal("1");
        expect(await t.c.get("first:later:{l}:b")).to.equal("1");
        expect(await t.c.get("last:later:{l}:a")).to.equal(null);
        expect(await stats()).to.deep.equal([0, 0]);
        // Each callback's rest runs once its own BLPOP times out, in whichever order they do.
        await eventually(
          () => t.c.mget("last:later:{l}:a", "last:later:{l}:b"),
          (v) => v[0] === "1" && v[1] === "1",
          "the callbacks' rest ran",
        );
        await eventually(stats, (s) => s[0] === 2, "both counted");
        expect(await stats()).to.deep.equal([2, 2]);
      } finally {
        await t.c.call("TFUNCTION", "DELETE", "later");
      }
    });

    it("the documentation's stream trigger copies entries into hashes: old entries first, then new ones, in order", async () => {
      await t.c.xadd("stream:copy", "1-1", "name", "before");
      const code = lib(
        "streams",
        `redis.registerStreamTrigger('copier', 'stream:', function(client, data){
           const id = data.id[0] + '-' + data.id[1];
           const fields = data.record.flat();
           client.call('hset', data.stream_name + ':' + id, ...fields, 'raw_ok', String(data.stream_name_raw instanceof ArrayBuffer));
           client.call('rpush', 'copied:order', id);
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      await t.c.xadd("stream:copy", "2-1", "name", "after", "n", "2");
      await t.c.xadd("stream:copy", "3-1", "name", "last");
      const order = await eventually(
        () => t.c.lrange("copied:order", 0, -1),
        (v) => v.length === 3,
        "three entries copied",
      );
      expect(order).to.deep.equal(["1-1", "2-1", "3-1"]);
      expect(await t.c.hgetall("stream:copy:2-1")).to.deep.equal({ name: "after", n: "2", raw_ok: "true" });
      expect(await t.c.call("TFUNCTION", "DELETE", "streams")).to.equal("OK");
    });

    it("a stream record keeps repeated fields and binary values: record is a list of pairs (null where not UTF-8), record_raw their bytes", async () => {
      const code = lib(
        "rawrec",
        `redis.registerStreamTrigger('r', 'rawrec:', function(client, data){
           client.call('set', 'rawrec:record', JSON.stringify(data.record));
           client.call('set', 'rawrec:bytes', data.record_raw[2][1]);
           client.call('set', 'rawrec:count', String(data.record_raw.length));
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const binary = Buffer.from([0xff, 0x00, 0xfe, 0x41]);
      const added = await t.c.xadd("rawrec:s", "*", "f", "a", "f", "b", "bin", binary);
      await eventually(
        () => t.c.get("rawrec:count"),
        (v) => v === "3",
        "the record handled",
      );
      expect(JSON.parse((await t.c.get("rawrec:record")) ?? "null")).to.deep.equal([
        ["f", "a"],
        ["f", "b"],
        ["bin", null],
      ]);
      expect(await t.c.getBuffer("rawrec:bytes")).to.deep.equal(binary);
      // TFUNCTION LIST vv: the stream's progress, nothing pending once handled.
      const field = (list: unknown[], name: string): unknown => list[list.indexOf(name) + 1];
      const streamOf = async (): Promise<unknown[]> => {
        const listed = ((await t.c.call("TFUNCTION", "LIST", "vv", "LIBRARY", "rawrec")) as unknown[][])[0];
        const trigger = (field(listed, "stream_triggers") as unknown[][])[0];
        return ((field(trigger, "streams") as unknown[][])[0] ?? []) as unknown[];
      };
      const stream = await eventually(
        streamOf,
        (st) => field(st, "total_record_processed") === 1,
        "the stream's stats",
      );
      expect(field(stream, "name")).to.equal("rawrec:s");
      expect(field(stream, "pending_ids")).to.deep.equal([]);
      expect(field(stream, "id_to_read_from")).to.equal(added);
      expect(field(stream, "last_error")).to.equal(null);
      expect(await t.c.call("TFUNCTION", "DELETE", "rawrec")).to.equal("OK");
    });

    it("window entries are in flight at once; isStreamTrimmed trims what was handled", async () => {
      const code = lib(
        "windowed",
        `let inFlight = 0, most = 0;
         redis.registerStreamTrigger('w', 'win:', async function(client, data){
           inFlight++; most = Math.max(most, inFlight);
           await client.callAsync('ping');
           inFlight--;
           client.block((c) => c.call('set', 'win:most', String(most)));
         }, {window: 3, isStreamTrimmed: true});`,
      );
      for (let i = 1; i <= 6; i++) await t.c.xadd("win:s", `${i}-1`, "i", String(i));
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      await eventually(
        () => t.c.xlen("win:s"),
        (n) => n === 0,
        "the stream trimmed",
      );
      expect(Number(await t.c.get("win:most"))).to.equal(3);
      const listed = ((await t.c.call("TFUNCTION", "LIST", "LIBRARY", "windowed", "v")) as unknown[][])[0];
      const trigger = (listed[listed.indexOf("stream_triggers") + 1] as unknown[][])[0];
      expect(trigger).to.deep.equal([
        "name",
        "w",
        "prefix",
        "win:",
        "window",
        3,
        "trim",
        1,
        "description",
        null,
      ]);
      const moved = code.replace("'win:'", "'other:'");
      const refused = await t.c.call("TFUNCTION", "LOAD", "REPLACE", moved).catch((e: Error) => e.message);
      expect(refused).to.equal(
        "Can not upgrade an existing consumer with different prefix, consumer: 'w', old_prefix: win:, new_prefix: other:.",
      );
      expect(await t.c.call("TFUNCTION", "DELETE", "windowed")).to.equal("OK");
    });

    it("a trigger that throws counts as failed with its last error; REPLACE keeps the stats", async () => {
      const code = (n: number): string =>
        lib("failing", `redis.registerKeySpaceTrigger('t', 'fail:', function(){ throw 'no luck ${n}'; });`);
      expect(await t.c.call("TFUNCTION", "LOAD", code(1))).to.equal("OK");
      await t.c.set("fail:1", "x");
      expect(await t.c.call("TFUNCTION", "LOAD", "REPLACE", code(2))).to.equal("OK");
      await t.c.set("fail:2", "x");
      const listed = ((await t.c.call("TFUNCTION", "LIST", "LIBRARY", "failing", "v")) as unknown[][])[0];
      const trigger = (listed[listed.indexOf("keyspace_triggers") + 1] as unknown[][])[0];
      expect(trigger[trigger.indexOf("num_failed") + 1]).to.equal(2);
      expect(trigger[trigger.indexOf("last_error") + 1]).to.equal("no luck 2");
      expect(await t.c.call("TFUNCTION", "DELETE", "failing")).to.equal("OK");
    });
  });
}
