import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { startRedis, type RedisNode } from "./harness/index.js";
import { startSentinels, useSentinelProxy, type SentinelDeployment } from "./harness/sentinel.js";
import { ChildProxy } from "./support/child-proxy.js";
import { redisPy } from "./support/redis-py.js";
import { sleep } from "./support/polling.js";
import type { ProxyContext } from "../src/client/context.js";
import type { SentinelTopology } from "../src/upstream/sentinel-topology.js";
import { commandKinds, commandName, subcommandName } from "../src/upstream/handover.js";
import { CONNECTION_LOST, UpstreamConnection } from "../src/upstream/connection.js";
import type { ReplySink } from "../src/upstream/reply-sink.js";
import { encodeCommand } from "../src/resp/encode.js";

/**
 * A Sentinel failover no client notices: the writes the old master held from the failover's
 * start (CLIENT PAUSE WRITE) go to the new master at the switch instead of failing
 * (src/upstream/handover.ts). Clients write their own counters without pause, single and
 * pipelined, through SENTINEL FAILOVER; each INCR's reply must be the next number, each GET
 * the last INCR's, and the counter on the new master the count of INCRs acknowledged: no
 * error, nothing lost, nothing applied twice, replies in order.
 */

/** What one client saw. */
interface Tally {
  client: string;
  /** INCRs acknowledged, so the counter's value if none was lost or applied twice. */
  acked: number;
  errors: string[];
  /** Replies that were not what the client's order makes them (a skipped, repeated or stale value). */
  wrong: string[];
}

/** One client's loop: a single INCR, then a pipeline INCR, GET, INCR, INCR; checks every reply. */
function counterWriter(
  client: string,
  single: (key: string) => Promise<unknown>,
  pipeline: (key: string) => Promise<unknown[]>,
) {
  const key = `count:${client}`;
  const tally: Tally = { client, acked: 0, errors: [], wrong: [] };
  let stopped = false;
  const check = (reply: unknown, expected: number, what: string): void => {
    if (Number(reply) !== expected) tally.wrong.push(`${what}: ${String(reply)}, expected ${expected}`);
  };
  const done = (async () => {
    while (!stopped) {
      try {
        const n = tally.acked;
        check(await single(key), n + 1, "INCR");
        tally.acked++;
        const [a, b, c, d] = await pipeline(key);
        check(a, n + 2, "pipelined INCR");
        check(b, n + 2, "pipelined GET");
        check(c, n + 3, "pipelined INCR");
        check(d, n + 4, "pipelined INCR");
        tally.acked += 3;
      } catch (err) {
        tally.errors.push(err instanceof Error ? err.message : String(err));
        // The counter's value is not known any more: the test fails on the error anyway.
        return;
      }
    }
  })();
  return {
    key,
    tally,
    async stop(): Promise<Tally> {
      stopped = true;
      await done;
      return tally;
    },
  };
}

/** redis-py (default options) doing what counterWriter does, for `seconds`; prints its Tally as JSON. */
const PY_WRITER = `
import json, sys, time
import redis

port, seconds = int(sys.argv[1]), float(sys.argv[2])
r = redis.Redis(host="127.0.0.1", port=port)
key = "count:py"
tally = {"client": "redis-py", "acked": 0, "errors": [], "wrong": []}
def check(reply, expected, what):
    if int(reply) != expected:
        tally["wrong"].append("%s: %s, expected %d" % (what, reply, expected))
end = time.time() + seconds
try:
    while time.time() < end:
        n = tally["acked"]
        check(r.incr(key), n + 1, "INCR")
        tally["acked"] += 1
        p = r.pipeline(transaction=False)
        p.incr(key).get(key).incr(key).incr(key)
        a, b, c, d = p.execute()
        check(a, n + 2, "pipelined INCR")
        check(b, n + 2, "pipelined GET")
        check(c, n + 3, "pipelined INCR")
        check(d, n + 4, "pipelined INCR")
        tally["acked"] += 3
except Exception as e:
    tally["errors"].append(repr(e))
print(json.dumps(tally))
`;

