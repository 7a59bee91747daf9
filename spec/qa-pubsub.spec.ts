import { expect } from "chai";
import { startCluster, startProxy, startRedis, type RedisCluster, type RedisNode } from "./harness/index.js";
import { ReceivedText as Received, encode } from "./support/raw-client.js";
import { eventually } from "./support/polling.js";

// A RESP2 client in subscriber mode may send PING, and Redis refuses anything else with an
// error, in order: a client matches replies to its commands by their position. Through the
// proxy the PINGs are answered on the subscription connection while the refusal used to be
// written at once, ahead of the pongs still to come.

const REFUSED = (name: string): string =>
  `-ERR Can't execute '${name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n`;

const pong = (text: string): string => `*2\r\n$4\r\npong\r\n$${text.length}\r\n${text}\r\n`;

/** Subscribes (one command), then pipelines PINGs around refused commands; the bytes that come back. */
async function session(port: number, subscribe: string[]): Promise<string> {
  const c = await Received.open(port);
  try {
    const [kind, channel] = subscribe;
    const confirmation = `*3\r\n$${kind.length}\r\n${kind.toLowerCase()}\r\n$${channel.length}\r\n${channel}\r\n:1\r\n`;
    expect(await c.exchange([subscribe], confirmation.length)).to.equal(confirmation);
    return await c.exchange(
      [["PING"], ["PING", "a"], ["GET", "k"], ["PING", "b"], ["SET", "k", "v"], ["GET", "k"], ["PING"]],
      EXPECTED.length,
    );
  } finally {
    c.socket.destroy();
  }
}

/** PINGs, a refusal and RESET pipelined: RESET leaves subscriber mode only after answering them all. */
async function resetSession(port: number, subscribes: string[][]): Promise<string> {
  const c = await Received.open(port);
  try {
    for (const s of subscribes) {
      const before = c.text.length;
      c.socket.write(encode(s));
      await eventually(
        async () => c.text.slice(before),
        (text) => text.endsWith("\r\n") && /:\d+\r\n$/.test(text),
        `${s[0]} confirmed`,
      );
    }
    return await c.exchange(
      [["PING"], ["PING", "a"], ["GET", "k"], ["RESET"], ["GET", "k"]],
      AFTER_RESET.length,
    );
  } finally {
    c.socket.destroy();
  }
}

const AFTER_RESET = pong("") + pong("a") + REFUSED("get") + "+RESET\r\n$-1\r\n";

const EXPECTED =
  pong("") + pong("a") + REFUSED("get") + pong("b") + REFUSED("set") + REFUSED("get") + pong("");

describe("qa: RESP2 subscriber mode, PINGs pipelined with refused commands", () => {
  describe("one redis-server", () => {
    let server: RedisNode;
    before(async () => {
      server = await startRedis();
    });
    after(async () => {
      await server?.stop();
    });

    it("Redis and the proxy answer in request order: pong, pong, refusal, pong, refusals, pong", async () => {
      const proxy = await startProxy([{ port: server.port }]);
      try {
        expect(await session(server.port, ["SUBSCRIBE", "qa:ch"])).to.equal(EXPECTED);
        expect(await session(proxy.port, ["SUBSCRIBE", "qa:ch"])).to.equal(EXPECTED);
        expect(await session(proxy.port, ["PSUBSCRIBE", "qa:*"])).to.equal(EXPECTED);
        expect(await session(proxy.port, ["SSUBSCRIBE", "qa:sch"])).to.equal(EXPECTED);
      } finally {
        await proxy.close();
      }
    });
  });

  it("RESET behind them: the pongs and the refusal first, then +RESET, then the next command's reply", async () => {
    const server = await startRedis();
    const proxy = await startProxy([{ port: server.port }]);
    try {
      expect(await resetSession(server.port, [["SUBSCRIBE", "qa:ch"]])).to.equal(AFTER_RESET);
      expect(await resetSession(proxy.port, [["SUBSCRIBE", "qa:ch"]])).to.equal(AFTER_RESET);
      expect(
        await resetSession(proxy.port, [
          ["SUBSCRIBE", "qa:ch"],
          ["SSUBSCRIBE", "qa:s"],
        ]),
      ).to.equal(AFTER_RESET);
    } finally {
      await proxy.close();
      await server.stop();
    }
  });

  describe("a 3-master cluster", () => {
    let cluster: RedisCluster;
    before(async () => {
      cluster = await startCluster({ masters: 3 });
    });
    after(async () => {
      await cluster?.stop();
    });

    it("SUBSCRIBE and SSUBSCRIBE through the proxy: the same order as one Redis", async () => {
      const proxy = await startProxy([{ port: cluster.nodes[0].port }]);
      try {
        expect(await session(proxy.port, ["SUBSCRIBE", "qa:ch"])).to.equal(EXPECTED);
        expect(await session(proxy.port, ["SSUBSCRIBE", "qa:sch"])).to.equal(EXPECTED);
        // Shard channels of every shard and a channel: RESET waits for each connection's frames.
        const shards = [
          ["SUBSCRIBE", "qa:ch"],
          ...["a", "b", "c", "d", "e"].map((t) => ["SSUBSCRIBE", `qa:${t}`]),
        ];
        expect(await resetSession(proxy.port, shards)).to.equal(AFTER_RESET);
      } finally {
        await proxy.close();
      }
    });
  });
});
