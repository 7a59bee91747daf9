import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { serverAvailable, type ServerKind } from "./support/backend.js";
import { eventually } from "./support/polling.js";
import { encode, ReceivedText } from "./support/raw-client.js";

// A subscribed RESP3 client publishing to its own channel gets the reply and its own message
// in the server's order: the message first up to Redis 7.0, the reply first from Redis 7.2 and
// in Valkey. The same bytes directly and through the proxy, on each server kind available.

/** What a RESP3 connection receives for PUBLISH then PING, once subscribed to the channel. */
async function selfPublish(port: number): Promise<string> {
  const r = await ReceivedText.open(port);
  try {
    r.socket.write(
      Buffer.concat([encode(["HELLO", "3"]), encode(["SUBSCRIBE", "self"]), encode(["PING", "x"])]),
    );
    await eventually(
      async () => r.text,
      (t) => t.endsWith("$1\r\nx\r\n"),
      "subscribed",
    );
    const start = r.text.length;
    r.socket.write(Buffer.concat([encode(["PUBLISH", "self", "m"]), encode(["PING"])]));
    return await eventually(
      async () => r.text.slice(start),
      (t) => t.endsWith("+PONG\r\n"),
      "PUBLISH and PING answered",
    );
  } finally {
    r.socket.destroy();
  }
}

for (const server of ["redis", "valkey", "redis6", "redis8"] as const satisfies readonly ServerKind[]) {
  describe(`RESP3 PUBLISH to the subscriber's own channel, in front of ${server}`, function () {
    this.timeout(30_000);
    let redis: RedisNode;
    let proxy: RunningProxy;

    before(async function () {
      if (!serverAvailable(server)) this.skip();
      redis = await startRedis({ binary: `${server}-server` });
      proxy = await startProxy([{ port: redis.port }]);
    });

    after(async () => {
      await proxy?.close();
      await redis?.stop();
    });

    it("the reply and the message come in the server's order, before the next command's reply", async () => {
      const direct = await selfPublish(redis.port);
      expect(direct).to.include(">3\r\n$7\r\nmessage\r\n$4\r\nself\r\n$1\r\nm\r\n");
      expect(await selfPublish(proxy.port)).to.equal(direct);
    });
  });
}
