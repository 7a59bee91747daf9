import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis, type RedisNode } from "./harness/index.js";
import { eventually } from "./support/polling.js";

// Checks of register()'s options added since a session was stored (a string where a list is
// meant, an unknown key type...) must not keep an older build's session from coming back: it
// ran there. Those that keep shared connections safe (hooks of SUBSCRIBE...) still apply.

describe("gears: sessions stored by an older build come back under newer option checks", function () {
  this.timeout(30_000);
  let redis: RedisNode;

  before(async () => {
    redis = await startRedis();
  });

  after(async () => {
    await redis?.stop();
  });

  it("a stored session with eventTypes given as a string (refused by RG.EXECUTE now) is brought back and runs", async () => {
    const first = await startProxy([{ port: redis.port }]);
    const c = new Redis(first.port);
    const raw = new Redis(redis.port);
    try {
      expect(
        await c.call(
          "RG.EXECUTE",
          "GB().foreach(x => execute('RPUSH', 'seen', x.key)).register('old:*', {eventTypes: ['set']})",
        ),
      ).to.equal("OK");
      c.disconnect();
      await first.close();
      // What an older build stored: its options as that build took them.
      let key: string | undefined;
      for (const k of await raw.keys("{gears-proxy}:session*")) if ((await raw.type(k)) === "hash") key = k;
      expect(key, "the sessions hash").to.not.equal(undefined);
      const sessions = await raw.hgetall(key!);
      const [id, json] = Object.entries(sessions).find(([, v]) => v.includes("old:*"))!;
      const older = json.replace("eventTypes: ['set']", "eventTypes: 'set'");
      expect(older).to.not.equal(json);
      await raw.hset(key!, id, older);
      const second = await startProxy([{ port: redis.port }]);
      const d = new Redis(second.port);
      try {
        await eventually(
          async () => JSON.stringify(await d.call("RG.DUMPREGISTRATIONS")),
          (dump) => dump.includes("old:*"),
          "the older session's registration back",
        );
        await d.set("old:1", "v");
        await eventually(
          () => d.lrange("seen", 0, -1),
          (seen) => seen.includes("old:1"),
          "its handler run",
        );
      } finally {
        d.disconnect();
        await second.close();
      }
    } finally {
      raw.disconnect();
    }
  });
});
