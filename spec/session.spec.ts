import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, type RedisNode, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES, Direct, SELECT_IN_CLUSTER_ERROR } from "./support/backend.js";
import { waitUntil } from "./support/polling.js";
import { TestClients } from "./support/test-clients.js";
import {
  encode,
  encodeBulk,
  RawClient,
  ReplyError,
  toText,
  type Reply,
  type Value,
} from "./support/raw-client.js";

// ---- helpers ------------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The message of an error reply; fails when the reply is not an error. */
function errorOf(reply: Reply): string {
  if (!(reply instanceof ReplyError)) {
    throw new Error(`expected an error reply, got ${JSON.stringify(toText(reply))}`);
  }
  return reply.message;
}

/** Resolves true when the promise settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const done = promise.then(
    () => true,
    () => true,
  );
  try {
    return await Promise.race([done, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** One field of an INFO text. */
function infoField(info: Value, field: string): string | undefined {
  if (typeof info !== "string") throw new Error("INFO reply is not a string");
  const line = info.split("\r\n").find((l) => l.startsWith(`${field}:`));
  return line?.slice(field.length + 1);
}

/** A flat [k1, v1, k2, v2...] array as an object. */
function asMap(reply: Value): Record<string, Value> {
  if (!Array.isArray(reply)) throw new Error("expected an array");
  const out: Record<string, Value> = {};
  for (let i = 0; i < reply.length; i += 2) out[String(reply[i])] = reply[i + 1];
  return out;
}

