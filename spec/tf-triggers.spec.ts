import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES, Direct } from "./support/backend.js";
import { eventually } from "./support/polling.js";

const lib = (name: string, body: string): string => `#!js api_version=1.0 name=${name}\n${body}`;

/** The documentation's keyspace trigger: stamps a field on every change to a fellowship:* hash. */
const FELLOWSHIP = lib(
  "fellowship",
  `redis.registerKeySpaceTrigger('consumer', 'fellowship:', function(client, data){
     if (client.call('type', data.key) != 'hash') return;
     const count = client.call('hincrby', data.key, '_changes_', '1');
     client.call('hset', data.key, '_last_event_', data.event + ':' + count);
   }, {description: 'stamps fellowship hashes'});`,
);

for (const mode of BACKEND_MODES) {
  describe(`Triggers and Functions: keyspace triggers, through the proxy in front of ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let c: Redis;
    let direct: Direct;

    before(async () => {
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      c = new Redis(proxy.port);
      direct = new Direct(backend);
    });
    after(async () => {
      c.disconnect();
      await proxy.close();
      await backend.stop();
    });

    it("the documentation's trigger: a write through the proxy sees the trigger's effect as soon as it returns; its own writes do not fire it again", async () => {
      expect(await c.call("TFUNCTION", "LOAD", FELLOWSHIP)).to.equal("OK");
      for (const [i, name] of ["frodo", "sam", "merry", "pippin"].entries()) {
        await c.hset(`fellowship:${i}`, "name", name);
        // No wait: the reply came after the trigger ran.
        expect(await c.hget(`fellowship:${i}`, "_last_event_")).to.equal("hset:1");
      }
      await c.hset("fellowship:0", "ring", "yes");
      expect(await c.hgetall("fellowship:0")).to.deep.equal({
        name: "frodo",
        ring: "yes",
        _changes_: "2",
        _last_event_: "hset:2",
      });
      await c.set("other:1", "x");
      const listed = ((await c.call("TFUNCTION", "LIST", "v")) as unknown[][])[0];
      const trigger = (listed[listed.indexOf("keyspace_triggers") + 1] as unknown[][])[0];
      const field = (name: string): unknown => trigger[trigger.indexOf(name) + 1];
      expect(field("name")).to.equal("consumer");
      expect(field("description")).to.equal("stamps fellowship hashes");
      expect(field("num_trigger")).to.equal(5);
      expect(field("num_success")).to.equal(5);
      expect(field("num_failed")).to.equal(0);
    });

    it("a write made directly on a shard reaches the trigger within a second", async () => {
      const node = await direct.on("fellowship:direct");
      await node.call("HSET", "fellowship:direct", "name", "gandalf");
      const started = Date.now();
      const stamped = await eventually(
        () => c.hget("fellowship:direct", "_last_event_"),
        (v) => v !== null,
        "the trigger's stamp",
        3000,
      );
      expect(stamped).to.equal("hset:1");
      expect(Date.now() - started).to.be.below(1000);
    });

    it("a trigger that throws counts as failed with its last error; REPLACE keeps the stats", async () => {
      const code = (n: number): string =>
        lib("failing", `redis.registerKeySpaceTrigger('t', 'fail:', function(){ throw 'no luck ${n}'; });`);
      expect(await c.call("TFUNCTION", "LOAD", code(1))).to.equal("OK");
      await c.set("fail:1", "x");
      expect(await c.call("TFUNCTION", "LOAD", "REPLACE", code(2))).to.equal("OK");
      await c.set("fail:2", "x");
      const listed = ((await c.call("TFUNCTION", "LIST", "LIBRARY", "failing", "v")) as unknown[][])[0];
      const trigger = (listed[listed.indexOf("keyspace_triggers") + 1] as unknown[][])[0];
      expect(trigger[trigger.indexOf("num_failed") + 1]).to.equal(2);
      expect(trigger[trigger.indexOf("last_error") + 1]).to.equal("no luck 2");
      expect(await c.call("TFUNCTION", "DELETE", "failing")).to.equal("OK");
    });
  });
}
