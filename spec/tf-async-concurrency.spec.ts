import { expect } from "chai";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { tfLibrary as lib, useTfProxy } from "./support/tf.js";
import { rejection } from "./support/gears.js";

/**
 * Async functions for these cases: `waiter` polls a key until it is set (or gives up),
 * `setter` sets it; `rounds` awaits `n` callAsyncs before it answers `id`; `never` does too,
 * then awaits a Promise nobody settles; `spin` loops forever after its callAsyncs; `count` INCRs a key and `blocked` adds 1 to one in a block body,
 * both noting how many functions were under way at once at most (`peak` tells, and resets).
 */
const CODE = lib(
  "conc",
  `redis.registerAsyncFunction('waiter', async function(client, key){
     for (let i = 0; i < 3000; i++) {
       if ((await client.callAsync('get', key)) !== null) return 'saw it after ' + (i > 0 ? 'some' : 'no') + ' rounds';
     }
     return 'gave up';
   });
   redis.registerAsyncFunction('setter', async function(client, key){
     await client.callAsync('set', key, '1');
     return 'set';
   });
   redis.registerAsyncFunction('rounds', async function(client, n, id){
     for (let i = 0; i < Number(n); i++) await client.callAsync('ping');
     return id;
   });
   redis.registerAsyncFunction('never', async function(client, n){
     for (let i = 0; i < Number(n); i++) await client.callAsync('ping');
     await new Promise(() => {});
   });
   let running = 0;
   let peak = 0;
   redis.registerAsyncFunction('overflow', async function(client, n){
     for (let i = 0; i < Number(n); i++) await client.callAsync('ping');
     const deeper = (k) => deeper(k + 1) + 1;
     return deeper(0);
   });
   redis.registerAsyncFunction('spin', async function(client, n){
     for (let i = 0; i < Number(n); i++) await client.callAsync('ping');
     for (;;) {}
   });
   redis.registerAsyncFunction('count', async function(client, key){
     running++;
     peak = Math.max(peak, running);
     try {
       return await client.callAsync('incr', key);
     } finally {
       running--;
     }
   });
   redis.registerAsyncFunction('blocked', async function(client, key){
     running++;
     peak = Math.max(peak, running);
     await client.callAsync('ping');
     running--;
     return client.block(function(c){
       const before = c.call('get', key);
       c.call('set', key, String(Number(before || 0) + 1));
       return c.call('get', key);
     });
   });
   redis.registerFunction('peak', function(){ const p = peak; peak = 0; return p; });`,
);

/** Settles with [which settled first, the values] of two promises. */
async function firstOf<A, B>(a: Promise<A>, b: Promise<B>): Promise<["a" | "b", A, B]> {
  let first: "a" | "b" | null = null;
  const [x, y] = await Promise.all([
    a.then((v) => ((first ??= "a"), v)),
    b.then((v) => ((first ??= "b"), v)),
  ]);
  return [first!, x, y];
}