function pythonWriter(port: number, seconds: number): Promise<Tally> {
  return (async () => {
    const python = await redisPy();
    const script = path.join(os.tmpdir(), `gears-proxy-handover-${process.pid}.py`);
    fs.writeFileSync(script, PY_WRITER);
    const child = spawn(python, [script, String(port), String(seconds)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    await new Promise<void>((resolve) => child.once("close", () => resolve()));
    try {
      return JSON.parse(out.trim().split("\n").pop() ?? "") as Tally;
    } catch {
      return { client: "redis-py", acked: 0, errors: [`no result: ${out}`], wrong: [] };
    }
  })();
}

/** The databases of the two ioredis and the two node-redis writers. */
const DBS = [0, 3];

/** `key`'s value in database `db` of `node`. */
async function valueIn(node: RedisNode, db: number, key: string): Promise<string | null> {
  const direct = new Redis({ port: node.port, host: "127.0.0.1", db, lazyConnect: true });
  try {
    return await direct.get(key);
  } finally {
    direct.disconnect();
  }
}

/** The master the proxy's INFO names (upstream0:addr=...). */
async function proxyMasterPort(io: Redis): Promise<number> {
  const info = await io.info("proxy");
  return Number(/^upstream0:addr=[^,]*:(\d+),/m.exec(info)?.[1]);
}

function topologyOf(setup: { proxy: { server: unknown } }): SentinelTopology {
  return (setup.proxy.server as { context: ProxyContext }).context.router.topology as SentinelTopology;
}

/**
 * Two ioredis and two node-redis clients (default options, one of each in database 3) and one redis-py, writing
 * through `fail`'s failover; resolves with what each saw and the new master.
 */
async function writersAcross(
  d: SentinelDeployment,
  port: number,
  /** Resolves with the master the last failover leaves (the old one when it does not say). */
  fail: (old: RedisNode) => Promise<RedisNode | void>,
): Promise<{ tallies: Tally[]; now: RedisNode; keys: string[]; dbs: number[] }> {
  // The second of each in database 3: the proxy's SELECTs go along with what is sent on.
  const ios = DBS.map((db) => {
    const io = new Redis({ port, host: "127.0.0.1", db });
    io.on("error", () => {});
    return io;
  });
  const nrs = DBS.map((database) => {
    const nr = createClient({ socket: { port, host: "127.0.0.1" }, database });
    nr.on("error", () => {});
    return nr;
  });
  for (const nr of nrs) await nr.connect();
  try {
    const old = await d.master();
    const writers = [
      ...ios.map((io, i) =>
        counterWriter(
          `io${i}`,
          (key) => io.incr(key),
          async (key) => {
            const replies = (await io.pipeline().incr(key).get(key).incr(key).incr(key).exec()) ?? [];
            for (const [err] of replies) if (err) throw err;
            return replies.map(([, value]) => value);
          },
        ),
      ),
      ...nrs.map((nr, i) =>
        counterWriter(
          `nr${i}`,
          (key) => nr.incr(key),
          // Sent in one tick: node-redis writes them as one pipeline.
          (key) => Promise.all([nr.incr(key), nr.get(key), nr.incr(key), nr.incr(key)]),
        ),
      ),
    ];
    const py = pythonWriter(port, 6);
    await sleep(500);
    const last = (await fail(old)) ?? old;
    const now = await d.waitForNewMaster(last);
    const deadline = Date.now() + 10_000;
    while ((await proxyMasterPort(ios[0]).catch(() => 0)) !== now.port && Date.now() < deadline)
      await sleep(50);
    await sleep(500);
    const tallies = [];
    for (const w of writers) tallies.push(await w.stop());
    tallies.push(await py);
    return { tallies, now, keys: [...writers.map((w) => w.key), "count:py"], dbs: [...DBS, ...DBS, 0] };
  } finally {
    for (const io of ios) io.disconnect();
    for (const nr of nrs) await nr.disconnect().catch(() => {});
  }
}

/** Starts a SENTINEL FAILOVER and waits until the proxy holds writes on the old master (INFO says so). */
async function failoverHolding(d: SentinelDeployment, io: Redis): Promise<void> {
  expect(await d.sentinels[0].call("SENTINEL", "FAILOVER", d.name)).to.equal("OK");
  // Not a silent give-up: a pipeline sent before the hold runs on the old master, and the test
  // would fail later on replies that prove nothing (a loaded CI machine can take seconds here).
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await sleep(10))
    if (/^sentinel_master:.*status=failover/m.test(await io.info("proxy"))) return;
  throw new Error("the proxy did not report holding writes on the old master within 20 s");
}

describe("Redis Sentinel handover: reading commands and COMMAND INFO", () => {
  it("a command's name is read from its RESP array, lower case", () => {
    expect(commandName(Buffer.from("*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"))).to.equal("incr");
    expect(commandName(Buffer.from("*1\r\n$7\r\nEVAL_RO\r\n"))).to.equal("eval_ro");
    expect(commandName(Buffer.from("PING\r\n"))).to.equal("");
  });

  it("reads are the commands flagged readonly and neither write nor may_replicate; writes those flagged write", () => {
    const kinds = commandKinds([
      [Buffer.from("get"), 2, ["readonly", "fast"]],
      [Buffer.from("incr"), 2, ["write", "denyoom", "fast"]],
      [Buffer.from("publish"), 3, ["pubsub", "loading", "stale", "fast", "may_replicate"]],
      null,
    ]);
    expect([...kinds.reads]).to.deep.equal(["get"]);
    expect([...kinds.writes]).to.deep.equal(["incr"]);
  });

  it("a container's subcommands have the flags, under 'container|sub' (Redis 7.0's tenth field); a command's first argument is joined so", () => {
    const object = [
      Buffer.from("object"),
      -2,
      [],
      0,
      0,
      0,
      [],
      [],
      [],
      [
        [Buffer.from("object|encoding"), 3, ["readonly"]],
        [Buffer.from("object|freq"), 3, ["readonly"]],
      ],
    ];
    const kinds = commandKinds([
      object,
      [Buffer.from("config"), -2, [], 0, 0, 0, [], [], [], [[Buffer.from("config|set"), -4, ["admin"]]]],
    ]);
    expect([...kinds.reads]).to.deep.equal(["object|encoding", "object|freq"]);
    expect(subcommandName(Buffer.from("*3\r\n$6\r\nOBJECT\r\n$8\r\nENCODING\r\n$1\r\nk\r\n"))).to.equal(
      "object|encoding",
    );
    expect(subcommandName(Buffer.from("*1\r\n$4\r\nTIME\r\n"))).to.equal("");
  });
});

describe("Redis Sentinel handover: SENTINEL FAILOVER under continuous writes", function () {
  this.timeout(120_000);
  const setup = useSentinelProxy({ each: true });

  for (let round = 1; round <= 3; round++) {
    it(`round ${round}: ioredis, node-redis and redis-py writing INCR single and pipelined: no error, none lost, none twice, replies in order`, async () => {
      const { d, proxy } = setup;
      const { tallies, now, keys, dbs } = await writersAcross(d, proxy.port, async () => {
        expect(await d.sentinels[0].call("SENTINEL", "FAILOVER", d.name)).to.equal("OK");
      });
      const handovers = topologyOf(setup).handovers;
      console.log(
        `      acked ${tallies.map((t) => `${t.client}=${t.acked}`).join(" ")}; handover ${JSON.stringify(handovers)}`,
      );
      for (const [i, t] of tallies.entries()) {
        expect(t.errors, `${t.client}'s errors`).to.deep.equal([]);
        expect(t.wrong, `${t.client}'s replies out of order`).to.deep.equal([]);
        expect(
          Number(await valueIn(now, dbs[i], keys[i])),
          `${t.client}'s counter on the new master`,
        ).to.equal(t.acked);
        expect(t.acked, `${t.client} wrote`).to.be.above(20);
      }
      expect(handovers).to.have.length(1);
    });
  }
});

/**
 * What one client saw across a killed master: a write that failed may or may not have run
 * (its connection died with it), so the checks allow for those.
 */
interface KillTally {
  client: string;
  errors: string[];
  /** Replies no order explains: a value skipped beyond the writes that failed (applied twice), a GET not the last INCR. */
  wrong: string[];
  /** Values the counter went back at the switch: writes the dead master acknowledged but had not replicated. */
  drops: number[];
  /** When each INCR was acknowledged (ms). */
  ackedAt: number[];
  last: number;
}

/** counterWriter's loop, going on after errors. */
function tolerantWriter(
  client: string,
  single: (key: string) => Promise<unknown>,
  pipeline: (key: string) => Promise<PromiseSettledResult<unknown>[]>,
) {
  const key = `count:${client}`;
  const t: KillTally = { client, errors: [], wrong: [], drops: [], ackedAt: [], last: 0 };
  /** INCRs that failed since the last reply: each may have run. */
  let uncertain = 0;
  let stopped = false;
  const incr = (r: PromiseSettledResult<unknown>): void => {
    if (r.status === "rejected") {
      t.errors.push(r.reason instanceof Error ? r.reason.message : String(r.reason));
      uncertain++;
      return;
    }
    const v = Number(r.value);
    if (v <= t.last) t.drops.push(t.last + 1 - v);
    else if (v > t.last + 1 + uncertain) t.wrong.push(`INCR: ${v} after ${t.last} with ${uncertain} failed`);
    t.last = v;
    uncertain = 0;
    t.ackedAt.push(Date.now());
  };
  const done = (async () => {
    while (!stopped) {
      const [one] = await Promise.allSettled([single(key)]);
      incr(one);
      const [a, b, c, d] = await pipeline(key);
      incr(a);
      if (b.status === "fulfilled" && uncertain === 0 && Number(b.value) !== t.last)
        t.wrong.push(`GET: ${String(b.value)} after INCR ${t.last}`);
      incr(c);
      incr(d);
      if (t.errors.length > 0 && uncertain > 0) await sleep(20);
    }
  })();
  return {
    key,
    async stop(): Promise<KillTally> {
      stopped = true;
      await done;
      return t;
    },
  };
}

/** Redis loses what its master acknowledged this shortly before SIGKILL and had not sent its replica. */
const KILL_WINDOW_MS = 50;

describe("Redis Sentinel handover: two failovers in a row, back to the first master", function () {
  this.timeout(120_000);
  const setup = useSentinelProxy();

  it("the first master, made a replica by the proxy at the first switch, is promoted again by the second: no client error across both", async () => {
    const { d, proxy } = setup;
    const probe = new Redis({ port: proxy.port, host: "127.0.0.1" });
    probe.on("error", () => {});
    try {
      const { tallies, now, keys, dbs } = await writersAcross(d, proxy.port, async (first) => {
        expect(await d.sentinels[0].call("SENTINEL", "FAILOVER", d.name)).to.equal("OK");
        const second = await d.waitForNewMaster(first);
        for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(50))
          if ((await proxyMasterPort(probe).catch(() => 0)) === second.port) break;
        // The sentinels take the first master for a good replica once they have read its INFO
        // (every second or ten): until then the second failover is refused (NOGOODSLAVE).
        for (const deadline = Date.now() + 30_000; ; await sleep(200)) {
          const reply = await d.sentinels[1]
            .call("SENTINEL", "FAILOVER", d.name)
            .catch((e: Error) => e.message);
          if (reply === "OK") break;
          if (Date.now() > deadline) throw new Error(`second failover refused: ${String(reply)}`);
        }
        return second;
      });
      expect(now).to.equal(d.nodes[0]);
      const handovers = topologyOf(setup).handovers;
      console.log(
        `      acked ${tallies.map((t) => `${t.client}=${t.acked}`).join(" ")}; handovers ${JSON.stringify(handovers)}`,
      );
      expect(handovers).to.have.length(2);
      for (const [i, t] of tallies.entries()) {
        expect(t.errors, `${t.client}'s errors`).to.deep.equal([]);
        expect(t.wrong, `${t.client}'s replies out of order`).to.deep.equal([]);
        expect(Number(await valueIn(now, dbs[i], keys[i])), `${t.client}'s counter`).to.equal(t.acked);
      }
    } finally {
      probe.disconnect();
    }
  });
});

