import { expect } from "chai";
import { Redis } from "ioredis";
import calculateSlot from "cluster-key-slot";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { ChildProxy } from "./support/child-proxy.js";
import { eventually } from "./support/polling.js";
import { tfLibrary as lib } from "./support/tf.js";

/**
 * With --threads each shard's keyspace triggers run on the thread holding its lease; a write
 * made through the other thread reaches that one only as a keyspace notification. The writing
 * thread tells the owner who wrote (src/gears/events/peer-writes.ts): a client's write fires
 * the trigger even while a function of the owner writes the same key, and a function's write
 * fires nothing whichever thread served its TFCALL.
 */
const STAMP = lib(
  "stamp",
  `redis.registerKeySpaceTrigger('runs', 'stamp:', function(client, data){
     // A marker key's run is named as such; the others by their event.
     client.call('rpush', '{st}runs', data.key.endsWith('marker') ? 'marker' : data.event);
   });
   redis.registerFunction('burst', function(client, key){
     client.call('set', '{st}started', '1');
     // The key stays muted on this thread all along: each write's mute outlasts the next one's start.
     for (let i = 0; i < 1500; i++) client.call('hset', key, 'n', String(i));
     // The client's write came while the function wrote (what the test is about).
     return client.call('hget', key, 'client');
   });
   redis.registerFunction('touch', function(client, key){
     for (let i = 0; i < 20; i++) client.call('hset', key, 'n', String(i));
     return 'OK';
   });`,
);

/**
 * A client's write of a key of the triggers' prefix through the thread running them: its reply
 * comes after every trigger run queued before it, its own run ("marker") last.
 */
async function marked(owner: Redis): Promise<void> {
  await owner.call("SET", "stamp:{st}marker", "1");
}

/** Deletes `key`, then the runs its deletion fired (a client's write: its reply waits for them). */
async function reset(client: Redis, key: string): Promise<void> {
  await client.del(key);
  await client.del("{st}runs", "{st}started");
}

