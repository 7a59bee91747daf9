import { expect } from "chai";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { tfLibrary as lib, useTfProxy } from "./support/tf.js";
import { rejection } from "./support/gears.js";
import { eventually, sleep, tracked, within } from "./support/polling.js";

/**
 * A long coroutine no longer holds its library: once its entry has run its budget (half of
 * lock-redis-timeout, 500 ms by default) or another entry waits, the entry ends while the
 * coroutine awaits Redis, and later entries resume it. Here `long` INCRs a counter, one await
 * at a time, until a stop key is set (thousands of awaits), and answers how many it did;
 * `read` (sync) and `quick` (async) read the counter; the trigger on `poke:` writes down the
 * counter it saw; `never` and `spin` do as `long`, then await a Promise nobody settles, or
 * loop forever; `stuck` loops in a builtin, which only the watchdog ends (with the isolate);
 * `rmw` and `rmwSync` add 1 to a key in a block body and in a sync function.
 */
const CODE = lib(
  "res",
  `redis.registerAsyncFunction('long', async function(client, counter, stop){
     let n = 0;
     while ((await client.callAsync('get', stop)) === null) {
       await client.callAsync('incr', counter);
       n++;
     }
     return n;
   });
   redis.registerFunction('read', function(client, counter){ return client.call('get', counter); });
   redis.registerAsyncFunction('quick', async function(client, counter){
     return 'quick saw ' + (await client.callAsync('get', counter));
   });
   redis.registerKeySpaceTrigger('watch', 'poke:', function(client, data){
     client.call('set', 'seen:' + data.key, client.call('get', '{r}n') || 'none');
   });
   redis.registerAsyncFunction('never', async function(client, counter, stop){
     while ((await client.callAsync('get', stop)) === null) await client.callAsync('incr', counter);
     await new Promise(() => {});
   });
   redis.registerAsyncFunction('spin', async function(client, counter, stop){
     while ((await client.callAsync('get', stop)) === null) await client.callAsync('incr', counter);
     for (;;) {}
   });
   redis.registerAsyncFunction('rmw', async function(client, key, n){
     for (let i = 0; i < Number(n); i++) {
       await client.callAsync('ping');
       client.block(function(c){
         const before = c.call('get', key);
         c.call('set', key, String(Number(before || 0) + 1));
       });
     }
     return 'done';
   });
   redis.registerFunction('stuck', function(){
     let s = 'a'.repeat(1 << 20);
     for (;;) s = s.replaceAll('a', 'a');
   });
   redis.registerFunction('rmwSync', function(client, key){
     const before = client.call('get', key);
     client.call('set', key, String(Number(before || 0) + 1));
     return client.call('get', key);
   });`,
);

/** T&F's text when the isolate's limits end a call. */
const LIMITS_ERROR = "Err Execution was terminated due to OOM or timeout";

/**
 * How long a call of the library may take while the long one runs ("promptly"). Without the
 * change such a call waits for the long one, which ends only when the spec says so; the bound
 * is loose because CI runs two spec files at once on two cores.
 */
const PROMPT_MS = 8000;

