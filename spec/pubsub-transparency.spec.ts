import { expect } from "chai";
import { startCluster, startProxy, startRedis, type RedisCluster, type RedisNode } from "./harness/index.js";
import net from "node:net";
import { encode, ReceivedText } from "./support/raw-client.js";
import { eventually } from "./support/polling.js";
import { HELLO_END, transcript, type Step } from "./support/transcript.js";

// Pub/sub sequences run against one redis-server directly and through the proxy: the bytes
// each connection receives must be the same (CLIENT IDs in HELLO's reply aside).

const PONG2 = "*2\r\n$4\r\npong\r\n$0\r\n\r\n";
/** The reply to `PING end` of a RESP2 subscriber. */
const END2 = "*2\r\n$4\r\npong\r\n$3\r\nend\r\n";

/** HELLO 2 from a subscribed RESP3 client: a RESP2 subscriber from then on. */
const HELLO2_CASES: [name: string, steps: Step[]][] = [
  [
    "HELLO 2 pipelined behind the first SUBSCRIBE, then PING",
    [
      { send: [["HELLO", "3"]], until: HELLO_END },
      { send: [["SUBSCRIBE", "qa:c1"], ["HELLO", "2"], ["PING"]], until: PONG2 },
      { on: "b", send: [["PUBLISH", "qa:c1", "m1"]], until: ":1\r\n" },
      { send: [], until: "$2\r\nm1\r\n" },
      { send: [["GET", "qa:k"], ["UNSUBSCRIBE"], ["PING"]], until: "+PONG\r\n" },
    ],
  ],
  [
    "a message published after HELLO 2, before the client's next command",
    [
      { send: [["HELLO", "3"]], until: HELLO_END },
      {
        send: [
          ["SUBSCRIBE", "qa:c1"],
          ["PSUBSCRIBE", "qa:p*"],
        ],
        until: ":2\r\n",
      },
      { send: [["HELLO", "2"]], until: HELLO_END },
      { on: "b", send: [["PUBLISH", "qa:c1", "m1"]], until: ":1\r\n" },
      { send: [], until: "$2\r\nm1\r\n" },
      { on: "b", send: [["PUBLISH", "qa:p1", "m2"]], until: ":1\r\n" },
      { send: [], until: "$2\r\nm2\r\n" },
      { send: [["PING", "x"], ["GET", "qa:k"], ["PUNSUBSCRIBE"], ["PING", "end"]], until: END2 },
      { send: [["UNSUBSCRIBE"], ["GET", "qa:k"]], until: "$-1\r\n" },
    ],
  ],
];

/** A TCP relay to `port` that delays every chunk by `ms` each way: a network with a round trip of 2 ms. */
async function slowLink(port: number, ms: number): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ]) {
      sockets.add(from);
      from.on("data", (chunk) => setTimeout(() => to.write(chunk), ms));
      from.on("close", () => setTimeout(() => to.destroy(), ms));
      from.on("error", () => {});
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

/**
 * RESP2: how long `UNSUBSCRIBE qa:c1` and a PING pipelined behind it take, for a client
 * subscribed to qa:c1 and qa:c2 (so still subscribed after it); the best of three.
 */
async function unsubscribeThenPing(port: number): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const c = await ReceivedText.open(port);
    try {
      c.socket.write(encode(["SUBSCRIBE", "qa:c1", "qa:c2"]));
      await c.wait(
        0,
        "*3\r\n$9\r\nsubscribe\r\n$5\r\nqa:c1\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$5\r\nqa:c2\r\n:2\r\n".length,
      );
      const at = c.text.length;
      const started = performance.now();
      c.socket.write(Buffer.concat([encode(["UNSUBSCRIBE", "qa:c1"]), encode(["PING", "end"])]));
      await eventually(
        async () => c.text.slice(at),
        (t) => t.endsWith("$3\r\nend\r\n"),
        "the PING's pong",
      );
      best = Math.min(best, performance.now() - started);
      expect(c.text.slice(at)).to.equal(
        "*3\r\n$11\r\nunsubscribe\r\n$5\r\nqa:c1\r\n:1\r\n*2\r\n$4\r\npong\r\n$3\r\nend\r\n",
      );
    } finally {
      c.socket.destroy();
    }
  }
  return best;
}