describe("Redis Sentinel handover: the old master SIGKILLed under continuous writes", function () {
  this.timeout(120_000);
  const setup = useSentinelProxy({ each: true });

  for (let round = 1; round <= 2; round++) {
    it(`round ${round}: ioredis and node-redis writing INCR: only what was in flight at the kill fails ("connection lost"); later commands wait for the switch (none "unavailable"); nothing applied twice, nothing lost but Redis's own kill window`, async () => {
      const { d, proxy } = setup;
      const port = proxy.port;
      const ios = [0, 1].map(() => {
        const io = new Redis({ port, host: "127.0.0.1" });
        io.on("error", () => {});
        return io;
      });
      const nrs = [0, 1].map(() => {
        const nr = createClient({ socket: { port, host: "127.0.0.1" } });
        nr.on("error", () => {});
        return nr;
      });
      for (const nr of nrs) await nr.connect();
      try {
        const old = await d.master();
        const writers = [
          ...ios.map((io, i) =>
            tolerantWriter(
              `io${i}`,
              (key) => io.incr(key),
              async (key) => {
                const replies = await io
                  .pipeline()
                  .incr(key)
                  .get(key)
                  .incr(key)
                  .incr(key)
                  .exec()
                  .catch(() => null);
                if (replies === null) return Array(4).fill({ status: "rejected", reason: "pipeline failed" });
                return replies.map(([err, value]) =>
                  err
                    ? { status: "rejected" as const, reason: err }
                    : { status: "fulfilled" as const, value },
                );
              },
            ),
          ),
          ...nrs.map((nr, i) =>
            tolerantWriter(
              `nr${i}`,
              (key) => nr.incr(key),
              (key) => Promise.allSettled([nr.incr(key), nr.get(key), nr.incr(key), nr.incr(key)]),
            ),
          ),
        ];
        await sleep(500);
        await d.sentinels[0].kill();
        const killedAt = Date.now();
        await old.kill();
        const now = await d.waitForNewMaster(old);
        const deadline = Date.now() + 15_000;
        while ((await proxyMasterPort(ios[0]).catch(() => 0)) !== now.port && Date.now() < deadline)
          await sleep(50);
        const switchedAt = Date.now();
        await sleep(500);
        const tallies: KillTally[] = [];
        for (const w of writers) tallies.push(await w.stop());
        for (const [i, t] of tallies.entries()) {
          const kinds = [...new Set(t.errors)];
          const inWindow = t.ackedAt.filter((at) => at <= killedAt && at > killedAt - KILL_WINDOW_MS).length;
          console.log(
            `      ${t.client}: ${t.ackedAt.length} acked, ${t.errors.length} failed (${kinds.join(" | ")}), went back ${JSON.stringify(t.drops)}; switch ${switchedAt - killedAt} ms after the kill`,
          );
          // Commands sent while the master is unreachable wait for the new one
          // (waiting-requests.ts): those in flight at the kill, a pipeline's worth or two sent
          // before the proxy saw the connection close, are all that fail.
          expect(kinds.filter((k) => k !== CONNECTION_LOST)).to.deep.equal([]);
          expect(t.errors.length, `${t.client}: failed commands`).to.be.at.most(8);
          expect(t.wrong, `${t.client}: replies no order explains`).to.deep.equal([]);
          expect(t.drops.length, `${t.client}: the counter went back more than once`).to.be.at.most(1);
          for (const drop of t.drops)
            expect(drop, `${t.client}: lost beyond the kill window`).to.be.at.most(inWindow);
          expect(Number(await now.call("GET", writers[i].key)), `${t.client}'s counter`).to.equal(t.last);
          expect(
            t.ackedAt.filter((at) => at > switchedAt).length,
            `${t.client} wrote after the switch`,
          ).to.be.above(10);
        }
      } finally {
        for (const io of ios) io.disconnect();
        for (const nr of nrs) await nr.disconnect().catch(() => {});
      }
    });
  }
});

