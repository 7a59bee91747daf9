import net from "node:net";
import path from "node:path";
import { expect } from "chai";
import { createClient } from "redis";
import { decodeReply } from "../src/resp/decode.js";
import { encodeCommand } from "../src/resp/encode.js";
import { ReplyScanner } from "../src/resp/reply-scanner.js";
import type { RespValue } from "../src/resp/values.js";
import calculateSlot from "cluster-key-slot";
import {
  startCluster,
  startProxy,
  startRedis,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
} from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { eventually } from "./support/polling.js";
import { RawClient } from "./support/raw-client.js";
import { runPython } from "./support/redis-py.js";

// Client-side caching through the proxy (CLIENT TRACKING and friends), in front of one server
// and of a 3-master cluster: the proxy keeps the tracking table for its clients and learns
// every key change from one tracking stream per master, so writes that bypass it count too.

/** A raw connection speaking RESP3 (or RESP2), keeping replies and pushes apart, as raw bytes. */
class Conn {
  private readonly scanner = new ReplyScanner();
  private readonly replies: Buffer[] = [];
  private readonly pushes: Buffer[] = [];
  /** Every frame in arrival order, pushes and replies alike. */
  readonly frames: Buffer[] = [];
  private wake: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.scanner.push(chunk);
      let frame: Buffer | null;
      while ((frame = this.scanner.next()) !== null) {
        const copy = Buffer.from(frame);
        this.frames.push(copy);
        // RESP2 Pub/Sub messages are pushes too: "*3 $7 message".
        const message = copy.subarray(0, 12).toString() === "*3\r\n$7\r\nmess";
        (copy[0] === 62 || message ? this.pushes : this.replies).push(copy);
      }
      const wake = this.wake;
      this.wake = null;
      wake?.();
    });
    socket.on("error", () => {});
  }

  static async open(port: number, proto: 2 | 3 = 3): Promise<Conn> {
    const socket = net.connect({ host: "127.0.0.1", port });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const conn = new Conn(socket);
    if (proto === 3) await conn.raw("HELLO", "3");
    return conn;
  }

  private async take(queue: Buffer[], what: string, timeoutMs: number): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return queue.shift()!;
  }

  /** Sends a command; resolves with its reply's bytes (pushes are kept aside). */
  raw(...args: (string | Buffer)[]): Promise<Buffer> {
    this.socket.write(encodeCommand(args));
    return this.take(this.replies, `reply to ${args.join(" ")}`, 10_000);
  }

  async call(...args: (string | Buffer)[]): Promise<RespValue> {
    return decodeReply(await this.raw(...args));
  }

  /** The next invalidation, decoded: the keys as text, or null for "every key". */
  async invalidation(timeoutMs = 10_000): Promise<string[] | null> {
    const frame = decodeReply(await this.take(this.pushes, "invalidation", timeoutMs));
    if (!Array.isArray(frame)) throw new Error("a push that is not an array");
    const keys = frame[frame.length - 1];
    const kind = frame.length === 3 ? `${String(frame[0])} ${String(frame[1])}` : String(frame[0]);
    expect(kind).to.be.oneOf(["invalidate", "message __redis__:invalidate"]);
    return keys === null ? null : (keys as Buffer[]).map((k) => k.toString());
  }

  /** Pushes received and not taken yet. */
  get pendingPushes(): number {
    return this.pushes.length;
  }

  close(): void {
    this.socket.destroy();
  }
}

function text(v: RespValue): string {
  return Buffer.isBuffer(v) ? v.toString() : String(v);
}

