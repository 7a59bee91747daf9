import net from "node:net";
import path from "node:path";
import { expect } from "chai";
import { Cluster, Redis } from "ioredis";
import { createClient, createCluster, RESP_TYPES, WatchError } from "redis";
import { ReplyScanner } from "../src/resp/reply-scanner.js";
import { encodeCommand } from "../src/resp/encode.js";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, SERVERS_AND_MODES, serverAvailable } from "./support/backend.js";
import { eventually, sleep } from "./support/polling.js";
import { RawClient, ReplyError, startRawMonitor } from "./support/raw-client.js";
import { runPython } from "./support/redis-py.js";

// Every client people install, at its default options, through the proxy: node-redis 6
// (RESP3 by default, and RESP2), redis-py 8 (RESP3), ioredis; cluster-mode clients through
// the cluster emulation that is on by default in front of a cluster.

type NodeRedis = ReturnType<typeof createClient>;

/** Sends commands on a fresh RESP3 connection; resolves with each reply's raw bytes. */
async function resp3Replies(port: number, commands: (string | Buffer)[][]): Promise<Buffer[]> {
  const socket = net.connect({ host: "127.0.0.1", port });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const scanner = new ReplyScanner();
  const replies: Buffer[] = [];
  const wanted = commands.length + 1;
  try {
    const done = new Promise<void>((resolve, reject) => {
      socket.on("data", (chunk: Buffer) => {
        scanner.push(chunk);
        let reply: Buffer | null;
        while ((reply = scanner.next()) !== null) replies.push(Buffer.from(reply));
        if (replies.length >= wanted) resolve();
      });
      socket.once("error", reject);
      setTimeout(() => reject(new Error(`only ${replies.length} of ${wanted} replies`)), 5000).unref();
    });
    socket.write(Buffer.concat([encodeCommand(["HELLO", "3"]), ...commands.map((c) => encodeCommand(c))]));
    await done;
  } finally {
    socket.destroy();
  }
  return replies.slice(1);
}

