import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { metricsPage, sample } from "./support/metrics.js";
import { waitUntil } from "./support/polling.js";
import { RawClient, ReplyError, type Reply } from "./support/raw-client.js";

const LOST = "ERR upstream connection lost";
const UNAVAILABLE = /^ERR upstream .*unavailable/;
const BROKEN = "ERR transaction aborted: the upstream connection was lost; send EXEC or DISCARD";

function errorText(reply: Reply): string {
  if (!(reply instanceof ReplyError))
    throw new Error(`expected an error reply, got ${JSON.stringify(reply)}`);
  return reply.message;
}

/** An error the proxy gives while its upstream is down (lost mid-command, or unreachable). */
function isDownError(reply: Reply): boolean {
  const text = errorText(reply);
  return text === LOST || UNAVAILABLE.test(text);
}

/**
 * MULTI/EXEC and WATCH when the upstream connection pinned to the client dies. The server is
 * held in DEBUG SLEEP by another client, so a MULTI sent meanwhile is certainly written and
 * not answered when the server is killed: no timing decides the outcome.
 */
describe("transactions when the upstream connection is lost", function () {
  this.timeout(30_000);

  let redis: RedisNode;
  let proxy: RunningProxy;
  const clients: RawClient[] = [];

  const client = async (): Promise<RawClient> => {
    const c = await RawClient.connect(proxy.port);
    clients.push(c);
    return c;
  };

  /** Requests the proxy has sent to the server and awaits replies to. */
  const inFlight = async (): Promise<number> =>
    sample(await metricsPage(proxy), `gears_proxy_upstream_in_flight{node="127.0.0.1:${redis.port}"}`);

  /** Holds the server in DEBUG SLEEP (through another client), so nothing sent next is answered. */
  const holdServer = async (): Promise<void> => {
    const sleeper = await client();
    sleeper.send("DEBUG", "SLEEP", "20");
    await waitUntil("DEBUG SLEEP sent to the server", async () => (await inFlight()) >= 1);
  };

  /** Waits until `count` requests are in flight upstream, then kills the server. */
  const killWhenInFlight = async (count: number): Promise<void> => {
    await waitUntil(`${count} requests in flight upstream`, async () => (await inFlight()) >= count);
    await redis.kill();
  };

  beforeEach(async () => {
    redis = await startRedis({ args: ["--enable-debug-command", "yes"] });
    proxy = await startProxy([{ port: redis.port }], { metricsPort: 0 });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await proxy.close();
    await redis.stop();
  });

  /** Waits until commands through `c` reach the restarted server again. */
  const reachable = (c: RawClient): Promise<void> =>
    waitUntil("the proxy reaches the restarted server", async () => {
      const reply = await c.call("GET", "probe");
      return !(reply instanceof ReplyError);
    });

  /** A transaction now leaves an idle dedicated connection in the pool, its CLIENT ID learnt. */
  const warmPool = async (c: RawClient): Promise<void> => {
    expect(await c.call("MULTI")).to.equal("OK");
    expect(await c.call("EXEC")).to.deep.equal([]);
  };

  it("a MULTI lost with the connection before its reply leaves the client outside any transaction", async () => {
    const c = await client();
    await warmPool(c);
    await holdServer();
    c.send("MULTI");
    // DEBUG SLEEP and MULTI, both written and waiting for the sleeping server.
    await killWhenInFlight(2);
    expect(errorText(await c.next())).to.equal(LOST);
    // As after a MULTI Redis refused: the next commands are answered as outside a transaction.
    const get = await c.call("GET", "k");
    expect(isDownError(get), `GET after the failed MULTI: ${errorText(get)}`).to.equal(true);
    const exec = await c.call("EXEC");
    expect(errorText(exec)).to.not.equal(BROKEN);
    expect(errorText(exec)).to.not.match(/^EXECABORT/);

    await redis.restart();
    await reachable(c);
    expect(errorText(await c.call("EXEC"))).to.equal("ERR EXEC without MULTI");
    expect(await c.call("MULTI")).to.equal("OK");
    expect(await c.call("INCR", "n")).to.equal("QUEUED");
    expect(await c.call("EXEC")).to.deep.equal([1]);
  });

  it("a MULTI that waited for the client's own command in flight when the server died gets an error and leaves no transaction", async () => {
    const c = await client();
    // MULTI waits until DEBUG SLEEP is answered (a client changes connections only once its
    // replies are in): it is sent after the loss, on a connection that cannot be opened.
    c.send("DEBUG", "SLEEP", "20");
    c.send("MULTI");
    await killWhenInFlight(1);
    expect(errorText(await c.next())).to.equal(LOST);
    const multi = await c.next();
    expect(isDownError(multi), `MULTI: ${errorText(multi)}`).to.equal(true);
    const get = await c.call("GET", "k");
    expect(isDownError(get), `GET after the failed MULTI: ${errorText(get)}`).to.equal(true);
  });

  it("commands pipelined behind a MULTI lost before its reply: refused until EXEC, none runs on its own", async () => {
    const c = await client();
    await warmPool(c);
    await holdServer();
    c.send("MULTI");
    c.send("SET", "inside", "1");
    // DEBUG SLEEP, MULTI and SET in flight: the client went on inside the transaction.
    await killWhenInFlight(3);
    expect(errorText(await c.next())).to.equal(LOST);
    expect(errorText(await c.next())).to.equal(LOST);
    await redis.restart();
    await reachable(await client());
    // The client has not seen MULTI's reply when it sends these: they belong to its transaction.
    expect(errorText(await c.call("SET", "after", "1"))).to.equal(BROKEN);
    expect(errorText(await c.call("EXEC"))).to.match(/^EXECABORT/);
    expect(await redis.call("EXISTS", "inside", "after")).to.equal(0);
    expect(await c.call("GET", "after")).to.equal(null);
  });

  it("a MULTI the server refuses (NOPERM) leaves no transaction behind, and its connection goes back", async () => {
    const c = await client();
    await redis.call("ACL", "SETUSER", "default", "-multi");
    expect(errorText(await c.call("MULTI"))).to.match(/^NOPERM/);
    // Not allowed inside a transaction: answered only if the client is outside one.
    expect(await c.call("CLIENT", "SETNAME", "after-refused-multi")).to.equal("OK");
    expect(await c.call("SET", "k", "v")).to.equal("OK");
    expect(await redis.call("GET", "k")).to.equal("v");
    expect(errorText(await c.call("EXEC"))).to.equal("ERR EXEC without MULTI");
    await redis.call("ACL", "SETUSER", "default", "+multi");
    expect(await c.call("MULTI")).to.equal("OK");
    expect(await c.call("GET", "k")).to.equal("QUEUED");
    expect(await c.call("EXEC")).to.deep.equal([Buffer.from("v")]);
  });

  it("a WATCH lost with its connection fails the next EXEC, as a touched key would", async () => {
    const c = await client();
    const other = await client();
    expect(await c.call("SET", "w", "0")).to.equal("OK");
    expect(await c.call("WATCH", "w")).to.equal("OK");
    await redis.kill();
    await redis.restart();
    await reachable(other);
    // Nobody can tell whether w changed while the watch was gone: EXEC must not run.
    expect(await c.call("MULTI")).to.equal("OK");
    expect(await c.call("SET", "w", "from-tx")).to.equal("QUEUED");
    expect(await c.call("EXEC")).to.equal(null);
    expect(await redis.call("GET", "w")).to.equal(null);
    // EXEC ended the watch: the next transaction runs.
    expect(await c.call("MULTI")).to.equal("OK");
    expect(await c.call("SET", "w", "2")).to.equal("QUEUED");
    expect(await c.call("EXEC")).to.deep.equal(["OK"]);
  });

  it("UNWATCH after a lost WATCH ends it: the next transaction runs", async () => {
    const c = await client();
    expect(await c.call("WATCH", "w")).to.equal("OK");
    await redis.kill();
    await redis.restart();
    await reachable(c);
    expect(await c.call("UNWATCH")).to.equal("OK");
    expect(await c.call("MULTI")).to.equal("OK");
    expect(await c.call("SET", "w", "1")).to.equal("QUEUED");
    expect(await c.call("EXEC")).to.deep.equal(["OK"]);
  });

  it("EXEC and DISCARD without MULTI leave the WATCH in place, on the client's own connection", async () => {
    const c = await client();
    const other = await client();
    expect(await c.call("SET", "w", "0")).to.equal("OK");
    expect(await c.call("WATCH", "w")).to.equal("OK");
    expect(errorText(await c.call("EXEC"))).to.equal("ERR EXEC without MULTI");
    expect(errorText(await c.call("DISCARD"))).to.equal("ERR DISCARD without MULTI");
    // Another client's transaction gets a connection without c's watch on it.
    expect(await other.call("MULTI")).to.equal("OK");
    expect(await other.call("SET", "w", "1")).to.equal("QUEUED");
    expect(await other.call("EXEC")).to.deep.equal(["OK"]);
    // c still watches w, which changed: its EXEC fails, as Redis's would.
    expect(await c.call("MULTI")).to.equal("OK");
    expect(await c.call("SET", "w", "from-c")).to.equal("QUEUED");
    expect(await c.call("EXEC")).to.equal(null);
    expect(await redis.call("GET", "w")).to.equal("1");
  });

  it("a nested MULTI and a WATCH inside MULTI are refused without being queued: SELECT after them still counts", async () => {
    const c = await client();
    expect(await c.call("MULTI")).to.equal("OK");
    expect(errorText(await c.call("MULTI"))).to.equal("ERR MULTI calls can not be nested");
    expect(errorText(await c.call("WATCH", "x"))).to.equal("ERR WATCH inside MULTI is not allowed");
    expect(await c.call("SELECT", "1")).to.equal("QUEUED");
    expect(await c.call("SET", "in-db1", "v")).to.equal("QUEUED");
    expect(await c.call("EXEC")).to.deep.equal(["OK", "OK"]);
    // The client is in database 1 now, as Redis leaves it.
    expect(await c.call("GET", "in-db1")).to.deep.equal(Buffer.from("v"));
    expect(await redis.call("EXISTS", "in-db1")).to.equal(0);
  });
});