for (const mode of BACKEND_MODES) {
  describe(`TFCALLASYNC: a long coroutine does not hold its library, through the proxy in front of ${Backend.label(mode)}`, function () {
    this.timeout(90_000);
    const t = useTfProxy(mode, { clean: true });
    let a: Redis;
    let b: Redis;

    beforeEach(async () => {
      expect(await t.c.call("TFUNCTION", "LOAD", CODE)).to.equal("OK");
      a = new Redis(t.proxy.port);
      b = new Redis(t.proxy.port);
      await Promise.all([a.ping(), b.ping()]);
      await t.direct.call("DEL", "{r}n", "{r}stop", "{r}rmw");
      await t.direct.call("DEL", "seen:poke:1");
    });
    afterEach(async () => {
      // A long one still under way ends here (its library is deleted after this).
      await t.direct.call("SET", "{r}stop", "1");
      a.disconnect();
      b.disconnect();
    });

    /** The counter `long` INCRs, as Redis has it. */
    const counter = async (): Promise<number> => Number(await t.direct.call("GET", "{r}n"));

    /** Starts `fn` (`long`, or one like it) with `call`, and waits until it has run past its entry's budget. */
    async function startLong(
      call: (args: string[]) => Promise<unknown>,
      fn = "long",
    ): Promise<{ promise: Promise<unknown>; settled: () => boolean }> {
      const started = Date.now();
      const long = tracked(call(["TFCALLASYNC", `res.${fn}`, "2", "{r}n", "{r}stop"]));
      await eventually(counter, (n) => n >= 500, "the long coroutine's counter");
      // Past the budget (half of lock-redis-timeout's 500 ms): its first entry has ended.
      await sleep(Math.max(0, 700 - (Date.now() - started)));
      expect(long.settled(), "the long one ended early").to.equal(false);
      return long;
    }

    /** A client of `kind` through the proxy, as a way to send a command, and its end. */
    async function clientOf(kind: "ioredis" | "node-redis 6"): Promise<{
      call: (args: string[]) => Promise<unknown>;
      close: () => Promise<void> | void;
    }> {
      if (kind === "ioredis") return { call: (args) => a.call(args[0], args.slice(1)), close: () => {} };
      const nr = createClient({ socket: { port: t.proxy.port, host: "127.0.0.1" }, RESP: 2 });
      await nr.connect();
      return { call: (args) => nr.sendCommand(args), close: () => nr.destroy() };
    }

    /** Thousands of awaits, then the stop: `long` answers how many INCRs it made. */
    async function endLong(long: { promise: Promise<unknown>; settled: () => boolean }): Promise<void> {
      await eventually(counter, (n) => n >= 3000, "the long coroutine's counter", 60_000);
      expect(long.settled(), "the long one ended before it was told to").to.equal(false);
      await t.direct.call("SET", "{r}stop", "1");
      const n = Number(await long.promise);
      expect(n).to.equal(await counter());
      // At least: under load the stop may come before the coroutine's next INCR.
      expect(n).to.be.at.least(3000);
    }

    for (const kind of ["ioredis", "node-redis 6"] as const) {
      it(`a TFCALL of the library is answered while a coroutine of thousands of awaits runs; that one still answers right (${kind})`, async () => {
        const client = await clientOf(kind);
        try {
          const long = await startLong(client.call);
          for (let i = 0; i < 5; i++) {
            const read = Number(
              await within(PROMPT_MS, "TFCALL res.read", b.call("TFCALL", "res.read", "1", "{r}n")),
            );
            expect(read).to.be.greaterThan(0);
          }
          expect(long.settled(), "the long one ended before the TFCALLs were answered").to.equal(false);
          await endLong(long);
        } finally {
          await client.close();
        }
      });

      it(`another TFCALLASYNC of the library, sent past the long one's budget, is answered while it runs (${kind})`, async () => {
        const client = await clientOf(kind);
        try {
          const long = await startLong(client.call);
          for (let i = 0; i < 5; i++) {
            const quick = await within(
              PROMPT_MS,
              "TFCALLASYNC res.quick",
              b.call("TFCALLASYNC", "res.quick", "1", "{r}n"),
            );
            expect(String(quick)).to.match(/^quick saw [1-9]\d*$/);
          }
          expect(long.settled(), "the long one ended before the TFCALLASYNCs were answered").to.equal(false);
          await endLong(long);
        } finally {
          await client.close();
        }
      });
    }

    it("a keyspace trigger of the library fires while a coroutine of thousands of awaits runs: it sees the counter moving", async () => {
      const long = await startLong((args) => a.call(args[0], args.slice(1)));
      expect(await within(PROMPT_MS, "SET poke:1", b.set("poke:1", "x"))).to.equal("OK");
      const seen = await eventually(
        () => t.direct.call("GET", "seen:poke:1"),
        (v) => v !== null,
        "the keyspace trigger's write",
        PROMPT_MS,
      );
      expect(Number(seen)).to.be.greaterThan(0);
      expect(long.settled(), "the long one ended before the trigger fired").to.equal(false);
      await endLong(long);
    });

    it("TFUNCTION DELETE of the library while a long coroutine is suspended answers it with an error; a TFCALL sent meanwhile was answered", async () => {
      const long = await startLong((args) => a.call(args[0], args.slice(1)));
      const read = await within(PROMPT_MS, "TFCALL res.read", b.call("TFCALL", "res.read", "1", "{r}n"));
      expect(Number(read)).to.be.greaterThan(0);
      expect(await t.c.call("TFUNCTION", "DELETE", "res")).to.equal("OK");
      const error = await within(PROMPT_MS, "the long one after DELETE", rejection(long.promise));
      expect(error).to.equal(LIMITS_ERROR);
      // It stopped: the counter does not move any more.
      const after = await counter();
      await sleep(200);
      expect(await counter()).to.equal(after);
      expect(await rejection(b.call("TFCALL", "res.read", "1", "{r}n"))).to.equal("Unknown library res");
    });

    it("TFUNCTION LOAD REPLACE of the library while a long coroutine is suspended answers it with an error; the new code answers after", async () => {
      const long = await startLong((args) => a.call(args[0], args.slice(1)));
      const read = await within(PROMPT_MS, "TFCALL res.read", b.call("TFCALL", "res.read", "1", "{r}n"));
      expect(Number(read)).to.be.greaterThan(0);
      expect(await t.c.call("TFUNCTION", "LOAD", "REPLACE", CODE)).to.equal("OK");
      const error = await within(PROMPT_MS, "the long one after REPLACE", rejection(long.promise));
      expect(error).to.equal(LIMITS_ERROR);
      expect(String(await b.call("TFCALLASYNC", "res.quick", "1", "{r}n"))).to.match(/^quick saw \d+$/);
    });

    it("the library's isolate dying (the watchdog ends a stuck TFCALL) answers a suspended coroutine with an error; the library answers after", async () => {
      const long = await startLong((args) => a.call(args[0], args.slice(1)));
      const stuck = await within(
        PROMPT_MS + 2000,
        "the stuck TFCALL",
        rejection(b.call("TFCALL", "res.stuck", "0")),
      );
      expect(stuck).to.equal(LIMITS_ERROR);
      expect(await within(PROMPT_MS, "the long one", rejection(long.promise))).to.equal(LIMITS_ERROR);
      // The library's isolate is started again.
      expect(String(await b.call("TFCALLASYNC", "res.quick", "1", "{r}n"))).to.match(/^quick saw \d+$/);
    });

    it("a coroutine that awaits a Promise that never settles after thousands of awaits still gets the sandbox's error; a TFCALL sent meanwhile is answered first", async () => {
      const never = await startLong((args) => rejection(a.call(args[0], args.slice(1))), "never");
      const read = await within(PROMPT_MS, "TFCALL res.read", b.call("TFCALL", "res.read", "1", "{r}n"));
      expect(Number(read)).to.be.greaterThan(0);
      expect(never.settled(), "the never-settling one ended before the TFCALL was answered").to.equal(false);
      await eventually(counter, (n) => n >= 3000, "the never-settling one's counter", 60_000);
      await t.direct.call("SET", "{r}stop", "1");
      expect(await within(PROMPT_MS, "the never-settling one", never.promise)).to.equal(
        "Error: the script awaits a promise that can never settle",
      );
      // The library goes on.
      expect(String(await b.call("TFCALLASYNC", "res.quick", "1", "{r}n"))).to.match(/^quick saw \d+$/);
    });

    it("a coroutine that loops without awaiting after thousands of awaits (in a resumed entry) gets T&F's time-limit error; a TFCALL sent meanwhile is answered first", async () => {
      const spin = await startLong((args) => rejection(a.call(args[0], args.slice(1))), "spin");
      await within(PROMPT_MS, "TFCALL res.read", b.call("TFCALL", "res.read", "1", "{r}n"));
      expect(spin.settled(), "the spinning one ended before the TFCALL was answered").to.equal(false);
      await eventually(counter, (n) => n >= 3000, "the spinning one's counter", 60_000);
      await t.direct.call("SET", "{r}stop", "1");
      expect(await within(PROMPT_MS, "the spinning one", spin.promise)).to.equal(LIMITS_ERROR);
      // The library goes on.
      expect(String(await b.call("TFCALLASYNC", "res.quick", "1", "{r}n"))).to.match(/^quick saw \d+$/);
    });

    it("block bodies of a resumed coroutine stay atomic: 2,000 of its read-modify-writes and 300 TFCALLs' on one key lose none", async () => {
      const rmw = a.call("TFCALLASYNC", "res.rmw", "1", "{r}rmw", "2000");
      const syncs: Promise<unknown>[] = [];
      for (let i = 0; i < 300; i++) {
        syncs.push(b.call("TFCALL", "res.rmwSync", "1", "{r}rmw"));
        if (i % 30 === 0) await sleep(50);
      }
      await Promise.all(syncs);
      expect(await rmw).to.equal("done");
      expect(String(await t.direct.call("GET", "{r}rmw"))).to.equal("2300");
    });
  });
}