/** The cases every node-redis client runs, RESP3 or RESP2. */
function nodeRedisCases(label: string, make: () => Promise<NodeRedis>, resp: 2 | 3): void {
  describe(label, () => {
    let c: NodeRedis;
    let other: NodeRedis;
    const p = `nr${resp}:`;
    before(async () => {
      c = await make();
      other = await make();
    });
    after(async () => {
      await c?.quit();
      await other?.quit();
    });

    it("negotiates its protocol with the proxy's HELLO", async () => {
      // With the version the client runs: Redis 6.0 has no bare HELLO (its arity, which the proxy follows).
      const hello = (await c.sendCommand(["HELLO", String(resp)])) as unknown;
      // A map in RESP3; the flat array [key, value, ...] in RESP2.
      const proto = Array.isArray(hello)
        ? (hello as unknown[])[hello.indexOf("proto") + 1]
        : (hello as Record<string, unknown>).proto;
      expect(proto).to.equal(resp);
    });

    it("binary strings", async () => {
      const key = Buffer.from(`${p}bin\x00\xff`, "latin1");
      const value = Buffer.from([...Array(256).keys()]);
      expect(await c.set(key, value)).to.equal("OK");
      const got = await c.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }).get(key);
      expect(Buffer.isBuffer(got) && got.equals(value)).to.equal(true);
    });

    it("hashes as maps", async () => {
      await c.del(`${p}h`);
      await c.hSet(`${p}h`, { a: "1", b: "2" });
      expect({ ...(await c.hGetAll(`${p}h`)) }).to.deep.equal({ a: "1", b: "2" });
    });

    it("sorted sets with double scores", async () => {
      await c.zAdd(`${p}z`, [
        { score: 1.5, value: "m" },
        { score: 2.25, value: "n" },
      ]);
      expect(await c.zScore(`${p}z`, "m")).to.equal(1.5);
      expect(await c.zRangeWithScores(`${p}z`, 0, -1)).to.deep.equal([
        { value: "m", score: 1.5 },
        { value: "n", score: 2.25 },
      ]);
    });

    it("a pipeline of 1,000 commands in order", async () => {
      await c.del(`${p}counter`);
      const replies = await Promise.all(Array.from({ length: 1000 }, () => c.incr(`${p}counter`)));
      expect(replies).to.deep.equal(Array.from({ length: 1000 }, (_, i) => i + 1));
    });

    it("MULTI/EXEC and a WATCH abort", async () => {
      const key = `${p}{w}`;
      expect(await c.multi().set(key, "0").incr(key).exec()).to.deep.equal(["OK", 1]);
      await c.watch(key);
      await other.set(key, "changed");
      const aborted = await c
        .multi()
        .set(key, "mine")
        .exec()
        .then(
          () => null,
          (err: unknown) => err,
        );
      expect(aborted).to.be.instanceOf(WatchError);
      expect(await other.get(key)).to.equal("changed");
    });

    it(`pub/sub with a command on the subscribed connection${resp === 2 ? " (PING in RESP2)" : ""}`, async () => {
      const sub = c.duplicate();
      await sub.connect();
      try {
        const got: string[] = [];
        await sub.subscribe(`${p}chan`, (message) => got.push(message));
        await other.publish(`${p}chan`, "hello");
        await eventually(
          async () => got.length,
          (n) => n === 1,
          "the message",
        );
        expect(got).to.deep.equal(["hello"]);
        if (resp === 3) {
          await other.set(`${p}seen`, "yes");
          expect(await sub.get(`${p}seen`)).to.equal("yes");
        }
        // A subscribed RESP2 connection answers PING with the array ["pong", ""], as Redis does.
        expect(await sub.ping()).to.equal(resp === 3 ? "PONG" : "pong");
        await sub.unsubscribe(`${p}chan`);
        expect(String(await sub.set(`${p}after`, "1"))).to.equal("OK");
      } finally {
        await sub.quit();
      }
    });

    it("BLPOP woken by another client", async () => {
      await c.del(`${p}list`);
      const blocked = c.blPop(`${p}list`, 5);
      await sleep(100);
      await other.rPush(`${p}list`, "woken");
      expect(await blocked).to.deep.equal({ key: `${p}list`, element: "woken" });
    });

    it("SCAN sees each key once", async () => {
      const keys = Array.from({ length: 200 }, (_, i) => `${p}scan:${i}`);
      for (const k of keys) await c.set(k, "1");
      const seen: string[] = [];
      for await (const batch of c.scanIterator({ MATCH: `${p}scan:*`, COUNT: 50 })) seen.push(...batch);
      expect(seen.length).to.equal(keys.length);
      expect([...seen].sort()).to.deep.equal([...keys].sort());
    });

    it("EVAL, and a script returning a map", async () => {
      expect(await c.eval("return {1, 'two'}")).to.deep.equal([1, "two"]);
      const map = (await c.eval("redis.setresp(3); return {map={a=1}}")) as unknown;
      if (resp === 3) expect({ ...(map as Record<string, unknown>) }).to.deep.equal({ a: 1 });
      else expect(map).to.deep.equal(["a", 1]);
    });
  });
}

