import { expect } from "chai";
import { startCluster, startProxy, startRedis, type RedisCluster, type RedisNode } from "./harness/index.js";
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