for (const mode of BACKEND_MODES) {
  describe(`client-side caching through the proxy, ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    const opened: { close(): void }[] = [];
    /** Keys whose slots lie on every master of the cluster (any keys when standalone). */
    const keys = ["{a}k", "{b}k", "{c}k"];

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      if (mode === "cluster") {
        const ports = new Set(await Promise.all(keys.map(async (k) => (await backend.nodeOf(k)).port)));
        expect(ports.size, "test keys on three masters").to.equal(3);
      }
    });

    after(async () => {
      await proxy?.close();
      await backend?.stop();
    });

    afterEach(() => {
      for (const c of opened.splice(0)) c.close();
    });

    const open = async (proto: 2 | 3 = 3): Promise<Conn> => {
      const c = await Conn.open(proxy.port, proto);
      opened.push(c);
      return c;
    };
    /** A connection straight to the node that holds `key`, bypassing the proxy. */
    const direct = async (key: string): Promise<RawClient> => {
      const c = await backend.connect(key);
      opened.push(c);
      return c;
    };

    it("node-redis 6 clientSideCache (RESP3): a write through the proxy and one on the shard invalidate", async () => {
      const cached = createClient({
        socket: { port: proxy.port, host: "127.0.0.1" },
        RESP: 3,
        clientSideCache: { recordStats: true },
      });
      const other = createClient({ socket: { port: proxy.port, host: "127.0.0.1" } });
      await cached.connect();
      await other.connect();
      try {
        for (const key of keys) {
          await other.set(key, "v1");
          expect(await cached.get(key)).to.equal("v1");
          const hits = cached.clientSideCache!.stats().hitCount;
          expect(await cached.get(key)).to.equal("v1");
          expect(cached.clientSideCache!.stats().hitCount, "served from the cache").to.equal(hits + 1);
          await other.set(key, "v2");
          await eventually(
            () => cached.get(key),
            (v) => v === "v2",
            "node-redis sees the write through the proxy",
          );
          await (await direct(key)).call("SET", key, "v3");
          await eventually(
            () => cached.get(key),
            (v) => v === "v3",
            "node-redis sees the write on the shard",
          );
        }
      } finally {
        await cached.quit();
        await other.quit();
      }
    });

    it("redis-py 8 cache_config: a write through the proxy and one on the shard invalidate", async function () {
      this.timeout(240_000);
      const script = path.resolve("spec/support/redis_py_tracking.py");
      for (const key of keys) {
        const node = await backend.nodeOf(key);
        const { code, output } = await runPython(script, [String(proxy.port), String(node.port), key]);
        expect(output.trim(), output).to.equal("ok");
        expect(code).to.equal(0);
      }
    });

    it("RESP2 REDIRECT: __redis__:invalidate messages for writes through the proxy, on the shard, and FLUSHALL", async () => {
      const sub = await open(2);
      const id = text(await sub.call("CLIENT", "ID"));
      await sub.call("SUBSCRIBE", "__redis__:invalidate");
      const reader = await open(2);
      expect(text(await reader.call("CLIENT", "TRACKING", "ON", "REDIRECT", id))).to.equal("OK");
      expect(await reader.call("CLIENT", "GETREDIR")).to.equal(Number(id));
      const writer = await open(2);
      for (const key of keys) {
        await reader.call("GET", key);
        await writer.call("SET", key, "through");
        expect(await sub.invalidation()).to.deep.equal([key]);
        await reader.call("GET", key);
        await (await direct(key)).call("SET", key, "direct");
        expect(await sub.invalidation()).to.deep.equal([key]);
      }
      // A key not read is not reported; a key read again is, once.
      await reader.call("GET", keys[0]);
      await writer.call("SET", "{a}unread", "x");
      await writer.call("SET", keys[0], "again");
      expect(await sub.invalidation()).to.deep.equal([keys[0]]);
      await writer.call("FLUSHALL");
      expect(await sub.invalidation()).to.equal(null);
      // The RESP2 reader itself gets nothing: it has no pushes.
      expect(reader.frames.every((f) => f[0] !== 62)).to.equal(true);
    });

    it("BCAST with PREFIX: every change under the prefix, through the proxy or on the shard, and nothing else", async () => {
      const c = await open();
      // A FLUSHALL of the test before reaches the proxy from each master's stream in turn: a late
      // one may come as a flush (null) to this new client. A flush is always a valid message.
      const next = async (): Promise<string[] | null> => {
        for (;;) {
          const keys = await c.invalidation();
          if (keys !== null) return keys;
        }
      };
      expect(
        text(await c.call("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:", "PREFIX", "{a}p:")),
      ).to.equal("OK");
      const writer = await open();
      await writer.call("SET", "user:{a}1", "x");
      expect(await next()).to.deep.equal(["user:{a}1"]);
      await writer.call("SET", "other:{a}1", "x");
      await (await direct("user:{b}2")).call("SET", "user:{b}2", "x");
      expect(await next()).to.deep.equal(["user:{b}2"]);
      await writer.call("MSET", "{a}p:1", "1", "{a}p:2", "2", "{a}q", "3");
      expect(await next()).to.deep.equal(["{a}p:1", "{a}p:2"]);
      await writer.call("SET", "user:{c}3", "x");
      expect(await next(), "other:{a}1 and {a}q never came").to.deep.equal(["user:{c}3"]);
    });

    it("OPTIN: only the keys read right after CLIENT CACHING YES are tracked", async () => {
      const c = await open();
      await c.call("CLIENT", "TRACKING", "ON", "OPTIN");
      await c.call("GET", keys[0]);
      expect(text(await c.call("CLIENT", "CACHING", "YES"))).to.equal("OK");
      await c.call("GET", keys[1]);
      await c.call("GET", keys[2]);
      const writer = await open();
      await writer.call("SET", keys[0], "x");
      await (await direct(keys[2])).call("SET", keys[2], "x");
      await writer.call("SET", keys[1], "x");
      expect(await c.invalidation(), "only the key read after CACHING YES").to.deep.equal([keys[1]]);
      expect(c.pendingPushes).to.equal(0);
    });

    it("NOLOOP: the client's own writes are not sent back, others' are", async () => {
      const c = await open();
      await c.call("CLIENT", "TRACKING", "ON", "NOLOOP");
      await c.call("MGET", keys[0], "{a}other");
      await c.call("SET", keys[0], "mine");
      const writer = await open();
      await writer.call("SET", "{a}other", "theirs");
      expect(await c.invalidation()).to.deep.equal(["{a}other"]);
      expect(c.pendingPushes, "its own write came back").to.equal(0);
    });

    it("in RESP3 the invalidation a client's own write causes comes after that write's reply", async () => {
      const c = await open();
      await c.call("CLIENT", "TRACKING", "ON");
      await c.call("GET", keys[0]);
      await c.call("HSET", "{a}h", "f", "1");
      await c.call("HGET", "{a}h", "f");
      expect(await c.call("HDEL", "{a}h", "f")).to.equal(1);
      expect(await c.invalidation()).to.deep.equal(["{a}h"]);
      const last = c.frames[c.frames.length - 1];
      expect(last[0], "the HDEL reply came first").to.equal(62);
    });

    it("CLIENT TRACKINGINFO and GETREDIR answer as Redis does, byte for byte in RESP3", async () => {
      const server = await startRedis();
      const theirs = await Conn.open(server.port);
      opened.push(theirs);
      const ours = await open();
      const both = async (...args: string[]): Promise<[Buffer, Buffer]> => [
        await ours.raw(...args),
        await theirs.raw(...args),
      ];
      const steps: string[][] = [
        ["CLIENT", "TRACKINGINFO"],
        ["CLIENT", "GETREDIR"],
        ["CLIENT", "TRACKING", "ON", "OPTIN", "NOLOOP"],
        ["CLIENT", "TRACKINGINFO"],
        ["CLIENT", "CACHING", "YES"],
        ["CLIENT", "TRACKINGINFO"],
        ["CLIENT", "GETREDIR"],
        ["CLIENT", "TRACKING", "OFF"],
        ["CLIENT", "TRACKING", "ON", "OPTOUT"],
        ["CLIENT", "CACHING", "NO"],
        ["CLIENT", "TRACKINGINFO"],
        ["CLIENT", "TRACKING", "OFF"],
        ["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "b", "PREFIX", "a"],
        ["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "c"],
        ["CLIENT", "TRACKINGINFO"],
        ["CLIENT", "TRACKING", "OFF"],
        ["CLIENT", "TRACKING", "ON", "BCAST"],
        ["CLIENT", "TRACKINGINFO"],
        ["CLIENT", "TRACKING", "OFF"],
        ["CLIENT", "TRACKINGINFO"],
      ];
      for (const step of steps) {
        const [a, b] = await both(...step);
        expect(a.toString(), step.join(" ")).to.equal(b.toString());
      }
      // With REDIRECT the ids differ (the proxy's own clients), the shape does not.
      const target = text(await ours.call("CLIENT", "ID"));
      await ours.call("CLIENT", "TRACKING", "ON", "REDIRECT", target);
      expect(await ours.call("CLIENT", "GETREDIR")).to.equal(Number(target));
      const info = await ours.raw("CLIENT", "TRACKINGINFO");
      expect(info.toString()).to.equal(
        `%3\r\n$5\r\nflags\r\n~1\r\n$2\r\non\r\n$8\r\nredirect\r\n:${target}\r\n$8\r\nprefixes\r\n*0\r\n`,
      );
      await server.stop();
    });

    it("bad CLIENT TRACKING and CACHING calls get Redis' own errors", async () => {
      const server: RedisNode = await startRedis();
      const theirs = await RawClient.connect(server.port);
      opened.push(theirs);
      const ours = await open(2);
      const bad: string[][] = [
        ["CLIENT", "TRACKING"],
        ["CLIENT", "TRACKING", "maybe"],
        ["CLIENT", "TRACKING", "ON", "PREFIX", "a"],
        ["CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"],
        ["CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"],
        ["CLIENT", "TRACKING", "ON", "REDIRECT", "987654"],
        ["CLIENT", "TRACKING", "ON", "REDIRECT", "x"],
        ["CLIENT", "TRACKING", "ON", "REDIRECT"],
        ["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ab", "PREFIX", "a"],
        ["CLIENT", "CACHING", "YES"],
        ["CLIENT", "CACHING"],
        ["CLIENT", "GETREDIR", "x"],
        ["CLIENT", "TRACKINGINFO", "x"],
        ["CLIENT", "TRACKING", "ON", "OPTIN"],
        ["CLIENT", "CACHING", "NO"],
        ["CLIENT", "CACHING", "MAYBE"],
        ["CLIENT", "TRACKING", "ON", "OPTOUT"],
        ["CLIENT", "TRACKING", "ON", "BCAST"],
        ["CLIENT", "TRACKING", "OFF"],
        ["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ab"],
        ["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "abc"],
      ];
      for (const args of bad) {
        const want = (await theirs.call(...args)) as unknown;
        const got = decodeReply(await ours.raw(...args));
        // Errors: the raw client's ReplyError, the decoder's RespError; both carry the text.
        const show = (v: unknown): string =>
          typeof v === "object" && v !== null && "message" in v ? String(v.message) : String(v);
        expect(show(got), args.join(" ")).to.equal(show(want));
      }
      await server.stop();
    });

    it("a lost invalidation stream means a flush, and tracking goes on once it is back", async () => {
      const c = await open();
      await c.call("CLIENT", "TRACKING", "ON");
      await c.call("GET", keys[1]);
      // The proxy's stream is the one connection in BCAST mode on the node.
      const node = await direct(keys[1]);
      const list = String(await node.text("CLIENT", "LIST"));
      const stream = list.split("\n").find((line) => / flags=\S*B/.test(line));
      expect(stream, list).to.not.equal(undefined);
      const streamId = /\bid=(\d+)/.exec(stream!)![1];
      await node.call("CLIENT", "KILL", "ID", streamId);
      expect(await c.invalidation(), "the flush when the stream was lost").to.equal(null);
      // Once it streams again, changes made meanwhile are flushed too, then tracking goes on.
      expect(await c.invalidation(), "the flush when the stream is back").to.equal(null);
      await c.call("GET", keys[1]);
      await node.call("SET", keys[1], "after");
      expect(await c.invalidation()).to.deep.equal([keys[1]]);
    });
  });
}

describe("client-side caching through the proxy, reads from replicas (--read-from-replicas)", function () {
  this.timeout(90_000);
  let cluster: RedisCluster;
  let proxy: RunningProxy;

  before(async function () {
    this.timeout(120_000);
    // DEBUG SLEEP makes a replica lag behind its master.
    cluster = await startCluster({
      masters: 3,
      replicasPerMaster: 1,
      args: ["--enable-debug-command", "yes"],
    });
    proxy = await startProxy([{ port: cluster.nodes[0].port }], { readFromReplicas: true });
  });

  after(async () => {
    await proxy?.close();
    await cluster?.stop();
  });

  it("a tracking client reads from the masters, which tell it every change; others still read replicas", async () => {
    const key = "replica-tracked";
    const master = await cluster.nodeForSlot(calculateSlot(key));
    // STRLEN, which the proxy's own bookkeeping never sends, counts the clients' reads.
    const reads = async (nodes: RedisNode[]): Promise<number> => {
      let total = 0;
      for (const node of nodes) {
        const m = /cmdstat_strlen:calls=(\d+)/.exec(await node.cli("INFO", "commandstats"));
        total += Number(m?.[1] ?? 0);
      }
      return total;
    };
    const c = await Conn.open(proxy.port);
    const plain = await Conn.open(proxy.port);
    try {
      await c.call("SET", key, "v1");
      await master.cli("WAIT", "1", "5000");
      expect(text(await c.call("CLIENT", "TRACKING", "ON"))).to.equal("OK");
      const replicas = await cluster.replicas();
      const [fromMaster, fromReplicas] = [await reads([master]), await reads(replicas)];
      for (let i = 0; i < 5; i++) expect(await c.call("STRLEN", key)).to.equal(2);
      for (let i = 0; i < 5; i++) expect(await plain.call("STRLEN", key)).to.equal(2);
      expect((await reads([master])) - fromMaster, "the tracking client's reads").to.equal(5);
      expect((await reads(replicas)) - fromReplicas, "the other client's reads").to.equal(5);
      await master.cli("SET", key, "v2");
      expect(await c.invalidation()).to.deep.equal([key]);
      expect(text(await c.call("GET", key))).to.equal("v2");
    } finally {
      c.close();
      plain.close();
    }
  });
});
