import net from "node:net";
import { expect } from "chai";
import { Redis } from "ioredis";
import {
  startRedis,
  startProxy,
  sendCommand,
  RespError,
  type RedisNode,
  type RespValue,
  type RunningProxy,
} from "./harness/index.js";
import { connectSocket } from "./support/raw-client.js";
import { encodeCommand, parseReply } from "./harness/resp.js";

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

type Reply = RespValue | RespError;

/** A raw client socket that decodes replies as they arrive. */
class RawClient {
  private buf = Buffer.alloc(0);
  readonly replies: Reply[] = [];
  /** When each reply arrived (Date.now()). */
  readonly arrivals: number[] = [];
  closed = false;
  private readonly socket: net.Socket;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      for (;;) {
        let parsed: ReturnType<typeof parseReply>;
        try {
          parsed = parseReply(this.buf);
        } catch (err) {
          // An error inside an array (EXEC) or a malformed reply: record it as the reply.
          this.replies.push(err instanceof RespError ? err : new RespError(`bad reply: ${String(err)}`));
          this.arrivals.push(Date.now());
          this.buf = Buffer.alloc(0);
          break;
        }
        if (parsed === undefined) break;
        this.replies.push(parsed.value);
        this.arrivals.push(Date.now());
        this.buf = this.buf.subarray(parsed.next);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => (this.closed = true));
  }

  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await connectSocket(port));
  }

  send(...commands: string[][]): void {
    this.socket.write(Buffer.concat(commands.map((c) => encodeCommand(c))));
  }

  /** Waits until `n` replies in total have arrived. */
  async waitReplies(n: number, timeoutMs = 3000): Promise<Reply[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length < n) {
      if (this.closed) throw new Error(`connection closed after ${this.replies.length} of ${n} replies`);
      if (Date.now() > deadline) {
        throw new Error(
          `timed out with ${this.replies.length} of ${n} replies: ${show(this.replies.slice(-3))}`,
        );
      }
      await sleep(5);
    }
    return this.replies.slice(0, n);
  }

  /** Sends one command and resolves its reply. */
  async call(args: string[], timeoutMs = 3000): Promise<Reply> {
    const n = this.replies.length + 1;
    this.send(args);
    return (await this.waitReplies(n, timeoutMs))[n - 1];
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function show(replies: Reply[]): string {
  return JSON.stringify(replies.map((r) => (r instanceof RespError ? `-${r.message}` : r)));
}

function errorText(reply: Reply): string {
  if (!(reply instanceof RespError)) throw new Error(`expected an error reply, got ${show([reply])}`);
  return reply.message;
}

/** Retries `fn` until it resolves or the deadline passes; resolves its value. */
async function eventually<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}

const LOST = "ERR upstream connection lost";
const UNAVAILABLE = /^ERR upstream .*unavailable/;

