import path from "node:path";
import { expect } from "chai";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { Backend, SERVERS_AND_MODES } from "./support/backend.js";
import { tfLibrary as lib, useTfProxy } from "./support/tf.js";
import { rejection } from "./support/gears.js";
import { runPython } from "./support/redis-py.js";
import { eventually } from "./support/polling.js";
import net from "node:net";

/** Writes `request` on a fresh connection and reads until `length` bytes came back. */
function rawExchange(port: number, request: string, length: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(request));
    let got = "";
    socket.on("data", (d) => {
      got += d.toString();
      if (got.length >= length) {
        socket.destroy();
        resolve(got);
      }
    });
    socket.on("error", reject);
  });
}

/** Functions that show where each one was when the next started: `step` INCRs its key, `order` tells. */
const STEPS = `let order = [];
         redis.registerFunction('step', function(client, key){
           order.push('start:' + key);
           const n = client.call('incr', key);
           order.push('end:' + key);
           return n;
         });
         redis.registerFunction('order', function(){ const o = order; order = []; return o; });`;

// Redis, then Valkey (which loads no module either: what the proxy is for).
for (const [server, mode] of SERVERS_AND_MODES) {
  describe(`Triggers and Functions: libraries and functions, through the proxy in front of ${Backend.label(mode, server)}`, function () {
    this.timeout(60_000);
    const t = useTfProxy(mode, { clean: true, server });

    it("the documentation's hello: TFUNCTION LOAD answers OK, TFCALL lib.hello answers its string", async () => {
      const code = lib("lib", "redis.registerFunction('hello', function(){ return 'Hello World'; });");
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      expect(await t.c.call("TFCALL", "lib.hello", "0")).to.equal("Hello World");
    });

    it("a function reads and writes keys of one slot with client.call; numbers come back as T&F converts them", async () => {
      const code = lib(
        "lib",
        `redis.registerFunction('my_set_and_get', function(client, key, value){
           client.call('set', key, value);
           return [client.call('get', key), client.call('incr', '{' + key + '}:n'), typeof client.call('incr', '{' + key + '}:n'), 1.5, 7];
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      expect(await t.c.call("TFCALL", "lib.my_set_and_get", "1", "foo", "bar")).to.deep.equal([
        "bar",
        1,
        "bigint",
        "1.5",
        7,
      ]);
      expect(String(await t.direct.call("GET", "foo"))).to.equal("bar");
    });

    it("an async function with callAsync and block, through TFCALLASYNC; TFCALL refuses it with T&F's text", async () => {
      const code = lib(
        "lib",
        `redis.registerAsyncFunction('test', async function(client){
           const before = await client.callAsync('ping');
           return client.block(function(c){ c.call('set', 'async:k', 'v'); return before + ':' + c.call('get', 'async:k'); });
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      expect(await t.c.call("TFCALLASYNC", "lib.test", "0")).to.equal("PONG:v");
      expect(await rejection(t.c.call("TFCALL", "lib.test", "0"))).to.contain(
        "The function is declared as async and was called while blocking was not allowed",
      );
    });

    it("redis.config is the CONFIG json given at load, and REPLACE does not keep it", async () => {
      const body = "redis.registerFunction('cfg', function(){ return redis.config; });";
      expect(
        await t.c.call("TFUNCTION", "LOAD", "CONFIG", '{"name":"gears","n":3}', lib("lib", body)),
      ).to.equal("OK");
      expect(await t.c.call("TFCALL", "lib.cfg", "0")).to.deep.equal(["name", "gears", "n", 3]);
      expect(await t.c.call("TFUNCTION", "LOAD", "REPLACE", lib("lib", body))).to.equal("OK");
      expect(await t.c.call("TFCALL", "lib.cfg", "0")).to.deep.equal([]);
    });

    it("NO_WRITES refuses a write inside the function; reads still work", async () => {
      const code = lib(
        "lib",
        `redis.registerFunction('w', function(client){ return client.call('set', 'nw', '1'); }, {flags: [redis.functionFlags.NO_WRITES]});
         redis.registerFunction('r', function(client){ return client.call('get', 'nw'); }, {flags: [redis.functionFlags.NO_WRITES]});`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      expect(await rejection(t.c.call("TFCALL", "lib.w", "0"))).to.contain(
        "was called while write is not allowed",
      );
      expect(await t.c.call("TFCALL", "lib.r", "0")).to.equal(null);
      expect(await t.direct.call("EXISTS", "nw")).to.equal(0);
    });

    it("RAW_ARGUMENTS gives ArrayBuffers; callRaw answers ArrayBuffers; a binary result is a binary bulk", async () => {
      const code = lib(
        "lib",
        `redis.registerFunction('raw', function(client, k, v){
           client.call('set', k, v);
           const got = client.callRaw('get', k);
           return [k instanceof ArrayBuffer, got instanceof ArrayBuffer, got];
         }, {flags: ['raw-arguments']});`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const bin = Buffer.from([0xff, 0x00, 0xfe]);
      const out = (await t.c.callBuffer("TFCALL", "lib.raw", "1", "rawkey", bin)) as unknown[];
      expect(out.slice(0, 2)).to.deep.equal([1, 1]);
      expect(out[2]).to.deep.equal(bin);
      expect(await rejection(t.c.call("TFCALL", "lib.raw2", "0"))).to.contain("Unknown function raw2");
    });

    it("TFUNCTION LIST: fields in T&F's order; verbosity and WITHCODE; LIBRARY filters", async () => {
      const code = lib("lib", "redis.registerFunction('f', function(){ return 1; }, {description: 'one'});");
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      expect(await t.c.call("TFUNCTION", "LIST")).to.deep.equal([
        [
          "engine",
          "js",
          "api_version",
          "1.0",
          "name",
          "lib",
          "user",
          "default",
          "configuration",
          null,
          "pending_jobs",
          0,
          "functions",
          ["f"],
          "cluster_functions",
          [],
          "keyspace_triggers",
          [],
          "stream_triggers",
          [],
          "pending_async_calls",
          [],
        ],
      ]);
      const verbose = ((await t.c.call("TFUNCTION", "LIST", "WITHCODE", "v")) as unknown[][])[0];
      expect(verbose.slice(0, 2)).to.deep.equal(["code", code]);
      expect(verbose[verbose.indexOf("functions") + 1]).to.deep.equal([
        ["name", "f", "flags", [], "is_async", 0, "description", "one"],
      ]);
      expect(await t.c.call("TFUNCTION", "LIST", "LIBRARY", "nope")).to.deep.equal([]);
      expect(await rejection(t.c.call("TFUNCTION", "LIST", "bad"))).to.equal("Unknown option 'bad'");
    });

    it("load errors of section 1.6, with T&F's texts; a failed REPLACE leaves the old library running", async () => {
      const load = (...args: string[]): Promise<string> => rejection(t.c.call("TFUNCTION", "LOAD", ...args));
      expect(await load()).to.equal("Could not find library payload");
      expect(await load("CONFIG")).to.equal("configuration value was not given");
      expect(await load("CONFIG", "[1]", lib("x", ""))).to.equal("configuration must be a valid json object");
      expect(await load("CONFIG", "{", lib("x", ""))).to.match(/^configuration must be a valid json, '\{', /);
      expect(await load("redis.registerFunction()")).to.contain("Invalid or missing prologue.");
      expect(await load("#!js name=x\n")).to.equal("The api version is missing from the prologue.");
      expect(await load("#!js api_version=1.0\n")).to.equal("The library name is missing from the prologue.");
      expect(await load("#!js api_version=1.0 name=x foo=1 xxx=2\n")).to.equal(
        'Unknown prologue properties provided: "foo", "xxx". Known properties: api_version, name.',
      );
      expect(await load("#!js api_version=1.0 name=x name=y\n")).to.equal(
        "Duplicated prologue properties found: name.",
      );
      expect(await load("#!js api_version=x name=x\n")).to.contain(
        'The API version has been incorrectly specified: "x"',
      );
      expect(await load("#!js api_version=2.0 name=x\n")).to.equal(
        "An unsupported API version was requested: 2.0. The supported versions are 1.0, 1.1.",
      );
      expect(await load("#!lua api_version=1.0 name=x\n")).to.equal("Unknown backend lua");
      expect(await load(lib("a.b", ""))).to.equal(
        "Unallowed library name 'a.b', Unallowed char was given '.'.",
      );
      expect(await load(lib("x", ""))).to.equal("Neither function nor other registrations were found.");
      expect(await load(lib("x", "redis.registerFunction('a.b', () => 1);"))).to.contain(
        "Unallowed function name 'a.b', Unallowed char was given '.'.",
      );
      expect(await load(lib("x", "redis.registerFunction('f', 1);"))).to.contain(
        "Second argument to 'registerFunction' must be a function",
      );
      expect(await load(lib("x", "redis.registerFunction('f', async () => 1);"))).to.contain(
        "'registerFunction' can not be used with async function, use 'registerAsyncFunction' instead.",
      );
      expect(
        await load(lib("x", "redis.registerFunction('f', () => 1); redis.registerFunction('f', () => 2);")),
      ).to.contain("Function f already exists");
      expect(await load(lib("x", "redis.registerFunction('f', () => 1, {flags: ['nope']});"))).to.contain(
        "Failed parsing function flags, Unknow flag 'nope' was given",
      );
      expect(await load(lib("x", "redis.registerFunction('f', () => 1, {foo: 1});"))).to.contain(
        "Unknown properties given: foo",
      );
      expect(await load(lib("x", "redis.registerClusterFunction('f', () => 1);"))).to.contain(
        "Remote function must be async",
      );
      expect(await load(lib("x", "throw 'boom';"))).to.contain("Failed loading library: boom");
      expect(await load(lib("x", "function ("))).to.match(/^Failed to compile library: SyntaxError/);
      // A library that exists, then a REPLACE that fails: the old one still answers.
      expect(
        await t.c.call("TFUNCTION", "LOAD", lib("keep", "redis.registerFunction('f', () => 'old');")),
      ).to.equal("OK");
      expect(await load(lib("keep", "redis.registerFunction('f', () => 'new');"))).to.equal(
        "Library keep already exists.",
      );
      expect(
        await load(
          "REPLACE",
          lib("keep", "redis.registerFunction('f', () => 'new'); throw new Error('no');"),
        ),
      ).to.contain("Failed loading library: Error: no");
      expect(await t.c.call("TFCALL", "keep.f", "0")).to.equal("old");
    });

    it("call errors of section 1.4, with T&F's texts", async () => {
      const code = lib(
        "lib",
        `redis.registerFunction('f', function(client, ...args){ return args.length; });
         redis.registerFunction('boom', function(){ throw 'Some Error'; });
         redis.registerFunction('err', function(){ throw new Error('bad'); });
         redis.registerFunction('num', function(client){ return client.call('set', 'k', 1); });
         redis.registerFunction('pending', function(client){ return new Promise(() => {}); });
         redis.registerFunction('used', function(client){ return client.executeAsync(async () => 1); });
         redis.registerFunction('nest', function(){ const a = []; a.push(a); return a; });
         redis.registerFunction('isblock', function(client){ return client.isBlockAllowed(); });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      expect(await rejection(t.c.call("TFCALL", "lib", "0"))).to.equal("Failed extracting function name");
      expect(await rejection(t.c.call("TFCALL", "nolib.f", "0"))).to.equal("Unknown library nolib");
      expect(await rejection(t.c.call("TFCALL", "lib.nofn", "0"))).to.equal("Unknown function nofn");
      expect(await rejection(t.c.call("TFCALL", "lib.f", "3", "a"))).to.equal(
        "Not enough arguments was given, expected at least 3 arguments, got 1 arguments.",
      );
      expect(await t.c.call("TFCALL", "lib.f", "1", "a", "b", "c")).to.equal(3);
      expect(await rejection(t.c.call("TFCALL", "lib.boom", "0"))).to.equal("Some Error");
      expect(await rejection(t.c.call("TFCALL", "lib.err", "0"))).to.equal("Error: bad");
      expect(await rejection(t.c.call("TFCALL", "lib.num", "0"))).to.contain(
        "Can not convert value into bytes buffer",
      );
      expect(await rejection(t.c.call("TFCALL", "lib.pending", "0"))).to.contain(
        "Can not block client for background execution",
      );
      expect(await t.c.call("TFCALLASYNC", "lib.used", "0")).to.equal(1);
      expect(await rejection(t.c.call("TFCALL", "lib.nest", "0"))).to.contain("nesting level reached");
      expect(await rejection(t.c.callBuffer("TFCALL", "lib.f", "0", Buffer.from([0xff])))).to.equal(
        "Can not convert argument to string",
      );
      expect(await t.c.call("TFCALL", "lib.isblock", "0")).to.equal(0);
      expect(await t.c.call("TFCALLASYNC", "lib.isblock", "0")).to.equal(1);
    });

    it("the global environment is T&F's: no eval, EvalError or SharedArrayBuffer; console there; a stack overflow is an ordinary exception with V8's text", async () => {
      const code = lib(
        "env",
        `redis.registerFunction('kinds', () =>
           [typeof eval, typeof EvalError, typeof SharedArrayBuffer, typeof console, typeof console.log].join(' '));
         redis.registerFunction('log', () => { console.log('not read'); console.error('x'); return 'ok'; });
         const deeper = (k) => deeper(k + 1) + 1;
         redis.registerFunction('deep', () => deeper(0));
         redis.registerAsyncFunction('deepAsync', async (client) => { await client.callAsync('ping'); return deeper(0); });
         redis.registerFunction('caught', () => { try { return deeper(0); } catch (e) { return 'caught ' + (e instanceof RangeError); } });
         const deeperCalls = (client, k) => { client.call('set', 'deep-calls', String(k)); return deeperCalls(client, k + 1) + 1; };
         redis.registerFunction('deepCalls', (client) => deeperCalls(client, 0));
         let calls = 0;
         redis.registerFunction('calls', () => ++calls);`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      expect(await t.c.call("TFCALL", "env.kinds", "0")).to.equal(
        "undefined undefined undefined object function",
      );
      expect(await t.c.call("TFCALL", "env.log", "0")).to.equal("ok");
      expect(await t.c.call("TFCALL", "env.calls", "0")).to.equal(1);
      expect(await rejection(t.c.call("TFCALL", "env.deep", "0"))).to.equal(
        "RangeError: Maximum call stack size exceeded",
      );
      expect(await rejection(t.c.call("TFCALLASYNC", "env.deepAsync", "0"))).to.equal(
        "RangeError: Maximum call stack size exceeded",
      );
      expect(await t.c.call("TFCALL", "env.caught", "0")).to.equal("caught true");
      // An overflow inside client.call's own work (its reply read) too.
      expect(await rejection(t.c.call("TFCALL", "env.deepCalls", "1", "deep-calls"))).to.equal(
        "RangeError: Maximum call stack size exceeded",
      );
      // The library's state lived through them: the same isolate goes on.
      expect(await t.c.call("TFCALL", "env.calls", "0")).to.equal(2);
    });

    it("runOnShards returns one result per master; runOnKey runs on the key's master; remote errors come back", async () => {
      const code = lib(
        "cluster",
        `redis.registerClusterFunction('dbsize', async function(client){
           return client.block((c) => Number(c.call('dbsize')));
         });
         redis.registerClusterFunction('echo', async function(client, a, b){ return {a, b}; });
         redis.registerClusterFunction('fail', async function(){ throw new Error('Remote function failure'); });
         redis.registerClusterFunction('write', async function(client){ return client.block((c) => c.call('set', 'x', '1')); });
         redis.registerAsyncFunction('sizes', async function(client){ return JSON.stringify(await client.runOnShards('dbsize')); });
         redis.registerAsyncFunction('echo', async function(client, key){ return JSON.stringify(await client.runOnKey(key, 'echo', 1, 'two')); });
         redis.registerAsyncFunction('fail', async function(client){ return client.runOnKey('k', 'fail'); });
         redis.registerAsyncFunction('write', async function(client){ return JSON.stringify(await client.runOnShards('write')); });`,
      );
      // T&F's 500 ms default is short for a remote function's worker on a loaded 2-core machine.
      expect(await t.c.call("CONFIG", "SET", "redisgears_2.remote-task-default-timeout", "10000")).to.equal(
        "OK",
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      for (let i = 0; i < 30; i++) await t.c.set(`shardkey:${i}`, "v");
      const masters = await t.backend.masters();
      const [results, errors] = JSON.parse(String(await t.c.call("TFCALLASYNC", "cluster.sizes", "0"))) as [
        number[],
        string[],
      ];
      expect(errors).to.deep.equal([]);
      expect(results).to.have.length(masters.length);
      const sizes = await Promise.all(masters.map(async (m) => Number(await m.cli("DBSIZE"))));
      expect([...results].sort()).to.deep.equal([...sizes].sort());
      expect(JSON.parse(String(await t.c.call("TFCALLASYNC", "cluster.echo", "1", "somekey")))).to.deep.equal(
        {
          a: 1,
          b: "two",
        },
      );
      expect(await rejection(t.c.call("TFCALLASYNC", "cluster.fail", "0"))).to.contain(
        "Remote function failure",
      );
      const [, writeErrors] = JSON.parse(String(await t.c.call("TFCALLASYNC", "cluster.write", "0"))) as [
        unknown[],
        string[],
      ];
      expect(writeErrors).to.have.length(masters.length);
      expect(writeErrors[0]).to.contain("was called while write is not allowed");
    });

    it("concurrent TFCALLs from many clients each get their own reply, errors included, in each client's order", async () => {
      const code = lib(
        "many",
        `redis.registerFunction('f', function(client, i){
           if (Number(i) % 5 === 0) throw 'five ' + i;
           return client.call('incr', 'many:' + i);
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const clients = Array.from({ length: 10 }, () => new Redis(t.proxy.port));
      try {
        const replies = await Promise.all(
          clients.map((cl, n) =>
            Promise.all(
              Array.from({ length: 6 }, (_, j) =>
                cl.call("TFCALL", "many.f", "0", String(n * 6 + j)).catch((e: Error) => e.message),
              ),
            ),
          ),
        );
        replies.forEach((list, n) =>
          list.forEach((reply, j) => {
            const i = n * 6 + j;
            expect(reply).to.equal(i % 5 === 0 ? `five ${i}` : 1);
          }),
        );
      } finally {
        for (const cl of clients) cl.disconnect();
      }
    });

    it("pipelined TFCALLs of one batch get every kind of reply and outcome back in order: integers, strings, nil, arrays, bytes, errors", async () => {
      const code = lib(
        "kinds",
        `redis.registerFunction('run', function(client, key, what){
           if (what === 'incr') return client.call('incr', key);
           if (what === 'get') return client.call('get', key);
           if (what === 'nil') return client.call('get', key + ':none') === null ? 'was nil' : 'not nil';
           if (what === 'list') { client.call('rpush', key, 'x', 'y'); return client.call('lrange', key, '0', '-1'); }
           if (what === 'raw') return new Uint8Array(client.callRaw('get', key)).length;
           if (what === 'caught') { try { client.call('incr', key); } catch (e) { return 'caught: ' + e.message; } }
           if (what === 'thrown') return client.call('incr', key);
           if (what === 'double') { client.call('set', key, '1'); return 2.5; }
           return 'unknown ' + what;
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      await t.c.set("{k2}", "text");
      await t.c.set("{k4}", Buffer.from([0, 255, 1]));
      await t.c.set("{k5}", "text");
      await t.c.set("{k6}", "text");
      const calls: [string, string][] = [
        ["{k1}", "incr"],
        ["{k2}", "get"],
        ["{k3}", "nil"],
        ["{k7}", "list"],
        ["{k4}", "raw"],
        ["{k5}", "caught"],
        ["{k6}", "thrown"],
        ["{k8}", "double"],
      ];
      const out = await t.c
        .pipeline(calls.map(([k, w]) => ["call", "tfcall", "kinds.run", "1", k, w]))
        .exec();
      const got = out?.map(([err, v]) => (err instanceof Error ? `error: ${err.message}` : v));
      expect(got?.slice(0, 5)).to.deep.equal([1, "text", "was nil", ["x", "y"], 3]);
      expect(got?.[5]).to.match(/^caught: .*not an integer/);
      expect(got?.[6]).to.match(/^error: .*not an integer/);
      expect(got?.[7]).to.equal("2.5");
    });

    it("pipelined TFCALLs of one batch: client.call takes a String object command and ArrayBuffer or view arguments, refuses others, and a client kept past its call is invalid", async () => {
      const code = lib(
        "forms",
        `let kept = null;
         redis.registerFunction('run', function(client, key, what){
           if (what === 'strobj') return client.call(new String('incr'), key);
           if (what === 'buf') { client.call('set', key, new Uint8Array([104, 105]).buffer); return client.call('get', key); }
           if (what === 'view') { client.call('set', key, new Uint8Array([0, 104, 105, 0]).subarray(1, 3)); return client.call('get', key); }
           if (what === 'rawbuf') return new Uint8Array(client.callRaw('get', key)).length;
           if (what === 'badarg') return client.call('set', key, 5);
           if (what === 'badcmd') return client.call(5, key);
           if (what === 'keep') { kept = client; return client.call('incr', key); }
           if (what === 'kept') { try { kept.call('incr', key); return 'used'; } catch (e) { return e.message; } }
           return 'unknown ' + what;
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      await t.c.set("{f4}", Buffer.from([0, 255, 1, 2]));
      const calls: [string, string][] = [
        ["{f1}", "strobj"],
        ["{f2}", "buf"],
        ["{f3}", "view"],
        ["{f4}", "rawbuf"],
        ["{f5}", "badarg"],
        ["{f6}", "badcmd"],
        ["{f7}", "keep"],
      ];
      const out = await t.c
        .pipeline(calls.map(([k, w]) => ["call", "tfcall", "forms.run", "1", k, w]))
        .exec();
      const got = out?.map(([err, v]) => (err instanceof Error ? `error: ${err.message}` : v));
      expect(got).to.deep.equal([
        1,
        "hi",
        "hi",
        4,
        "error: Error: Can not convert value into bytes buffer",
        "error: Error: Value is not string",
        1,
      ]);
      // Once its call returned (a later TFCALL: the batch's calls nest while they wait).
      expect(await t.c.call("TFCALL", "forms.run", "1", "{f8}", "kept")).to.equal("Used on invalid client");
    });

    it("client.call replies of any size and text reach the function whole: small, multi-byte UTF-8, and larger than the worker's reply area", async () => {
      const code = lib(
        "sizes",
        `redis.registerFunction('len', function(client, key){
           const v = client.call('get', key);
           return [v.length, v.slice(0, 3), v.slice(-3)];
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      // 64 KB is the shared reply area (src/sandbox/protocol.ts): the larger ones come through the port.
      const values: [string, string][] = [
        ["{s1}", "abc"],
        ["{s2}", "héllo wörld ✓ 𝄞"],
        ["{s3}", "ü".repeat(40_000)],
        ["{s4}", "x".repeat(200_000) + "end"],
      ];
      for (const [k, v] of values) await t.c.set(k, v);
      const out = await t.c.pipeline(values.map(([k]) => ["call", "tfcall", "sizes.len", "1", k])).exec();
      expect(out?.map(([err, v]) => err ?? v)).to.deep.equal(
        values.map(([, v]) => [v.length, v.slice(0, 3), v.slice(-3)]),
      );
      // One at a time too: a lone call's reply comes alone, not in a batch's answer.
      for (const [k, v] of values) {
        expect(await t.c.call("TFCALL", "sizes.len", "1", k)).to.deep.equal([
          v.length,
          v.slice(0, 3),
          v.slice(-3),
        ]);
      }
    });
    it("a client's pipelined TFCALLs go in together: calls of other slots are pipelined, calls of one slot run one after the other, and a following GET waits for them", async () => {
      // `order` lives in the library's isolate: it shows where each function was when the next started.
      const code = lib(
        "pipe",
        `${STEPS}
         redis.registerFunction('bump', function(client, key){
           const v = Number(client.call('get', key) || 0);
           client.call('set', key, String(v + 1));
           return v + 1;
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const keys = ["{a}p", "{b}p", "{c}p"];
      const out = await t.c
        .pipeline([...keys.map((k) => ["call", "tfcall", "pipe.step", "1", k]), ["get", keys[2]]])
        .exec();
      expect(out?.map(([err, v]) => err ?? v)).to.deep.equal([1, 1, 1, "1"]);
      // One batch: each function's INCR waited while the next one started; the replies came back together.
      expect(await t.c.call("TFCALL", "pipe.order", "0")).to.deep.equal([
        "start:{a}p",
        "start:{b}p",
        "start:{c}p",
        "end:{c}p",
        "end:{b}p",
        "end:{a}p",
      ]);
      // The same slot: one after the other, so read-modify-write from many clients loses nothing.
      const same = ["{a}x", "{a}y"];
      await t.c.pipeline(same.map((k) => ["call", "tfcall", "pipe.step", "1", k])).exec();
      expect(await t.c.call("TFCALL", "pipe.order", "0")).to.deep.equal([
        "start:{a}x",
        "end:{a}x",
        "start:{a}y",
        "end:{a}y",
      ]);
      const clients = Array.from({ length: 6 }, () => new Redis(t.proxy.port));
      try {
        await Promise.all(
          clients.map((cl) =>
            cl.pipeline(Array.from({ length: 5 }, () => ["call", "tfcall", "pipe.bump", "1", "{n}"])).exec(),
          ),
        );
        expect(String(await t.direct.call("GET", "{n}"))).to.equal("30");
      } finally {
        for (const cl of clients) cl.disconnect();
      }
    });

    it("a TFCALL that arrives while a batch's calls are in Redis joins that batch: it starts on top of the waiting function", async () => {
      const code = lib("join", STEPS);
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      // A script holds {a}j's master busy for a second, so the first function's INCR waits there.
      // Valkey's TIME stands still inside a script (it has os.clock instead); Redis 7.0's moves.
      const hold =
        "local ok, clock = pcall(function() return os.clock end) " +
        "if ok and clock then local c = clock() repeat until clock() - c > 1 return 1 end " +
        "local s = redis.call('TIME') repeat local n = redis.call('TIME') " +
        "until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 1000000 return 1";
      // Connected first: ioredis's ready check would wait for the busy master.
      const other = new Redis(t.proxy.port);
      await other.ping();
      // The second TFCALL must reach the proxy while the first one's INCR waits behind the
      // busy script: fixed pauses, so on a starved machine the first may only arrive once the
      // script is over. Such a round runs one after the other, as it would without joining, and
      // is tried again; a joined round shows the joining, and anything else fails at once.
      let order: unknown = null;
      try {
        for (let round = 0; round < 3; round++) {
          const a = `{a}j${round}`;
          const b = `{b}j${round}`;
          const busy = (await t.direct.on(a)).call("EVAL", hold, "1", a);
          await new Promise((resolve) => setTimeout(resolve, 100));
          const first = t.c.call("TFCALL", "join.step", "1", a);
          await new Promise((resolve) => setTimeout(resolve, 150));
          const second = other.call("TFCALL", "join.step", "1", b);
          expect(await Promise.all([first, second, busy])).to.deep.equal([1, 1, 1]);
          order = await t.c.call("TFCALL", "join.order", "0");
          const oneAfterTheOther = [`start:${a}`, `end:${a}`, `start:${b}`, `end:${b}`];
          if (JSON.stringify(order) !== JSON.stringify(oneAfterTheOther)) {
            // Without joining, the second TFCALL would have waited for the first entry to end.
            expect(order).to.deep.equal([`start:${a}`, `start:${b}`, `end:${b}`, `end:${a}`]);
            return;
          }
        }
      } finally {
        other.disconnect();
      }
      expect.fail(`never joined in three rounds; last order ${JSON.stringify(order)}`);
    });

    it("TFCALL and TFCALLASYNC inside MULTI are queued and run in order at EXEC, with blocking not allowed, as in T&F", async () => {
      const code = lib(
        "tx",
        `redis.registerFunction('append', function(client, key, v){
           const cur = client.call('get', key) || '';
           client.call('set', key, cur + v);
           return cur + v;
         });
         redis.registerFunction('blk', function(client){ return client.isBlockAllowed() ? 1 : 0; });
         redis.registerAsyncFunction('ablk', async function(client){ return client.isBlockAllowed() ? 1 : 0; });
         redis.registerAsyncFunction('wait', async function(client){ return await client.callAsync('ping'); });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const out = await t.c
        .multi()
        .set("{t}k", "a")
        .call("TFCALL", "tx.append", "1", "{t}k", "b")
        .append("{t}k", "c")
        .call("TFCALL", "tx.append", "1", "{t}k", "d")
        .get("{t}k")
        .call("TFCALL", "tx.blk", "0")
        .call("TFCALLASYNC", "tx.blk", "0")
        .call("TFCALLASYNC", "tx.ablk", "0")
        .call("TFCALLASYNC", "tx.wait", "0")
        .call("TFCALL", "tx.ablk", "0")
        .exec();
      expect(out?.map(([err, v]) => (err === null ? v : err.message))).to.deep.equal([
        "OK",
        "ab",
        3,
        "abcd",
        "abcd",
        0,
        0,
        0,
        "Can not block client for background execution, Blocking is not allow inside multi/exec, Lua, or within another module (RM_Call).",
        "The function is declared as async and was called while blocking was not allowed; note that you cannot invoke async functions from within Lua or MULTI, and you must use TFCALLASYNC instead.",
      ]);
      expect(await t.c.call("TFCALLASYNC", "tx.blk", "0")).to.equal(1);
      // A transaction that starts with a TFCALL: the keyed commands after it still find their node.
      const tail = await t.c
        .multi()
        .call("TFCALL", "tx.blk", "0")
        .set("{z}a", "1")
        .call("TFCALL", "tx.append", "1", "{z}a", "2")
        .get("{z}a")
        .exec();
      expect(tail?.map(([err, v]) => (err === null ? v : err.message))).to.deep.equal([0, "OK", "12", "12"]);
      // An error while queuing before the cut aborts everything, the TFCALLs included.
      const aborted = await rejection(
        t.c.multi().call("GET").call("TFCALL", "tx.append", "1", "{z}b", "x").exec(),
      );
      expect(aborted).to.contain("EXECABORT");
      expect(await t.direct.call("EXISTS", "{z}b")).to.equal(0);
      // WATCH still aborts a transaction that starts with a TFCALL; DISCARD drops the queued calls.
      const w = new Redis(t.proxy.port);
      try {
        await w.watch("{t}w");
        await t.c.set("{t}w", "x");
        expect(await w.multi().call("TFCALL", "tx.append", "1", "{t}w", "z").exec()).to.equal(null);
        await w.multi().call("TFCALL", "tx.append", "1", "{t}w", "y").discard();
        expect(String(await t.direct.call("GET", "{t}w"))).to.equal("x");
      } finally {
        w.disconnect();
      }
      // A command pipelined after EXEC runs after the transaction's TFCALLs and sees their writes.
      const expected = "+OK\r\n+QUEUED\r\n*1\r\n$1\r\nv\r\n$1\r\nv\r\n";
      const raw = await rawExchange(
        t.proxy.port,
        "MULTI\r\nTFCALL tx.append 1 {t}q v\r\nEXEC\r\nGET {t}q\r\n",
        expected.length,
      );
      expect(raw).to.equal(expected);
    });

    it("a TFCALLASYNC waits behind the TFCALLs that arrived before it: one slot's calls run in arrival order", async () => {
      const code = lib(
        "ord",
        `redis.registerFunction('gate', function(client){
           client.call('set', '{o}in', '1');
           while (client.call('get', '{o}go') === null) {}
           return 'open';
         });
         redis.registerFunction('push', function(client, key, v){ return client.call('rpush', key, v); });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const named = (name: string): Redis => new Redis(t.proxy.port, { connectionName: name });
      const [g, a, b] = [named("ord-gate"), named("ord-a"), named("ord-b")];
      const sent = (name: string, cmd: string): Promise<string> =>
        eventually(
          async () => String(await t.c.call("CLIENT", "LIST")),
          (list) => list.split("\n").some((l) => l.includes(`name=${name} `) && l.includes(`cmd=${cmd} `)),
          `${name} sent ${cmd}`,
        );
      try {
        await Promise.all([g.ping(), a.ping(), b.ping()]);
        // The gate holds the library's isolate until {o}go is set.
        const gate = g.call("TFCALL", "ord.gate", "0");
        await eventually(
          () => t.direct.call("GET", "{o}in"),
          (v) => String(v) === "1",
          "the gate runs",
        );
        const first = a.call("TFCALL", "ord.push", "1", "{o}list", "a");
        await sent("ord-a", "tfcall");
        const second = b.call("TFCALLASYNC", "ord.push", "1", "{o}list", "b");
        await sent("ord-b", "tfcallasync");
        await t.direct.call("SET", "{o}go", "1");
        expect(await Promise.all([gate, first, second])).to.deep.equal(["open", 1, 2]);
        expect(((await t.direct.call("LRANGE", "{o}list", "0", "-1")) as Buffer[]).map(String)).to.deep.equal(
          ["a", "b"],
        );
      } finally {
        for (const cl of [g, a, b]) cl.disconnect();
      }
    });

    it("blocking commands from call run as in T&F's script mode: refused where the server flags them noscript, else without blocking; the client goes on", async () => {
      const code = lib(
        "blk",
        `redis.registerFunction('pop', function(client, key){ return client.call('blpop', key, '0'); });
         redis.registerFunction('read', function(client, key){ return client.call('xread', 'block', '0', 'streams', key, '$'); });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      // BLPOP is "noscript" up to Redis 7.0; callAsync's blocking commands: tf-callasync-blocking.spec.ts.
      const noscript = JSON.stringify(await t.direct.text("COMMAND", "INFO", "blpop")).includes("noscript");
      const pop = t.c.call("TFCALL", "blk.pop", "1", "blk:list");
      if (noscript) {
        expect(await rejection(pop)).to.equal("Error: ERR command 'blpop' is not allowed on script mode");
      } else expect(await pop).to.equal(null);
      expect(await t.c.call("TFCALL", "blk.read", "1", "blk:stream")).to.equal(null);
      expect(await t.c.call("PING")).to.equal("PONG");
    });

    it("TFUNCTION LIST shows the library's callAsync commands under way and its pending jobs, then none", async () => {
      const code = lib(
        "slow",
        `redis.registerAsyncFunction('wait', async function(client){
           return await client.callAsync('eval', 'for i = 1, 100000000 do end return 1', '0');
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const other = new Redis(t.proxy.port);
      try {
        const field = (lib: unknown[], name: string): unknown => lib[lib.indexOf(name) + 1];
        const listed = async (): Promise<unknown[]> =>
          ((await other.call("TFUNCTION", "LIST")) as unknown[][])[0];
        // Connected first: ioredis's ready check (INFO) would wait for the busy server.
        expect(await other.ping()).to.equal("PONG");
        const call = t.c.call("TFCALLASYNC", "slow.wait", "0");
        const during = await eventually(
          listed,
          (l) => (field(l, "pending_async_calls") as unknown[]).length > 0,
          "the call listed",
        );
        expect(field(during, "pending_async_calls")).to.deep.equal([
          "eval for i = 1, 100000000 do end return 1 0",
        ]);
        expect(field(during, "pending_jobs")).to.equal(1);
        expect(await call).to.equal(1);
        const after = await listed();
        expect(field(after, "pending_async_calls")).to.deep.equal([]);
        expect(field(after, "pending_jobs")).to.equal(0);
      } finally {
        other.disconnect();
      }
    });

    it("redis-py 8 loads, calls, pipelines, lists and deletes a library with execute_command", async function () {
      this.timeout(240_000);
      const script = path.resolve("spec/support/tf_redis_py_cases.py");
      const { code, output } = await runPython(script, [String(t.proxy.port)]);
      expect(output.split("\n").filter((l) => !l.startsWith("ok "))).to.deep.equal([""]);
      expect(output.match(/^ok /gm)).to.have.length(5);
      expect(code).to.equal(0);
    });

    it("node-redis loads and calls a library with sendCommand", async () => {
      const nr = createClient({ socket: { port: t.proxy.port, host: "127.0.0.1" }, RESP: 2 });
      await nr.connect();
      try {
        const code = lib("nr", "redis.registerFunction('add', (client, a, b) => Number(a) + Number(b));");
        expect(await nr.sendCommand(["TFUNCTION", "LOAD", code])).to.equal("OK");
        expect(await nr.sendCommand(["TFCALL", "nr.add", "0", "2", "3"])).to.equal(5);
      } finally {
        nr.destroy();
      }
    });

    it("CONFIG GET/SET redisgears_2.* is answered by the proxy with T&F's names, ranges and errors", async () => {
      expect(await t.c.call("CONFIG", "GET", "redisgears_2.lock-redis-timeout")).to.deep.equal([
        "redisgears_2.lock-redis-timeout",
        "500",
      ]);
      expect(await t.c.call("CONFIG", "SET", "redisgears_2.error-verbosity", "2")).to.equal("OK");
      expect(await t.c.call("CONFIG", "GET", "redisgears_2.error-verbosity")).to.deep.equal([
        "redisgears_2.error-verbosity",
        "2",
      ]);
      await t.c.call("CONFIG", "SET", "redisgears_2.error-verbosity", "1");
      expect(await rejection(t.c.call("CONFIG", "SET", "redisgears_2.lock-redis-timeout", "5"))).to.contain(
        "argument must be between 100 and 1000000000",
      );
      expect(await rejection(t.c.call("CONFIG", "SET", "redisgears_2.v8-maxmemory", "60000000"))).to.contain(
        "can't set immutable config",
      );
      // Set to the value it has, a load-time setting is accepted: `CONFIG GET *` then each pair
      // set back (Redis's "CONFIG sanity" test) passes through the proxy.
      const [, maxmemory] = (await t.c.call("CONFIG", "GET", "redisgears_2.v8-maxmemory")) as string[];
      expect(await t.c.call("CONFIG", "SET", "redisgears_2.v8-maxmemory", maxmemory)).to.equal("OK");
      // Other CONFIG commands still reach Redis.
      expect(await t.c.call("CONFIG", "GET", "maxmemory-policy")).to.deep.equal([
        "maxmemory-policy",
        "noeviction",
      ]);
    });
  });
}
