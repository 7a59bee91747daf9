import { expect } from "chai";
import { startCluster, startProxy, startRedis, type RedisCluster, type RedisNode } from "./harness/index.js";
import { encode, RawClient, ReceivedText, type Reply } from "./support/raw-client.js";
import { eventually } from "./support/polling.js";

// Orders a client can see between pub/sub commands and PUBLISH, compared with Redis itself.

/** [subscribe first, then in one turn: the command, and another client's publish]. */
type Race = [setup: string[], command: string[], publish: string[]];

const RACES: Race[] = [
  [["PSUBSCRIBE", "chan1.*", "chan2.*"], ["PUNSUBSCRIBE"], ["PUBLISH", "chan1.hi", "hello"]],
  [["SUBSCRIBE", "chan1", "chan2"], ["UNSUBSCRIBE"], ["PUBLISH", "chan1", "hello"]],
  [
    ["SUBSCRIBE", "chan1", "chan2"],
    ["UNSUBSCRIBE", "chan1"],
    ["PUBLISH", "chan1", "hello"],
  ],
  [["SSUBSCRIBE", "schan"], ["SUNSUBSCRIBE"], ["SPUBLISH", "schan", "hello"]],
  [
    ["SUBSCRIBE", "chan0"],
    ["SUBSCRIBE", "chan1"],
    ["PUBLISH", "chan1", "hello"],
  ],
  [
    ["SUBSCRIBE", "chan0"],
    ["PSUBSCRIBE", "chan1.*"],
    ["PUBLISH", "chan1.hi", "hello"],
  ],
];

/**
 * unit/pubsub's "PUBLISH/PSUBSCRIBE after PUNSUBSCRIBE without arguments" and its kin: a
 * subscriber sends a pub/sub command without waiting for its confirmation, and another
 * client then publishes. A third client's command comes just before, in the same turn of
 * the proxy's event loop, so that the shared connection the PUBLISH takes is written to
 * first in that turn. The receivers each PUBLISH counts, round after round.
 */
async function receivers(port: number, [setup, command, publish]: Race, rounds: number): Promise<Reply[]> {
  const out: Reply[] = [];
  for (let i = 0; i < rounds; i++) {
    const [sub, pub, other] = await Promise.all([1, 2, 3].map(() => RawClient.connect(port)));
    try {
      expect(await pub.call("PING")).to.equal("PONG");
      expect(await other.call("PING")).to.equal("PONG");
      sub.send(...setup);
      for (let n = 2; n < setup.length; n++) await sub.next();
      const confirmed = await sub.next();
      expect(confirmed).to.be.an("array");
      other.send("GET", "qa:order");
      sub.send(...command);
      pub.send(...publish);
      out.push(await pub.next());
      await other.next();
    } finally {
      for (const c of [sub, pub, other]) c.close();
    }
  }
  return out;
}

