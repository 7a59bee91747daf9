import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis } from "./harness/index.js";

/**
 * Writes that can answer without a notification of their own, where the reply alone does not
 * say so: the ...STORE family and BITOP storing nothing (Redis deletes the destination, "del",
 * only when it was there), BITFIELD with only GET, GETEX PERSIST of a key without a TTL, ZADD
 * INCR / ZINCRBY of 0 on a member already there. The write journal took each for a write whose
 * notification was lost and announced it at its settle: handlers ran on events Redis never
 * emitted. Compared here with what Redis itself notifies, seen on a direct subscription.
 */
describe("write journal: writes that may notify nothing", () => {
  it("a registration sees exactly the keyspace notifications Redis emits", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const client = new Redis(proxy.port);
    const direct = new Redis(redis.port);
    const watcher = new Redis(redis.port);
    const seen: string[] = [];
    try {
      await direct.config("SET", "notify-keyspace-events", "KEA");
      await watcher.psubscribe("__keyspace@0__:q:*");
      watcher.on("pmessage", (_p, channel: string, event: string) =>
        seen.push(`${event} ${channel.slice("__keyspace@0__:".length)}`),
      );
      expect(
        await client.call(
          "RG.EXECUTE",
          "GB().foreach(x => execute('RPUSH', 'rg-log', x.event + ' ' + x.key)).register('q:*')",
        ),
      ).to.equal("OK");
      // Stores of an empty result: nothing when the destination was missing, "del" when it was there.
      expect(await client.sinterstore("q:d", "q:none1", "q:none2")).to.equal(0);
      expect(await client.sunionstore("q:d", "q:none1")).to.equal(0);
      expect(await client.sdiffstore("q:d", "q:none1")).to.equal(0);
      expect(await client.zunionstore("q:d", 1, "q:none1")).to.equal(0);
      expect(await client.zinterstore("q:d", 1, "q:none1")).to.equal(0);
      expect(await client.call("ZDIFFSTORE", "q:d", "1", "q:none1")).to.equal(0);
      expect(await client.call("ZRANGESTORE", "q:d", "q:none1", "0", "-1")).to.equal(0);
      expect(await client.bitop("AND", "q:d", "q:none1", "q:none2")).to.equal(0);
      expect(
        await client.call("GEOSEARCHSTORE", "q:d", "q:none1", "FROMLONLAT", "0", "0", "BYRADIUS", "1", "km"),
      ).to.equal(0);
      // GEORADIUS reads unless it has STORE.
      await client.geoadd("q:geo", 0, 0, "m");
      expect(await client.call("GEORADIUS", "q:geo", "0", "0", "1", "km")).to.deep.equal(["m"]);
      expect(await client.call("GEORADIUSBYMEMBER", "q:geo", "m", "1", "km")).to.deep.equal(["m"]);
      expect(await client.call("GEORADIUS", "q:geo", "50", "50", "1", "km", "STORE", "q:d")).to.equal(0);
      expect(await client.call("GEORADIUS", "q:geo", "0", "0", "1", "km", "STORE", "q:gs")).to.equal(1);
      await client.sadd("q:there", "a");
      expect(await client.sinterstore("q:there", "q:none1", "q:none2")).to.equal(0);
      // BITFIELD reading only; then one that writes.
      await client.set("q:bf", "a");
      expect(await client.call("BITFIELD", "q:bf", "GET", "u8", "0")).to.deep.equal([97]);
      expect(await client.call("BITFIELD", "q:bf", "OVERFLOW", "FAIL", "GET", "u8", "0")).to.deep.equal([97]);
      expect(await client.call("BITFIELD", "q:bf", "SET", "u8", "0", "98")).to.deep.equal([97]);
      // Writes that leave every bit as it was notify nothing; one that flips a bit notifies "setbit".
      expect(await client.call("BITFIELD", "q:bf", "SET", "u8", "0", "98")).to.deep.equal([98]);
      expect(await client.call("BITFIELD", "q:bf", "INCRBY", "u8", "0", "0")).to.deep.equal([98]);
      expect(
        await client.call("BITFIELD", "q:bf", "OVERFLOW", "FAIL", "INCRBY", "u8", "0", "300"),
      ).to.deep.equal([null]);
      expect(await client.setbit("q:bf", 1, 1)).to.equal(1);
      expect(await client.setbit("q:bf", 0, 0)).to.equal(0);
      expect(await client.setbit("q:bf", 7, 1)).to.equal(0);
      // GETEX PERSIST: "persist" only when there was a TTL to remove.
      expect(await client.call("GETEX", "q:bf", "PERSIST")).to.equal("c");
      await client.pexpire("q:bf", 100_000);
      expect(await client.call("GETEX", "q:bf", "PERSIST")).to.equal("c");
      // An increment of 0 leaves an existing member's score alone; a new member is added.
      await client.zadd("q:z", 1, "a");
      expect(await client.call("ZADD", "q:z", "INCR", "0", "a")).to.equal("1");
      expect(await client.zincrby("q:z", 0, "a")).to.equal("1");
      expect(await client.zincrby("q:z", "-0.0", "a")).to.equal("1");
      expect(await client.zincrby("q:z", 0, "b")).to.equal("0");
      expect(await client.zincrby("q:z", 2, "a")).to.equal("3");
      // An increment lost in a large score's precision changes nothing.
      await client.zadd("q:big", "1e17", "a");
      expect(await client.zincrby("q:big", 1, "a")).to.equal("1e+17");
      expect(await client.call("ZADD", "q:big", "INCR", "1", "a")).to.equal("1e+17");
      // STORE and STOREDIST both: Redis writes the last one named.
      expect(
        await client.call("GEORADIUS", "q:geo", "0", "0", "1", "km", "STOREDIST", "q:sd1", "STORE", "q:sd2"),
      ).to.equal(1);
      // GETEX EXAT in the past deletes the key: "del".
      await client.set("q:gx", "v");
      expect(await client.call("GETEX", "q:gx", "EXAT", "1")).to.equal("v");
      // Past the journal's settle (a barrier each second).
      await new Promise((r) => setTimeout(r, 3000));
      expect(seen).to.include("del q:there");
      expect(seen).to.include("zincr q:z");
      expect(seen).to.include("georadiusstore q:gs");
      expect(seen).to.include("georadiusstore q:sd2");
      expect(seen).to.include("del q:gx");
      expect(seen).to.include("setbit q:bf");
      expect((await client.lrange("rg-log", 0, -1)).sort()).to.deep.equal([...seen].sort());
    } finally {
      client.disconnect();
      direct.disconnect();
      watcher.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });
});