for (const mode of BACKEND_MODES) {
  describe(`T&F keyspace triggers with --threads 2 in front of ${Backend.label(mode)}: writes through the thread that does not run the shard's triggers`, function () {
    // Two node processes start and load their isolates: slow on a busy 2-core machine.
    this.timeout(120_000);
    let backend: Backend;
    let proxy: ChildProxy;
    const open: Redis[] = [];
    /** A client on each thread, by that thread's proxy id. */
    const onThread = new Map<string, Redis>();

    const connect = (): Redis => {
      const client = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      open.push(client);
      return client;
    };

    /** A thread's proxy id: the first part of the id of an execution it runs. */
    const proxyIdOf = async (client: Redis): Promise<string> =>
      String(await client.call("RG.EXECUTE", "GB().run('no-such-key:*')", "UNBLOCKING")).split("-")[0];

    /** The proxy id of the thread holding the lease of `key`'s shard (read on the server). */
    async function ownerOf(key: string): Promise<string> {
      const seed = await backend.connect();
      try {
        let first = 0;
        if (backend.isCluster) {
          const slot = calculateSlot(key);
          const ranges = (await seed.text("CLUSTER", "SLOTS")) as [number, number, [string, number]][];
          const port = ranges.find(([from, to]) => slot >= from && slot <= to)![2][1];
          first = Math.min(...ranges.filter((r) => r[2][1] === port).map((r) => r[0]));
        }
        const leaseKey = `{gears-proxy}:lease:${first}`;
        const node = await backend.connect(leaseKey);
        try {
          const value = await eventually(
            () => node.text("GET", leaseKey),
            (v) => typeof v === "string",
            `the lease of ${key}'s shard taken`,
          );
          return String(value).split(" ")[0];
        } finally {
          node.close();
        }
      } finally {
        seed.close();
      }
    }

    /** [owner, other]: the clients of the thread running `key`'s triggers and of the other. */
    async function threadsOf(key: string): Promise<[Redis, Redis]> {
      const owner = await ownerOf(key);
      const other = [...onThread].find(([id]) => id !== owner);
      expect(onThread.has(owner), "the owner is one of the two threads").to.equal(true);
      return [onThread.get(owner)!, other![1]];
    }

    before(async () => {
      backend = await Backend.start(mode);
      proxy = await ChildProxy.start({
        upstreams: [{ port: backend.seed.port }],
        args: ["--threads", "2"],
        readyTimeoutMs: 60_000,
      });
      // The supervisor deals connections in turn: a few reach both threads.
      await eventually(
        async () => {
          const client = connect();
          onThread.set(await proxyIdOf(client), client);
          return onThread.size;
        },
        (n) => n === 2,
        "a client on each thread",
        60_000,
      );
      const [first] = [...onThread.values()];
      expect(await first.call("TFUNCTION", "LOAD", STAMP)).to.equal("OK");
      // Every thread loads it from the store (each runs the triggers of the shards it holds).
      for (const client of onThread.values())
        await eventually(
          async () => JSON.stringify(await client.call("TFUNCTION", "LIST")),
          (list) => list.includes("stamp"),
          "the library on every thread",
          30_000,
        );
    });
    after(async () => {
      for (const c of open.splice(0)) c.disconnect();
      await proxy?.stop();
      await backend?.stop();
    });

    it("a client's write through the other thread, of a key a function of the owner is writing, fires the trigger", async () => {
      const key = "stamp:{st}k";
      const [owner, other] = await threadsOf(key);
      // 1,500 round trips may outlast the default 500 ms on a busy machine.
      expect(await owner.call("CONFIG", "SET", "redisgears_2.lock-redis-timeout", "10000")).to.equal("OK");
      for (let round = 0; round < 3; round++) {
        await reset(owner, key);
        const burst = owner.call("TFCALL", "stamp.burst", "1", key);
        await eventually(
          () => other.get("{st}started"),
          (v) => v === "1",
          "the function has started",
          5000,
        );
        // Answered once its trigger ran, after the function (the library runs one at a time).
        expect(await other.hset(key, "client", "1")).to.equal(1);
        expect(await burst, "the client's HSET came while the function was writing").to.equal("1");
        // Runs of the function's own writes, which must not come, would come before this one.
        await marked(owner);
        expect(await owner.lrange("{st}runs", 0, -1), `round ${round}`).to.deep.equal(["hset", "marker"]);
      }
    });

    it("a function's writes through the other thread fire no trigger, as through the owner; a client's write there does", async () => {
      const key = "stamp:{st}t";
      const [owner, other] = await threadsOf(key);
      for (const [name, client] of [
        ["the other thread", other],
        ["the owner", owner],
      ] as const) {
        for (let round = 0; round < 3; round++) {
          await reset(owner, key);
          expect(await client.call("TFCALL", "stamp.touch", "1", key)).to.equal("OK");
          // Runs of its writes, which must not come, would come before this one.
          await marked(owner);
          expect(
            await owner.lrange("{st}runs", 0, -1),
            `TFCALL through ${name}, round ${round}`,
          ).to.deep.equal(["marker"]);
        }
      }
      // A client's write through the other thread still fires, once its reply comes.
      expect(await other.hset(key, "client", "1")).to.equal(1);
      expect(await owner.lrange("{st}runs", 0, -1)).to.deep.equal(["marker", "hset"]);
    });

    it("a write made directly on the shard, which no thread made, still fires the trigger within a second", async () => {
      const key = "stamp:{st}d";
      const [owner] = await threadsOf(key);
      await reset(owner, key);
      const node = await backend.connect(key);
      try {
        expect(await node.text("HSET", key, "direct", "1")).to.equal(1);
      } finally {
        node.close();
      }
      const started = Date.now();
      await eventually(
        () => owner.lrange("{st}runs", 0, -1),
        (runs) => JSON.stringify(runs) === JSON.stringify(["hset"]),
        "the trigger's run",
        3000,
      );
      expect(Date.now() - started).to.be.below(1000);
    });
  });
}
