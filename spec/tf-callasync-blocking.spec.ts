import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { expect } from "chai";
import { Redis } from "ioredis";
import { Backend, SERVERS_AND_MODES } from "./support/backend.js";
import { tfLibrary as lib, useTfProxy } from "./support/tf.js";
import { rejection } from "./support/gears.js";
import { eventually, sleep, tracked, waitUntil, within } from "./support/polling.js";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { MAX_BLOCKING_CALLS } from "../src/gears/tf/blocking-calls.js";
import type { ProxyContext } from "../src/client/context.js";

const run = promisify(execFile);

/**
 * T&F's `client.callAsync` runs genuinely blocking commands (BLPOP...): the proxy sends each
 * on an upstream connection of its own, so it waits for as long as Redis does without
 * stalling the shared connections or the library. `pop` awaits BLPOP on its key with the
 * given timeout, `popMany` n BLPOPs at once; `xr` awaits XREAD BLOCK 0 from '$'; `get` and `quick` (sync and async)
 * read a key; `syncPop`, `syncMpop`, `syncXread` and `syncWait` run BLPOP, BLMPOP, XREAD BLOCK
 * and WAIT with the sync `client.call`, which T&F ran in script mode: without blocking, or
 * refused for the commands Redis flags "noscript". `both` awaits Promise.all of a BLPOP and a
 * GET, writing a mark once the GET's promise settled; `fire` (async) and `fireSync` send a
 * BLPOP they never await; `spin` keeps the library busy for a while.
 */
const CODE = lib(
  "blk",
  `redis.registerAsyncFunction('pop', async function(client, key, timeout){
     return await client.callAsync('BLPOP', key, timeout);
   });
   redis.registerAsyncFunction('xr', async function(client, key){
     const r = await client.callAsync('XREAD', 'BLOCK', '0', 'STREAMS', key, '$');
     return r[0][1][0][1];
   });
   redis.registerAsyncFunction('popMany', async function(client, n){
     const pops = [];
     for (let i = 0; i < Number(n); i++) pops.push(client.callAsync('BLPOP', 'blk:many:' + i, '0'));
     return await Promise.all(pops);
   });
   redis.registerFunction('get', function(client, key){ return client.call('get', key); });
   redis.registerAsyncFunction('quick', async function(client, key){
     return 'quick ' + (await client.callAsync('get', key));
   });
   redis.registerFunction('syncPop', function(client, key){ return client.call('BLPOP', key, '0'); });
   redis.registerFunction('syncMpop', function(client, key){ return client.call('BLMPOP', '0', '1', key, 'LEFT'); });
   redis.registerFunction('syncXread', function(client, key){
     return client.call('XREAD', 'BLOCK', '0', 'STREAMS', key, '$');
   });
   redis.registerFunction('syncWait', function(client){ return client.call('WAIT', '0', '0'); });
   redis.registerAsyncFunction('both', async function(client, list, key, mark){
     return await Promise.all([
       client.callAsync('BLPOP', list, '0'),
       client.callAsync('GET', key).then((v) => client.callAsync('SET', mark, 'got ' + v).then(() => v)),
     ]);
   });
   redis.registerAsyncFunction('fire', async function(client, key){
     client.callAsync('BLPOP', key, '0');
     return 'fired';
   });
   redis.registerFunction('fireSync', function(client, key){
     client.callAsync('BLPOP', key, '0');
     return 'fired';
   });
   redis.registerFunction('spin', function(client, ms){
     const until = Date.now() + Number(ms);
     while (Date.now() < until) {}
     return 'spun';
   });`,
);

/** T&F's text when a call's isolate goes (its library deleted) before the call settled. */
const LIMITS_ERROR = "Err Execution was terminated due to OOM or timeout";

/** How long a call that must not wait for the BLPOP may take (two spec files share two cores). */
const PROMPT_MS = 3000;