/** How long a command sent through the proxy takes to be answered, and the reply or the error's text. */
async function timed(send: () => Promise<unknown>): Promise<{ ms: number; reply: string }> {
  const start = Date.now();
  const reply = await send().then(
    (value) => String(value),
    (err: Error) => err.message,
  );
  return { ms: Date.now() - start, reply };
}

describe("Redis Sentinel: commands wait for an unreachable master up to --cluster-retry-timeout", function () {
  this.timeout(60_000);
  const RETRY_MS = 800;
  const setup = useSentinelProxy({ each: true, proxy: { clusterRetryTimeoutMs: RETRY_MS } });

  /** The master SIGKILLed with every sentinel gone first, so that no replica is promoted. */
  async function killWithoutFailover(d: SentinelDeployment): Promise<RedisNode> {
    const master = await d.master();
    for (const s of d.sentinels) await s.kill();
    await master.kill();
    // The proxy sees its connections close: nothing is in flight when the commands below go.
    await sleep(200);
    return master;
  }

  for (let round = 1; round <= 2; round++) {
    it(`round ${round}: no promotion: a command fails "unavailable" once it waited the timeout, not before; one sent later waits its own; INFO counts them waiting`, async () => {
      const { d, proxy } = setup;
      const io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      io.on("error", () => {});
      const watcher = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      watcher.on("error", () => {});
      try {
        expect(await io.set("k", "1")).to.equal("OK");
        await killWithoutFailover(d);
        const first = timed(() => io.incr("k"));
        await sleep(300);
        const secondSent = timed(() => io.get("k"));
        // INFO is the proxy's own: answered while the two commands wait, which it counts (with
        // the proxy's own polls of its stored libraries and sessions, which wait too).
        const info = await watcher.info("proxy");
        expect(info).to.match(/^sentinel_master:.*status=down,/m);
        expect(Number(/^sentinel_master:.*,waiting=(\d+)/m.exec(info)?.[1])).to.be.at.least(2);
        const second = await secondSent;
        const one = await first;
        console.log(`      failed after ${one.ms} and ${second.ms} ms: ${one.reply}`);
        for (const { ms, reply } of [one, second]) {
          expect(reply).to.match(/^ERR upstream 127\.0\.0\.1:\d+ unavailable: /);
          expect(ms).to.be.at.least(RETRY_MS);
          // Failed at the next 50 ms tick past the deadline; the margin is for a loaded machine.
          expect(ms).to.be.below(RETRY_MS + 1000);
        }
      } finally {
        io.disconnect();
        watcher.disconnect();
      }
    });
  }

  for (let round = 1; round <= 2; round++) {
    it(`round ${round}: the same master back within the timeout: the commands that waited are answered by it, in order`, async () => {
      const { d, proxy } = setup;
      const io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      io.on("error", () => {});
      try {
        expect(await io.set("k", "1")).to.equal("OK");
        const master = await killWithoutFailover(d);
        const writes = [timed(() => io.incr("n")), timed(() => io.incr("n")), timed(() => io.get("n"))];
        await master.restart();
        const replies = await Promise.all(writes);
        console.log(`      answered after ${replies.map((r) => r.ms).join(", ")} ms`);
        expect(replies.map((r) => r.reply)).to.deep.equal(["1", "2", "2"]);
      } finally {
        io.disconnect();
      }
    });
  }
});