/** The fields of one CLIENT INFO / CLIENT LIST line. */
function clientFields(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of line.trim().split(" ")) {
    const eq = part.indexOf("=");
    out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

/** Redis' blocked_clients count, asked of the server directly (the node serving the key). */
async function blockedOnServer(redis: RedisNode): Promise<number> {
  const info = await redis.call("INFO", "clients");
  return Number(infoField(info as Value, "blocked_clients"));
}

// ---- the tests ----------------------------------------------------------------------------

for (const mode of BACKEND_MODES) {
  describe(`session: connection state through the proxy, ${Backend.label(mode)} behind it`, function () {
    this.timeout(20_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let direct: Direct;
    const clients = new TestClients(() => proxy.port);
    const cluster = mode === "cluster";

    const client = (port?: number): Promise<RawClient> => clients.raw(port);
    const ioClient = (): Redis => clients.io();

    before(async function () {
      this.timeout(60_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      direct = new Direct(backend);
    });

    afterEach(() => clients.closeAll());

    after(async () => {
      await direct?.close();
      await proxy?.close();
      await backend?.stop();
    });

    describe("transactions", () => {
      it("MULTI/EXEC queues commands and EXEC returns their replies as an array", async () => {
        // The keys of one transaction share a {hashtag}: in a cluster they must be on one slot.
        const c = await client();
        expect(await c.text("SET", "{tx}:n", "10")).to.equal("OK");
        expect(await c.text("MULTI")).to.equal("OK");
        expect(await c.text("INCRBY", "{tx}:n", "5")).to.equal("QUEUED");
        expect(await c.text("SET", "{tx}:s", "in-multi")).to.equal("QUEUED");
        expect(await c.text("GET", "{tx}:n")).to.equal("QUEUED");
        // Nothing ran yet: the server still has the old value.
        expect(await direct.text("GET", "{tx}:n")).to.equal("10");
        expect(await direct.text("GET", "{tx}:s")).to.equal(null);
        expect(await c.text("EXEC")).to.deep.equal([15, "OK", "15"]);
        expect(await direct.text("MGET", "{tx}:n", "{tx}:s")).to.deep.equal(["15", "in-multi"]);
        // Back to normal after EXEC.
        expect(await c.text("SET", "{tx}:after", "1")).to.equal("OK");
      });

      it("ioredis multi().exec() returns every reply", async () => {
        const io = ioClient();
        const result = await io.multi().set("tx:io", "a").append("tx:io", "bc").get("tx:io").exec();
        expect(result).to.deep.equal([
          [null, "OK"],
          [null, 3],
          [null, "abc"],
        ]);
        expect(await direct.text("GET", "tx:io")).to.equal("abc");
      });

      it("a queued command with the wrong arity makes EXEC fail with Redis' EXECABORT", async () => {
        const c = await client();
        const d = await backend.connect("tx:abort");
        try {
          for (const conn of [c, d]) {
            expect(await conn.text("MULTI")).to.equal("OK");
            expect(await conn.text("SET", "tx:abort", "1")).to.equal("QUEUED");
          }
          const proxied = errorOf(await c.call("SET", "tx:abort"));
          expect(proxied).to.equal(errorOf(await d.call("SET", "tx:abort")));
          const execProxied = errorOf(await c.call("EXEC"));
          expect(execProxied).to.equal(errorOf(await d.call("EXEC")));
          expect(execProxied).to.match(/^EXECABORT/);
          expect(await direct.text("EXISTS", "tx:abort")).to.equal(0);
          expect(await c.text("PING")).to.equal("PONG");
        } finally {
          d.close();
        }
      });

      it("WATCH: EXEC returns null when another client modified the watched key", async () => {
        const a = await client();
        const b = await client();
        expect(await a.text("SET", "tx:w", "start")).to.equal("OK");
        expect(await a.text("WATCH", "tx:w")).to.equal("OK");
        expect(await a.text("GET", "tx:w")).to.equal("start");
        expect(await b.text("SET", "tx:w", "changed-by-b")).to.equal("OK");
        expect(await a.text("MULTI")).to.equal("OK");
        expect(await a.text("SET", "tx:w", "from-a")).to.equal("QUEUED");
        expect(await a.call("EXEC")).to.equal(null);
        expect(await direct.text("GET", "tx:w")).to.equal("changed-by-b");
        // The watch is over: the next transaction runs.
        expect(await a.text("MULTI")).to.equal("OK");
        expect(await a.text("SET", "tx:w", "second")).to.equal("QUEUED");
        expect(await a.text("EXEC")).to.deep.equal(["OK"]);
        expect(await direct.text("GET", "tx:w")).to.equal("second");
      });

      it("WATCH: EXEC runs when nobody touched the watched key", async () => {
        const a = await client();
        const b = await client();
        expect(await a.text("SET", "tx:w2", "start")).to.equal("OK");
        expect(await a.text("WATCH", "tx:w2")).to.equal("OK");
        expect(await b.text("SET", "tx:other", "x")).to.equal("OK");
        expect(await a.text("MULTI")).to.equal("OK");
        expect(await a.text("SET", "tx:w2", "from-a")).to.equal("QUEUED");
        expect(await a.text("EXEC")).to.deep.equal(["OK"]);
        expect(await direct.text("GET", "tx:w2")).to.equal("from-a");
      });

      it("DISCARD drops the queued commands and leaves MULTI", async () => {
        const c = await client();
        expect(await c.text("MULTI")).to.equal("OK");
        expect(await c.text("SET", "tx:d", "never")).to.equal("QUEUED");
        expect(await c.text("DISCARD")).to.equal("OK");
        expect(await direct.text("EXISTS", "tx:d")).to.equal(0);
        expect(await c.text("SET", "tx:d2", "now")).to.equal("OK");
        expect(await direct.text("GET", "tx:d2")).to.equal("now");
        expect(await c.text("GET", "tx:d")).to.equal(null);
      });

      it("EXEC and DISCARD without MULTI are errors, as Redis says", async () => {
        const c = await client();
        expect(errorOf(await c.call("EXEC"))).to.equal(errorOf(await direct.call("EXEC")));
        expect(errorOf(await c.call("DISCARD"))).to.equal(errorOf(await direct.call("DISCARD")));
        expect(errorOf(await c.call("EXEC"))).to.match(/EXEC without MULTI/);
        expect(await c.text("PING")).to.equal("PONG");
      });
    });

    describe("blocking commands", () => {
      it("BLPOP is woken by an LPUSH from another client", async () => {
        const a = await client();
        const b = await client();
        const started = Date.now();
        a.send("BLPOP", "blk:q1", "10");
        await waitUntil(
          "the BLPOP to block on the server",
          async () => (await blockedOnServer(await backend.nodeOf("blk:q1"))) === 1,
        );
        expect(await b.text("LPUSH", "blk:q1", "woken")).to.equal(1);
        expect(toText(await a.next())).to.deep.equal(["blk:q1", "woken"]);
        expect(Date.now() - started).to.be.below(5000);
        expect(await direct.text("EXISTS", "blk:q1")).to.equal(0);
        // The connection is back to ordinary commands.
        expect(await a.text("SET", "blk:after", "1")).to.equal("OK");
      });

      it("BLPOP times out with a null reply", async () => {
        const a = await client();
        const started = Date.now();
        expect(await a.call("BLPOP", "blk:none", "1")).to.equal(null);
        expect(Date.now() - started).to.be.within(900, 4000);
        expect(await a.text("PING")).to.equal("PONG");
      });

      it("commands pipelined after a BLPOP on the same connection run after it", async () => {
        const a = await client();
        const b = await client();
        a.write(
          Buffer.concat([
            encode(["BLPOP", "blk:q2", "10"]),
            encode(["SET", "blk:flag", "after-blpop"]),
            encode(["ECHO", "echoed"]),
            encode(["GET", "blk:flag"]),
          ]),
        );
        await waitUntil(
          "the BLPOP to block on the server",
          async () => (await blockedOnServer(await backend.nodeOf("blk:q2"))) === 1,
        );
        await sleep(200);
        expect(a.bytes().length).to.equal(0, "no reply may overtake the blocked BLPOP");
        expect(await direct.text("EXISTS", "blk:flag")).to.equal(0, "SET ran before the BLPOP returned");
        expect(await b.text("RPUSH", "blk:q2", "item")).to.equal(1);
        expect(toText(await a.next())).to.deep.equal(["blk:q2", "item"]);
        expect(toText(await a.next())).to.equal("OK");
        expect(toText(await a.next())).to.equal("echoed");
        expect(toText(await a.next())).to.equal("after-blpop");
        expect(await direct.text("GET", "blk:flag")).to.equal("after-blpop");
      });
    });

    describe("pub/sub", () => {
      it("SUBSCRIBE (ioredis) receives a PUBLISH from another client", async () => {
        const sub = ioClient();
        const pub = ioClient();
        const messages: [string, string][] = [];
        sub.on("message", (channel: string, message: string) => messages.push([channel, message]));
        expect(await sub.subscribe("ps:news", "ps:other")).to.equal(2);
        const body = `hello ${Date.now()} \u00e9\r\n`;
        // Redis Cluster counts only the receiving node's subscribers in PUBLISH's reply, and the
        // publisher's node need not be the subscriber's; the message itself reaches every node.
        const count = await pub.publish("ps:news", body);
        if (cluster) expect(count).to.be.oneOf([0, 1]);
        else expect(count).to.equal(1);
        expect(await pub.publish("ps:nobody", "lost")).to.equal(0);
        await waitUntil("the message", () => messages.length > 0);
        expect(messages).to.deep.equal([["ps:news", body]]);
        // The server sees exactly one subscriber for the channel (summed over a cluster's masters).
        expect(await direct.subscribers("ps:news")).to.equal(1);
      });

      it("PSUBSCRIBE receives pmessages for matching channels only", async () => {
        const sub = ioClient();
        const pub = ioClient();
        const messages: string[][] = [];
        sub.on("pmessage", (pattern: string, channel: string, message: string) =>
          messages.push([pattern, channel, message]),
        );
        expect(await sub.psubscribe("ps:sport.*")).to.equal(1);
        expect(await pub.publish("ps:weather.today", "rain")).to.equal(0);
        const count = await pub.publish("ps:sport.tennis", "match point");
        if (cluster) expect(count).to.be.oneOf([0, 1]);
        else expect(count).to.equal(1);
        await waitUntil("the pmessage", () => messages.length > 0);
        expect(messages).to.deep.equal([["ps:sport.*", "ps:sport.tennis", "match point"]]);
      });

      it("a subscribed client is refused GET with Redis' own error; PING answers in pub/sub form", async () => {
        const c = await client();
        const d = await backend.connect();
        try {
          for (const conn of [c, d]) {
            expect(toText(await conn.call("SUBSCRIBE", "ps:chan"))).to.deep.equal([
              "subscribe",
              "ps:chan",
              1,
            ]);
          }
          const refused = errorOf(await c.call("GET", "ps:key"));
          expect(refused).to.equal(errorOf(await d.call("GET", "ps:key")));
          expect(toText(await c.call("PING"))).to.deep.equal(toText(await d.call("PING")));
          expect(toText(await c.call("PING", "hi"))).to.deep.equal(toText(await d.call("PING", "hi")));
        } finally {
          d.close();
        }
      });

      it("UNSUBSCRIBE from every channel returns to normal commands", async () => {
        const c = await client();
        expect(await direct.text("SET", "ps:value", "plain")).to.equal("OK");
        expect(toText(await c.call("SUBSCRIBE", "ps:a"))).to.deep.equal(["subscribe", "ps:a", 1]);
        expect(toText(await c.call("SUBSCRIBE", "ps:b"))).to.deep.equal(["subscribe", "ps:b", 2]);
        expect(errorOf(await c.call("GET", "ps:value"))).to.match(/Can't execute 'get'/);
        c.send("UNSUBSCRIBE");
        const frames = [toText(await c.next()), toText(await c.next())];
        expect(frames.map((f) => (Array.isArray(f) ? f[1] : f)).sort()).to.deep.equal(["ps:a", "ps:b"]);
        expect(frames.map((f) => (Array.isArray(f) ? f[2] : f)).sort()).to.deep.equal([0, 1]);
        expect(await c.text("GET", "ps:value")).to.equal("plain");
        expect(await c.text("PING")).to.equal("PONG");
        expect(await direct.subscribers("ps:a")).to.equal(0);
      });
    });

    describe("connection state", () => {
      if (cluster)
        it("SELECT: only db 0 in a cluster; SELECT 1 is refused as Redis Cluster refuses it", async () => {
          const a = await client();
          const b = await client();
          const d = await backend.connect("db:k");
          try {
            expect(errorOf(await a.call("SELECT", "1"))).to.equal(SELECT_IN_CLUSTER_ERROR);
            expect(errorOf(await d.call("SELECT", "1"))).to.equal(SELECT_IN_CLUSTER_ERROR);
            expect(await a.text("SELECT", "0")).to.equal("OK");
            expect(await a.text("SET", "db:k", "in-db0")).to.equal("OK");
            expect(await b.text("GET", "db:k")).to.equal("in-db0");
            expect(await d.text("GET", "db:k")).to.equal("in-db0");
            // Interleaved, pipelined traffic from both clients on the shared upstream connections.
            for (let i = 0; i < 100; i++) {
              a.write(encode(["SET", `db:a${i}`, `a${i}`]));
              b.write(encode(["SET", `db:b${i}`, `b${i}`]));
            }
            for (let i = 0; i < 100; i++) {
              expect(toText(await a.next())).to.equal("OK");
              expect(toText(await b.next())).to.equal("OK");
            }
            expect(await b.text("GET", "db:a57")).to.equal("a57");
            expect(await a.text("GET", "db:b57")).to.equal("b57");
            expect(await direct.text("MGET", "db:a99", "db:b99")).to.deep.equal(["a99", "b99"]);
            // An out-of-range index is refused as the server refuses it, and the db stays.
            const proxied = errorOf(await a.call("SELECT", "99999"));
            expect(proxied).to.equal(errorOf(await d.call("SELECT", "99999")));
            expect(await a.text("GET", "db:k")).to.equal("in-db0");
          } finally {
            d.close();
          }
        });
      else
        it("SELECT isolates databases between clients, checked on the server", async () => {
          const a = await client();
          const b = await client();
          expect(await a.text("SELECT", "1")).to.equal("OK");
          expect(await a.text("SET", "db:k", "in-db1")).to.equal("OK");
          expect(await b.text("GET", "db:k")).to.equal(null);
          expect(await b.text("SET", "db:k", "in-db0")).to.equal("OK");
          expect(await a.text("GET", "db:k")).to.equal("in-db1");
          // Interleaved, pipelined traffic from both clients on the shared upstream connections.
          const writesA = Array.from({ length: 100 }, (_, i) => encode(["SET", `db:i${i}`, `a${i}`]));
          const writesB = Array.from({ length: 100 }, (_, i) => encode(["SET", `db:i${i}`, `b${i}`]));
          for (let i = 0; i < 100; i++) {
            a.write(writesA[i]);
            b.write(writesB[i]);
          }
          for (let i = 0; i < 100; i++) {
            expect(toText(await a.next())).to.equal("OK");
            expect(toText(await b.next())).to.equal("OK");
          }
          expect(await a.text("GET", "db:i57")).to.equal("a57");
          expect(await b.text("GET", "db:i57")).to.equal("b57");

          const d = await backend.connect();
          try {
            expect(await d.text("GET", "db:k")).to.equal("in-db0");
            expect(await d.text("GET", "db:i99")).to.equal("b99");
            expect(await d.text("SELECT", "1")).to.equal("OK");
            expect(await d.text("GET", "db:k")).to.equal("in-db1");
            expect(await d.text("GET", "db:i99")).to.equal("a99");
            // An out-of-range index is refused as the server refuses it, and the db stays.
            const proxied = errorOf(await a.call("SELECT", "99999"));
            expect(proxied).to.equal(errorOf(await d.call("SELECT", "99999")));
            expect(await a.text("GET", "db:k")).to.equal("in-db1");
          } finally {
            d.close();
          }
        });

      it("PING and ECHO", async () => {
        const c = await client();
        expect(await c.call("PING")).to.equal("PONG");
        const msg = Buffer.from([0x68, 0x00, 0x0d, 0x0a, 0xff]);
        const pong = await c.call("PING", msg);
        expect(Buffer.isBuffer(pong) && pong.equals(msg)).to.equal(true);
        const echo = await c.call("ECHO", msg);
        expect(Buffer.isBuffer(echo) && echo.equals(msg)).to.equal(true);
        expect(errorOf(await c.call("ECHO"))).to.equal(errorOf(await direct.call("ECHO")));
        expect(errorOf(await c.call("PING", "a", "b"))).to.equal(
          errorOf(await direct.call("PING", "a", "b")),
        );
      });

      it("QUIT replies +OK and closes; commands pipelined after it do not run", async () => {
        const c = await client();
        c.write(Buffer.concat([encode(["QUIT"]), encode(["SET", "quit:after", "1"])]));
        expect(await settlesWithin(c.closed, 3000)).to.equal(true, "the proxy closed the connection");
        expect(c.bytes().toString()).to.equal("+OK\r\n");
        expect(await direct.text("EXISTS", "quit:after")).to.equal(0);
      });

      if (cluster)
        it("RESET answers RESET and forgets the name (SELECT 2 refused in a cluster)", async () => {
          const c = await client();
          expect(errorOf(await c.call("SELECT", "2"))).to.equal(SELECT_IN_CLUSTER_ERROR);
          expect(await c.text("CLIENT", "SETNAME", "before-reset")).to.equal("OK");
          expect(await c.text("SET", "reset:k", "before")).to.equal("OK");
          expect(await c.call("RESET")).to.equal("RESET");
          expect(await c.text("GET", "reset:k")).to.equal("before");
          expect(await c.text("SET", "reset:k", "db0")).to.equal("OK");
          expect(await c.text("CLIENT", "GETNAME")).to.equal(null);
          expect(await direct.text("GET", "reset:k")).to.equal("db0");
        });
      else
        it("RESET answers RESET, returns to db 0 and forgets the name", async () => {
          const c = await client();
          expect(await c.text("SELECT", "2")).to.equal("OK");
          expect(await c.text("CLIENT", "SETNAME", "before-reset")).to.equal("OK");
          expect(await c.text("SET", "reset:k", "db2")).to.equal("OK");
          expect(await c.call("RESET")).to.equal("RESET");
          expect(await c.text("GET", "reset:k")).to.equal(null);
          expect(await c.text("SET", "reset:k", "db0")).to.equal("OK");
          expect(await c.text("CLIENT", "GETNAME")).to.equal(null);
          expect(await direct.text("GET", "reset:k")).to.equal("db0");
          expect(await direct.text("SELECT", "2")).to.equal("OK");
          expect(await direct.text("GET", "reset:k")).to.equal("db2");
          expect(await direct.text("SELECT", "0")).to.equal("OK");
        });

      it("RESET leaves MULTI and subscriber mode", async () => {
        const c = await client();
        expect(await c.text("MULTI")).to.equal("OK");
        expect(await c.text("SET", "reset:m", "never")).to.equal("QUEUED");
        expect(await c.call("RESET")).to.equal("RESET");
        expect(await direct.text("EXISTS", "reset:m")).to.equal(0);
        expect(toText(await c.call("SUBSCRIBE", "reset:chan"))).to.deep.equal(["subscribe", "reset:chan", 1]);
        expect(await c.call("RESET")).to.equal("RESET");
        expect(await c.text("SET", "reset:m", "normal")).to.equal("OK");
        await waitUntil(
          "the server to drop the subscription",
          async () => (await direct.subscribers("reset:chan")) === 0,
        );
      });

      it("HELLO 4 gets NOPROTO and the connection stays usable", async () => {
        const c = await client();
        expect(errorOf(await c.call("HELLO", "4"))).to.equal("NOPROTO unsupported protocol version");
        expect(await c.text("SET", "hello:k", "v")).to.equal("OK");
        expect(await c.text("GET", "hello:k")).to.equal("v");
      });

      it("HELLO 2 answers proto 2 with this client's id", async () => {
        const c = await client();
        const id = await c.call("CLIENT", "ID");
        const reply = asMap(await c.text("HELLO", "2"));
        const server = asMap(await direct.text("HELLO", "2"));
        expect(Object.keys(reply).sort()).to.deep.equal(Object.keys(server).sort());
        expect(reply.proto).to.equal(2);
        expect(reply.id).to.equal(id);
        expect(reply.version).to.equal(server.version);
        expect(await c.text("PING")).to.equal("PONG");
      });

      it("HELLO with a bad protocol version is refused as Redis does", async () => {
        const c = await client();
        for (const version of ["1", "4", "abc", "3.5"]) {
          const proxied = errorOf(await c.call("HELLO", version));
          expect(proxied, `HELLO ${version}`).to.equal(errorOf(await direct.call("HELLO", version)));
        }
        expect(await c.text("PING")).to.equal("PONG");
      });

      it("HELLO with a negative protocol version gets Redis' error (NOPROTO)", async () => {
        const c = await client();
        const proxied = errorOf(await c.call("HELLO", "-2"));
        expect(proxied).to.equal(errorOf(await direct.call("HELLO", "-2")));
        expect(await c.text("PING")).to.equal("PONG");
      });

      it("CLIENT SETNAME/GETNAME/ID/INFO/LIST describe the proxy's own clients", async () => {
        const a = await client();
        const b = await client();
        expect(await a.text("CLIENT", "GETNAME")).to.equal(null);
        expect(await a.text("CLIENT", "SETNAME", "alpha")).to.equal("OK");
        expect(await b.text("CLIENT", "SETNAME", "beta")).to.equal("OK");
        expect(await a.text("CLIENT", "GETNAME")).to.equal("alpha");
        const bad = errorOf(await a.call("CLIENT", "SETNAME", "has space"));
        expect(bad).to.equal(errorOf(await direct.call("CLIENT", "SETNAME", "has space")));
        expect(await a.text("CLIENT", "GETNAME")).to.equal("alpha");

        const idA = await a.call("CLIENT", "ID");
        const idB = await b.call("CLIENT", "ID");
        expect(idA).to.be.a("number");
        expect(idB).to.be.a("number");
        expect(idA).to.not.equal(idB);

        const info = clientFields(String(await a.text("CLIENT", "INFO")));
        expect(info.id).to.equal(String(idA));
        expect(info.name).to.equal("alpha");
        expect(info.addr).to.equal(`127.0.0.1:${a.socket.localPort}`);
        expect(info.db).to.equal("0");

        const lines = String(await b.text("CLIENT", "LIST"))
          .split("\n")
          .filter((l) => l.length > 0)
          .map(clientFields);
        const mine = lines.filter((l) => l.id === String(idA) || l.id === String(idB));
        expect(mine.map((l) => [l.id, l.name, l.addr])).to.have.deep.members([
          [String(idA), "alpha", `127.0.0.1:${a.socket.localPort}`],
          [String(idB), "beta", `127.0.0.1:${b.socket.localPort}`],
        ]);
      });

      it("CLIENT KILL ID closes that client's socket", async () => {
        const killer = await client();
        const victim = await client();
        const bystander = await client();
        const victimId = await victim.call("CLIENT", "ID");
        expect(await killer.call("CLIENT", "KILL", "ID", String(victimId))).to.equal(1);
        expect(await settlesWithin(victim.closed, 3000)).to.equal(true, "the victim's socket closed");
        expect(await killer.call("CLIENT", "KILL", "ID", String(victimId))).to.equal(0);
        expect(await bystander.text("PING")).to.equal("PONG");
        expect(await killer.text("PING")).to.equal("PONG");
      });

      it("CLIENT KILL ADDR (and the old addr form) closes that client's socket", async () => {
        const killer = await client();
        const v1 = await client();
        const v2 = await client();
        expect(await v1.text("PING")).to.equal("PONG");
        expect(await v2.text("PING")).to.equal("PONG");
        expect(await killer.call("CLIENT", "KILL", "ADDR", `127.0.0.1:${v1.socket.localPort}`)).to.equal(1);
        expect(await settlesWithin(v1.closed, 3000)).to.equal(true, "v1's socket closed");
        expect(v2.isClosed).to.equal(false);
        expect(await killer.call("CLIENT", "KILL", `127.0.0.1:${v2.socket.localPort}`)).to.equal("OK");
        expect(await settlesWithin(v2.closed, 3000)).to.equal(true, "v2's socket closed");
        expect(errorOf(await killer.call("CLIENT", "KILL", `127.0.0.1:${v2.socket.localPort}`))).to.equal(
          errorOf(await direct.call("CLIENT", "KILL", "127.0.0.1:1")),
        );
        expect(await killer.text("PING")).to.equal("PONG");
      });

      it("CLIENT REPLY OFF silences replies until CLIENT REPLY ON; SKIP skips one", async () => {
        const c = await client();
        c.send("CLIENT", "REPLY", "OFF");
        c.send("SET", "reply:k", "silent");
        c.send("GET", "reply:k");
        c.send("PING");
        await waitUntil(
          "the SET to reach the server",
          async () => (await direct.text("GET", "reply:k")) === "silent",
        );
        await sleep(100);
        expect(c.bytes().length).to.equal(0, "no reply while CLIENT REPLY OFF");
        c.send("CLIENT", "REPLY", "ON");
        expect(await c.next()).to.equal("OK");
        expect(await c.text("GET", "reply:k")).to.equal("silent");
        c.send("CLIENT", "REPLY", "SKIP");
        c.send("ECHO", "skipped");
        c.send("ECHO", "shown");
        expect(toText(await c.next())).to.equal("shown");
        const expected = Buffer.concat([Buffer.from("+OK\r\n"), encodeBulk("silent"), encodeBulk("shown")]);
        expect(c.bytes().toString()).to.equal(expected.toString());
      });

      it("INFO has the proxy section with connected_clients and the server's sections; INFO proxy only ours", async () => {
        const c = await client();
        // Clients of earlier tests are closed in afterEach; wait until the proxy has seen them go.
        await waitUntil(
          "only this client to be connected",
          async () => Number(infoField(await c.text("INFO", "proxy"), "connected_clients")) === 1,
        );
        const before = 1;
        const extra = [await client(), await client()];
        for (const e of extra) expect(await e.text("PING")).to.equal("PONG");
        const info = await c.text("INFO");
        expect(info).to.be.a("string");
        const text = String(info);
        expect(text).to.match(/^# Proxy\r\n/m);
        expect(text).to.match(/^# Server\r\n/m);
        expect(Number(infoField(info, "connected_clients"))).to.equal(before + 2);
        const serverInfo = await direct.text("INFO", "server");
        expect(infoField(info, "redis_version")).to.equal(infoField(serverInfo, "redis_version"));
        // One server: its own run_id. A cluster has one per shard; the proxy summarises them.
        if (!cluster) expect(infoField(info, "run_id")).to.equal(infoField(serverInfo, "run_id"));

        extra[0].close();
        await waitUntil(
          "connected_clients to drop",
          async () => Number(infoField(await c.text("INFO", "proxy"), "connected_clients")) === before + 1,
        );
        const ours = String(await c.text("INFO", "proxy"));
        expect(ours).to.match(/^# Proxy\r\n/);
        expect(ours).to.not.match(/^# Server/m);
        expect(ours).to.not.match(/redis_version:/);
        const server = String(await c.text("INFO", "server"));
        expect(server).to.match(/^# Server\r\n/m);
        expect(infoField(server, "redis_version")).to.equal(infoField(serverInfo, "redis_version"));
      });
    });

    describe("with requirepass", () => {
      const password = "s3cret-pw";
      let authProxy: RunningProxy;

      before(async () => {
        authProxy = await startProxy([{ port: backend.seed.port }], { requirepass: password });
      });

      after(async () => {
        await authProxy?.close();
      });

      it("NOAUTH before AUTH, WRONGPASS on a bad password", async () => {
        const c = await client(authProxy.port);
        expect(errorOf(await c.call("GET", "auth:k"))).to.match(/^NOAUTH /);
        expect(errorOf(await c.call("SET", "auth:k", "x"))).to.match(/^NOAUTH /);
        expect(errorOf(await c.call("AUTH", "wrong"))).to.match(/^WRONGPASS /);
        expect(errorOf(await c.call("AUTH", "default", "wrong"))).to.match(/^WRONGPASS /);
        expect(errorOf(await c.call("GET", "auth:k"))).to.match(/^NOAUTH /);
        expect(await direct.text("EXISTS", "auth:k")).to.equal(0);
      });

      it("AUTH with the password lets commands through", async () => {
        const c = await client(authProxy.port);
        expect(await c.text("AUTH", password)).to.equal("OK");
        expect(await c.text("SET", "auth:k", "authed")).to.equal("OK");
        expect(await c.text("GET", "auth:k")).to.equal("authed");
        expect(await direct.text("GET", "auth:k")).to.equal("authed");
        const d = await client(authProxy.port);
        expect(await d.text("AUTH", "default", password)).to.equal("OK");
        expect(await d.text("GET", "auth:k")).to.equal("authed");
        const io = new Redis({ port: authProxy.port, host: "127.0.0.1", password, maxRetriesPerRequest: 1 });
        clients.track(io);
        expect(await io.get("auth:k")).to.equal("authed");
      });

      it("HELLO 2 AUTH default <password> authenticates", async () => {
        const c = await client(authProxy.port);
        expect(errorOf(await c.call("HELLO", "2", "AUTH", "default", "wrong"))).to.match(/^WRONGPASS /);
        expect(errorOf(await c.call("GET", "auth:k"))).to.match(/^NOAUTH /);
        const reply = asMap(await c.text("HELLO", "2", "AUTH", "default", password));
        expect(reply.proto).to.equal(2);
        expect(await c.text("SET", "auth:hello", "ok")).to.equal("OK");
        expect(await direct.text("GET", "auth:hello")).to.equal("ok");
      });
    });

    describe("with maxclients 2", () => {
      let small: RunningProxy;

      before(async () => {
        small = await startProxy([{ port: backend.seed.port }], { maxclients: 2 });
      });

      after(() => {
        // Not awaited: the test below checks that closing finishes; a hang must not stall the run.
        void small?.close();
      });

      it("the 3rd client gets 'ERR max number of clients reached' and is closed", async () => {
        const a = await client(small.port);
        const b = await client(small.port);
        expect(await a.text("PING")).to.equal("PONG");
        expect(await b.text("PING")).to.equal("PONG");
        const c = await client(small.port);
        c.send("PING");
        expect(await settlesWithin(c.closed, 3000)).to.equal(true, "the 3rd client was closed");
        expect(c.bytes().toString()).to.equal("-ERR max number of clients reached\r\n");
        expect(await a.text("PING")).to.equal("PONG");
        // A slot frees up when a client leaves.
        b.close();
        await waitUntil("a free client slot", async () => {
          const d = await client(small.port);
          d.send("PING");
          const reply = await d.next().catch(() => null);
          d.close();
          return reply === "PONG";
        });
      });

      it("rejected clients that had sent a command are released: the proxy then closes promptly", async () => {
        const a = await client(small.port);
        expect(await a.text("PING")).to.equal("PONG");
        a.close();
        expect(await settlesWithin(small.close(), 3000)).to.equal(
          true,
          "proxy.close() still waits on a connection after every client is gone",
        );
      });
    });

    describe("with timeout 1", () => {
      let timed: RunningProxy;

      before(async () => {
        timed = await startProxy([{ port: backend.seed.port }], { timeout: 1 });
      });

      after(async () => {
        await timed?.close();
      });

      it("an idle client is closed after ~2 s while a BLPOP-blocked or subscribed client is not", async () => {
        const idle = await client(timed.port);
        const blocked = await client(timed.port);
        const subscriber = await client(timed.port);
        const pusher = await backend.connect("to:q");
        try {
          expect(await idle.text("PING")).to.equal("PONG");
          expect(toText(await subscriber.call("SUBSCRIBE", "to:chan"))).to.deep.equal([
            "subscribe",
            "to:chan",
            1,
          ]);
          const started = Date.now();
          blocked.send("BLPOP", "to:q", "0");
          expect(await settlesWithin(idle.closed, 4000)).to.equal(true, "the idle client was closed");
          const closedAfter = Date.now() - started;
          expect(closedAfter).to.be.within(900, 3500);
          await sleep(1500);
          expect(blocked.isClosed).to.equal(false, "the blocked client was closed");
          expect(subscriber.isClosed).to.equal(false, "the subscribed client was closed");
          expect(await pusher.text("RPUSH", "to:q", "late")).to.equal(1);
          expect(toText(await blocked.next())).to.deep.equal(["to:q", "late"]);
          // PUBLISH counts the subscribers of the node it runs on: publish where the proxy subscribed.
          const publisher = await RawClient.connect((await direct.subscribedNode("to:chan")).port);
          clients.track(publisher);
          expect(await publisher.text("PUBLISH", "to:chan", "still here")).to.equal(1);
          expect(toText(await subscriber.next())).to.deep.equal(["message", "to:chan", "still here"]);
        } finally {
          pusher.close();
        }
      });
    });
  });
}
