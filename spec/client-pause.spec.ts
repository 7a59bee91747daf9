import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually } from "./support/polling.js";
import { RawClient } from "./support/raw-client.js";

// CLIENT PAUSE queued in a transaction, through the proxy: the pause starts when EXEC ends,
// as in Redis (unit/pause "Test that client pause starts at the end of a transaction").
// In front of one server; in a cluster it would pause only the transaction's node.

describe("CLIENT PAUSE inside MULTI through the proxy, one redis-server", function () {
  this.timeout(30_000);
  let server: RedisNode;
  let proxy: RunningProxy;
  const opened: RawClient[] = [];

  before(async () => {
    server = await startRedis();
    proxy = await startProxy([{ port: server.port }]);
  });

  after(async () => {
    for (const c of opened) c.close();
    await proxy?.close();
    await server?.stop();
  });

  const open = async (port: number): Promise<RawClient> => {
    const c = await RawClient.connect(port);
    opened.push(c);
    return c;
  };

  it("is queued, runs with EXEC, and holds other clients' writes until CLIENT UNPAUSE", async () => {
    const c = await open(proxy.port);
    expect(await c.text("MULTI")).to.equal("OK");
    expect(await c.text("SET", "p1", "a")).to.equal("QUEUED");
    expect(await c.text("CLIENT", "PAUSE", "20000", "WRITE")).to.equal("QUEUED");
    expect(await c.text("SET", "p2", "b")).to.equal("QUEUED");
    // Both writes ran: the pause began only once the transaction was over.
    expect(await c.text("EXEC")).to.deep.equal(["OK", "OK", "OK"]);
    const writer = await open(proxy.port);
    writer.send("SET", "p3", "c");
    const direct = await open(server.port);
    await eventually(
      async () => String(await direct.text("INFO", "clients")),
      (info) => /blocked_clients:[1-9]/.test(info),
      "the write waits on the paused server",
    );
    expect(await direct.text("GET", "p3")).to.equal(null);
    expect(await c.text("CLIENT", "UNPAUSE")).to.equal("OK");
    expect(await writer.next()).to.equal("OK");
    expect(await direct.text("MGET", "p1", "p2", "p3")).to.deep.equal(["a", "b", "c"]);
  });

  it("holds each paused client on a connection of its own, as blocked_clients counts them", async () => {
    const admin = await open(proxy.port);
    expect(await admin.text("CLIENT", "PAUSE", "20000", "WRITE")).to.equal("OK");
    const writers = [await open(proxy.port), await open(proxy.port), await open(proxy.port)];
    for (const w of writers) w.send("SET", "q", "v");
    await eventually(
      async () => String(await admin.text("INFO", "clients")),
      (info) => /blocked_clients:3\r?\n/.test(info),
      "three writers wait on the paused server",
    );
    // A read from another client is not stuck behind a paused write on a shared connection.
    expect(await (await open(proxy.port)).text("GET", "q")).to.equal(null);
    expect(await admin.text("CLIENT", "UNPAUSE")).to.equal("OK");
    for (const w of writers) expect(await w.next()).to.equal("OK");
    // Once the pause is over, ordinary commands take the shared connections again.
    expect(await writers[0].text("GET", "q")).to.equal("v");
  });
});