describe("Redis Sentinel handover: what is sent on and what fails, held behind one write", function () {
  this.timeout(120_000);
  const setup = useSentinelProxy();

  it("a pipeline held by the failover's pause: the write and the read behind it are answered by the new master, in order; a PUBLISH held behind the write fails (it ran on the demoted master); a script behind it runs on the new master", async () => {
    const { d, proxy } = setup;
    const io = new Redis({ port: proxy.port, host: "127.0.0.1" });
    io.on("error", () => {});
    try {
      expect(await io.set("held:k", "10")).to.equal("OK");
      const old = await d.master();
      // What follows is sent once the old master holds writes: all of it waits behind the INCR.
      await failoverHolding(d, io);
      const replies = await io
        .pipeline()
        .incr("held:k")
        .get("held:k")
        .call("OBJECT", "ENCODING", "held:k")
        .publish("held:ch", "m")
        .eval("return redis.call('incr', KEYS[1])", 1, "held:k")
        .incr("held:k")
        .get("held:k")
        .exec();
      const now = await d.waitForNewMaster(old);
      const seen = (replies ?? []).map(([err, value]) => (err ? `error: ${(err as Error).message}` : value));
      // The EVAL takes the router's path (the script cache sees it), which sends it once the
      // replies before it are in: to the new master, after the INCR sent on.
      expect(seen).to.deep.equal([11, "11", "int", "error: ERR upstream connection lost", 12, 13, "13"]);
      expect(await now.call("GET", "held:k")).to.equal("13");
      const handovers = topologyOf(setup).handovers;
      expect(handovers).to.have.length(1);
      expect(handovers[0]).to.deep.equal({ passed: 0, moved: 3, failed: 1 });
    } finally {
      io.disconnect();
    }
  });
});

