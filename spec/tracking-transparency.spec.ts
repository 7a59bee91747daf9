import { expect } from "chai";
import { startCluster, startProxy, startRedis, type RedisCluster, type RedisNode } from "./harness/index.js";
import { HELLO_END, transcript, type Step } from "./support/transcript.js";

// Client tracking sequences against one redis-server directly and through the proxy: the
// invalidations must come as many and in the same places among the replies as Redis puts them.

const TRACKING: Step[] = [
  { on: "z", send: [["FLUSHALL"]], until: "+OK\r\n" },
  { send: [["HELLO", "3"]], until: HELLO_END },
  {
    send: [
      ["CLIENT", "TRACKING", "ON"],
      ["GET", "qa:k"],
      ["GET", "qa:j"],
    ],
    until: "_\r\n_\r\n",
  },
];
const BCAST: Step[] = [
  { on: "z", send: [["FLUSHALL"]], until: "+OK\r\n" },
  { send: [["HELLO", "3"]], until: HELLO_END },
  { send: [["CLIENT", "TRACKING", "ON", "BCAST"]], until: "+OK\r\n" },
];
/** Last: a command whose reply comes after every invalidation due. */
const END: Step = { send: [["PING", "end"]], until: "$3\r\nend\r\n" };

const CASES: [name: string, steps: Step[]][] = [
  [
    "its own FLUSHALL: the null right after the reply, and a key read after it still tracked",
    [
      ...TRACKING,
      { send: [["FLUSHALL"], ["GET", "qa:k"], ["PING"]], until: "+PONG\r\n" },
      { on: "b", send: [["SET", "qa:k", "x"]], until: "+OK\r\n" },
      END,
    ],
  ],
  [
    "FLUSHALL and FLUSHDB pipelined with PINGs",
    [...TRACKING, { send: [["FLUSHALL"], ["PING"], ["FLUSHDB"], ["PING", "2"]], until: "$1\r\n2\r\n" }, END],
  ],
  [
    "FLUSHALL refused for its syntax: no null; FLUSHDB ASYNC: one",
    [
      ...TRACKING,
      {
        send: [
          ["FLUSHALL", "qa:bad"],
          ["PING", "1"],
        ],
        until: "$1\r\n1\r\n",
      },
      {
        send: [
          ["FLUSHDB", "ASYNC"],
          ["PING", "2"],
        ],
        until: "$1\r\n2\r\n",
      },
      END,
    ],
  ],
  [
    "two writes of a key it read: one invalidation, after the first",
    [
      ...TRACKING,
      { send: [["SET", "qa:k", "1"], ["SET", "qa:k", "2"], ["GET", "qa:k"], ["PING"]], until: "+PONG\r\n" },
      { on: "b", send: [["SET", "qa:k", "3"]], until: "+OK\r\n" },
      END,
    ],
  ],
  [
    "writes and reads of a key interleaved: an invalidation after each write that follows a read",
    [
      ...TRACKING,
      {
        send: [
          ["SET", "qa:k", "1"],
          ["GET", "qa:k"],
          ["SET", "qa:k", "2"],
          ["PING"],
          ["SET", "qa:k", "3"],
          ["PING"],
        ],
        until: "+PONG\r\n+OK\r\n+PONG\r\n",
      },
      END,
    ],
  ],
  [
    "MSET of both keys twice, a read between",
    [
      ...TRACKING,
      {
        send: [
          ["MSET", "qa:k", "1", "qa:j", "1"],
          ["GET", "qa:k"],
          ["MSET", "qa:j", "2", "qa:k", "2"],
          ["PING"],
        ],
        until: "+PONG\r\n",
      },
      END,
    ],
  ],
  [
    "another client's two writes: one invalidation",
    [
      ...TRACKING,
      {
        on: "b",
        send: [
          ["SET", "qa:k", "1"],
          ["SET", "qa:k", "2"],
        ],
        until: "+OK\r\n+OK\r\n",
      },
      END,
    ],
  ],
  [
    "BCAST: its own writes told after the replies to the commands sent with them",
    [
      ...BCAST,
      {
        send: [["SET", "qa:k", "1"], ["PING"], ["SET", "qa:j", "2"], ["PING"]],
        until: "+PONG\r\n+OK\r\n+PONG\r\n",
      },
      END,
    ],
  ],
];

/** In front of a cluster: FLUSHALL runs on every master, and each master's stream sends its null. */
const CLUSTER_CASES: [name: string, steps: Step[]][] = [
  CASES[0],
  CASES[1],
  [
    "another client's FLUSHALL: one null",
    [
      ...TRACKING,
      { on: "b", send: [["FLUSHALL"]], until: "+OK\r\n" },
      END,
      { on: "b", send: [["SET", "qa:k", "1"]], until: "+OK\r\n" },
      END,
    ],
  ],
];

describe("tracking transparency: invalidations where Redis puts them, through the proxy", function () {
  this.timeout(60_000);
  let server: RedisNode;
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await server?.stop();
  });

  for (const [name, steps] of CASES)
    it(name, async () => {
      const direct = await transcript(server.port, steps);
      const proxy = await startProxy([{ port: server.port }]);
      try {
        expect(await transcript(proxy.port, steps)).to.deep.equal(direct);
      } finally {
        await proxy.close();
      }
    });

  describe("a 3-master cluster, compared with one redis-server", () => {
    let cluster: RedisCluster;
    before(async () => {
      cluster = await startCluster({ masters: 3 });
    });
    after(async () => {
      await cluster?.stop();
    });

    for (const [name, steps] of CLUSTER_CASES)
      it(name, async () => {
        const direct = await transcript(server.port, steps);
        const proxy = await startProxy([{ port: cluster.nodes[0].port }]);
        try {
          expect(await transcript(proxy.port, steps)).to.deep.equal(direct);
        } finally {
          await proxy.close();
        }
      });
  });
});
