import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend } from "./support/backend.js";
import { eventually, execute, registrations, sleep } from "./support/registrations.js";

/**
 * StreamReader registrations and T&F stream triggers under big batches and backlogs, against
 * one real redis-server: batches larger than one read of the stream, failed batches too big
 * to spread into a call, windows slower together than the time limit. The proxy keeps
 * answering, and no entry is lost or run twice.
 */

/** Writes n entries to a stream straight on Redis, pipelined. */
async function fill(direct: Redis, stream: string, n: number, from = 0): Promise<void> {
  for (let start = 0; start < n; start += 10_000) {
    const pipe = direct.pipeline();
    for (let i = start; i < Math.min(n, start + 10_000); i++) pipe.xadd(stream, "*", "i", String(from + i));
    await pipe.exec();
  }
}

/** Whether the proxy answers PING within ms (a proxy whose event loop spins never does). */
async function answers(c: Redis, ms: number): Promise<boolean> {
  const timeout = sleep(ms).then(() => false);
  return Promise.race([c.ping().then(() => true), timeout]);
}

describe("stress: StreamReader batches and backlogs (one redis-server)", function () {
  this.timeout(120_000);
  let backend: Backend;
  let proxy: RunningProxy;
  let io: Redis;
  let direct: Redis;

  before(async function () {
    this.timeout(60_000);
    backend = await Backend.start("standalone");
    proxy = await startProxy([{ port: backend.seed.port }]);
    io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    direct = new Redis({ port: backend.seed.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
  });

  afterEach(async () => {
    for (const r of await registrations(io)) expect(await io.call("RG.UNREGISTER", r.id)).to.equal("OK");
    await direct.flushall();
  });

  after(async () => {
    io?.disconnect();
    direct?.disconnect();
    await proxy?.close();
    await backend?.stop();
  });

  it("a batch larger than one read (1,000 over 512) waits for its entries without hanging the proxy, then runs whole", async () => {
    await execute(
      io,
      "GB('StreamReader').accumulate((a, x) => (a || 0) + 1).foreach(n => execute('RPUSH', 'sizes', String(n))).register('big', {batch: 1000})",
    );
    await fill(direct, "big", 600);
    await sleep(1500);
    expect(await answers(io, 3000), "the proxy answers while 600 of 1,000 entries wait").to.equal(true);
    expect(await io.lrange("sizes", 0, -1)).to.deep.equal([]);
    await fill(direct, "big", 1900, 600);
    await eventually(
      () => io.lrange("sizes", 0, -1),
      (l) => l.length === 2,
      "two batches of 1,000",
    );
    await sleep(500);
    expect(await io.lrange("sizes", 0, -1)).to.deep.equal(["1000", "1000"]);
  });

  it("a failed batch of 150,000 entries is kept whole: unpausing an aborted registration runs it at once", async () => {
    await fill(direct, "huge", 150_000);
    await execute(
      io,
      "GB('StreamReader').accumulate((a, x) => (a || 0) + 1)" +
        ".foreach(n => { if (execute('GET', 'fixed') === null) throw new Error('not yet'); execute('RPUSH', 'sizes', String(n)) })" +
        ".register('huge', {batch: 150000, onFailedPolicy: 'abort'})",
    );
    const id = async (): Promise<string> => (await registrations(io))[0].id;
    const status = async (): Promise<string> => String((await registrations(io))[0].data.get("status"));
    await eventually(status, (s) => s === "ABORTED", "aborted at the failed batch", 60_000);
    await io.set("fixed", "1");
    expect(await io.call("RG.UNPAUSEREGISTRATIONS", await id())).to.equal("OK");
    // Well within StreamClaimIdleMS (30 s): the batch was in hand, not left to a later claim.
    await eventually(
      () => io.lrange("sizes", 0, -1),
      (l) => l.length === 1,
      "the held batch ran again",
      10_000,
    );
    expect(await io.lrange("sizes", 0, -1)).to.deep.equal(["150000"]);
    expect(await status()).to.equal("OK");
  });

  it("a T&F stream trigger's window whose callbacks together outlast the time limit runs every record, each once", async () => {
    // 600 records in windows of 300, 3 ms of work each: a window takes 900 ms, over the
    // 500 ms limit (lock-redis-timeout) of one entry into the isolate, each record well within.
    await fill(direct, "tfw", 600);
    const library =
      "#!js api_version=1.0 name=slowwin\n" +
      "redis.registerStreamTrigger('c', 'tfw', function (client, data) {" +
      " const t = Date.now(); while (Date.now() - t < 3) {}" +
      " client.call('rpush', 'seen', String(data.id[0]) + '-' + String(data.id[1])); }, {window: 300});";
    expect(await io.call("TFUNCTION", "LOAD", library)).to.equal("OK");
    try {
      const ids = (await direct.xrange("tfw", "-", "+")).map(([id]) => id);
      await eventually(
        () => direct.xinfo("GROUPS", "tfw") as Promise<unknown[][]>,
        (groups) =>
          groups.length === 1 &&
          groups[0][groups[0].indexOf("entries-read") + 1] === 600 &&
          groups[0][groups[0].indexOf("pending") + 1] === 0,
        "every entry read and acknowledged",
        20_000,
      );
      expect(await direct.lrange("seen", 0, -1)).to.deep.equal(ids);
    } finally {
      await io.call("TFUNCTION", "DELETE", "slowwin");
    }
  });
});