describe("Redis Sentinel handover: a PUBLISH the pause holds, first on its connection", function () {
  this.timeout(120_000);
  const setup = useSentinelProxy();

  it("fails with connection lost: released on the demoted master it runs there, where the new master's subscribers miss it, and its reply proves nothing", async () => {
    const { d, proxy } = setup;
    const io = new Redis({ port: proxy.port, host: "127.0.0.1" });
    io.on("error", () => {});
    try {
      expect(await io.set("pub:k", "1")).to.equal("OK");
      const old = await d.master();
      await failoverHolding(d, io);
      const published = io.publish("held:solo", "m").then(
        (n) => `delivered to ${n}`,
        (err: Error) => `error: ${err.message}`,
      );
      await d.waitForNewMaster(old);
      expect(await published).to.equal("error: ERR upstream connection lost");
      const handovers = topologyOf(setup).handovers;
      expect(handovers).to.have.length(1);
      expect(handovers[0]).to.deep.equal({ passed: 0, moved: 0, failed: 1 });
    } finally {
      io.disconnect();
    }
  });
});

describe("Redis Sentinel handover: a TFCALL whose writes the pause holds", function () {
  this.timeout(120_000);
  const setup = useSentinelProxy();

  it("TFCALLs sent while the old master holds writes: their INCRs are sent on to the new master, each call answers once, in order", async () => {
    const { d, proxy } = setup;
    const io = new Redis({ port: proxy.port, host: "127.0.0.1" });
    io.on("error", () => {});
    try {
      await io.call(
        "TFUNCTION",
        "LOAD",
        "#!js api_version=1.0 name=held\nredis.registerFunction('bump', function(client){ return client.call('incr', 'tf:held'); });",
      );
      expect(await io.call("TFCALL", "held.bump", "0")).to.equal(1);
      const old = await d.master();
      await failoverHolding(d, io);
      const calls = await Promise.allSettled([1, 2, 3].map(() => io.call("TFCALL", "held.bump", "0")));
      const now = await d.waitForNewMaster(old);
      expect(calls.map((c) => (c.status === "fulfilled" ? c.value : String(c.reason)))).to.deep.equal([
        2, 3, 4,
      ]);
      expect(await now.call("GET", "tf:held")).to.equal("4");
      expect(topologyOf(setup).handovers[0]?.moved, "INCRs sent on").to.be.at.least(1);
    } finally {
      io.disconnect();
    }
  });
});