describe("pub/sub transparency: what Redis sends, through the proxy", function () {
  this.timeout(60_000);

  describe("one redis-server", () => {
    let server: RedisNode;
    before(async () => {
      server = await startRedis();
    });
    after(async () => {
      await server?.stop();
    });

    it("RESP2: a command behind an UNSUBSCRIBE that leaves the client subscribed goes at once", async () => {
      const DELAY = 50;
      const link = await slowLink(server.port, DELAY);
      try {
        const direct = await unsubscribeThenPing(link.port);
        const proxy = await startProxy([{ port: link.port }]);
        try {
          // One round trip (2 x DELAY) as directly, not two.
          expect(await unsubscribeThenPing(proxy.port)).to.be.below(direct + DELAY);
        } finally {
          await proxy.close();
        }
      } finally {
        link.close();
      }
    });

    it("RESP2: SUBSCRIBE and QUIT pipelined: the confirmation, then +OK", async () => {
      const steps: Step[] = [{ send: [["SUBSCRIBE", "qa:q1"], ["QUIT"]], until: "+OK\r\n" }];
      const direct = await transcript(server.port, steps);
      const proxy = await startProxy([{ port: server.port }]);
      try {
        expect(await transcript(proxy.port, steps)).to.deep.equal(direct);
      } finally {
        await proxy.close();
      }
    });

    for (const [name, steps] of HELLO2_CASES)
      it(`RESP3 subscriber switching to RESP2: ${name}`, async () => {
        const direct = await transcript(server.port, steps);
        const proxy = await startProxy([{ port: server.port }]);
        try {
          expect(await transcript(proxy.port, steps)).to.deep.equal(direct);
        } finally {
          await proxy.close();
        }
      });
  });

  describe("a 3-master cluster, compared with one redis-server", () => {
    let cluster: RedisCluster;
    let reference: RedisNode;
    before(async () => {
      [cluster, reference] = await Promise.all([startCluster({ masters: 3 }), startRedis()]);
    });
    after(async () => {
      await Promise.all([cluster?.stop(), reference?.stop()]);
    });

    /** `steps` against the reference server, then through a proxy in front of the cluster. */
    async function compare(steps: Step[]): Promise<void> {
      const direct = await transcript(reference.port, steps);
      const proxy = await startProxy([{ port: cluster.nodes[0].port }]);
      try {
        expect(await transcript(proxy.port, steps)).to.deep.equal(direct);
      } finally {
        await proxy.close();
      }
    }

    it("RESP2: commands on several shards' connections answered in the order sent", async () => {
      // qa:s2, qa:s1 and qa:s4 hash to slots 4558, 8621 and 12552: one on each master; channels and patterns on a fourth connection.
      await compare([
        {
          send: [
            ["SUBSCRIBE", "qa:c1"],
            ["SSUBSCRIBE", "qa:s2"],
            ["SSUBSCRIBE", "qa:s4"],
            ["PSUBSCRIBE", "qa:p*"],
            ["GET", "qa:k"],
            ["SSUBSCRIBE", "qa:s1"],
            ["PING", "end"],
          ],
          until: END2,
        },
        { on: "b", send: [["SPUBLISH", "qa:s4", "m1"]], until: ":1\r\n" },
        { send: [], until: "$2\r\nm1\r\n" },
        {
          send: [
            ["SUNSUBSCRIBE", "qa:s4"],
            ["PING"],
            ["SUNSUBSCRIBE", "qa:s1"],
            ["GET", "qa:k"],
            ["UNSUBSCRIBE", "qa:c1"],
            ["SUNSUBSCRIBE", "qa:s2"],
            ["PUNSUBSCRIBE", "qa:p*"],
            ["GET", "qa:k"],
          ],
          until: "$-1\r\n",
        },
      ]);
    });

    it("RESP3 subscriber with shard channels switching to RESP2", async () => {
      // qa:s1 and qa:s2 hash to slots 8621 and 4558: two masters.
      const steps: Step[] = [
        { send: [["HELLO", "3"]], until: HELLO_END },
        {
          send: [
            ["SSUBSCRIBE", "qa:s1"],
            ["SSUBSCRIBE", "qa:s2"],
            ["SUBSCRIBE", "qa:c1"],
          ],
          until: "$5\r\nqa:c1\r\n:1\r\n",
        },
        { send: [["HELLO", "2"]], until: HELLO_END },
        { on: "b", send: [["SPUBLISH", "qa:s2", "m1"]], until: ":1\r\n" },
        { send: [], until: "$2\r\nm1\r\n" },
        { send: [["PING"], ["GET", "qa:k"], ["SUNSUBSCRIBE", "qa:s1"], ["PING", "end"]], until: END2 },
      ];
      await compare(steps);
    });
  });
});