for (const [server, mode] of SERVERS_AND_MODES) {
  describe(`T&F callAsync of blocking commands, through the proxy in front of ${Backend.label(mode, server)}`, function () {
    this.timeout(60_000);
    const t = useTfProxy(mode, { clean: true, server });
    let a: Redis;
    let b: Redis;
    let c2: Redis;
    /** Keys on different masters in a cluster. */
    const keys = ["blk:list:a", "blk:list:b", "blk:list:c"];

    beforeEach(async () => {
      expect(await t.c.call("TFUNCTION", "LOAD", CODE)).to.equal("OK");
      a = new Redis(t.proxy.port);
      b = new Redis(t.proxy.port);
      c2 = new Redis(t.proxy.port);
      await Promise.all([a.ping(), b.ping(), c2.ping()]);
      for (const key of [...keys, "blk:stream", "blk:v", "blk:mark"]) await t.direct.call("DEL", key);
    });
    afterEach(() => {
      a.disconnect();
      b.disconnect();
      c2.disconnect();
    });

    /** The clients blocked in BLPOP on the node of `key`, as Redis lists them. */
    const blockedOn = async (key: string): Promise<number> => {
      const list = String(await (await t.direct.on(key)).text("CLIENT", "LIST"));
      return list.split("\n").filter((line) => line.includes("cmd=blpop") && / flags=\w*b/.test(line)).length;
    };

    /** pending_async_calls of the library, as TFUNCTION LIST v shows it. */
    const pending = async (): Promise<string[]> => {
      const libs = (await t.c.call("TFUNCTION", "LIST", "LIBRARY", "blk", "v")) as unknown[][];
      const l = libs[0];
      return (l[l.indexOf("pending_async_calls") + 1] as unknown[]).map(String);
    };

    for (const pusher of ["through the proxy", "directly on Redis"]) {
      it(`BLPOP with timeout 0 answers once another client LPUSHes ${pusher}; meanwhile TFCALLs of the library and plain commands answer`, async () => {
        for (const key of keys) {
          const pop = tracked(a.call("TFCALLASYNC", "blk.pop", "1", key, "0"));
          await waitUntil("the BLPOP waits on the key's master", async () => (await blockedOn(key)) === 1);
          await t.direct.call("SET", "blk:v", "x");
          expect(await within(PROMPT_MS, "TFCALL", b.call("TFCALL", "blk.get", "1", "blk:v"))).to.equal("x");
          expect(
            await within(PROMPT_MS, "TFCALLASYNC", b.call("TFCALLASYNC", "blk.quick", "1", "blk:v")),
          ).to.equal("quick x");
          expect(await within(PROMPT_MS, "GET", b.get("blk:v"))).to.equal("x");
          expect(await within(PROMPT_MS, "GET on a", t.c.get("blk:v"))).to.equal("x");
          expect(pop.settled()).to.equal(false);
          if (pusher === "through the proxy") await b.lpush(key, "v1");
          else await t.direct.call("LPUSH", key, "v1");
          expect(await within(PROMPT_MS, "the BLPOP", pop.promise)).to.deep.equal([key, "v1"]);
          expect(await t.direct.call("LLEN", key)).to.equal(0);
        }
      });
    }

    it("a TFCALLASYNC of the library sent while the BLPOP waits does not wait for the BLPOP's batch", async () => {
      // A long entry budget (half of lock-redis-timeout): a batch holding the line would hold it that long.
      expect(await t.c.call("CONFIG", "SET", "redisgears_2.lock-redis-timeout", "12000")).to.equal("OK");
      try {
        expect(await t.c.call("TFUNCTION", "LOAD", "REPLACE", CODE)).to.equal("OK");
        const pop = tracked(a.call("TFCALLASYNC", "blk.pop", "1", keys[0], "0"));
        await waitUntil("the BLPOP waits", async () => (await blockedOn(keys[0])) === 1);
        expect(
          await within(PROMPT_MS, "TFCALLASYNC", b.call("TFCALLASYNC", "blk.quick", "1", "blk:v")),
        ).to.equal("quick null");
        expect(pop.settled()).to.equal(false);
        await b.lpush(keys[0], "v1");
        expect(await within(PROMPT_MS, "the BLPOP", pop.promise)).to.deep.equal([keys[0], "v1"]);
      } finally {
        await t.c.call("CONFIG", "SET", "redisgears_2.lock-redis-timeout", "500");
      }
    });

    it("a call sent in the same pass as a BLPOP is answered at once: Promise.all([BLPOP, GET]) goes on with the GET's reply while the BLPOP waits", async () => {
      await t.direct.call("SET", "blk:v", "x");
      const both = tracked(a.call("TFCALLASYNC", "blk.both", "3", keys[0], "blk:v", "blk:mark"));
      // The GET's promise settles (and the function writes the mark) while the BLPOP still waits.
      await eventually(
        () => b.get("blk:mark"),
        (v) => v === "got x",
        "the mark",
        PROMPT_MS,
      );
      expect(await blockedOn(keys[0])).to.equal(1);
      expect(await pending()).to.deep.equal([`BLPOP ${keys[0]} 0`]);
      expect(both.settled()).to.equal(false);
      await b.lpush(keys[0], "v1");
      expect(await within(PROMPT_MS, "the function", both.promise)).to.deep.equal([[keys[0], "v1"], "x"]);
      expect(await pending()).to.deep.equal([]);
    });

    it("two TFCALLASYNCs that go in together, one BLPOPing an empty list: the other answers at once, the BLPOP when an LPUSH comes (redis-cli's)", async () => {
      await t.direct.call("SET", "blk:v", "x");
      // The library is busy: both TFCALLASYNCs queue behind the TFCALL and go in as one batch,
      // so that the BLPOP and the GET leave in one round.
      const spin = c2.call("TFCALL", "blk.spin", "0", "400");
      await sleep(100);
      const pop = tracked(a.call("TFCALLASYNC", "blk.pop", "1", keys[1], "0"));
      const quick = tracked(b.call("TFCALLASYNC", "blk.quick", "1", "blk:v"));
      expect(await spin).to.equal("spun");
      expect(await within(PROMPT_MS, "the other TFCALLASYNC", quick.promise)).to.equal("quick x");
      await waitUntil("the BLPOP waits", async () => (await blockedOn(keys[1])) === 1);
      expect(pop.settled()).to.equal(false);
      const { stdout } = await run("redis-cli", ["-p", String(t.proxy.port), "LPUSH", keys[1], "v1"]);
      expect(stdout.trim()).to.equal("1");
      expect(await within(PROMPT_MS, "the BLPOP", pop.promise)).to.deep.equal([keys[1], "v1"]);
    });

    it("a BLPOP never awaited (by a TFCALLASYNC, a TFCALL, a TFCALLASYNC queued in MULTI) keeps waiting after its call answered (it pops what comes); TFUNCTION DELETE ends it and its connection", async () => {
      const blocking = (t.proxy.server as unknown as { context: ProxyContext }).context.gears.tf.blocking;
      expect(
        await within(PROMPT_MS, "TFCALLASYNC", a.call("TFCALLASYNC", "blk.fire", "1", keys[0])),
      ).to.equal("fired");
      const exec = a.multi().call("TFCALLASYNC", "blk.fire", "1", keys[1]).exec();
      expect(await within(PROMPT_MS, "EXEC", exec)).to.deep.equal([[null, "fired"]]);
      expect(await within(PROMPT_MS, "TFCALL", a.call("TFCALL", "blk.fireSync", "1", keys[2]))).to.equal(
        "fired",
      );
      await eventually(pending, (p) => p.length === 3, "the BLPOPs wait");
      // The library serves meanwhile.
      expect(await within(PROMPT_MS, "TFCALL", b.call("TFCALL", "blk.get", "1", "blk:v"))).to.equal(null);
      expect(
        await within(PROMPT_MS, "TFCALLASYNC", b.call("TFCALLASYNC", "blk.quick", "1", "blk:v")),
      ).to.equal("quick null");
      expect((await pending()).sort()).to.deep.equal(keys.map((k) => `BLPOP ${k} 0`));
      expect(blocking.count).to.equal(3);
      await b.lpush(keys[0], "taken");
      await eventually(pending, (p) => p.length === 2, "the first BLPOP done");
      expect(await t.direct.call("LLEN", keys[0])).to.equal(0);
      expect(await t.c.call("TFUNCTION", "DELETE", "blk")).to.equal("OK");
      await waitUntil(
        "Redis no longer waits",
        async () => (await blockedOn(keys[1])) + (await blockedOn(keys[2])) === 0,
      );
      expect(blocking.count).to.equal(0);
      await b.lpush(keys[1], "kept");
      expect(await t.direct.text("LRANGE", keys[1], "0", "-1")).to.deep.equal(["kept"]);
    });

    it("BLPOP with a timeout answers nil after it", async () => {
      const started = Date.now();
      expect(await a.call("TFCALLASYNC", "blk.pop", "1", keys[0], "0.5")).to.equal(null);
      expect(Date.now() - started).to.be.at.least(450);
      expect(await blockedOn(keys[0])).to.equal(0);
    });

    it("XREAD BLOCK 0 waits for the next entry", async function () {
      // Redis 6.0's COMMAND gives XREAD no key positions (movablekeys, no key specs): the proxy's
      // dedicated connection for it goes to any master, which answers MOVED (the client lane's
      // XREAD BLOCK too). Left for command-table.ts (see the tfblock report).
      if (String(server) === "redis6" && mode === "cluster") this.skip();
      const xr = tracked(a.call("TFCALLASYNC", "blk.xr", "1", "blk:stream"));
      await waitUntil("the XREAD waits", async () => (await pending()).length === 1);
      expect(await within(PROMPT_MS, "TFCALL", b.call("TFCALL", "blk.get", "1", "blk:v"))).to.equal(null);
      expect(xr.settled()).to.equal(false);
      await b.xadd("blk:stream", "*", "f", "v");
      expect(await within(PROMPT_MS, "the XREAD", xr.promise)).to.deep.equal(["f", "v"]);
    });

    it("TFUNCTION LIST shows the waiting call in pending_async_calls (redis-cli's TFCALLASYNC)", async () => {
      const cli = spawn("redis-cli", [
        "-p",
        String(t.proxy.port),
        "TFCALLASYNC",
        "blk.pop",
        "1",
        keys[1],
        "0",
      ]);
      let out = "";
      cli.stdout.on("data", (d: Buffer) => (out += d.toString()));
      // 'close', not 'exit': a loaded run saw the exit before the last stdout data (out was empty).
      const exited = new Promise<number | null>((resolve) => cli.on("close", resolve));
      try {
        await eventually(pending, (p) => p.length === 1, "pending_async_calls");
        expect(await pending()).to.deep.equal([`BLPOP ${keys[1]} 0`]);
        const { stdout } = await run("redis-cli", ["-p", String(t.proxy.port), "LPUSH", keys[1], "from-cli"]);
        expect(stdout.trim()).to.equal("1");
        expect(await within(PROMPT_MS, "redis-cli", exited)).to.equal(0);
        expect(out.trim().split("\n")).to.deep.equal([keys[1], "from-cli"]);
        expect(await pending()).to.deep.equal([]);
      } finally {
        cli.kill();
      }
    });

    it("TFUNCTION DELETE ends a waiting call: its client gets an error, Redis no longer waits, nothing is popped", async () => {
      const pop = tracked(a.call("TFCALLASYNC", "blk.pop", "1", keys[2], "0"));
      await waitUntil("the BLPOP waits", async () => (await blockedOn(keys[2])) === 1);
      expect(await t.c.call("TFUNCTION", "DELETE", "blk")).to.equal("OK");
      const err = await within(PROMPT_MS, "the ended call", rejection(pop.promise));
      // As any call of a deleted library still under way (tf-async-resume.spec.ts).
      expect(err).to.equal(LIMITS_ERROR);
      await waitUntil("Redis no longer waits", async () => (await blockedOn(keys[2])) === 0);
      await b.lpush(keys[2], "kept");
      expect(await t.direct.text("LRANGE", keys[2], "0", "-1")).to.deep.equal(["kept"]);
    });

    it("TFUNCTION LOAD REPLACE ends a waiting call too", async () => {
      const pop = tracked(a.call("TFCALLASYNC", "blk.pop", "1", keys[0], "0"));
      await waitUntil("the BLPOP waits", async () => (await blockedOn(keys[0])) === 1);
      expect(await t.c.call("TFUNCTION", "LOAD", "REPLACE", CODE)).to.equal("OK");
      await within(PROMPT_MS, "the ended call", rejection(pop.promise));
      await waitUntil("Redis no longer waits", async () => (await blockedOn(keys[0])) === 0);
    });

    it("the sync client.call runs blocking commands as T&F's script mode: without blocking, or refused when Redis flags them noscript", async () => {
      // BLMPOP came with Redis 7.0.
      const hasMpop = JSON.stringify(await t.direct.text("COMMAND", "INFO", "blmpop")).includes("blocking");
      if (hasMpop) {
        expect(await within(PROMPT_MS, "BLMPOP", a.call("TFCALL", "blk.syncMpop", "1", keys[0]))).to.equal(
          null,
        );
      }
      await t.direct.call("RPUSH", keys[0], "v1", "v2");
      if (hasMpop) {
        expect(await a.call("TFCALL", "blk.syncMpop", "1", keys[0])).to.deep.equal([keys[0], ["v1"]]);
      }
      expect(await within(PROMPT_MS, "XREAD", a.call("TFCALL", "blk.syncXread", "1", "blk:stream"))).to.equal(
        null,
      );
      await t.direct.call("SET", "blk:v", "string");
      expect(await rejection(a.call("TFCALL", "blk.syncXread", "1", "blk:v"))).to.contain("WRONGTYPE");
      // BLPOP is "noscript" up to Redis 7.0 (refused in T&F's script mode), not after.
      const info = JSON.stringify(await t.direct.text("COMMAND", "INFO", "blpop"));
      const blpop = a.call("TFCALL", "blk.syncPop", "1", keys[0]);
      if (info.includes("noscript")) {
        expect(await rejection(blpop)).to.contain("ERR command 'blpop' is not allowed on script mode");
      } else expect(await within(PROMPT_MS, "BLPOP", blpop)).to.deep.equal([keys[0], hasMpop ? "v2" : "v1"]);
      expect(await rejection(a.call("TFCALL", "blk.syncWait", "0"))).to.contain(
        "is not allowed on script mode",
      );
    });

    it("proxy shutdown ends a waiting call: it is answered as timed out, its client gets the function's reply, Redis no longer waits", async () => {
      const other = await startProxy([{ port: t.backend.seed.port }]);
      const client = new Redis(other.port, { maxRetriesPerRequest: 0, retryStrategy: () => null });
      client.on("error", () => {});
      try {
        const pop = tracked(client.call("TFCALLASYNC", "blk.pop", "1", keys[1], "0"));
        await waitUntil("the BLPOP waits", async () => (await blockedOn(keys[1])) === 1);
        const closing = other.server.close(2000);
        // Unblocked at the start of the shutdown, the function goes on with nil and its reply
        // is written within the drain, before the client is let go.
        expect(await within(PROMPT_MS, "the BLPOP", pop.promise)).to.equal(null);
        await within(10_000, "the shutdown", closing);
        await waitUntil("Redis no longer waits", async () => (await blockedOn(keys[1])) === 0);
      } finally {
        client.disconnect();
        await other.close();
      }
    });

    it("unblockAll (at the start of a shutdown) answers the waiting calls as timed out: the function goes on with nil", async () => {
      const pop = tracked(a.call("TFCALLASYNC", "blk.pop", "1", keys[2], "0"));
      await waitUntil("the BLPOP waits", async () => (await blockedOn(keys[2])) === 1);
      // The proxy's context is private: reached here as the shutdown step reaches it.
      const server = t.proxy.server as unknown as { context: ProxyContext };
      await server.context.gears.tf.blocking.unblockAll();
      expect(await within(PROMPT_MS, "the BLPOP", pop.promise)).to.equal(null);
      expect(await blockedOn(keys[2])).to.equal(0);
      expect(await pending()).to.deep.equal([]);
    });

    if (mode === "standalone") {
      it(`at most ${MAX_BLOCKING_CALLS} blocking calls wait at once; the next is refused with a clear error`, async function () {
        this.timeout(120_000);
        const direct = await t.backend.connect();
        for (let i = 0; i <= MAX_BLOCKING_CALLS; i++) await direct.call("DEL", `blk:many:${i}`);
        // One TFCALLASYNC (a client blocked in it sends nothing more) whose BLPOPs go out at once.
        const many = tracked(a.call("TFCALLASYNC", "blk.popMany", "0", String(MAX_BLOCKING_CALLS + 1)));
        await eventually(pending, (p) => p.length === MAX_BLOCKING_CALLS, "the BLPOPs wait", 60_000);
        // They wait on connections of their own: a TFCALL and a plain command still answer.
        expect(await within(PROMPT_MS, "TFCALL", b.call("TFCALL", "blk.get", "1", "blk:v"))).to.equal(null);
        expect(await within(PROMPT_MS, "GET", b.get("blk:v"))).to.equal(null);
        // The refused one failed popMany at once; the others wait on, as calls never awaited do.
        try {
          for (let i = 0; i <= MAX_BLOCKING_CALLS; i++) await direct.call("RPUSH", `blk:many:${i}`, "v");
        } finally {
          direct.close();
        }
        const error = await within(10_000, "popMany", rejection(many.promise));
        expect(error).to.contain("too many blocking commands waiting in callAsync");
        await eventually(pending, (p) => p.length === 0, "the BLPOPs done", 10_000);
        let left = 0;
        for (let i = 0; i <= MAX_BLOCKING_CALLS; i++)
          left += Number(await t.direct.call("LLEN", `blk:many:${i}`));
        expect(left).to.equal(1);
        expect(await pending()).to.deep.equal([]);
      });

      it("waits in the database of the call", async () => {
        await a.select(3);
        const pop = tracked(a.call("TFCALLASYNC", "blk.pop", "1", keys[0], "0"));
        await waitUntil("the BLPOP waits", async () => (await blockedOn(keys[0])) === 1);
        await t.direct.call("LPUSH", keys[0], "db0");
        const db3 = await t.backend.connect();
        try {
          await db3.call("SELECT", "3");
          await db3.call("LPUSH", keys[0], "db3");
        } finally {
          db3.close();
        }
        expect(await within(PROMPT_MS, "the BLPOP", pop.promise)).to.deep.equal([keys[0], "db3"]);
        expect(await t.direct.text("LRANGE", keys[0], "0", "-1")).to.deep.equal(["db0"]);
      });
    }
  });
}