// Redis, then Valkey: the same clients and cases must not tell either server from the proxy.
for (const [server, mode] of SERVERS_AND_MODES) {
  describe(`clients at their defaults, ${Backend.label(mode, server)} behind the proxy`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    const cluster = mode === "cluster";

    before(async function () {
      this.timeout(120_000);
      if (!serverAvailable(server)) this.skip();
      backend = await Backend.start(mode, server);
      proxy = await startProxy([{ port: backend.seed.port }]);
    });

    after(async () => {
      await proxy?.close();
      await backend?.stop();
    });

    const connect = (resp?: 2 | 3) => async (): Promise<NodeRedis> => {
      const c = createClient({
        socket: { port: proxy.port, host: "127.0.0.1" },
        ...(resp === 2 ? { RESP: 2 as const } : {}),
      });
      c.on("error", () => {});
      await c.connect();
      return c as NodeRedis;
    };

    nodeRedisCases("node-redis 6, default options (RESP3)", connect(), 3);
    nodeRedisCases("node-redis 6 with RESP: 2", connect(2), 2);

    it("redis-py 8 with default options (RESP3)", async function () {
      this.timeout(240_000);
      const script = path.resolve("spec/support/redis_py_cases.py");
      const { code, output } = await runPython(script, [String(proxy.port), mode]);
      expect(
        output.split("\n").filter((l) => l.startsWith("FAIL")),
        output,
      ).to.deep.equal([]);
      expect(code, output).to.equal(0);
      expect(output.match(/^ok /gm)?.length ?? 0).to.equal(cluster ? 12 : 9);
    });

    it("CLIENT SETINFO, NO-TOUCH and unknown subcommands answer as the server does; NO-TOUCH is refused, not pretended", async () => {
      const args = [
        ["CLIENT", "SETINFO", "lib-name", "probe"],
        ["CLIENT", "SETINFO", "lib-name"],
      ];
      const direct = await backend.connect();
      const through = await RawClient.connect(proxy.port);
      try {
        for (const argv of args) {
          const own = await direct.call(...argv);
          const proxied = await through.call(...argv);
          expect(String(proxied), argv.join(" ")).to.equal(String(own));
        }
        const own = await direct.call("CLIENT", "NO-TOUCH", "on");
        const noTouch = await through.call("CLIENT", "NO-TOUCH", "on");
        expect(noTouch).to.be.instanceOf(ReplyError);
        expect(String((noTouch as ReplyError).message)).to.equal(
          own instanceof ReplyError ? own.message : "ERR CLIENT NO-TOUCH is not supported by gears-proxy",
        );
        // Any subcommand the server does not know: its own words (6.0's differ from 7.0's).
        expect(String(await through.call("CLIENT", "NOSUCHSUB"))).to.equal(
          String(await direct.call("CLIENT", "NOSUCHSUB")),
        );
        if (server !== "redis" && server !== "redis6")
          expect(String(await through.call("CLIENT", "INFO"))).to.match(/ lib-name=probe /);
      } finally {
        direct.close();
        through.close();
      }
    });

    it("ioredis: binary strings, maps, doubles, MULTI and pub/sub", async () => {
      const io = new Redis({ port: proxy.port, host: "127.0.0.1" });
      const sub = new Redis({ port: proxy.port, host: "127.0.0.1" });
      try {
        const value = Buffer.from([0, 255, 13, 10, 1]);
        await io.set(Buffer.from("io:bin\x00"), value);
        expect((await io.getBuffer(Buffer.from("io:bin\x00")))?.equals(value)).to.equal(true);
        await io.hset("io:h", { a: "1" });
        expect(await io.hgetall("io:h")).to.deep.equal({ a: "1" });
        await io.zadd("io:z", 1.5, "m");
        expect(await io.zscore("io:z", "m")).to.equal("1.5");
        expect(await io.multi().set("io:{m}", "1").incr("io:{m}").exec()).to.deep.equal([
          [null, "OK"],
          [null, 2],
        ]);
        const got: string[] = [];
        sub.on("message", (_channel: string, message: string) => got.push(message));
        await sub.subscribe("io:chan");
        await io.publish("io:chan", "hi");
        await eventually(
          async () => got.length,
          (n) => n === 1,
          "the message",
        );
      } finally {
        io.disconnect();
        sub.disconnect();
      }
    });

    it("answers HELLO itself: its own map, NOPROTO and syntax errors as Redis gives them", async () => {
      // Redis 6.0 wants the protocol version (its arity, which the proxy follows).
      const bare = server === "redis6" ? ["HELLO", "3"] : ["HELLO"];
      const [hello, noproto, notInt, badName] = await resp3Replies(proxy.port, [
        bare,
        ["HELLO", "4"],
        ["HELLO", "x"],
        ["HELLO", "3", "SETNAME", "a b"],
      ]);
      const text = hello.toString();
      // server and version as the upstream gives them: "redis" 7.0.15, or "valkey" 8.0.1
      // (whose redis_version says 7.2.4).
      const [own] = await resp3Replies(backend.seed.port, [bare]);
      const identity =
        /^%7\r\n\$6\r\nserver\r\n\$\d+\r\n[^\r]*\r\n\$7\r\nversion\r\n\$\d+\r\n[^\r]*\r\n/.exec(
          own.toString(),
        );
      expect(identity?.[0], own.toString()).to.contain(`\r\n${server === "valkey" ? "valkey" : "redis"}\r\n`);
      expect(text.startsWith(identity![0]), text).to.equal(true);
      expect(text).to.contain("$5\r\nproto\r\n:3\r\n");
      expect(text).to.contain(
        `$4\r\nmode\r\n$${cluster ? 7 : 10}\r\n${cluster ? "cluster" : "standalone"}\r\n`,
      );
      // The server's modules, as it lists them (none on 7.0; Redis 8.0's vectorset).
      const modules = own.subarray(own.indexOf("$7\r\nmodules\r\n")).toString();
      expect(text.endsWith(`$4\r\nrole\r\n$6\r\nmaster\r\n${modules}`), text).to.equal(true);
      expect(noproto.toString()).to.equal("-NOPROTO unsupported protocol version\r\n");
      expect(notInt.toString()).to.equal("-ERR Protocol version is not an integer or out of range\r\n");
      expect(badName.toString()).to.equal(
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
      );
    });

    it("HELLO before AUTH gets NOAUTH when a password is set, and HELLO 3 AUTH logs in", async () => {
      const locked = await startProxy([{ port: backend.seed.port }], { requirepass: "s3cret" });
      try {
        const [noauth, wrong, ok, after] = await resp3Replies(locked.port, [
          ["HELLO", "3"],
          ["HELLO", "3", "AUTH", "default", "nope"],
          ["HELLO", "3", "AUTH", "default", "s3cret"],
          ["PING"],
        ]);
        expect(noauth.toString()).to.match(
          /^-NOAUTH HELLO must be called with the client already authenticated/,
        );
        expect(wrong.toString()).to.match(/^-WRONGPASS/);
        expect(ok[0]).to.equal(0x25 /* % */);
        expect(after.toString()).to.equal("+PONG\r\n");
      } finally {
        await locked.close();
      }
    });

    it("sends a RESP3 client the bytes Redis sends it (HGETALL, ZSCORE, a Lua map, XINFO STREAM)", async () => {
      const key = "bytes:{k}";
      const setup = [
        ["DEL", key, `${key}z`, `${key}s`],
        ["HSET", key, "f1", "v1", "f2", "v2"],
        ["ZADD", `${key}z`, "3.25", "m"],
        ["XADD", `${key}s`, "1-1", "a", "1"],
      ];
      const commands = [
        ["HGETALL", key],
        ["ZSCORE", `${key}z`, "m"],
        ["ZRANGE", `${key}z`, "0", "-1", "WITHSCORES"],
        ["EVAL", "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", "1", key],
        ["EVAL", "return {map={a=1}, set={b=true}, double=3.5}", "0"],
        ["XINFO", "STREAM", `${key}s`],
        ["GET", `${key}none`],
        ["SMEMBERS", `${key}none`],
        ["CONFIG", "GET", "maxmemory-policy"],
      ];
      await resp3Replies(proxy.port, setup);
      const node = await backend.nodeOf(key);
      const direct = await resp3Replies(node.port, commands);
      const through = await resp3Replies(proxy.port, commands);
      expect(through.map((b) => b.toString())).to.deep.equal(direct.map((b) => b.toString()));
      expect(direct[0][0]).to.equal(0x25 /* % */);
      expect(direct[1].toString()).to.equal(",3.25\r\n");
    });

    it("builds its own replies in the client's protocol (INFO, CLIENT, merged fan-outs)", async () => {
      const [info, clientInfo, getname, mget, dbsize] = await resp3Replies(proxy.port, [
        ["INFO", "server"],
        ["CLIENT", "INFO"],
        ["CLIENT", "GETNAME"],
        ["MGET", "fan:a", "fan:b", "fan:c"],
        ["DBSIZE"],
      ]);
      // In front of a cluster, INFO starts with a line per shard.
      expect(info.toString()).to.match(cluster ? /^=\d+\r\ntxt:# Shards\r\n/ : /^=\d+\r\ntxt:# Server\r\n/);
      expect(clientInfo.toString()).to.match(/^=\d+\r\ntxt:id=\d+ .* resp=3 /);
      expect(getname.toString()).to.equal("_\r\n");
      expect(mget.toString()).to.equal("*3\r\n_\r\n_\r\n_\r\n");
      expect(dbsize[0]).to.equal(0x3a /* : */);
    });

    it("a busy script: SCRIPT KILL from another client ends it within a second, and every client continues", async () => {
      const masters = await backend.masters();
      // Redis 6.0 names the setting by Lua.
      const threshold = server === "redis6" ? "lua-time-limit" : "busy-reply-threshold";
      for (const m of masters) await m.call("CONFIG", "SET", threshold, "100");
      const busy = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      const killer = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      const bystander = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      try {
        await Promise.all([busy.ping(), killer.ping(), bystander.ping()]);
        const script = busy.eval("while true do end", 0).then(
          () => "returned",
          (err: Error) => err.message,
        );
        await sleep(300);
        const started = Date.now();
        expect(await killer.script("KILL")).to.equal("OK");
        expect(Date.now() - started).to.be.lessThan(1000);
        expect(await script).to.match(/Script killed by user/);
        for (const c of [busy, killer, bystander]) {
          expect(await c.set("after-kill", "ok")).to.equal("OK");
          expect(await c.get("after-kill")).to.equal("ok");
        }
      } finally {
        for (const c of [busy, killer, bystander]) c.disconnect();
        for (const m of masters) await m.call("CONFIG", "SET", threshold, "5000");
      }
    });

    it("MONITOR relays what the servers run, from every node, this client's own commands included", async () => {
      const watcher = await startRawMonitor(proxy.port);
      const io = new Redis({ port: proxy.port, host: "127.0.0.1" });
      try {
        // Gears in use: the proxy's own reads of its bookkeeping keys must not show.
        await io.call(
          "TFUNCTION",
          "LOAD",
          "REPLACE",
          "#!js api_version=1.0 name=monlib\nredis.registerFunction('f', function(){ return 1; });",
        );
        const keys = ["mon:a", "mon:b", "mon:c", "mon:d", "mon:e"];
        for (const k of keys) await io.set(k, "v");
        await eventually(
          async () => watcher.lines.join("\n"),
          (text) => keys.every((k) => text.includes(`"set" "${k}" "v"`)),
          "every SET in the MONITOR stream",
        );
        await new Promise((r) => setTimeout(r, 1500));
        await io.call("TFUNCTION", "DELETE", "monlib");
        expect(watcher.lines.filter((l) => l.includes("gears-proxy"))).to.deep.equal([]);
      } finally {
        io.disconnect();
        watcher.close();
      }
    });

    it("CLIENT UNBLOCK ends another client's BLPOP (TIMEOUT: a null reply; ERROR: UNBLOCKED)", async () => {
      const blocked = new Redis({ port: proxy.port, host: "127.0.0.1" });
      const admin = new Redis({ port: proxy.port, host: "127.0.0.1" });
      try {
        const id = Number(await blocked.client("ID"));
        const first = blocked.blpop("unblock:list", 0);
        await eventually(
          async () => admin.client("UNBLOCK", id),
          (n) => n === 1,
          "CLIENT UNBLOCK",
        );
        expect(await first).to.equal(null);
        const second = blocked.blpop("unblock:list", 0).then(
          () => "returned",
          (err: Error) => err.message,
        );
        await eventually(
          async () => admin.client("UNBLOCK", id, "ERROR"),
          (n) => n === 1,
          "CLIENT UNBLOCK ERROR",
        );
        expect(await second).to.equal("UNBLOCKED client unblocked via CLIENT UNBLOCK");
        expect(await admin.client("UNBLOCK", id)).to.equal(0);
      } finally {
        blocked.disconnect();
        admin.disconnect();
      }
    });

    it("CLIENT KILL SKIPME NO: the caller gets the count, then its connection closes", async () => {
      const c = await RawClient.connect(proxy.port);
      try {
        const id = await c.call("CLIENT", "ID");
        expect(await c.call("CLIENT", "KILL", "ID", String(id), "SKIPME", "NO")).to.equal(1);
        await c.closed;
      } finally {
        c.close();
      }
    });

    it("SELECT inside MULTI switches the client's database when EXEC runs it", async function () {
      if (cluster) this.skip(); // a cluster has only database 0
      const c = await RawClient.connect(proxy.port);
      try {
        expect(await c.call("MULTI")).to.equal("OK");
        expect(await c.call("SELECT", "1")).to.equal("QUEUED");
        expect(await c.call("SET", "multi:db", "one")).to.equal("QUEUED");
        expect(await c.call("EXEC")).to.deep.equal(["OK", "OK"]);
        expect(String(await c.call("GET", "multi:db"))).to.equal("one");
        expect(await c.call("SELECT", "0")).to.equal("OK");
        expect(await c.call("GET", "multi:db")).to.equal(null);
      } finally {
        c.close();
      }
    });

    it("CLIENT LIST and CLIENT INFO carry Redis' fields", async () => {
      const [info] = await resp3Replies(proxy.port, [["CLIENT", "INFO"]]);
      const fields = [...info.toString().matchAll(/ ([a-z-]+)=/g)].map((m) => m[1]);
      const redisFields = ["addr", "laddr", "fd", "name", "age", "idle", "flags", "db", "sub", "psub"];
      expect(fields.slice(0, redisFields.length)).to.deep.equal(redisFields);
      expect(info.toString()).to.contain(" cmd=client|info user=default redir=-1 resp=3");
    });

    if (cluster) {
      it("cluster emulation is the default: CLUSTER SLOTS names the proxy, never a shard", async () => {
        const io = new Redis({ port: proxy.port, host: "127.0.0.1" });
        try {
          const slots = (await io.call("CLUSTER", "SLOTS")) as [number, number, [string, number]][];
          expect(slots).to.have.length(1);
          expect(slots[0][2][1]).to.equal(proxy.port);
        } finally {
          io.disconnect();
        }
        const passing = await startProxy([{ port: backend.seed.port }], { clusterEmulation: false });
        const raw = new Redis({ port: passing.port, host: "127.0.0.1" });
        try {
          const slots = (await raw.call("CLUSTER", "SLOTS")) as unknown[];
          expect(slots).to.have.length(3);
        } finally {
          raw.disconnect();
          await passing.close();
        }
      });

      it("node-redis createCluster works through the emulation (RESP3)", async () => {
        const c = createCluster({ rootNodes: [{ url: `redis://127.0.0.1:${proxy.port}` }] });
        c.on("error", () => {});
        await c.connect();
        try {
          for (let i = 0; i < 20; i++) await c.set(`nrc:${i}`, String(i));
          for (let i = 0; i < 20; i++) expect(await c.get(`nrc:${i}`)).to.equal(String(i));
          await c.hSet("nrc:h", { a: "1" });
          expect({ ...(await c.hGetAll("nrc:h")) }).to.deep.equal({ a: "1" });
          expect(c.masters.map((m) => m.port)).to.deep.equal([proxy.port]);
        } finally {
          await c.quit();
        }
      });

      it("ioredis Cluster works through the emulation", async () => {
        const c = new Cluster([{ host: "127.0.0.1", port: proxy.port }]);
        try {
          await c.mset("ioc:a", "1", "ioc:b", "2");
          expect(await c.mget("ioc:a", "ioc:b")).to.deep.equal(["1", "2"]);
          expect(c.nodes("master").map((n) => n.options.port)).to.deep.equal([proxy.port]);
        } finally {
          c.disconnect();
        }
      });
    }
  });
}
