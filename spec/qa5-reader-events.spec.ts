import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis } from "./harness/index.js";

/** numTriggered of each registration in RG.DUMPREGISTRATIONS, by id. */
async function triggered(client: Redis): Promise<Map<string, number>> {
  const dump = (await client.call("RG.DUMPREGISTRATIONS")) as unknown[][];
  const out = new Map<string, number>();
  for (const entry of dump) {
    const data = entry[entry.indexOf("RegistrationData") + 1] as unknown[];
    out.set(String(entry[1]), Number(data[data.indexOf("numTriggered") + 1]));
  }
  return out;
}

describe("qa5: the reader's own reads give no events", () => {
  // README's "all keys" and "cache miss" examples together: the all-keys registration saw the
  // keymiss, read the missing key's value (TYPE in the reading script), which notified a
  // keymiss again, and so on for ever, thousands of executions a second.
  it("a keymiss seen by a registration that reads values runs it once, not in a loop", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const client = new Redis(proxy.port);
    try {
      expect(
        await client.call(
          "RG.EXECUTE",
          "GB().filter(x => x.key !== 'all_keys').foreach(x => execute('SADD', 'all_keys', x.key)).register()",
          "ID",
          "all-keys",
        ),
      ).to.equal("OK");
      expect(
        await client.call(
          "RG.EXECUTE",
          "GB().foreach(x => overrideReply('computed:' + x.key)).register('cache:*', {commands: ['get'], eventTypes: ['keymiss']})",
        ),
      ).to.equal("OK");
      expect(await client.get("cache:zz")).to.equal("computed:cache:zz");
      await new Promise((r) => setTimeout(r, 1500));
      const first = await triggered(client);
      await new Promise((r) => setTimeout(r, 1000));
      const second = await triggered(client);
      for (const [id, n] of second) {
        expect(n, `registration ${id} still triggered`).to.equal(first.get(id));
        expect(n, `registration ${id} triggered`).to.be.below(10);
      }
      expect((await client.smembers("all_keys")).sort()).to.deep.equal(["cache:zz"]);
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });

  it("a del seen by a registration that reads values gives it no keymiss of its own read", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const client = new Redis(proxy.port);
    try {
      // Something needs keymiss notifications ("m"), so that they are on.
      await client.call(
        "RG.EXECUTE",
        "GB().foreach(x => overrideReply('x')).register('cache:*', {commands: ['get'], eventTypes: ['keymiss']})",
      );
      await client.call(
        "RG.EXECUTE",
        "GB().foreach(x => execute('RPUSH', 'seen', x.event + ':' + x.type)).register('k:*')",
      );
      await client.set("k:1", "v");
      await client.del("k:1");
      await new Promise((r) => setTimeout(r, 1000));
      expect(await client.lrange("seen", 0, -1)).to.deep.equal(["set:string", "del:empty"]);
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });

  // T&F's triggers never saw keymiss (the module subscribed to "all", which leaves it out).
  // With keymiss notifications on for a gears registration, the documentation's fellowship
  // trigger saw the keymiss of a GET, and the TYPE it then calls on the missing key gave
  // another keymiss: it ran for ever.
  // Its DEL once fired no trigger about 1 run in 8: the trigger's own HSET had muted the key
  // until a barrier, which the DEL's reply could beat (spec/tf-triggers, "a client's write of a
  // key a function is writing...").
  it("T&F keyspace triggers get no keymiss, also when a gears registration turned keymiss notifications on", async function () {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const client = new Redis(proxy.port);
    try {
      const library = `#!js api_version=1.0 name=fellowship
redis.registerKeySpaceTrigger('consumer', 'fellowship:', function(client, data){
  client.call('rpush', 'trigger-runs', data.event);
  if (client.call('type', data.key) != 'hash') { return; }
  client.call('hset', data.key, 'last_updated', client.call('time')[0]);
});`;
      expect(await client.call("TFUNCTION", "LOAD", library)).to.equal("OK");
      expect(
        await client.call(
          "RG.EXECUTE",
          "GB().foreach(x => overrideReply('computed')).register('cache:*', {commands: ['get'], eventTypes: ['keymiss']})",
        ),
      ).to.equal("OK");
      expect(await client.get("fellowship:nobody")).to.equal(null);
      await client.hset("fellowship:frodo", "name", "Frodo");
      await client.del("fellowship:frodo");
      await new Promise((r) => setTimeout(r, 1500));
      expect(await client.lrange("trigger-runs", 0, -1)).to.deep.equal(["hset", "del"]);
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });
});