describe("T&F callAsync of a blocking command when its master becomes a replica", function () {
  this.timeout(60_000);
  let server: RedisNode;
  let master: RedisNode;
  let proxy: RunningProxy;
  let c: Redis;

  before(async () => {
    [server, master] = await Promise.all([startRedis(), startRedis()]);
    proxy = await startProxy([{ port: server.port }]);
    c = new Redis(proxy.port);
  });
  after(async () => {
    c?.disconnect();
    await proxy?.close();
    await Promise.all([server?.stop(), master?.stop()]);
  });

  it("the call throws Redis's 'instance state changed' error, as T&F's did", async () => {
    expect(await c.call("TFUNCTION", "LOAD", CODE)).to.equal("OK");
    const a = new Redis(proxy.port);
    const direct = new Redis(server.port);
    try {
      const pop = tracked(a.call("TFCALLASYNC", "blk.pop", "1", "blk:list:a", "0"));
      await waitUntil("the BLPOP waits", async () => {
        const list = String(await direct.call("CLIENT", "LIST"));
        return list.split("\n").some((line) => line.includes("cmd=blpop") && / flags=\w*b/.test(line));
      });
      await direct.call("REPLICAOF", master.host, String(master.port));
      expect(await within(PROMPT_MS, "the BLPOP", rejection(pop.promise))).to.contain(
        "instance state changed",
      );
    } finally {
      await direct.call("REPLICAOF", "NO", "ONE");
      a.disconnect();
      direct.disconnect();
    }
  });
});
