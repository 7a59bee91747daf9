import { expect } from "chai";
import { startCluster, startProxy, startRedis, type RedisCluster, type RedisNode } from "./harness/index.js";
import { RawClient, ReceivedText } from "./support/raw-client.js";
import { eventually } from "./support/polling.js";

// Redis 7.0 queues SUBSCRIBE and its kin inside MULTI. EXEC's reply counts one element per
// command, but each confirmation is a frame of its own, and the client leaves EXEC in
// subscriber mode. The proxy used to refuse them inside MULTI.

const HELLO3 = "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";

/** Sends `steps` (each in one write, after the previous one's replies) and returns what came after HELLO. */
async function session(
  port: number,
  resp3: boolean,
  steps: string[][][],
  before?: () => Promise<void>,
): Promise<string> {
  const c = await ReceivedText.open(port);
  try {
    let start = 0;
    if (resp3) {
      c.socket.write(HELLO3);
      await eventually(
        async () => c.text,
        (t) => t.endsWith("$7\r\nmodules\r\n*0\r\n"),
        "HELLO 3 answered",
      );
      start = c.text.length;
    }
    for (const [i, step] of steps.entries()) {
      if (i === 1) await before?.();
      const at = c.text.length;
      // Each step ends with a PING outside subscriber mode, or with a "PING end" inside it.
      await c.exchange(step, 1);
      await eventually(
        async () => c.text.slice(at),
        (t) => t.endsWith("+PONG\r\n") || t.endsWith("$3\r\nend\r\n"),
        `the replies to ${step.map((s) => s[0]).join(" ")}`,
      );
    }
    return c.text.slice(start);
  } finally {
    c.socket.destroy();
  }
}

const SESSIONS: [name: string, resp3: boolean, steps: string[][][]][] = [
  [
    "RESP2: confirmations in EXEC's reply, then subscriber mode",
    false,
    [
      [["MULTI"], ["SUBSCRIBE", "qa:c1", "qa:c2"], ["PSUBSCRIBE", "qa:p*"], ["EXEC"], ["PING", "end"]],
      [["PING"], ["GET", "qa:k"], ["PUBLISH", "qa:c1", "x"], ["UNSUBSCRIBE"], ["PUNSUBSCRIBE"], ["PING"]],
    ],
  ],
  [
    "RESP2: EXEC pipelined with the commands subscriber mode refuses",
    false,
    [
      [
        ["MULTI"],
        ["SUBSCRIBE", "qa:c1"],
        ["PING"],
        ["EXEC"],
        ["GET", "qa:k"],
        ["UNSUBSCRIBE"],
        ["GET", "qa:k"],
        ["PING"],
      ],
    ],
  ],
  [
    "RESP3: pushes inside EXEC's reply, then messages and the client's own commands",
    true,
    [
      [
        ["MULTI"],
        ["SUBSCRIBE", "qa:c1", "qa:c2"],
        ["PSUBSCRIBE", "qa:p*"],
        ["SET", "qa:k", "v"],
        ["EXEC"],
        ["PING"],
        ["GET", "qa:k"],
        ["PUBLISH", "qa:c1", "x"],
        ["UNSUBSCRIBE"],
        ["PUNSUBSCRIBE"],
        ["PING"],
      ],
    ],
  ],
  [
    "SSUBSCRIBE refused inside EXEC, unsubscribing without subscriptions",
    false,
    [
      [
        ["MULTI"],
        ["SSUBSCRIBE", "qa:s1"],
        ["UNSUBSCRIBE", "qa:c9"],
        ["SUNSUBSCRIBE"],
        ["PUNSUBSCRIBE"],
        ["EXEC"],
        ["PING"],
      ],
    ],
  ],
  [
    "subscribed then unsubscribed within EXEC: an ordinary client after it",
    false,
    [
      [
        ["MULTI"],
        ["SUBSCRIBE", "qa:c1"],
        ["UNSUBSCRIBE", "qa:c1"],
        ["EXEC"],
        ["SET", "qa:k", "w"],
        ["GET", "qa:k"],
        ["PING"],
      ],
    ],
  ],
];

describe("qa: SUBSCRIBE and its kin inside MULTI", function () {
  this.timeout(60_000);

  describe("one redis-server", () => {
    let server: RedisNode;
    before(async () => {
      server = await startRedis();
    });
    after(async () => {
      await server?.stop();
    });

    for (const [name, resp3, steps] of SESSIONS)
      it(`the bytes Redis sends: ${name}`, async () => {
        const direct = await session(server.port, resp3, steps);
        const proxy = await startProxy([{ port: server.port }]);
        try {
          expect(await session(proxy.port, resp3, steps)).to.equal(direct);
        } finally {
          await proxy.close();
        }
      });

    it("a watched key changed: EXEC runs nothing, and the client is not subscribed", async () => {
      const steps = [
        [["WATCH", "qa:w"], ["PING"]],
        [["MULTI"], ["SUBSCRIBE", "qa:c1"], ["EXEC"], ["GET", "qa:w"], ["PING"]],
      ];
      const touch = (port: number) => async (): Promise<void> => {
        const other = await RawClient.connect(port);
        expect(await other.call("SET", "qa:w", "1")).to.equal("OK");
        other.close();
      };
      const direct = await session(server.port, false, steps, touch(server.port));
      expect(direct).to.equal("+OK\r\n+PONG\r\n+OK\r\n+QUEUED\r\n*-1\r\n$1\r\n1\r\n+PONG\r\n");
      const proxy = await startProxy([{ port: server.port }]);
      try {
        expect(await session(proxy.port, false, steps, touch(proxy.port))).to.equal(direct);
      } finally {
        await proxy.close();
      }
    });
  });

  describe("a 3-master cluster", () => {
    let cluster: RedisCluster;
    let reference: RedisNode;
    before(async () => {
      [cluster, reference] = await Promise.all([startCluster({ masters: 3 }), startRedis()]);
    });
    after(async () => {
      await Promise.all([cluster?.stop(), reference?.stop()]);
    });

    it("through the proxy: the bytes one Redis sends", async () => {
      const proxy = await startProxy([{ port: cluster.nodes[0].port }]);
      try {
        for (const [name, resp3, all] of SESSIONS.slice(0, 3)) {
          // Redis lists channels in its own hash order, which differs from server to server.
          const steps = all.map((step) =>
            step.map((c) => (c.length === 1 && c[0] === "UNSUBSCRIBE" ? [...c, "qa:c2", "qa:c1"] : c)),
          );
          const direct = await session(reference.port, resp3, steps);
          expect(await session(proxy.port, resp3, steps), name).to.equal(direct);
        }
      } finally {
        await proxy.close();
      }
    });
  });
});