/** A RESP3 connection once HELLO 3 is answered (its reply, which holds the client id, left out). */
async function resp3(port: number): Promise<ReceivedText> {
  const c = await ReceivedText.open(port);
  c.socket.write("*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
  await eventually(
    async () => c.text,
    (t) => t.endsWith("$7\r\nmodules\r\n*0\r\n"),
    "HELLO 3 answered",
  );
  return c;
}

const push = (...items: (string | number)[]): string =>
  `>${items.length}\r\n` +
  items.map((i) => (typeof i === "number" ? `:${i}\r\n` : `$${i.length}\r\n${i}\r\n`)).join("");

/** RESP3 subscribers that PUBLISH to themselves: [subscribe, its confirmations, the commands, what comes back]. */
const SELF_PUBLISH: [string[], string, string[][], string][] = [
  [
    ["SUBSCRIBE", "qa:c1"],
    push("subscribe", "qa:c1", 1),
    [["PUBLISH", "qa:c1", "m"], ["PING"]],
    push("message", "qa:c1", "m") + ":1\r\n+PONG\r\n",
  ],
  [
    ["PSUBSCRIBE", "qa:c*"],
    push("psubscribe", "qa:c*", 1),
    [
      ["PUBLISH", "qa:c2", "m"],
      ["PUBLISH", "qa:x", "n"],
      ["PUBLISH", "qa:c3", "o"],
    ],
    push("pmessage", "qa:c*", "qa:c2", "m") +
      ":1\r\n:0\r\n" +
      push("pmessage", "qa:c*", "qa:c3", "o") +
      ":1\r\n",
  ],
  [
    ["SSUBSCRIBE", "qa:s1"],
    push("ssubscribe", "qa:s1", 1),
    [
      ["SPUBLISH", "qa:s1", "m"],
      ["SET", "qa:k", "v"],
      ["SPUBLISH", "qa:s1", "n"],
    ],
    push("smessage", "qa:s1", "m") + ":1\r\n+OK\r\n" + push("smessage", "qa:s1", "n") + ":1\r\n",
  ],
];

async function selfPublish(
  port: number,
  [subscribe, confirmation, commands, expected]: (typeof SELF_PUBLISH)[0],
): Promise<string> {
  const c = await resp3(port);
  try {
    expect(await c.exchange([subscribe], confirmation.length)).to.equal(confirmation);
    return await c.exchange(commands, expected.length);
  } finally {
    c.socket.destroy();
  }
}

describe("qa: pub/sub order against PUBLISH", function () {
  this.timeout(60_000);

  describe("one redis-server", () => {
    let server: RedisNode;
    before(async () => {
      server = await startRedis();
    });
    after(async () => {
      await server?.stop();
    });

    it("a (un)subscribe command reaches Redis before another client's PUBLISH sent after it", async () => {
      // One shared connection, so the third client's command and the PUBLISH share it.
      const proxy = await startProxy([{ port: server.port }], { upstreamConnections: 1 });
      try {
        for (const race of RACES) {
          const direct = await receivers(server.port, race, 3);
          expect(await receivers(proxy.port, race, 5), race.flat().join(" ")).to.deep.equal([
            ...direct,
            direct[0],
            direct[0],
          ]);
        }
      } finally {
        await proxy.close();
      }
    });

    it("RESP2: a command pipelined behind the last UNSUBSCRIBE runs, as the client left subscriber mode", async () => {
      const proxy = await startProxy([{ port: server.port }]);
      const steps: string[][] = [
        ["PUNSUBSCRIBE"],
        ["GET", "qa:none"],
        ["UNSUBSCRIBE", "qa:c1"],
        ["GET", "qa:none"],
        ["PING"],
      ];
      const run = async (port: number): Promise<string> => {
        const c = await ReceivedText.open(port);
        try {
          const confirmations = push("subscribe", "qa:c1", 1) + push("psubscribe", "qa:p*", 2);
          const subscribed = await c.exchange(
            [
              ["SUBSCRIBE", "qa:c1"],
              ["PSUBSCRIBE", "qa:p*"],
            ],
            confirmations.length,
          );
          expect(subscribed).to.equal(confirmations.replaceAll(">", "*"));
          const at = c.text.length;
          c.socket.write(Buffer.concat(steps.map((step) => encode(step))));
          await eventually(
            async () => c.text.slice(at),
            (t) => t.endsWith("+PONG\r\n"),
            "the replies",
          );
          return c.text.slice(at);
        } finally {
          c.socket.destroy();
        }
      };
      try {
        const direct = await run(server.port);
        expect(direct).to.contain("-ERR Can't execute 'get'");
        expect(direct.endsWith(":0\r\n$-1\r\n+PONG\r\n"), direct).to.equal(true);
        expect(await run(proxy.port)).to.equal(direct);
      } finally {
        await proxy.close();
      }
    });

    it("RESP3: a subscriber's PUBLISH to itself is answered after its message, as Redis writes them", async () => {
      const proxy = await startProxy([{ port: server.port }]);
      try {
        for (const session of SELF_PUBLISH) {
          expect(await selfPublish(server.port, session)).to.equal(session[3]);
          expect(await selfPublish(proxy.port, session)).to.equal(session[3]);
        }
      } finally {
        await proxy.close();
      }
    });
  });

  describe("a 3-master cluster", () => {
    let cluster: RedisCluster;
    before(async () => {
      cluster = await startCluster({ masters: 3 });
    });
    after(async () => {
      await cluster?.stop();
    });

    it("RESP3 PUBLISH and SPUBLISH to itself through the proxy: what one Redis sends", async () => {
      const proxy = await startProxy([{ port: cluster.nodes[0].port }]);
      try {
        for (const session of SELF_PUBLISH)
          expect(await selfPublish(proxy.port, session)).to.equal(session[3]);
      } finally {
        await proxy.close();
      }
    });
  });
});