describe("TFCALLASYNC: a resumed coroutine keeps its database while TFCALLs of another run in between", function () {
  this.timeout(90_000);
  const t = useTfProxy("standalone", { clean: true });

  it("a long coroutine in database 1 INCRs database 1's counter, while TFCALLs in database 0 read database 0's", async () => {
    expect(await t.c.call("TFUNCTION", "LOAD", CODE)).to.equal("OK");
    const in1 = new Redis({ port: t.proxy.port, db: 1 });
    const in0 = new Redis(t.proxy.port);
    const direct1 = new Redis({ port: t.backend.seed.port, db: 1 });
    try {
      await direct1.del("{r}n", "{r}stop");
      await in0.set("{r}n", "db0");
      const long = tracked(in1.call("TFCALLASYNC", "res.long", "2", "{r}n", "{r}stop"));
      await eventually(
        async () => Number(await direct1.get("{r}n")),
        (n) => n >= 500,
        "database 1's counter",
      );
      await sleep(700);
      for (let i = 0; i < 20; i++) {
        expect(
          await within(PROMPT_MS, "TFCALL in database 0", in0.call("TFCALL", "res.read", "1", "{r}n")),
        ).to.equal("db0");
        await sleep(10);
      }
      expect(long.settled()).to.equal(false);
      await direct1.set("{r}stop", "1");
      const n = Number(await long.promise);
      expect(n).to.equal(Number(await direct1.get("{r}n")));
      expect(await in0.get("{r}n")).to.equal("db0");
    } finally {
      in1.disconnect();
      in0.disconnect();
      direct1.disconnect();
    }
  });
});
