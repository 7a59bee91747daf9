import { expect } from "chai";
import { ANY_DB, UpstreamConnection } from "../src/upstream/connection.js";
import { RespError } from "../src/resp/values.js";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually } from "./support/polling.js";
import { RawClient, ReplyError, type Reply, type Value } from "./support/raw-client.js";

const BUSY = /^BUSY /;

function errorText(reply: Reply): string {
  if (!(reply instanceof ReplyError))
    throw new Error(`expected an error reply, got ${JSON.stringify(reply)}`);
  return reply.message;
}

/**
 * The proxy puts a SELECT in front of a command whose connection is in another database,
 * pipelined with it. While a script keeps the server busy, that SELECT is refused (BUSY)
 * while MULTI, which Redis lets through, is not: the connection must not be believed to be
 * in the new database, and nothing behind the SELECT may pass for done in it.
 */
describe("a SELECT the proxy puts in front, refused by a busy server", function () {
  this.timeout(30_000);

  let redis: RedisNode;
  let proxy: RunningProxy;
  const clients: RawClient[] = [];

  const through = async (port: number): Promise<RawClient> => {
    const c = await RawClient.connect(port);
    clients.push(c);
    return c;
  };

  /** Starts an endless script straight on the server; resolves once the server answers BUSY. */
  const busyScript = async (): Promise<RawClient> => {
    const runner = await through(redis.port);
    runner.send("EVAL", "while true do end", "0");
    const probe = await through(redis.port);
    await eventually(
      () => probe.call("PING"),
      (r) => r instanceof ReplyError && BUSY.test(r.message),
      "the server answers BUSY",
    );
    return runner;
  };

  const killScript = async (runner: RawClient): Promise<void> => {
    const killer = await through(redis.port);
    expect(await killer.call("SCRIPT", "KILL")).to.equal("OK");
    expect(errorText(await runner.next())).to.match(/Script killed by user/);
  };

  /** `key`'s value in database `db`, read straight from the server. */
  const valueIn = async (db: number, key: string): Promise<Value> => {
    const direct = await through(redis.port);
    expect(await direct.call("SELECT", String(db))).to.equal("OK");
    return direct.text("GET", key);
  };

  beforeEach(async () => {
    redis = await startRedis({ args: ["--busy-reply-threshold", "100"] });
    // One shared connection: every client's ordinary commands go down the same one.
    proxy = await startProxy([{ port: redis.port }], { upstreamConnections: 1 });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await proxy.close();
    await redis.stop();
  });

  it("a MULTI in db 9 while a script runs is accepted, as Redis accepts it, and the next transaction writes to db 9", async () => {
    const a = await through(proxy.port);
    expect(await a.call("SELECT", "9")).to.equal("OK");
    const runner = await busyScript();
    // MULTI takes a fresh dedicated connection, in db 0: its SELECT 9 goes inside the
    // transaction, refused there as the SET is, so EXEC aborts as Redis aborts it.
    expect(await a.call("MULTI")).to.equal("OK");
    expect(errorText(await a.call("SET", "k", "refused"))).to.match(BUSY);
    expect(errorText(await a.call("EXEC"))).to.match(/^EXECABORT .*BUSY/);
    await killScript(runner);

    expect(await a.call("MULTI")).to.equal("OK");
    expect(await a.call("SET", "k", "in-9")).to.equal("QUEUED");
    expect(await a.call("EXEC")).to.deep.equal(["OK"]);
    expect(await valueIn(9, "k")).to.equal("in-9");
    expect(await valueIn(0, "k")).to.equal(null);
  });

  it("a MULTI in db 9 while a script runs takes an idle connection already in db 9: accepted, as Redis accepts it", async () => {
    // Two transactions at once, in db 9 and in db 0: both connections go back idle, db 0's last.
    const a = await through(proxy.port);
    const b = await through(proxy.port);
    expect(await a.call("SELECT", "9")).to.equal("OK");
    for (const c of [a, b]) expect(await c.call("MULTI")).to.equal("OK");
    for (const c of [a, b]) expect(await c.call("SET", "warm", "1")).to.equal("QUEUED");
    for (const c of [a, b]) expect(await c.call("EXEC")).to.deep.equal(["OK"]);
    const runner = await busyScript();
    // Redis lets MULTI through a busy script; a connection in db 0 would need a refused SELECT.
    expect(await a.call("MULTI")).to.equal("OK");
    expect(errorText(await a.call("INCR", "n"))).to.match(BUSY);
    await killScript(runner);
    expect(await a.call("INCR", "n")).to.equal("QUEUED");
    expect(errorText(await a.call("EXEC"))).to.match(/^EXECABORT .*previous errors/);
    expect(await a.text("PING", "after")).to.equal("after");
    expect(await valueIn(9, "n")).to.equal(null);
  });

  it("MULTI, SET and EXEC pipelined while a script runs: MULTI accepted, the rest refused, and no transaction is left open", async () => {
    const a = await through(proxy.port);
    expect(await a.call("SELECT", "9")).to.equal("OK");
    const runner = await busyScript();
    a.send("MULTI");
    a.send("SET", "k", "refused");
    a.send("EXEC");
    expect(await a.next()).to.equal("OK");
    expect(errorText(await a.next())).to.match(BUSY);
    expect(errorText(await a.next())).to.match(/^EXECABORT .*BUSY/);
    await killScript(runner);

    expect(await a.call("SET", "plain", "in-9")).to.equal("OK");
    expect(await a.call("MULTI")).to.equal("OK");
    expect(await a.call("SET", "k", "in-9")).to.equal("QUEUED");
    expect(await a.call("EXEC")).to.deep.equal(["OK"]);
    for (const key of ["k", "plain"]) {
      expect(await valueIn(9, key), key).to.equal("in-9");
      expect(await valueIn(0, key), key).to.equal(null);
    }
  });

  it("a client's SELECT refused on the shared connection leaves it selecting again for the next client in that db", async () => {
    const a = await through(proxy.port);
    const b = await through(proxy.port);
    const zero = await through(proxy.port);
    expect(await a.call("SELECT", "9")).to.equal("OK");
    // The shared connection goes back to db 0 for this client.
    expect(await zero.call("GET", "x")).to.equal(null);
    const runner = await busyScript();
    // SELECT 9 goes in front of b's own SELECT 9: both refused; b stays in db 0.
    expect(errorText(await b.call("SELECT", "9"))).to.match(BUSY);
    await killScript(runner);

    expect(await a.call("SET", "k", "a-in-9")).to.equal("OK");
    expect(await b.call("SET", "kb", "b-in-0")).to.equal("OK");
    expect(await valueIn(9, "k")).to.equal("a-in-9");
    expect(await valueIn(0, "k")).to.equal(null);
    expect(await valueIn(0, "kb")).to.equal("b-in-0");
  });

  it("on the connection itself: what a busy server still runs in any database (FUNCTION STATS, FUNCTION KILL), sent in ANY_DB, is answered behind a refused SELECT", async () => {
    const loader = await through(redis.port);
    const library = "#!lua name=spinner\nredis.register_function('spin', function() while true do end end)";
    expect(String(await loader.call("FUNCTION", "LOAD", library))).to.equal("spinner");
    const conn = new UpstreamConnection({ host: redis.host, port: redis.port }, { connectTimeoutMs: 5000 });
    try {
      expect(await conn.call(["PING"])).to.equal("PONG");
      const runner = await through(redis.port);
      runner.send("FCALL", "spin", "0");
      await eventually(
        () => loader.call("PING"),
        (r) => r instanceof ReplyError && BUSY.test(r.message),
        "the server answers BUSY",
      );
      // As Redis's own suite does from db 9 (unit/functions "test function kill"): the SELECT
      // 9 in front of the GET is refused, FUNCTION STATS and FUNCTION KILL pipelined behind it
      // are not, and run the same in any db (the router sends them in ANY_DB).
      const refused = conn.call(["GET", "k"], 9);
      const stats = conn.call(["FUNCTION", "STATS"], ANY_DB);
      const killed = conn.call(["FUNCTION", "KILL"], ANY_DB);
      expect(await refused).to.be.instanceOf(RespError);
      expect(((await refused) as RespError).message).to.match(BUSY);
      expect(Array.isArray(await stats), String(await stats)).to.equal(true);
      expect(await killed).to.equal("OK");
      expect(errorText(await runner.next())).to.match(/killed by user/i);
      expect(conn.closed).to.equal(false);
      expect(await conn.call(["SET", "after-kill", "9"], 9)).to.equal("OK");
      expect(await valueIn(9, "after-kill")).to.equal("9");
    } finally {
      conn.close();
    }
  });

  it("through the proxy: a client in db 9 gets FUNCTION STATS answered while a function keeps the server busy", async () => {
    const loader = await through(redis.port);
    const library = "#!lua name=spinner\nredis.register_function('spin', function() while true do end end)";
    expect(String(await loader.call("FUNCTION", "LOAD", library))).to.equal("spinner");
    const a = await through(proxy.port);
    const zero = await through(proxy.port);
    expect(await a.call("SELECT", "9")).to.equal("OK");
    // The shared connection goes back to db 0.
    expect(await zero.call("GET", "x")).to.equal(null);
    const runner = await through(redis.port);
    runner.send("FCALL", "spin", "0");
    await eventually(
      () => loader.call("PING"),
      (r) => r instanceof ReplyError && BUSY.test(r.message),
      "the server answers BUSY",
    );
    const stats = await a.call("FUNCTION", "STATS");
    expect(Array.isArray(stats), String(stats)).to.equal(true);
    expect(await a.call("FUNCTION", "KILL")).to.equal("OK");
    expect(errorText(await runner.next())).to.match(/killed by user/i);
    expect(await a.call("SET", "k", "a-in-9")).to.equal("OK");
    expect(await valueIn(9, "k")).to.equal("a-in-9");
    expect(await valueIn(0, "k")).to.equal(null);
  });

  it("a command that runs the same in any database takes no SELECT in front of it", async () => {
    const a = await through(proxy.port);
    const zero = await through(proxy.port);
    expect(await a.call("SELECT", "9")).to.equal("OK");
    // The shared connection goes back to db 0.
    expect(await zero.call("GET", "x")).to.equal(null);
    const direct = await through(redis.port);
    expect(await direct.call("CONFIG", "RESETSTAT")).to.equal("OK");
    const time = await a.call("TIME");
    expect(Array.isArray(time), String(time)).to.equal(true);
    expect(Array.isArray(await a.call("CONFIG", "GET", "maxmemory"))).to.equal(true);
    const stats = String(await direct.text("INFO", "commandstats"));
    expect(stats).to.match(/cmdstat_time:calls=1,/);
    expect(stats).to.not.match(/cmdstat_select:/);
    // The next command that depends on the database selects it.
    expect(await a.call("SET", "k", "a-in-9")).to.equal("OK");
    expect(await valueIn(9, "k")).to.equal("a-in-9");
  });

  it("a SELECT of a database the server does not have is answered as Redis answers it; the others' commands go on", async () => {
    const a = await through(proxy.port);
    const b = await through(proxy.port);
    expect(await a.call("SELECT", "9")).to.equal("OK");
    b.send("SELECT", "99");
    b.send("SET", "kb", "b-in-0");
    a.send("SET", "k", "a-in-9");
    expect(errorText(await b.next())).to.equal("ERR DB index is out of range");
    expect(await b.next()).to.equal("OK");
    expect(await a.next()).to.equal("OK");
    expect(await a.call("SET", "k2", "a-in-9")).to.equal("OK");
    expect(await valueIn(9, "k")).to.equal("a-in-9");
    expect(await valueIn(9, "k2")).to.equal("a-in-9");
    expect(await valueIn(0, "kb")).to.equal("b-in-0");
  });

  it("on the connection itself: a command that names no database, sent once the SELECT was refused, is answered; the next one in db 9 selects again", async () => {
    const conn = new UpstreamConnection({ host: redis.host, port: redis.port }, { connectTimeoutMs: 5000 });
    try {
      expect(await conn.call(["PING"])).to.equal("PONG");
      const runner = await busyScript();
      const refused = await conn.call(["SET", "k", "refused"], 9);
      expect(refused).to.be.instanceOf(RespError);
      expect((refused as RespError).message).to.match(BUSY);
      await killScript(runner);

      expect(await conn.call(["PING"])).to.equal("PONG");
      expect(conn.closed).to.equal(false);
      expect(await conn.call(["SET", "k", "in-9"], 9)).to.equal("OK");
      expect(await valueIn(9, "k")).to.equal("in-9");
      expect(await valueIn(0, "k")).to.equal(null);
    } finally {
      conn.close();
    }
  });
});
