import net from "node:net";
import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import type { OutputBuffer } from "../src/io/output-buffer.js";
import { ReplyQueue, type QueueOwner } from "../src/client/reply-queue.js";
import {
  startCluster,
  startProxy,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
} from "./harness/index.js";
import { encode } from "./support/raw-client.js";

// A client's pipeline over several masters is answered in one write: the replies of the
// nodes that answer first wait, briefly, for those of its run still on their way.

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function queue(): { q: ReplyQueue; out: string[] } {
  const out: string[] = [];
  const owner: QueueOwner = {
    countOut: () => {},
    meter: () => {},
    endAfterWrite: () => {},
    flushed: () => {},
    replyArrived: () => {},
  };
  const sink = { push: (chunk: Buffer) => out.push(chunk.toString()) };
  return { q: new ReplyQueue(sink as unknown as OutputBuffer, owner, false), out };
}

describe("ReplyQueue: replies of a cluster run", () => {
  it("holds filled replies while a reply of the run is on its way, then writes them together", () => {
    const { q, out } = queue();
    const a = q.appendAwaited();
    const b = q.appendAwaited();
    const c = q.appendAwaited();
    for (const s of [a, b, c]) s.inRun = true;
    a.reply(Buffer.from("a"));
    c.reply(Buffer.from("c"));
    expect(out).to.deep.equal([]);
    b.reply(Buffer.from("b"));
    expect(out).to.deep.equal(["a", "b", "c"]);
    expect(q.empty).to.equal(true);
  });

  it("does not hold replies for a slot outside a run (a blocking command, a gears result)", () => {
    const { q, out } = queue();
    const a = q.appendAwaited();
    a.inRun = true;
    q.appendAwaited();
    a.reply(Buffer.from("a"));
    expect(out).to.deep.equal(["a"]);
  });

  it("writes what it holds within a few milliseconds when the run's reply is late", async () => {
    const { q, out } = queue();
    const a = q.appendAwaited();
    const b = q.appendAwaited();
    a.inRun = true;
    b.inRun = true;
    a.reply(Buffer.from("a"));
    expect(out).to.deep.equal([]);
    // Two timer turns, not one 20 ms sleep: the hold ends at the second of its two 1 ms timers
    // (HOLD_MS), set when the first fires, which a loaded machine can delay past a 20 ms timer
    // set now. The second sleep starts after the first hold timer fired, so it ends after both.
    await sleep(10);
    await sleep(10);
    expect(out).to.deep.equal(["a"]);
    b.reply(Buffer.from("b"));
    expect(out).to.deep.equal(["a", "b"]);
  });
});

describe("cluster pass-through: a pipeline over 3 masters", function () {
  this.timeout(60_000);
  let cluster: RedisCluster;
  let proxy: RunningProxy;
  /** Keys of each master, in the order of cluster.nodes. */
  const keysOf = new Map<RedisNode, string[]>();

  before(async function () {
    this.timeout(120_000);
    cluster = await startCluster({ masters: 3, args: ["--enable-debug-command", "yes"] });
    proxy = await startProxy([{ port: cluster.nodes[0].port }]);
    for (let i = 0; keysOf.size < 3 || [...keysOf.values()].some((k) => k.length < 8); i++) {
      const key = `run:${i}`;
      const node = await cluster.nodeForSlot(calculateSlot(key));
      const keys = keysOf.get(node) ?? [];
      if (keys.length < 8) keys.push(key);
      keysOf.set(node, keys);
    }
  });

  after(async () => {
    await proxy?.close();
    await cluster?.stop();
  });

  /** Sends `commands` in one write; resolves with the chunks read until `replies` "+OK" replies came. */
  function pipeline(
    socket: net.Socket,
    commands: string[][],
    replies: number,
  ): Promise<{ chunks: number; firstAt: number; lastAt: number }> {
    return new Promise((resolve) => {
      const started = Date.now();
      let chunks = 0;
      let seen = 0;
      let firstAt = -1;
      const onData = (chunk: Buffer): void => {
        chunks++;
        if (firstAt < 0) firstAt = Date.now() - started;
        seen += chunk.toString().split("+OK\r\n").length - 1;
        if (seen >= replies) {
          socket.off("data", onData);
          resolve({ chunks, firstAt, lastAt: Date.now() - started });
        }
      };
      socket.on("data", onData);
      socket.write(Buffer.concat(commands.map((c) => encode(c))));
    });
  }

  async function connect(): Promise<net.Socket> {
    const socket = net.connect(proxy.port, "127.0.0.1");
    socket.setNoDelay(true);
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    return socket;
  }

  it("answers a pipeline of 16 SETs over the 3 masters in one write to the client, mostly", async () => {
    const nodes = [...keysOf.values()];
    const commands: string[][] = [];
    for (let i = 0; i < 16; i++) commands.push(["SET", nodes[i % 3][(i / 3) | 0], `v${i}`]);
    const socket = await connect();
    try {
      let single = 0;
      const rounds = 40;
      for (let r = 0; r < rounds; r++) if ((await pipeline(socket, commands, 16)).chunks === 1) single++;
      // Each node answers in its own read; without the hold a pipeline took one write per node
      // that answered apart (nearly every round). A loaded machine may exceed the hold's bound.
      expect(single, `${single} of ${rounds} pipelines in one chunk`).to.be.at.least(rounds * 0.75);
    } finally {
      socket.destroy();
    }
  });

  it("does not hold one master's replies behind a master that is busy", async () => {
    const [fast, slow] = [...keysOf.keys()];
    const socket = await connect();
    const busy = net.connect(slow.port, "127.0.0.1");
    try {
      // The slow master sleeps 300 ms before it answers anything.
      busy.write(encode(["DEBUG", "SLEEP", "0.3"]));
      await sleep(20);
      const { firstAt, lastAt } = await pipeline(
        socket,
        [
          ["SET", keysOf.get(fast)![0], "1"],
          ["SET", keysOf.get(slow)![0], "2"],
        ],
        2,
      );
      expect(firstAt, "the fast master's reply").to.be.below(150);
      expect(lastAt, "the busy master's reply").to.be.at.least(200);
    } finally {
      busy.destroy();
      socket.destroy();
    }
  });
});
