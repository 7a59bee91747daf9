import { expect } from "chai";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { startProxy, startRedis } from "./harness/index.js";

const TRIGGER_LIBRARY = `#!js api_version=1.0 name=phantoms
redis.registerKeySpaceTrigger('log', 'q:', function(client, data){
  client.call('rpush', 'tf-log', data.event + ' ' + data.key);
});`;

/**
 * Writes that succeed without a keyspace notification of their own (XACK, XREADGROUP of an
 * existing consumer, a second PFADD of an element, ZADD of an unchanged score, ZPOPMIN of
 * nothing, GETEX without an expiry...). The write journal waited for a notification that never came, then announced
 * each at its settle as a lost one: a gears registration and a T&F keyspace trigger ran on
 * events Redis never emitted ("xack", "xreadgroup"...), and a later write's notification was
 * taken for the earlier write's, so that write's event came twice.
 */
describe("qa5: writes that notify nothing give no event", () => {
  it("a registration and a keyspace trigger see exactly Redis' notifications", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const client = new Redis(proxy.port);
    try {
      expect(
        await client.call(
          "RG.EXECUTE",
          "GB().foreach(x => execute('RPUSH', 'rg-log', x.event + ' ' + x.key)).register('q:*')",
        ),
      ).to.equal("OK");
      expect(await client.call("TFUNCTION", "LOAD", TRIGGER_LIBRARY)).to.equal("OK");
      await client.xadd("q:s", "1-1", "a", "b");
      await client.xgroup("CREATE", "q:s", "g", "0");
      await client.xreadgroup("GROUP", "g", "c1", "STREAMS", "q:s", ">");
      await client.xadd("q:s", "2-1", "a", "b");
      await client.xreadgroup("GROUP", "g", "c1", "STREAMS", "q:s", ">");
      expect(await client.xack("q:s", "g", "1-1")).to.equal(1);
      expect(await client.xack("q:s", "g", "1-1")).to.equal(0);
      await client.pfadd("q:p", "a");
      expect(await client.pfadd("q:p", "a")).to.equal(0);
      expect(await client.zpopmin("q:none")).to.deep.equal([]);
      await client.set("q:g", "v");
      expect(await client.call("GETEX", "q:g")).to.equal("v");
      expect(await client.setrange("q:g", 0, "")).to.equal(1);
      await client.zadd("q:z", 1, "a");
      expect(await client.zadd("q:z", 1, "a")).to.equal(0);
      expect(await client.zadd("q:z", 2, "a")).to.equal(0);
      await client.pexpire("q:g", 100_000);
      await client.persist("q:g");
      // Source and destination one key: Redis answers without a notification.
      await client.sadd("q:set", "a");
      expect(await client.smove("q:set", "q:set", "a")).to.equal(1);
      await client.set("q:r", "1");
      expect(await client.rename("q:r", "q:r")).to.equal("OK");
      // COPY into another database: its notification is that database's.
      expect(await client.call("COPY", "q:r", "q:c", "DB", "1")).to.equal(1);
      // LINSERT of a missing key, or with a pivot not in the list.
      expect(await client.linsert("q:none", "BEFORE", "x", "y")).to.equal(0);
      await client.rpush("q:l", "a");
      expect(await client.linsert("q:l", "BEFORE", "nope", "y")).to.equal(-1);
      // RESP3: SPOP with a count answers an empty set (~0) for a missing key.
      const resp3 = createClient({ socket: { port: proxy.port } });
      await resp3.connect();
      try {
        expect(await resp3.sendCommand(["SPOP", "q:none", "5"])).to.deep.equal([]);
      } finally {
        await resp3.quit();
      }
      // Past the journal's settle (a barrier each second).
      await new Promise((r) => setTimeout(r, 3000));
      const expected = [
        "xadd q:s",
        "xgroup-create q:s",
        "xgroup-createconsumer q:s",
        "xadd q:s",
        "pfadd q:p",
        "set q:g",
        "expire q:g",
        "persist q:g",
        "zadd q:z",
        "zadd q:z",
        "sadd q:set",
        "set q:r",
        "rpush q:l",
      ].sort();
      expect((await client.lrange("rg-log", 0, -1)).sort()).to.deep.equal(expected);
      expect((await client.lrange("tf-log", 0, -1)).sort()).to.deep.equal(expected);
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });
});
