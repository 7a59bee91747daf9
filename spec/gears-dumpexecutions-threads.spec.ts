/**
 * RG.DUMPEXECUTIONS of a --threads proxy lists every thread's executions (src/gears/commands.ts
 * asks the other threads, as for the execution-id commands): a user sees one proxy, whichever
 * thread the connection landed on. With other proxies in front of the same Redis, theirs are
 * listed too (src/gears/executions-across-proxies.ts), as RedisGears lists a cluster's.
 */
import { expect } from "chai";
import type { Redis } from "ioredis";
import { startProxy, startRedis, type RedisNode } from "./harness/index.js";
import { ChildProxy } from "./support/child-proxy.js";
import { asArray, connect, str } from "./support/gears.js";
import { eventually } from "./support/polling.js";

/** The execution ids RG.DUMPEXECUTIONS lists, in its order. */
async function dumpedIds(client: Redis): Promise<string[]> {
  const entries = asArray(await client.call("RG.DUMPEXECUTIONS"), "RG.DUMPEXECUTIONS");
  return entries.map((e) => {
    const entry = asArray(e, "an entry");
    expect(entry.map((v, i) => (i % 2 === 0 ? v : typeof v))).to.deep.equal([
      "executionId",
      "string",
      "status",
      "string",
      "registered",
      "number",
    ]);
    return str(entry[1]);
  });
}

describe("gears: RG.DUMPEXECUTIONS of a --threads proxy lists every thread's executions", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let threaded: ChildProxy;
  const open: Redis[] = [];
  const client = (port: number): Redis => {
    const c = connect(port);
    open.push(c);
    return c;
  };

  /** The pid of the thread serving this connection: INFO's process_id is the answering thread's. */
  async function threadOf(c: Redis): Promise<number> {
    return Number(/^process_id:(\d+)/m.exec(String(await c.call("INFO", "proxy")))![1]);
  }

  /** One connection per thread (the supervisor deals fresh connections out in turn). */
  async function onEachThread(): Promise<Redis[]> {
    const byThread = new Map<number, Redis>();
    for (let i = 0; i < 8 && byThread.size < 2; i++) {
      const c = client(threaded.port);
      const pid = await threadOf(c);
      if (!byThread.has(pid)) byThread.set(pid, c);
    }
    expect(byThread.size, "connections on both threads").to.equal(2);
    return [...byThread.values()];
  }

  before(async () => {
    redis = await startRedis();
    threaded = await ChildProxy.start({ upstreams: [{ port: redis.port }], args: ["--threads", "2"] });
    // Both threads answer the others' questions once INFO counts them.
    await eventually(
      async () => {
        const c = connect(threaded.port);
        c.on("error", () => {});
        try {
          return String(await c.call("INFO", "proxy").catch(() => ""));
        } finally {
          c.disconnect();
        }
      },
      (info) => /^threads:2\r?$/m.test(info),
      "both threads ready",
    );
  });
  afterEach(() => {
    for (const c of open.splice(0)) c.disconnect();
  });
  after(async () => {
    await threaded.stop();
    await redis.stop();
  });

  it("executions started on either thread appear, in one order, through connections on both", async () => {
    const [first, second] = await onEachThread();
    const mine = str(await first.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
    const theirs = str(await second.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
    // Two threads, two proxy ids in the execution ids.
    expect(mine.split("-")[0]).to.not.equal(theirs.split("-")[0]);
    await first.call("RG.GETRESULTSBLOCKING", mine);
    await second.call("RG.GETRESULTSBLOCKING", theirs);
    const throughFirst = await dumpedIds(first);
    expect(throughFirst).to.include.members([mine, theirs]);
    expect(throughFirst).to.have.length(new Set(throughFirst).size, "each execution once");
    expect(await dumpedIds(second)).to.deep.equal(throughFirst);
    // Dropped through the other thread: gone from both lists.
    expect(await second.call("RG.DROPEXECUTION", mine)).to.equal("OK");
    expect(await dumpedIds(first)).to.not.include(mine);
    expect(await dumpedIds(second)).to.deep.equal(await dumpedIds(first));
  });

  it("another proxy's executions are listed through both threads, and theirs through it", async () => {
    const other = await startProxy([{ port: redis.port }]);
    try {
      const o = client(other.port);
      const [first, second] = await onEachThread();
      const onOther = str(await o.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
      const onThread = str(await second.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
      await o.call("RG.GETRESULTSBLOCKING", onOther);
      await second.call("RG.GETRESULTSBLOCKING", onThread);
      const listed = await dumpedIds(first);
      expect(listed).to.include.members([onOther, onThread]);
      expect(await dumpedIds(second)).to.deep.equal(listed);
      expect(await dumpedIds(o)).to.deep.equal(listed);
    } finally {
      await other.close();
    }
  });
});