describe("UpstreamConnection: requests kept for a handover, and held back", function () {
  let redis: RedisNode | undefined;

  before(async () => {
    redis = await startRedis();
  });

  after(async () => {
    await redis?.stop();
  });

  it("handOver() gives each unanswered request its own bytes and database, and its reply goes to the sink given for it; hold() sends nothing until release(), in order", async () => {
    const address = { host: "127.0.0.1", port: redis!.port };
    const conn = new UpstreamConnection(address, { connectTimeoutMs: 2000, keepRequests: true });
    const control = new UpstreamConnection(address, { connectTimeoutMs: 2000 });
    try {
      expect(await conn.call(["PING"])).to.equal("PONG");
      expect(await control.call(["CLIENT", "PAUSE", "5000", "WRITE"])).to.equal("OK");
      const incr = encodeCommand(["INCR", "kept:n"]);
      const get = encodeCommand(["GET", "kept:n"]);
      const answered: string[] = [];
      const sink = (name: string): ReplySink => ({
        reply: (data) => answered.push(`${name} to the client: ${data.toString().trim()}`),
        fail: (message) => answered.push(`${name} failed: ${message}`),
      });
      // A SELECT goes in front (database 2); the pipeline is held behind its INCR.
      conn.sendMany(Buffer.concat([incr, get]), [sink("incr"), sink("get")], 2);
      conn.send(encodeCommand(["SET", "kept:s", "v"]), sink("set"), 2);
      await sleep(100);
      expect(answered).to.deep.equal([]);
      const pending = conn.handOver((request) => ({
        reply: (data) =>
          answered.push(`${commandName(request.command!)} to the handover: ${data.toString().trim()}`),
        fail: () => {},
      }));
      expect(pending?.map((p) => [p.command?.toString(), p.db])).to.deep.equal([
        [incr.toString(), 2],
        [get.toString(), 2],
        [encodeCommand(["SET", "kept:s", "v"]).toString(), 2],
      ]);
      expect(await control.call(["CLIENT", "UNPAUSE"])).to.equal("OK");
      await sleep(100);
      expect(answered).to.deep.equal([
        "incr to the handover: :1",
        "get to the handover: $1\r\n1",
        "set to the handover: +OK",
      ]);

      const held = new UpstreamConnection(address, { connectTimeoutMs: 2000 });
      try {
        held.hold();
        const replies: string[] = [];
        const first = held.call(["INCR", "kept:h"]).then((r) => replies.push(`first ${String(r)}`));
        const second = held.call(["INCR", "kept:h"]).then((r) => replies.push(`second ${String(r)}`));
        await sleep(100);
        expect(held.inFlight).to.equal(2);
        expect(replies).to.deep.equal([]);
        expect(await redis!.call("EXISTS", "kept:h")).to.equal(0);
        held.release();
        await Promise.all([first, second]);
        expect(replies).to.deep.equal(["first 1", "second 2"]);
      } finally {
        held.close();
      }
    } finally {
      await control.call(["CLIENT", "UNPAUSE"]).catch(() => {});
      conn.close();
      control.close();
    }
  });
});