describe("upstream failure", function () {
  this.timeout(30_000);

  let redis: RedisNode | undefined;
  let proxy: RunningProxy | undefined;
  const raws: RawClient[] = [];
  const ioClients: Redis[] = [];

  const raw = async (): Promise<RawClient> => {
    const c = await RawClient.connect(proxy!.port);
    raws.push(c);
    return c;
  };

  const io = (): Redis => {
    const c = new Redis({ port: proxy!.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    c.on("error", () => {});
    ioClients.push(c);
    return c;
  };

  afterEach(async () => {
    for (const c of raws.splice(0)) c.destroy();
    for (const c of ioClients.splice(0)) c.disconnect();
    await proxy?.close();
    proxy = undefined;
    await redis?.stop();
    redis = undefined;
  });

  describe("when the server is killed", () => {
    beforeEach(async () => {
      redis = await startRedis({ args: ["--enable-debug-command", "yes"] });
      proxy = await startProxy([{ port: redis.port }]);
    });

    it("a client blocked in BLPOP k 0 and a pipelining client get 'ERR upstream connection lost' within 1 s", async () => {
      const blocked = await raw();
      const blockedIo = io();
      const pipeliner = await raw();
      expect(await blocked.call(["PING"])).to.equal("PONG");
      blocked.send(["BLPOP", "waiting-list", "0"]);
      const ioBlpop = blockedIo.blpop("waiting-list-2", 0).then(
        (v) => ({ value: v, at: Date.now() }),
        (err: Error) => ({ error: err.message, at: Date.now() }),
      );
      // The server sleeps on the shared connection, so everything pipelined behind is in flight.
      const count = 1000;
      const pipeline: string[][] = [["DEBUG", "SLEEP", "3"]];
      for (let i = 0; i < count; i++) pipeline.push(["INCR", "counter"]);
      pipeliner.send(...pipeline);
      await sleep(300);
      expect(blocked.replies.length, "BLPOP has not returned yet").to.equal(1);
      expect(pipeliner.replies.length, "nothing answered while the server sleeps").to.equal(0);

      const killedAt = Date.now();
      await redis!.kill();

      const pipelineReplies = await pipeliner.waitReplies(count + 1, 1000);
      const blpopReply = (await blocked.waitReplies(2, 1000))[1];
      const ioResult = await ioBlpop;

      expect(errorText(blpopReply)).to.equal(LOST);
      expect(blocked.arrivals[1] - killedAt).to.be.below(1000);
      expect(ioResult).to.have.property("error", LOST);
      expect(ioResult.at - killedAt).to.be.below(1000);
      // The command the server was running is lost; the rest were in flight (lost) or, if the
      // proxy held them back, sent after the loss (unavailable). None may succeed or hang.
      expect(errorText(pipelineReplies[0])).to.equal(LOST);
      for (const reply of pipelineReplies) {
        const text = errorText(reply);
        expect(text === LOST || UNAVAILABLE.test(text), text).to.equal(true);
      }
      expect(pipeliner.arrivals[count] - killedAt).to.be.below(1000);
      expect(blocked.closed || pipeliner.closed, "client connections stay open").to.equal(false);
    });

    it("while the server is down, new commands fail fast with 'ERR upstream ... unavailable'", async () => {
      const client = await raw();
      expect(await client.call(["SET", "k", "v"])).to.equal("OK");
      await redis!.kill();
      // Let the proxy notice the loss first.
      await sleep(100);
      const failsFast = async (command: string[]): Promise<void> => {
        const started = Date.now();
        const reply = await client.call(command, 1500);
        expect(Date.now() - started, `${command[0]} answered quickly`).to.be.below(1000);
        const text = errorText(reply);
        expect(text === LOST || UNAVAILABLE.test(text), `${command[0]}: ${text}`).to.equal(true);
      };
      for (const command of [
        ["GET", "k"],
        ["SET", "k", "w"],
        ["BLPOP", "k", "0"],
        ["GET", "k"],
      ]) {
        await failsFast(command);
      }
      // Fresh connections too, several times in a row (during the back-off).
      for (let i = 0; i < 5; i++) {
        const started = Date.now();
        const err = await sendCommand(proxy!.port, ["GET", "k"], { timeoutMs: 1500 }).then(
          () => new Error("GET succeeded while the server is down"),
          (e: Error) => e,
        );
        expect(err).to.be.instanceOf(RespError);
        expect(err.message).to.match(UNAVAILABLE);
        expect(Date.now() - started).to.be.below(1000);
      }
      expect(client.closed).to.equal(false);
      expect(await client.call(["PING"])).to.equal("PONG");

      // SUBSCRIBE cannot hang either: an error reply, or at worst the connection is closed.
      const subscriber = await raw();
      const started = Date.now();
      subscriber.send(["SUBSCRIBE", "ch"]);
      while (subscriber.replies.length === 0 && !subscriber.closed && Date.now() - started < 1500)
        await sleep(5);
      expect(Date.now() - started, "SUBSCRIBE answered quickly").to.be.below(1000);
      if (subscriber.replies.length > 0) {
        const text = errorText(subscriber.replies[0]);
        expect(text === LOST || UNAVAILABLE.test(text), `SUBSCRIBE: ${text}`).to.equal(true);
      }

      // A MULTI that failed leaves the client outside any transaction: what follows is answered.
      await failsFast(["MULTI"]);
      await failsFast(["GET", "k"]);
      await failsFast(["EXEC"]);
      expect(await client.call(["PING"])).to.equal("PONG");
    });

    it("after a restart, commands succeed again within a couple of seconds, on the same client connection", async () => {
      const client = await raw();
      const ioClient = io();
      expect(await ioClient.set("before", "1")).to.equal("OK");
      await redis!.kill();
      // Commands while down fail (and drive the back-off up a little).
      const downUntil = Date.now() + 700;
      while (Date.now() < downUntil) {
        expect(await client.call(["GET", "before"], 1500)).to.be.instanceOf(RespError);
        await sleep(50);
      }
      await ioClient.get("before").then(
        () => expect.fail("GET succeeded while the server is down"),
        (err: Error) => expect(err.message).to.match(/^ERR upstream/),
      );
      await redis!.restart();
      const restartedAt = Date.now();
      await eventually(async () => {
        const reply = await client.call(["SET", "after", "2"], 1500);
        if (reply !== "OK") throw new Error(`SET after restart: ${show([reply])}`);
      }, 3000);
      expect(Date.now() - restartedAt).to.be.below(3000);
      expect(await client.call(["GET", "after"])).to.equal("2");
      expect(await eventually(() => ioClient.get("after"), 3000)).to.equal("2");
      // Dedicated connections recover too.
      expect(await client.call(["RPUSH", "list", "x"])).to.equal(1);
      expect(await client.call(["BLPOP", "list", "1"])).to.deep.equal(["list", "x"]);
      expect(await client.call(["MULTI"])).to.equal("OK");
      expect(await client.call(["INCR", "n"])).to.equal("QUEUED");
      expect(await client.call(["EXEC"])).to.deep.equal([1]);
      expect(client.closed).to.equal(false);
    });

    it("EXEC in flight when the server dies gets an error, and the client can continue afterwards", async () => {
      const client = await raw();
      expect(await client.call(["MULTI"])).to.equal("OK");
      expect(await client.call(["DEBUG", "SLEEP", "3"])).to.equal("QUEUED");
      expect(await client.call(["SET", "tx", "1"])).to.equal("QUEUED");
      client.send(["EXEC"]);
      await sleep(300);
      expect(client.replies.length).to.equal(3);
      const killedAt = Date.now();
      await redis!.kill();
      const execReply = (await client.waitReplies(4, 1000))[3];
      expect(errorText(execReply)).to.equal(LOST);
      expect(client.arrivals[3] - killedAt).to.be.below(1000);

      await redis!.restart();
      await eventually(async () => {
        const reply = await client.call(["PING", "x"]);
        if (reply !== "x") throw new Error(show([reply]));
        const set = await client.call(["SET", "probe", "1"]);
        if (set !== "OK") throw new Error(show([set]));
      }, 3000);
      expect(await client.call(["MULTI"])).to.equal("OK");
      expect(await client.call(["SET", "tx", "2"])).to.equal("QUEUED");
      expect(await client.call(["GET", "tx"])).to.equal("QUEUED");
      expect(await client.call(["EXEC"])).to.deep.equal(["OK", "2"]);
    });

    it("MULTI in progress when the server dies: the transaction fails, nothing runs outside it, the client continues", async () => {
      const client = await raw();
      expect(await client.call(["MULTI"])).to.equal("OK");
      expect(await client.call(["SET", "queued-before", "1"])).to.equal("QUEUED");
      await redis!.kill();
      await sleep(100);
      await redis!.restart();
      // The client still believes it is inside MULTI: this SET must not run on its own.
      const inside = await client.call(["SET", "queued-after", "1"], 2000);
      const exec = await client.call(["EXEC"], 2000);
      const summary = `SET inside the lost MULTI -> ${show([inside])}, EXEC -> ${show([exec])}`;
      expect(inside, `a command sent inside the lost MULTI must not run on its own: ${summary}`).to.not.equal(
        "OK",
      );
      expect(exec, `EXEC of the lost transaction fails: ${summary}`).to.be.instanceOf(RespError);
      expect(await redis!.call("EXISTS", "queued-before", "queued-after"), summary).to.equal(0);

      // And the client can go on with a new transaction.
      const result = await eventually(async () => {
        const multi = await client.call(["MULTI"]);
        if (multi !== "OK") throw new Error(show([multi]));
        await client.call(["INCR", "after-tx"]);
        const r = await client.call(["EXEC"]);
        if (!Array.isArray(r)) throw new Error(show([r]));
        return r;
      }, 3000);
      expect(result).to.deep.equal([1]);
      expect(client.closed).to.equal(false);
    });
  });

  describe("upstream credentials", () => {
    it("works against a server with requirepass when upstreamPassword is right", async () => {
      redis = await startRedis({ password: "s3cret-pw" });
      proxy = await startProxy([{ port: redis.port }], { upstreamPassword: "s3cret-pw" });
      const client = await raw();
      expect(await client.call(["SET", "k", "v"])).to.equal("OK");
      expect(await client.call(["GET", "k"])).to.equal("v");
      // Dedicated connections authenticate too.
      expect(await client.call(["BLPOP", "nothing", "0.1"])).to.equal(null);
      expect(await client.call(["MULTI"])).to.equal("OK");
      expect(await client.call(["INCR", "n"])).to.equal("QUEUED");
      expect(await client.call(["EXEC"])).to.deep.equal([1]);
      expect(await redis.call("GET", "k")).to.equal("v");
      // And reconnections after a restart as well.
      await redis.restart();
      await eventually(async () => {
        const reply = await client.call(["GET", "k"]);
        if (reply instanceof RespError) throw reply;
      }, 3000);
      expect(await client.call(["SET", "k2", "v2"])).to.equal("OK");
      expect(await client.call(["MULTI"])).to.equal("OK");
      expect(await client.call(["GET", "k2"])).to.equal("QUEUED");
      expect(await client.call(["EXEC"])).to.deep.equal(["v2"]);
    });

    it("fails to start, quickly, with a wrong upstreamPassword, naming the credentials problem", async () => {
      redis = await startRedis({ password: "s3cret-pw" });
      const started = Date.now();
      const err = await startProxy([{ port: redis.port }], { upstreamPassword: "wrong-pw" }).then(
        (p) => {
          proxy = p;
          return new Error("the proxy started");
        },
        (e: Error) => e,
      );
      expect(err.message).to.match(/credentials|WRONGPASS/);
      expect(err.message).to.not.equal("the proxy started");
      expect(Date.now() - started).to.be.below(5000);
    });

    it("fails to start without upstreamPassword against a server that requires one (NOAUTH)", async () => {
      redis = await startRedis({ password: "s3cret-pw" });
      const err = await startProxy([{ port: redis.port }]).then(
        (p) => {
          proxy = p;
          return new Error("the proxy started");
        },
        (e: Error) => e,
      );
      expect(err.message).to.match(/NOAUTH|credentials|password/i);
      expect(err.message).to.not.equal("the proxy started");
    });
  });
});
