import { expect } from "chai";
import { keySlot, keySlotIn } from "../src/routing/key-slot.js";
import { startRedis, type RedisNode } from "./harness/index.js";

describe("key slots", () => {
  let redis: RedisNode;
  before(async () => {
    redis = await startRedis({ args: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] });
  });
  after(async () => {
    await redis.stop();
  });

  it("agree with CLUSTER KEYSLOT for plain, tagged and odd keys", async () => {
    const keys = [
      "foo",
      "123456789",
      "{user1000}.following",
      "{user1000}.followers",
      "foo{}{bar}",
      "x{}}",
      "{}",
      "{",
      "}{a}",
      "a{b}c{d}",
      "ключ",
      "",
      ...Array.from({ length: 200 }, (_, i) => `key:${i}:{t${i % 7}}`),
    ];
    for (const key of keys) {
      const expected = Number(await redis.call("CLUSTER", "KEYSLOT", key));
      expect(keySlot(key), key).to.equal(expected);
      // The same key in the middle of other bytes, as it lies in a client's request.
      const around = Buffer.concat([Buffer.from("{x}"), Buffer.from(key), Buffer.from("}{y")]);
      expect(keySlotIn(around, 3, 3 + Buffer.byteLength(key)), `${key} in place`).to.equal(expected);
    }
  });
});
