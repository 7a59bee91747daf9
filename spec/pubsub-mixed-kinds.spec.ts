import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { Backend } from "./support/backend.js";
import { RawClient, ReplyError, toText, type Reply, type Value } from "./support/raw-client.js";

const textOf = (reply: Reply): Value =>
  reply instanceof ReplyError ? `ERROR: ${reply.message}` : toText(reply);

// A RESP2 client subscribed to channels, patterns and shard channels at once, which then leaves
// its shard channels: it stays in subscriber mode (one server's SSUBSCRIBE confirmations count
// shard channels alone, the others channels and patterns), and RESET still answers (the
// shard's connection has left subscriber mode and answers the proxy's marker PING as a plain
// PING). The replies are compared with one redis-server's.

/** Every reply a raw RESP2 client gets for the steps, each step's replies read before the next. */
async function stepsOn(port: number): Promise<Value[]> {
  const c = await RawClient.connect(port);
  try {
    const replies: Value[] = [];
    const step = async (frames: number, ...args: string[]): Promise<void> => {
      c.send(...args);
      for (let i = 0; i < frames; i++) replies.push(textOf(await c.next(3000)));
    };
    await step(2, "SUBSCRIBE", "c1", "c2");
    await step(1, "PSUBSCRIBE", "p*");
    await step(1, "SSUBSCRIBE", "s1");
    await step(1, "SUNSUBSCRIBE", "s1");
    await step(1, "GET", "a");
    await step(1, "PING");
    await step(1, "RESET");
    await step(1, "GET", "a");
    return replies;
  } finally {
    c.close();
  }
}

for (const mode of ["standalone", "cluster"] as const) {
  describe(`channels, patterns and shard channels together, RESP2, through the proxy, ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let single: RedisNode;

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      single = await startRedis();
    });

    after(async () => {
      await proxy?.close();
      await backend?.stop();
      await single?.stop();
    });

    it("leaving the shard channels keeps subscriber mode, and RESET answers, as one redis-server", async () => {
      const direct = await stepsOn(single.port);
      expect(direct[5]).to.match(/^ERROR: ERR Can't execute 'get'/);
      expect(direct[7]).to.equal("RESET");
      expect(await stepsOn(proxy.port)).to.deep.equal(direct);
    });
  });
}
