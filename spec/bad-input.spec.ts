import net from "node:net";
import { expect } from "chai";
import { Redis } from "ioredis";
import { startRedis, startProxy, sendCommand, type RedisNode, type RunningProxy } from "./harness/index.js";
import { connectSocket } from "./support/raw-client.js";
import { encodeCommand } from "./harness/resp.js";

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const MB = 1024 * 1024;

/** A raw client socket that records every byte it receives and when it was closed. */
class RawClient {
  received = Buffer.alloc(0);
  closed = false;
  private readonly socket: net.Socket;
  private readonly closedPromise: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
    });
    socket.on("error", () => {});
    this.closedPromise = new Promise((resolve) =>
      socket.once("close", () => {
        this.closed = true;
        resolve();
      }),
    );
  }

  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await connectSocket(port));
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  get text(): string {
    return this.received.toString("latin1");
  }

  /** Resolves once the received bytes contain `expected`; rejects after `timeoutMs`. */
  async waitForText(expected: string, timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.text.includes(expected)) {
      if (Date.now() > deadline) {
        throw new Error(
          `timed out waiting for ${JSON.stringify(expected)}; got ${JSON.stringify(this.text)}`,
        );
      }
      await sleep(10);
    }
  }

  /** True when the peer closed the connection within `timeoutMs`. */
  async closesWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([this.closedPromise.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/**
 * A well-behaved client doing SET/GET in a loop with values unique to each round, checking
 * every reply. It must never see an error, a wrong value or a reconnect.
 */
class Traffic {
  ops = 0;
  readonly errors: string[] = [];
  reconnects = 0;
  private running = true;
  private readonly client: Redis;
  private readonly loop: Promise<void>;
  private readonly tag = Math.random().toString(36).slice(2);

  constructor(port: number) {
    this.client = new Redis({ port, host: "127.0.0.1", maxRetriesPerRequest: 0, enableOfflineQueue: true });
    this.client.on("error", (err: Error) => this.errors.push(`connection error: ${err.message}`));
    this.client.on("reconnecting", () => this.reconnects++);
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    let i = 0;
    while (this.running) {
      const key = `traffic:${this.tag}:${i % 64}`;
      const value = `${this.tag}-${i}-${"x".repeat(i % 200)}`;
      try {
        const set = await this.client.set(key, value);
        if (set !== "OK") this.errors.push(`SET ${key} -> ${String(set)}`);
        const got = await this.client.get(key);
        if (got !== value) this.errors.push(`GET ${key} -> ${String(got)}, expected ${value}`);
        this.ops++;
      } catch (err) {
        this.errors.push(`command failed: ${err instanceof Error ? err.message : String(err)}`);
        await sleep(10);
      }
      i++;
    }
  }

  async waitForOps(n: number, timeoutMs = 5000): Promise<void> {
    const target = this.ops + n;
    const deadline = Date.now() + timeoutMs;
    while (this.ops < target) {
      if (Date.now() > deadline) throw new Error(`traffic stalled at ${this.ops} ops (wanted ${target})`);
      await sleep(5);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    this.client.disconnect();
  }
}

/** Runs `body` while a well-behaved client works against `port`; that client must never be disturbed. */
async function duringTraffic(port: number, body: () => Promise<void>): Promise<void> {
  const traffic = new Traffic(port);
  try {
    await traffic.waitForOps(5);
    await body();
    await traffic.waitForOps(20);
  } finally {
    await traffic.stop();
  }
  expect(traffic.errors, "errors seen by the well-behaved client").to.deep.equal([]);
  expect(traffic.reconnects, "reconnects of the well-behaved client").to.equal(0);
  expect(traffic.ops).to.be.greaterThan(25);
}

/** Samples the process RSS and ArrayBuffer memory (the proxy runs in this process) until stopped. */
class MemoryWatch {
  readonly baseRss = process.memoryUsage().rss;
  readonly baseBuffers = process.memoryUsage().arrayBuffers;
  maxRss = this.baseRss;
  maxBuffers = this.baseBuffers;
  private readonly timer = setInterval(() => this.sample(), 10);

  sample(): void {
    const m = process.memoryUsage();
    this.maxRss = Math.max(this.maxRss, m.rss);
    this.maxBuffers = Math.max(this.maxBuffers, m.arrayBuffers);
  }

  get rssGrowth(): number {
    return this.maxRss - this.baseRss;
  }

  get buffersGrowth(): number {
    return this.maxBuffers - this.baseBuffers;
  }

  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }
}

async function infoField(port: number, field: string): Promise<number> {
  const info = String(await sendCommand(port, ["INFO", "proxy"]));
  const m = new RegExp(`^${field}:(\\d+)`, "m").exec(info);
  if (m === null) throw new Error(`INFO proxy has no ${field}:\n${info}`);
  return Number(m[1]);
}

describe("bad input and limits", function () {
  this.timeout(30_000);

  let redis: RedisNode;
  /** Default limits (512 MB proto-max-bulk-len, 256 MB output buffer limit). */
  let proxy: RunningProxy;
  /** Low limits: 8 MB client output buffer, 1 MB proto-max-bulk-len. */
  let tight: RunningProxy;
  const raws: RawClient[] = [];

  const raw = async (port = proxy.port): Promise<RawClient> => {
    const client = await RawClient.connect(port);
    raws.push(client);
    return client;
  };

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
    tight = await startProxy([{ port: redis.port }], {
      clientOutputBufferLimit: 8 * MB,
      protoMaxBulkLen: 1 * MB,
    });
  });

  afterEach(() => {
    for (const c of raws.splice(0)) c.destroy();
  });

  after(async () => {
    await proxy?.close();
    await tight?.close();
    await redis?.stop();
  });

  /** Sends `bytes` and expects exactly `reply`, then the connection closed by the proxy. */
  async function expectProtocolError(
    bytes: string | Buffer,
    reply: string,
    port = proxy.port,
  ): Promise<void> {
    const client = await raw(port);
    client.write(bytes);
    await client.waitForText(reply);
    const closed = await client.closesWithin(2000);
    expect(client.text).to.equal(reply);
    expect(
      closed,
      `connection closed by the proxy after ${JSON.stringify(String(bytes).slice(0, 40))}`,
    ).to.equal(true);
  }

  it("garbage multibulk length: 'invalid multibulk length' and the connection is closed", async () => {
    const before = await infoField(proxy.port, "protocol_errors");
    await duringTraffic(proxy.port, () =>
      expectProtocolError("*abc\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
    );
    expect(await infoField(proxy.port, "protocol_errors")).to.equal(before + 1);
  });

  it("negative bulk length ($-5): 'invalid bulk length' and close", async () => {
    await duringTraffic(proxy.port, () =>
      expectProtocolError("*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
    );
  });

  it("a bulk header promising 1 GB (above proto-max-bulk-len 512 MB): 'invalid bulk length' and close", async () => {
    const watch = new MemoryWatch();
    try {
      await duringTraffic(proxy.port, () =>
        expectProtocolError(
          "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1073741824\r\n",
          "-ERR Protocol error: invalid bulk length\r\n",
        ),
      );
    } finally {
      watch.stop();
    }
    expect(watch.buffersGrowth, "ArrayBuffer growth").to.be.below(50 * MB);
  });

  it("proto-max-bulk-len is configurable: 2 MB refused at a 1 MB limit, accepted (waiting) by default", async () => {
    const header = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2097152\r\n";
    await duringTraffic(tight.port, () =>
      expectProtocolError(header, "-ERR Protocol error: invalid bulk length\r\n", tight.port),
    );
    const client = await raw();
    client.write(header);
    expect(await client.closesWithin(300)).to.equal(false);
    expect(client.text).to.equal("");
  });

  it("too many arguments: 'invalid multibulk length' and close", async () => {
    await duringTraffic(proxy.port, () =>
      expectProtocolError("*2000000\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
    );
  });

  it("a 100 MB bulk that never comes is not allocated and the client is left waiting", async () => {
    const key = `promised:${Date.now()}`;
    const size = 100 * MB;
    const header = `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${size}\r\n`;
    let client: RawClient | undefined;
    const watch = new MemoryWatch();
    try {
      await duringTraffic(proxy.port, async () => {
        client = await raw();
        client.write(header);
        client.write(Buffer.alloc(64 * 1024, 97));
        await sleep(1000);
      });
    } finally {
      watch.stop();
    }
    expect(watch.rssGrowth, "RSS growth while the 100 MB bulk is pending").to.be.below(40 * MB);
    expect(watch.buffersGrowth, "ArrayBuffer growth while the 100 MB bulk is pending").to.be.below(40 * MB);
    expect(client!.closed, "client closed while waiting").to.equal(false);
    expect(client!.text, "nothing answered yet").to.equal("");

    // The connection really is still waiting: the rest of the value completes the request.
    const rest = Buffer.alloc(size - 64 * 1024, 98);
    client!.write(rest);
    client!.write("\r\n");
    await client!.waitForText("+OK\r\n", 10_000);
    expect(await redis.call("STRLEN", key)).to.equal(size);
    await redis.call("DEL", key);
  });

  it("an inline request of 100 KB without newline: 'too big inline request' and close", async () => {
    await duringTraffic(proxy.port, () =>
      expectProtocolError("A".repeat(100 * 1024), "-ERR Protocol error: too big inline request\r\n"),
    );
  });

  it("a multibulk element that is not a bulk string: \"expected '$', got '+'\" and close", async () => {
    await duringTraffic(proxy.port, () =>
      expectProtocolError("*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"),
    );
  });

  it("replies to commands sent before the bad bytes in the same write arrive first, nothing after", async () => {
    const key = `before-garbage:${Date.now()}`;
    await duringTraffic(proxy.port, async () => {
      const client = await raw();
      client.write(
        Buffer.concat([
          Buffer.from("PING\r\n"),
          encodeCommand(["SET", key, "v1"]),
          encodeCommand(["GET", key]),
          Buffer.from("*abc\r\n"),
          encodeCommand(["SET", key, "after"]),
          Buffer.from("PING\r\n"),
        ]),
      );
      const expected = "+PONG\r\n+OK\r\n$2\r\nv1\r\n-ERR Protocol error: invalid multibulk length\r\n";
      await client.waitForText(expected);
      const closed = await client.closesWithin(2000);
      expect(client.text).to.equal(expected);
      expect(closed, "connection closed by the proxy").to.equal(true);
    });
    expect(await redis.call("GET", key)).to.equal("v1");
  });

  it("a subscriber that never reads is disconnected at the output buffer limit; others keep working", async () => {
    const before = await infoField(tight.port, "client_output_limit_disconnections");
    const payload = "m".repeat(MB);
    let published = 0;
    let lastReceivers = -1;
    const sub = await raw(tight.port);
    await duringTraffic(tight.port, async () => {
      sub.write(encodeCommand(["SUBSCRIBE", "slow-reader"]));
      await sub.waitForText("subscribe");
      sub.pause();
      const pub = new Redis({ port: tight.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      try {
        for (let i = 0; i < 200; i++) {
          lastReceivers = await pub.publish("slow-reader", payload);
          published++;
          if (lastReceivers === 0) break;
        }
      } finally {
        pub.disconnect();
      }
    });
    expect(lastReceivers, "the proxy dropped the slow subscriber's subscription").to.equal(0);
    // Loopback socket buffers hold a few MB beyond the 8 MB limit; far less than 200 messages.
    expect(published).to.be.below(100);
    sub.resume();
    expect(await sub.closesWithin(5000), "slow subscriber disconnected").to.equal(true);
    expect(sub.received.length).to.be.below(published * MB);
    expect(await infoField(tight.port, "client_output_limit_disconnections")).to.equal(before + 1);
  });

  it("a client pipelining GETs of a 1 MB value without reading is paused, memory stays bounded, replies in order", async function () {
    this.timeout(60_000);
    const keys = 8;
    for (let k = 0; k < keys; k++)
      await redis.call("SET", `big:${k}`, String.fromCharCode(97 + k).repeat(MB));
    await redis.call("SET", "big:end", "end-marker");
    const total = 2000;

    // Count replies as they stream in, without keeping 2 GB around: check each is the expected value.
    let state: "header" | "body" = "header";
    let header = Buffer.alloc(0);
    let remaining = 0;
    let replies = 0;
    let firstByte = -1;
    const mismatches: string[] = [];
    let lastSmall = "";
    const onData = (chunk: Buffer): void => {
      let pos = 0;
      while (pos < chunk.length) {
        if (state === "header") {
          const lf = chunk.indexOf(10, pos);
          if (lf === -1) {
            header = Buffer.concat([header, chunk.subarray(pos)]);
            return;
          }
          const line = Buffer.concat([header, chunk.subarray(pos, lf + 1)]).toString("latin1");
          header = Buffer.alloc(0);
          pos = lf + 1;
          if (!line.startsWith("$")) {
            mismatches.push(`reply ${replies}: ${line.trim()}`);
            replies++;
            continue;
          }
          remaining = Number(line.slice(1).trim()) + 2;
          firstByte = -1;
          lastSmall = "";
          state = "body";
        } else {
          const take = Math.min(remaining, chunk.length - pos);
          if (firstByte === -1 && take > 0) firstByte = chunk[pos];
          if (remaining < 100) lastSmall += chunk.toString("latin1", pos, pos + take);
          remaining -= take;
          pos += take;
          if (remaining === 0) {
            const expected = replies < total ? 97 + (replies % keys) : "e".charCodeAt(0);
            if (firstByte !== expected) mismatches.push(`reply ${replies}: starts with ${firstByte}`);
            replies++;
            state = "header";
          }
        }
      }
    };

    const getCalls = async (): Promise<number> => {
      const stats = String(await redis.call("INFO", "commandstats"));
      return Number(/^cmdstat_get:calls=(\d+)/m.exec(stats)?.[1] ?? 0);
    };
    const getsBefore = await getCalls();
    const limitKillsBefore = await infoField(proxy.port, "client_output_limit_disconnections");
    const socket = net.connect({ port: proxy.port, host: "127.0.0.1" });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      });
      socket.on("data", onData);
      socket.pause();
      let closed = false;
      socket.on("close", () => (closed = true));

      const watch = new MemoryWatch();
      try {
        await duringTraffic(proxy.port, async () => {
          // A pipelining client writes its whole batch of requests at once, then reads nothing.
          const requests: Buffer[] = [];
          for (let i = 0; i < total; i++) requests.push(encodeCommand(["GET", `big:${i % keys}`]));
          requests.push(encodeCommand(["GET", "big:end"]));
          socket.write(Buffer.concat(requests));
          await sleep(500);
        });
      } finally {
        watch.stop();
      }
      const forwarded = (await getCalls()) - getsBefore;
      const note = `(${forwarded} GETs reached Redis while the client did not read)`;
      expect(closed, `the pipelining client was disconnected ${note}`).to.equal(false);
      expect(watch.rssGrowth, `RSS growth while the client does not read ${note}`).to.be.below(200 * MB);

      // Now read: every reply arrives, in request order.
      socket.resume();
      const deadline = Date.now() + 40_000;
      while (replies < total + 1 && !closed && Date.now() < deadline) await sleep(20);
      expect(mismatches.slice(0, 5)).to.deep.equal([]);
      const limitKills =
        (await infoField(proxy.port, "client_output_limit_disconnections")) - limitKillsBefore;
      expect(
        replies,
        `replies received (connection closed: ${closed}, output-limit disconnections: ${limitKills})`,
      ).to.equal(total + 1);
      expect(lastSmall).to.equal("end-marker\r\n");
      expect(closed).to.equal(false);
    } finally {
      socket.destroy();
    }
  });

  it("counts with leading zeros, '-0' or '+' get the errors Redis itself gives; '*-2' is skipped", async () => {
    const inputs = [
      "*1\r\n$04\r\nPING\r\n",
      "*01\r\n$4\r\nPING\r\n",
      "*00\r\n*1\r\n$4\r\nPING\r\n",
      "*1\r\n$-0\r\n",
      "*-0\r\n",
      "*1\r\n$+4\r\nPING\r\n",
      "*-2\r\n*0\r\n*1\r\n$4\r\nPING\r\n",
      "*1\r\n$4\r\nPINGxx*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
    ];
    for (const input of inputs) {
      const answers: string[] = [];
      for (const port of [redis.port, proxy.port]) {
        const client = await raw(port);
        client.write(input);
        // Both either answer and close (protocol errors) or answer and wait: give them time.
        await client.closesWithin(300);
        answers.push(client.text);
      }
      expect(answers[1], `proxy vs redis for ${JSON.stringify(input)}`).to.equal(answers[0]);
      expect(answers[0]).to.not.equal("");
    }
  });

  it("the proxy is still up and serving after all of the above", async () => {
    expect(await sendCommand(proxy.port, ["PING"])).to.equal("PONG");
    expect(await sendCommand(tight.port, ["PING"])).to.equal("PONG");
    await sendCommand(proxy.port, ["SET", "after-all", "yes"]);
    expect(await sendCommand(tight.port, ["GET", "after-all"])).to.equal("yes");
  });
});