describe("Redis Sentinel handover: --threads 2", function () {
  this.timeout(120_000);
  let d: SentinelDeployment;
  let proxy: ChildProxy;
  before(async function () {
    this.timeout(60_000);
    d = await startSentinels();
    proxy = await ChildProxy.start({
      upstreams: [],
      args: [
        "--threads",
        "2",
        "--sentinel",
        d.sentinels.map((s) => `127.0.0.1:${s.port}`).join(","),
        "--sentinel-master",
        d.name,
      ],
    });
  });
  after(async () => {
    await proxy?.stop();
    await d?.stop();
  });

  it("no hand-over (the first thread's UNPAUSE would release the other's held writes as READONLY): writers on both threads see at most connection-lost errors, counters equal the acknowledged INCRs give or take the failed ones", async () => {
    const clients = Array.from({ length: 8 }, () => {
      const c = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      c.on("error", () => {});
      return c;
    });
    try {
      const old = await d.master();
      let stop = false;
      const tallies = clients.map((c, i) => {
        const tally = { key: `threads:${i}`, acked: 0, errors: [] as string[] };
        const done = (async () => {
          while (!stop) {
            try {
              await c.incr(tally.key);
              tally.acked++;
            } catch (err) {
              tally.errors.push((err as Error).message);
              await sleep(20);
            }
          }
        })();
        return { tally, done };
      });
      await sleep(300);
      expect(await d.sentinels[0].call("SENTINEL", "FAILOVER", d.name)).to.equal("OK");
      const now = await d.waitForNewMaster(old);
      await sleep(1500);
      stop = true;
      await Promise.all(tallies.map((t) => t.done));
      for (const { tally } of tallies) {
        for (const e of tally.errors)
          expect(e, tally.key).to.match(/^ERR upstream (connection lost|127\.0\.0\.1:\d+ )/);
        const value = Number(await now.call("GET", tally.key));
        expect(
          value,
          `${tally.key}: ${tally.acked} acknowledged, ${tally.errors.length} failed`,
        ).to.be.within(tally.acked, tally.acked + tally.errors.length);
      }
    } finally {
      for (const c of clients) c.disconnect();
    }
  });
});
