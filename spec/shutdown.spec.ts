import type net from "node:net";
import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis, type RedisNode } from "./harness/index.js";
import { ChildProxy, stopChildProxies } from "./support/child-proxy.js";
import { connectSocket, encode } from "./support/raw-client.js";
import { eventually } from "./support/polling.js";

/**
 * Issue 12, "graceful shutdown": on SIGTERM the proxy stops taking commands, delivers the
 * reply of every command it forwarded, closes each client at a command boundary and exits 0
 * within --shutdown-timeout; a second signal exits at once.
 */

const CLIENTS = 50;
const BATCH = 50;
const TIMEOUT_MS = 5000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Pipelines INCR on its own key without pause and counts the replies it got. */
class Incrementer {
  acknowledged = 0;
  private outstanding = 0;
  readonly closed: Promise<void>;
  private readonly batch: Buffer;

  constructor(
    readonly key: string,
    private readonly socket: net.Socket,
  ) {
    this.batch = Buffer.concat(Array.from({ length: BATCH }, () => encode(["INCR", key])));
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    this.refill();
  }

  /** Every INCR reply is one integer line, so a CRLF counts one reply. */
  private onData(chunk: Buffer): void {
    let n = 0;
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) n++;
    this.acknowledged += n;
    this.outstanding -= n;
    this.refill();
  }

  private refill(): void {
    while (this.outstanding < 2 * BATCH && this.socket.writable) {
      this.socket.write(this.batch);
      this.outstanding += BATCH;
    }
  }
}

describe("graceful shutdown", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let direct: Redis;

  before(async () => {
    redis = await startRedis();
    direct = new Redis({ port: redis.port, host: "127.0.0.1" });
  });

  afterEach(async () => {
    await stopChildProxies();
    await direct.flushall();
  });

  after(async () => {
    direct.disconnect();
    await redis.stop();
  });

  it("SIGTERM: every INCR Redis applied is acknowledged, and the proxy exits 0 in time", async () => {
    const proxy = await ChildProxy.start({
      upstreams: [{ port: redis.port }],
      args: ["--shutdown-timeout", String(TIMEOUT_MS)],
    });
    const clients = await Promise.all(
      Array.from(
        { length: CLIENTS },
        async (_, i) => new Incrementer(`k${i}`, await connectSocket(proxy.port)),
      ),
    );
    await sleep(1000);
    expect(clients.every((c) => c.acknowledged > 0)).to.equal(true);
    const signalledAt = Date.now();
    proxy.signal("SIGTERM");
    await proxy.waitForExit();
    const took = Date.now() - signalledAt;
    await Promise.all(clients.map((c) => c.closed));
    expect(proxy.exitCode, proxy.output()).to.equal(0);
    expect(took).to.be.below(TIMEOUT_MS);
    for (const c of clients) {
      const applied = Number(await direct.get(c.key));
      expect(applied, `${c.key}: applied by Redis vs acknowledged`).to.equal(c.acknowledged);
    }
  });

  it("a second signal exits at once, without waiting for a client that never reads", async () => {
    const proxy = await ChildProxy.start({
      upstreams: [{ port: redis.port }],
      args: ["--shutdown-timeout", "30000"],
    });
    await direct.set("big", Buffer.alloc(2 * 1024 * 1024, 120));
    const stuck = await connectSocket(proxy.port);
    stuck.on("error", () => {});
    stuck.pause();
    stuck.write(Buffer.concat(Array.from({ length: 20 }, () => encode(["GET", "big"]))));
    await sleep(1000);
    proxy.signal("SIGTERM");
    await sleep(500);
    // Its replies cannot be delivered, so the graceful shutdown waits (up to 30 s) ...
    expect(proxy.running).to.equal(true);
    const signalledAt = Date.now();
    proxy.signal("SIGINT");
    await proxy.waitForExit();
    // ... and the second signal ends it at once.
    expect(Date.now() - signalledAt).to.be.below(2000);
    expect(proxy.running).to.equal(false);
    stuck.destroy();
  });

  it("SIGTERM hands the event lease to a second proxy at once, not when it expires", async () => {
    // A lease of 30 s: a second proxy that only noticed the lease expiring, or tried at its next
    // round (every 10 s), would take far longer than the hand-over allows.
    const gearsConfig = { EventLeaseMS: "30000" };
    const a = await ChildProxy.start({ upstreams: [{ port: redis.port }], gearsConfig });
    const viaA = new Redis({ port: a.port, host: "127.0.0.1" });
    const leaseOwner = async (): Promise<string> => {
      const [key] = await direct.keys("{gears-proxy}:lease:*");
      return key === undefined ? "" : ((await direct.get(key)) ?? "").split(" ")[0];
    };
    const b = await startProxy([{ port: redis.port }], { gearsConfig });
    const viaB = new Redis({ port: b.port, host: "127.0.0.1" });
    try {
      const script = "GB().foreach(x => execute('SADD', 'seen', x.key)).register('user:*')";
      expect(await viaA.call("RG.EXECUTE", script, "ID", "seen")).to.equal("OK");
      await eventually(
        async () => ((await viaB.call("RG.DUMPREGISTRATIONS")) as unknown[]).length,
        (n) => n === 1,
        "B picks the registration up",
      );
      // Whoever got the lease first, A must hold it for the test: restart B until it does not.
      const ownerA = await eventually(leaseOwner, (o) => o !== "", "a lease owner");
      const aId = String(await viaA.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
      if (!aId.startsWith(ownerA)) {
        // B took it: nothing to hand over from A. The case is the same with the roles swapped,
        // but only A can be signalled, so say so instead of testing nothing.
        expect.fail(`B (${ownerA}) won the lease over A (${aId}); expected A, which started first`);
      }
      viaA.disconnect();
      const signalledAt = Date.now();
      a.signal("SIGTERM");
      const ownerB = await eventually(
        leaseOwner,
        (o) => o !== "" && o !== ownerA,
        "B takes the lease",
        20_000,
      );
      const tookMs = Date.now() - signalledAt;
      expect(ownerB).to.not.equal(ownerA);
      expect(tookMs, "hand-over time (the lease is 30 s)").to.be.below(5000);
      await direct.set("user:after", "1");
      await eventually(
        () => direct.sismember("seen", "user:after"),
        (n) => n === 1,
        "B handles a new write",
      );
      await a.waitForExit();
      expect(a.exitCode, a.output()).to.equal(0);
    } finally {
      viaA.disconnect();
      viaB.disconnect();
      await b.close();
    }
  });
});