for (const mode of BACKEND_MODES) {
  describe(`TFCALLASYNC: async functions of one library run concurrently, through the proxy in front of ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    const t = useTfProxy(mode, { clean: true });
    let a: Redis;
    let b: Redis;

    beforeEach(async () => {
      expect(await t.c.call("TFUNCTION", "LOAD", CODE)).to.equal("OK");
      a = new Redis(t.proxy.port);
      b = new Redis(t.proxy.port);
      await Promise.all([a.ping(), b.ping()]);
    });
    afterEach(() => {
      a.disconnect();
      b.disconnect();
    });

    it("a function awaiting a key that a later TFCALLASYNC sets sees it: the later one runs meanwhile and is answered first", async () => {
      const waiting = a.call("TFCALLASYNC", "conc.waiter", "1", "{c}flag");
      // Sent a little later, so that the waiter is under way when it arrives.
      await new Promise((resolve) => setTimeout(resolve, 20));
      const setting = b.call("TFCALLASYNC", "conc.setter", "1", "{c}flag");
      const [first, waited, set] = await firstOf(waiting, setting);
      expect(set).to.equal("set");
      expect(waited).to.equal("saw it after some rounds");
      expect(first).to.equal("b");
    });

    it("a function awaiting a Promise that never settles gets the sandbox's error; one called beside it is answered", async () => {
      const never = rejection(a.call("TFCALLASYNC", "conc.never", "0", "300"));
      // Sent once the other is under way: it joins it.
      await new Promise((resolve) => setTimeout(resolve, 10));
      const quick = b.call("TFCALLASYNC", "conc.rounds", "0", "3", "quick");
      // Both run in one entry: the error comes once nothing else is under way.
      const [first, error, value] = await firstOf(never, quick);
      expect(value).to.equal("quick");
      expect(error).to.equal("Error: the script awaits a promise that can never settle");
      expect(first).to.equal("b");
      // The library goes on.
      expect(await a.call("TFCALLASYNC", "conc.rounds", "0", "1", "after")).to.equal("after");
    });

    it("a function that overflows its stack gets V8's error, as in T&F; one running beside it is answered", async () => {
      const ended = rejection(a.call("TFCALLASYNC", "conc.overflow", "0", "100"));
      await new Promise((resolve) => setTimeout(resolve, 5));
      const other = b.call("TFCALLASYNC", "conc.rounds", "0", "300", "other");
      expect(await ended).to.equal("RangeError: Maximum call stack size exceeded");
      expect(await other).to.equal("other");
    });

    it("a function that loops past the time limit after an await gets T&F's error alone; one running beside it is answered", async () => {
      // Sent together, so that both are under way (awaiting their callAsyncs) when one spins.
      const other = b.call("TFCALLASYNC", "conc.rounds", "0", "50", "beside");
      const ended = rejection(a.call("TFCALLASYNC", "conc.spin", "0", "3"));
      expect(await ended).to.equal("Err Execution was terminated due to OOM or timeout");
      expect(await other).to.equal("beside");
      // The library goes on.
      expect(await a.call("TFCALLASYNC", "conc.rounds", "0", "1", "after")).to.equal("after");
    });

    it("1,000 TFCALLASYNCs from 10 clients run concurrently and are all answered, each with its own INCR", async () => {
      const clients = Array.from({ length: 10 }, () => new Redis(t.proxy.port));
      try {
        const calls: Promise<unknown>[] = [];
        for (let i = 0; i < 1000; i++)
          calls.push(clients[i % 10].call("TFCALLASYNC", "conc.count", "1", "{c}n"));
        const got = ((await Promise.all(calls)) as number[]).slice().sort((x, y) => x - y);
        expect(got).to.deep.equal(Array.from({ length: 1000 }, (_, i) => i + 1));
        expect(String(await t.direct.call("GET", "{c}n"))).to.equal("1000");
        // They ran concurrently, not one after the other.
        expect(await t.c.call("TFCALL", "conc.peak", "0")).to.be.greaterThan(1);
      } finally {
        for (const c of clients) c.disconnect();
      }
    });

    // A client's TFCALLASYNC holds its next commands until it is answered, as a blocked client
    // in Redis does: the order of one client's replies is the order of its commands.
    it("one client's pipeline of TFCALLASYNCs and other commands is answered in order, while another client's call overtakes it (ioredis)", async () => {
      const slow = a.call("TFCALLASYNC", "conc.rounds", "0", "500", "slow");
      const pipelined = Promise.all([
        slow,
        a.call("ECHO", "between"),
        a.call("TFCALLASYNC", "conc.rounds", "0", "1", "quick"),
        a.set("{c}k", "v"),
        a.call("TFCALLASYNC", "conc.rounds", "0", "0", "at once"),
        a.get("{c}k"),
      ]);
      // Sent once the slow call is under way.
      await new Promise((resolve) => setTimeout(resolve, 10));
      const other = b.call("TFCALLASYNC", "conc.rounds", "0", "1", "other");
      const [first, , theirs] = await firstOf(slow, other);
      expect(await pipelined).to.deep.equal(["slow", "between", "quick", "OK", "at once", "v"]);
      expect(theirs).to.equal("other");
      expect(first).to.equal("b");
    });

    it("one client's pipeline of TFCALLASYNCs is answered in order with node-redis 6, while another client's call overtakes it", async () => {
      const nr = createClient({ socket: { port: t.proxy.port, host: "127.0.0.1" }, RESP: 2 });
      await nr.connect();
      try {
        const slow = nr.sendCommand(["TFCALLASYNC", "conc.rounds", "0", "500", "slow"]);
        const pipelined = Promise.all([
          slow,
          nr.sendCommand(["PING"]),
          nr.sendCommand(["TFCALLASYNC", "conc.rounds", "0", "0", "quick"]),
        ]);
        // Sent once the slow call is under way.
        await new Promise((resolve) => setTimeout(resolve, 10));
        const other = b.call("TFCALLASYNC", "conc.rounds", "0", "1", "other");
        const [first, , theirs] = await firstOf(slow, other);
        expect(await pipelined).to.deep.equal(["slow", "PONG", "quick"]);
        expect(theirs).to.equal("other");
        expect(first).to.equal("b");
      } finally {
        nr.destroy();
      }
    });

    it("the block bodies of functions running concurrently run one at a time: 200 read-modify-writes of one key lose none", async () => {
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 200; i++)
        calls.push((i % 2 === 0 ? a : b).call("TFCALLASYNC", "conc.blocked", "1", "{c}rmw"));
      const got = ((await Promise.all(calls)) as string[]).map(Number).sort((x, y) => x - y);
      expect(got).to.deep.equal(Array.from({ length: 200 }, (_, i) => i + 1));
      expect(await t.c.call("TFCALL", "conc.peak", "0")).to.be.greaterThan(1);
    });

    it("TFCALLASYNC inside MULTI still runs as a sync call: an async function's pending Promise is refused with T&F's text", async () => {
      const replies = await a
        .multi()
        .call("TFCALLASYNC", "conc.rounds", "0", "1", "x")
        .call("TFCALLASYNC", "conc.rounds", "0", "0", "y")
        .exec();
      expect(replies!.map(([err, v]) => (err instanceof Error ? err.message : v))).to.deep.equal([
        "Can not block client for background execution, Blocking is not allow inside multi/exec, Lua, or within another module (RM_Call).",
        "y",
      ]);
    });
  });
}

describe("TFCALL with more arguments than a QuickJS function call takes", function () {
  this.timeout(60_000);
  const t = useTfProxy("standalone", { clean: true });

  it("is refused with an ERR text before it runs; 65,533 arguments still reach the function", async () => {
    const code = lib("many", "redis.registerFunction('count', (client, ...args) => args.length);");
    expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
    const args = (n: number): string[] => Array.from({ length: n }, (_, i) => String(i));
    // As one array: spread into call(), 200,000 arguments would overflow Node's own stack.
    expect(await t.c.call("TFCALL", ["many.count", "0", ...args(65_533)])).to.equal(65_533);
    for (const command of ["TFCALL", "TFCALLASYNC"]) {
      for (const n of [65_534, 200_000]) {
        const err = await rejection(t.c.call(command, ["many.count", "0", ...args(n)]));
        expect(err).to.equal(`ERR too many arguments for a function: at most 65533, got ${n}`);
      }
    }
    expect(await t.c.call("TFCALL", "many.count", "0", "x")).to.equal(1);
  });
});
