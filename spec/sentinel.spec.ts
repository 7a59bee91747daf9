import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { Redis } from "ioredis";
import { createClient } from "redis";
import {
  freePort,
  startProxy,
  startRedis,
  type RedisNode,
  type RespValue,
  type RunningProxy,
} from "./harness/index.js";
import {
  sentinelOptions,
  startSentinels,
  useSentinelProxy,
  type SentinelDeployment,
} from "./harness/sentinel.js";
import { parseArgs, UsageError } from "../src/cli.js";
import {
  configEpochOf,
  masterStateOf,
  parseSentinelEvent,
  peersOf,
  rankAnswers,
  type SentinelAnswer,
} from "../src/upstream/sentinel-replies.js";
import { sleep } from "./support/polling.js";
import { metricsPage, sample } from "./support/metrics.js";
import type { ProxyContext } from "../src/client/context.js";
import { mergeNotifyFlags } from "../src/gears/events/keyspace-source.js";
import { UpstreamNode } from "../src/upstream/node.js";

/**
 * --sentinel: the proxy finds its master through Redis Sentinel and follows its failovers.
 * Real processes: a master, a replica and three sentinels (quorum 2) from spec/harness/sentinel.ts.
 */

const CLI = path.join(fileURLToPath(new URL("../../", import.meta.url)), "dist/src/cli.js");

/** Writes `${prefix}${n}` one after another until stopped; keeps the keys whose SET was acknowledged. */
function writer(set: (key: string) => Promise<unknown>, prefix: string) {
  const acked: string[] = [];
  const failures: string[] = [];
  /** When each acknowledged write was sent and acknowledged (ms), to say when a lost one was. */
  const times = new Map<string, [number, number]>();
  let stopped = false;
  let n = 0;
  const done = (async () => {
    while (!stopped) {
      const key = `${prefix}${n++}`;
      const sent = Date.now();
      try {
        await set(key);
        acked.push(key);
        times.set(key, [sent, Date.now()]);
      } catch (err) {
        failures.push(err instanceof Error ? err.message : String(err));
        await sleep(20);
      }
    }
  })();
  return {
    acked,
    failures,
    times,
    async stop(): Promise<void> {
      stopped = true;
      await done;
    },
  };
}

/** Runs `check` until it passes (its last failure is thrown after `timeoutMs`). */
async function passes(check: () => Promise<unknown>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}

/** The keys of `keys` that `node` does not hold. */
async function missingOn(node: RedisNode, keys: string[]): Promise<string[]> {
  const direct = new Redis({ port: node.port, host: node.host, lazyConnect: true });
  try {
    const missing: string[] = [];
    for (let i = 0; i < keys.length; i += 500) {
      const chunk = keys.slice(i, i + 500);
      const values = await direct.mget(...chunk);
      values.forEach((v, j) => {
        if (v === null) missing.push(chunk[j]);
      });
    }
    return missing;
  } finally {
    direct.disconnect();
  }
}

/** The master the proxy's INFO names (upstream0:addr=...). */
async function proxyMasterPort(io: Redis): Promise<number> {
  const info = await io.info("proxy");
  return Number(/^upstream0:addr=[^,]*:(\d+),/m.exec(info)?.[1]);
}

describe("Redis Sentinel: reading the sentinels' replies and events", () => {
  it("events about a master, a replica and +switch-master name the master they are about", () => {
    expect(parseSentinelEvent("+switch-master", "mymaster 127.0.0.1 6379 127.0.0.1 6380")).to.deep.equal({
      kind: "+switch-master",
      master: "mymaster",
      masterId: "127.0.0.1:6379",
      to: { host: "127.0.0.1", port: 6380 },
    });
    expect(
      parseSentinelEvent("+selected-slave", "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379"),
    ).to.deep.equal({ kind: "+selected-slave", master: "mymaster", masterId: "127.0.0.1:6379" });
    expect(
      parseSentinelEvent("-failover-abort-no-good-slave", "master mymaster 127.0.0.1 6379"),
    ).to.deep.equal({
      kind: "-failover-abort-no-good-slave",
      master: "mymaster",
      masterId: "127.0.0.1:6379",
    });
    expect(parseSentinelEvent("+switch-master", "mymaster 127.0.0.1")).to.equal(null);
  });

  it("--sentinel takes a list or repeats; --sentinel-master or --sentinel-password alone is refused", () => {
    const config = parseArgs(
      [
        "--sentinel",
        "127.0.0.1:26379,127.0.0.1:26380",
        "--sentinel",
        "10.0.0.9:26381",
        "--sentinel-master",
        "m",
      ],
      {},
    );
    expect(config.sentinels).to.deep.equal([
      { host: "127.0.0.1", port: 26379 },
      { host: "127.0.0.1", port: 26380 },
      { host: "10.0.0.9", port: 26381 },
    ]);
    expect(config.sentinelMaster).to.equal("m");
    expect(config.upstreams).to.deep.equal([]);
    expect(() => parseArgs(["--sentinel-master", "m"], {})).to.throw(UsageError, /needs --sentinel/);
    expect(() => parseArgs(["--sentinel-password", "p"], {})).to.throw(
      UsageError,
      /--sentinel-password needs --sentinel/,
    );
  });

  it("SENTINEL MASTER's down-after-milliseconds and failover flag, and SENTINEL SENTINELS' peers, are read", () => {
    const master = ["name", "m", "flags", "master,failover_in_progress", "down-after-milliseconds", "30000"];
    expect(masterStateOf(master.map((x) => Buffer.from(x)))).to.deep.equal({
      downAfterMs: 30000,
      failingOver: true,
    });
    expect(masterStateOf(["flags", "master"])).to.deep.equal({ downAfterMs: 0, failingOver: false });
    expect(
      peersOf([
        ["name", "abc", "ip", "10.0.0.2", "port", "26379", "flags", "sentinel"],
        ["ip", "10.0.0.3", "port", "x"],
        ["ip", "10.0.0.4", "port", "26380"],
      ]),
    ).to.deep.equal([
      { host: "10.0.0.2", port: 26379 },
      { host: "10.0.0.4", port: 26380 },
    ]);
  });

  it("answers are ranked by config epoch, each address once, and those older than the epoch followed are left out", () => {
    const a = { host: "127.0.0.1", port: 1 };
    const b = { host: "127.0.0.1", port: 2 };
    const answers: SentinelAnswer[] = [
      { sentinel: "s1", error: "refused" },
      { sentinel: "s2", address: a, epoch: 0 },
      { sentinel: "s3", address: b, epoch: 1 },
      { sentinel: "s4", address: b, epoch: 1 },
      { sentinel: "s5", address: null },
    ];
    expect(rankAnswers(answers, 0)).to.deep.equal([
      { address: b, epoch: 1 },
      { address: a, epoch: 0 },
    ]);
    expect(rankAnswers(answers, 1)).to.deep.equal([{ address: b, epoch: 1 }]);
    expect(
      configEpochOf([Buffer.from("name"), Buffer.from("m"), Buffer.from("config-epoch"), Buffer.from("7")]),
    ).to.equal(7);
  });
});

describe("Redis Sentinel: start", function () {
  this.timeout(60_000);
  let d: SentinelDeployment | undefined;
  let proxy: RunningProxy | undefined;
  const clients: Redis[] = [];

  before(async () => {
    d = await startSentinels();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.disconnect();
    await proxy?.close();
    proxy = undefined;
  });

  after(async function () {
    this.timeout(30_000);
    await d?.stop();
  });

  it("the first sentinel listed being down does not matter: the others name the master", async () => {
    const dead = await freePort();
    proxy = await startProxy([], sentinelOptions(d!, [{ port: dead }]));
    const io = new Redis({ port: proxy.port, host: "127.0.0.1" });
    clients.push(io);
    expect(await io.set("start:k", "v")).to.equal("OK");
    const master = await d!.master();
    expect(await master.call("GET", "start:k")).to.equal("v");
    expect(await proxyMasterPort(io)).to.equal(master.port);
  });

  it("a name no sentinel monitors: the start fails at once, saying so", async () => {
    const started = Date.now();
    const err = await startProxy([], { ...sentinelOptions(d!), sentinelMaster: "nosuch" }).then(
      () => null,
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
    expect(err).to.match(/no sentinel knows a master named 'nosuch'/);
    expect(Date.now() - started).to.be.below(5000);
  });

  it("no sentinel reachable: the start retries as for an unreachable --upstream, then fails naming the sentinels", async () => {
    const ports = [await freePort(), await freePort()];
    const err = await startProxy([], {
      sentinels: ports.map((port) => ({ host: "127.0.0.1", port })),
      sentinelMaster: "mymaster",
    }).then(
      () => null,
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
    expect(err).to.match(/cannot find master 'mymaster' through the sentinels/);
    expect(err).to.include(`127.0.0.1:${ports[0]}`).and.to.include(`127.0.0.1:${ports[1]}`);
  });

  it("the command line: --sentinel without --sentinel-master, or beside --upstream, is refused at start (exit 2)", async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
        const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "ignore", "pipe"] });
        let stderr = "";
        child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
        child.once("error", reject);
        child.once("close", (code) => resolve({ code, stderr }));
      });
    const sentinel = `127.0.0.1:${d!.sentinels[0].port}`;
    const noName = await run(["--port", "0", "--sentinel", sentinel]);
    expect(noName.code).to.equal(2);
    expect(noName.stderr).to.include("--sentinel needs --sentinel-master");
    const both = await run([
      "--port",
      "0",
      "--sentinel",
      sentinel,
      "--sentinel-master",
      "m",
      "--upstream",
      "127.0.0.1:1",
    ]);
    expect(both.code).to.equal(2);
    expect(both.stderr).to.include("--sentinel and --upstream exclude each other");
  });

  it("the gears-proxy process with --sentinel and --threads 2: no embedded redis-server, each thread serves the sentinels' master", async () => {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [
        CLI,
        "--port",
        String(port),
        "--threads",
        "2",
        "--sentinel",
        d!.sentinels.map((s) => `127.0.0.1:${s.port}`).join(","),
        "--sentinel-master",
        d!.name,
        "--data-dir",
        "/nonexistent/gears-proxy-sentinel",
        "--log-format",
        "json",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const clients: Redis[] = [];
    try {
      await passes(async () => {
        expect(output.match(/in front of master 'mymaster' of sentinels/g) ?? []).to.have.length(2);
      }, 15_000);
      const master = await d!.master();
      // Several connections, so both threads serve some.
      for (let i = 0; i < 4; i++) {
        const io = new Redis({ port, host: "127.0.0.1" });
        clients.push(io);
        expect(await io.set(`threads:${i}`, "v")).to.equal("OK");
        expect(await master.call("GET", `threads:${i}`)).to.equal("v");
      }
      expect(output).to.include('"embedded":false').and.not.include('"embedded":true');
    } finally {
      for (const c of clients) c.disconnect();
      child.kill("SIGTERM");
      await exited;
    }
  });
});

/**
 * Redis replicates asynchronously: a master killed between acknowledging a write and sending it
 * to its replica loses it, whoever sent it (on a loaded machine the process may be descheduled
 * between the two). A write is excused only if it was sent this shortly before the kill.
 */
const KILL_WINDOW_MS = 50;

/**
 * Both clients' writes through the proxy across a failover `fail` causes; every acknowledged
 * one is on the new master. `fail` resolves with the moment it sent the master SIGKILL, or
 * null for a failover the sentinels run while the master lives.
 */
async function acrossFailover(
  d: SentinelDeployment,
  proxy: RunningProxy,
  fail: (old: RedisNode) => Promise<number | null>,
): Promise<void> {
  const io = new Redis({ port: proxy.port, host: "127.0.0.1" });
  io.on("error", () => {});
  const nr = createClient({ socket: { port: proxy.port, host: "127.0.0.1" } });
  nr.on("error", () => {});
  await nr.connect();
  try {
    expect(await io.set("before", "io")).to.equal("OK");
    expect(await nr.get("before")).to.equal("io");
    const old = await d.master();
    // A client blocked on the old master gets an error, not a hang.
    const blocked = new Redis({ port: proxy.port, host: "127.0.0.1" });
    blocked.on("error", () => {});
    const blpop = blocked.blpop("nothing", 0).then(
      () => "answered",
      (err: unknown) => (err instanceof Error ? err.message : String(err)),
    );
    const writers = [writer((k) => io.set(k, "v"), "io:"), writer((k) => nr.set(k, "v"), "nr:")];
    await sleep(300);
    const started = Date.now();
    const killedAt = await fail(old);
    const now = await d.waitForNewMaster(old);
    expect(now).to.not.equal(old);
    // Writes through the proxy succeed again, and land on the new master.
    await passes(async () => {
      expect(await io.set("after:io", String(started))).to.equal("OK");
      expect(await nr.set("after:nr", String(started))).to.equal("OK");
      expect(await now.call("GET", "after:io")).to.equal(String(started));
      expect(await now.call("GET", "after:nr")).to.equal(String(started));
    }, 10_000);
    const recovered = Date.now() - started;
    const counts = writers.map((w) => w.acked.length);
    await sleep(500);
    for (const w of writers) await w.stop();
    // The writers went on after the switch, and no write the proxy acknowledged is lost.
    writers.forEach((w, i) => expect(w.acked.length, "writes after the switch").to.be.above(counts[i]));
    for (const w of writers) {
      const lost = await missingOn(now, w.acked);
      const inKillWindow = (key: string): boolean => {
        const sent = w.times.get(key)![0];
        return killedAt !== null && sent <= killedAt && sent > killedAt - KILL_WINDOW_MS;
      };
      const missing = lost.filter((k) => !inKillWindow(k));
      const excused = lost.filter(inKillWindow);
      if (excused.length > 0) {
        const before = excused.map((k) => killedAt! - w.times.get(k)![0]).join(", ");
        console.log(
          `      lost by Redis as its master died: ${excused.join(", ")} (sent ${before} ms before the kill)`,
        );
      }
      const when = lost
        .map((k) =>
          w.times
            .get(k)!
            .map((t) => t - started)
            .join(".."),
        )
        .join(", ");
      expect(
        missing,
        `lost, sent..acknowledged in ms from the failover: ${when} (killed at ${killedAt === null ? "-" : killedAt - started})`,
      ).to.deep.equal([]);
    }
    expect(await proxyMasterPort(io)).to.equal(now.port);
    expect(await blpop).to.match(/upstream connection lost/);
    blocked.disconnect();
    expect(recovered, "ms from the failover to writes landing on the new master").to.be.below(15_000);
  } finally {
    io.disconnect();
    await nr.disconnect().catch(() => {});
  }
}

describe("Redis Sentinel: following a failover (ioredis and node-redis, default options)", function () {
  this.timeout(90_000);
  const setup = useSentinelProxy({ each: true });

  it("SENTINEL FAILOVER: writes succeed again within seconds, on the new master, none acknowledged lost", async () => {
    const { d, proxy } = setup;
    await acrossFailover(d, proxy, async () => {
      expect(await d.sentinels[0].call("SENTINEL", "FAILOVER", d.name)).to.equal("OK");
      return null;
    });
  });

  it("the master killed (SIGKILL), a sentinel first: once the others promote the replica, writes land there, none acknowledged lost but those Redis had not replicated as it died", async () => {
    const { d, proxy } = setup;
    await acrossFailover(d, proxy, async (old) => {
      // The proxy's events and answers come from the sentinels left.
      await d.sentinels[0].kill();
      const killedAt = Date.now();
      await old.kill();
      return killedAt;
    });
  });
});

describe("Redis Sentinel: following a failover led by a sentinel the proxy was not told of", function () {
  this.timeout(90_000);
  // Only the third sentinel listed; the first leads the failover.
  const setup = useSentinelProxy({
    each: true,
    proxy: (d) => ({ sentinels: [{ host: "127.0.0.1", port: d.sentinels[2].port }] }),
  });

  it("one sentinel listed, not the one leading the failover: the proxy learns the others and holds writes from the failover's start: none acknowledged lost", async () => {
    const { d, proxy } = setup;
    // Subscribed to the leader too, which it was not told of: its 11 event channels (CLIENT LIST sub=11).
    await passes(
      async () => expect(String(await d.sentinels[0].call("CLIENT", "LIST"))).to.match(/ sub=11 /),
      10_000,
    );
    await acrossFailover(d, proxy, async () => {
      expect(await d.sentinels[0].call("SENTINEL", "FAILOVER", d.name)).to.equal("OK");
      return null;
    });
  });
});

describe("Redis Sentinel: gears across a failover", function () {
  this.timeout(90_000);
  const setup = useSentinelProxy();
  let io: Redis | undefined;

  before(() => {
    io = new Redis({ port: setup.proxy.port, host: "127.0.0.1" });
    io.on("error", () => {});
  });

  after(() => io?.disconnect());

  it("a KeysReader registration keeps firing for writes through the proxy, a T&F library stays callable, subscribers hear again", async () => {
    const c = io!;
    // Subscribers at default options: the proxy drops them when their upstream link dies, they
    // reconnect and subscribe again, on the new master.
    const heard: string[] = [];
    const sub = new Redis({ port: setup.proxy.port, host: "127.0.0.1" });
    sub.on("error", () => {});
    sub.on("message", (_channel: string, message: string) => heard.push(`io:${message}`));
    await sub.subscribe("news");
    const nsub = createClient({ socket: { port: setup.proxy.port, host: "127.0.0.1" } });
    nsub.on("error", () => {});
    await nsub.connect();
    await nsub.subscribe("news", (message) => heard.push(`nr:${message}`));
    await c.call(
      "RG.EXECUTE",
      "GB().filter(x => x.key.startsWith('g:')).foreach(x => execute('SADD', 'seen', x.key)).register()",
    );
    await c.call(
      "TFUNCTION",
      "LOAD",
      "#!js api_version=1.0 name=lib\nredis.registerFunction('bump', function(client){ return client.call('incr', 'tf:n'); });",
    );
    await c.set("g:before", "1");
    await passes(async () => expect(await c.sismember("seen", "g:before")).to.equal(1));
    expect(await c.call("TFCALL", "lib.bump", "0")).to.equal(1);

    const old = await setup.d.master();
    expect(await setup.d.sentinels[1].call("SENTINEL", "FAILOVER", setup.d.name)).to.equal("OK");
    const now = await setup.d.waitForNewMaster(old);
    await passes(async () => expect(await proxyMasterPort(c)).to.equal(now.port), 10_000);

    await passes(async () => expect(await c.set("g:after", "1")).to.equal("OK"), 10_000);
    await passes(async () => expect(await now.call("SISMEMBER", "seen", "g:after")).to.equal(1), 10_000);
    expect(await c.call("TFCALL", "lib.bump", "0")).to.equal(2);
    expect(await now.call("GET", "tf:n")).to.equal("2");

    await passes(async () => {
      await c.publish("news", "after");
      expect(heard).to.include("io:after").and.to.include("nr:after");
    }, 15_000);
    sub.disconnect();
    await nsub.disconnect().catch(() => {});
  });
});

describe("Redis Sentinel: a failover that aborts", function () {
  this.timeout(60_000);
  // A short failover-timeout: the abort comes well before the proxy's 5 s hold would end.
  const setup = useSentinelProxy({ deployment: { failoverTimeoutMs: 1500 } });

  it("the replica never answers: writes held on the master from the failover's start resume at the abort, on it", async () => {
    const io = new Redis({ port: setup.proxy.port, host: "127.0.0.1" });
    io.on("error", () => {});
    const [master, replica] = setup.d.nodes;
    try {
      expect(await io.set("abort:before", "1")).to.equal("OK");
      process.kill(replica.pid, "SIGSTOP");
      const started = Date.now();
      expect(await setup.d.sentinels[0].call("SENTINEL", "FAILOVER", setup.d.name)).to.equal("OK");
      await sleep(400);
      const sent = Date.now();
      expect(await io.set("abort:held", "1")).to.equal("OK");
      const held = Date.now() - sent;
      const resumed = Date.now() - started;
      // Held (the failover had started), then released by the abort, not by the hold's 5 s end.
      expect(held, "ms the write was held").to.be.above(300);
      expect(resumed, "ms from the failover to the write's reply").to.be.below(4500);
      expect(await master.call("GET", "abort:held")).to.equal("1");
      expect(await proxyMasterPort(io)).to.equal(master.port);
    } finally {
      process.kill(replica.pid, "SIGCONT");
      io.disconnect();
    }
  });
});

describe("Redis Sentinel: replicas prepared, the old master retired, what INFO and /metrics say", function () {
  this.timeout(90_000);
  const setup = useSentinelProxy({ proxy: { metricsPort: 0 } });
  let io: Redis | undefined;

  before(() => {
    io = new Redis({ port: setup.proxy.port, host: "127.0.0.1" });
    io.on("error", () => {});
  });

  after(() => io?.disconnect());

  /** INFO proxy's sentinel_master line, as fields. */
  async function sentinelLine(): Promise<Record<string, string>> {
    const info = await io!.info("proxy");
    const line = /^sentinel_master:(.*)$/m.exec(info)?.[1]?.trim();
    expect(line, "INFO proxy has a sentinel_master line").to.be.a("string");
    return Object.fromEntries(line!.split(",").map((f) => f.split("=") as [string, string]));
  }

  const SWITCHES = `gears_proxy_sentinel_switches_total{master="mymaster"}`;

  it("a KeysReader registration: the replica gets the keyevent flags from the start; after SENTINEL FAILOVER, INFO and /metrics name the switch, the old node opens no connection again, a write on the new master reaches the registration", async () => {
    const c = io!;
    const [first, replica] = setup.d.nodes;
    const topology = (setup.proxy.server as unknown as { context: ProxyContext }).context.router.topology;
    expect(topology.followsFailovers).to.equal(true);

    expect(await sentinelLine()).to.deep.include({
      name: "mymaster",
      status: "ok",
      addr: `127.0.0.1:${first.port}`,
      switches: "0",
      sentinels: "3",
    });
    expect(sample(await metricsPage(setup.proxy), SWITCHES)).to.equal(0);

    await c.call(
      "RG.EXECUTE",
      "GB().filter(x => x.key.startsWith('r:')).foreach(x => execute('SADD', 'r-seen', x.key)).register()",
    );
    // Set on the replica before any failover, so a promoted replica notifies from its first write.
    await passes(async () => {
      const flags = await replica.call("CONFIG", "GET", "notify-keyspace-events");
      const current = String((flags as RespValue[])[1]);
      expect(mergeNotifyFlags(current), `replica's notify-keyspace-events: '${current}'`).to.equal(current);
    }, 10_000);
    await c.set("r:before", "1");
    await passes(async () => expect(await c.sismember("r-seen", "r:before")).to.equal(1));

    const oldNode = topology.masters()[0];
    expect(oldNode.id).to.equal(`127.0.0.1:${first.port}`);
    // The replica is reached by its own node (opened by the flags' CONFIG calls), not the master's.
    const replicaNode = topology.nodeAt("127.0.0.1", replica.port);
    expect(replicaNode).to.not.equal(oldNode);
    expect(replicaNode.connectionCount).to.be.at.least(1);
    expect(await setup.d.sentinels[0].call("SENTINEL", "FAILOVER", setup.d.name)).to.equal("OK");
    const now = await setup.d.waitForNewMaster(first);
    expect(now).to.equal(replica);
    await passes(async () => expect(await proxyMasterPort(c)).to.equal(now.port), 10_000);

    const line = await sentinelLine();
    expect(line).to.deep.include({ addr: `127.0.0.1:${now.port}`, switches: "1" });
    expect(Number(line.epoch)).to.be.above(0);
    expect(sample(await metricsPage(setup.proxy), SWITCHES)).to.equal(1);

    // The demoted master's node is retired: a reference kept to it opens no connection there.
    const stale = await oldNode.call(["PING"]).then(
      (reply) => `answered ${String(reply)}`,
      (err: Error) => err.message,
    );
    expect(stale).to.match(/no longer the master/);
    expect(oldNode.connectionCount).to.equal(0);
    expect(oldNode.control()).to.equal(null);
    // The replica's node is closed once it is the master: the master's node serves that address.
    expect(replicaNode.connectionCount).to.equal(0);
    expect(topology.nodeAt("127.0.0.1", now.port)).to.equal(topology.masters()[0]);
    // The demoted master is still reachable as a replica, through a node of its own.
    const demoted = topology.nodeAt("127.0.0.1", first.port);
    expect(demoted).to.not.equal(oldNode);
    expect(await demoted.call(["PING"])).to.equal("PONG");

    // Once the proxy listens on the new master (its keyevent pattern), a write made there
    // directly, not through the proxy, reaches the registration.
    await passes(async () => expect(Number(await now.call("PUBSUB", "NUMPAT"))).to.be.at.least(1), 10_000);
    expect(await now.call("SET", "r:direct", "1")).to.equal("OK");
    await passes(async () => expect(await now.call("SISMEMBER", "r-seen", "r:direct")).to.equal(1), 10_000);
  });
});

describe("Redis Sentinel: a master demoted behind the proxy's back (READONLY)", function () {
  this.timeout(60_000);
  const setup = useSentinelProxy();
  let other: RedisNode | undefined;

  before(async () => {
    other = await startRedis();
  });

  after(async () => {
    await other?.stop();
  });

  it("a write answered -READONLY (its outcome watched by the gears journal) makes the topology ask the sentinels at once; other errors do not", async () => {
    const io = new Redis({ port: setup.proxy.port, host: "127.0.0.1" });
    io.on("error", () => {});
    const master = setup.d.nodes[0];
    const topology = (setup.proxy.server as unknown as { context: ProxyContext }).context.router.topology;
    // Counted when asked for; the periodic check and the failover events do not go through refresh().
    let refreshes = 0;
    const refresh = topology.refresh.bind(topology);
    topology.refresh = () => {
      refreshes++;
      return refresh();
    };
    try {
      // A registration: the gears journal follows the writes, and reads their replies.
      await io.call("RG.EXECUTE", "GB().foreach(x => {}).register()");
      await io.set("ro:k", "v");
      await io.set("ro:w", "v");
      const wrongType = await io.lpush("ro:w", "x").then(
        () => "",
        (e: Error) => e.message,
      );
      expect(wrongType).to.match(/^WRONGTYPE/);
      expect(refreshes, "refreshes after a success and a WRONGTYPE").to.equal(0);

      // The master made a replica of another server, without the sentinels' doing.
      expect(await master.call("REPLICAOF", "127.0.0.1", String(other!.port))).to.equal("OK");
      const err = await io.set("ro:k2", "v").then(
        () => "",
        (e: Error) => e.message,
      );
      expect(err).to.match(/^READONLY/);
      expect(refreshes, "refreshes once the READONLY reply is in").to.be.at.least(1);
    } finally {
      topology.refresh = refresh;
      await master.call("REPLICAOF", "NO", "ONE").catch(() => {});
      io.disconnect();
    }
  });

  it("the master turned replica by an operator, no write sent: the 1-second check's ROLE says so (INFO status=demoted), and ok again once it is a master", async () => {
    const io = new Redis({ port: setup.proxy.port, host: "127.0.0.1" });
    io.on("error", () => {});
    const master = setup.d.nodes[0];
    const status = async (): Promise<string | undefined> =>
      /^sentinel_master:.*status=(\w+)/m.exec(await io.info("proxy"))?.[1];
    try {
      // The test before left it a master again: seen at the next check.
      await passes(async () => expect(await status()).to.equal("ok"), 3000);
      expect(await master.call("REPLICAOF", "127.0.0.1", String(other!.port))).to.equal("OK");
      await passes(async () => expect(await status()).to.equal("demoted"), 3000);
      expect(await master.call("REPLICAOF", "NO", "ONE")).to.equal("OK");
      await passes(async () => expect(await status()).to.equal("ok"), 3000);
    } finally {
      await master.call("REPLICAOF", "NO", "ONE").catch(() => {});
      io.disconnect();
    }
  });
});

describe("UpstreamNode.retire(): a node that is no longer the master", function () {
  let redis: RedisNode | undefined;

  before(async () => {
    redis = await startRedis();
  });

  after(async () => {
    await redis?.stop();
  });

  it("fails what is sent to it from then on and opens no connection again, shared, dedicated or control", async () => {
    const node = new UpstreamNode(
      { host: "127.0.0.1", port: redis!.port },
      { sharedConnections: 2, connectTimeoutMs: 2000 },
    );
    try {
      expect(await node.call(["SET", "retire:k", "1"])).to.equal("OK");
      const before = String(await redis!.call("CLIENT", "LIST"))
        .trim()
        .split("\n").length;
      node.retire();
      const err = await node.call(["GET", "retire:k"], 0, 1).then(
        () => null,
        (e: Error) => e.message,
      );
      expect(err).to.equal(`ERR upstream ${node.id} is no longer the master`);
      expect(node.sharedConnection(0)).to.equal(null);
      expect(node.acquire()).to.equal(null);
      expect(node.control()).to.equal(null);
      expect(node.failure).to.match(/no longer the master/);
      expect(node.reachable).to.equal(false);
      expect(node.connectionCount).to.equal(0);
      await passes(async () => {
        const after = String(await redis!.call("CLIENT", "LIST"))
          .trim()
          .split("\n").length;
        expect(after, "connections the server sees (the harness's own included)").to.be.below(before);
      });
    } finally {
      node.close();
    }
  });
});

describe("Redis Sentinel: passwords", function () {
  this.timeout(60_000);
  let d: SentinelDeployment | undefined;
  let proxy: RunningProxy | undefined;

  before(async function () {
    this.timeout(60_000);
    d = await startSentinels({ password: "data-pw", sentinelPassword: "sentinel-pw" });
  });

  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
  });

  after(async function () {
    this.timeout(30_000);
    await d?.stop();
  });

  it("--sentinel-password for the sentinels, --upstream-password for the master: it starts and serves", async () => {
    proxy = await startProxy([], {
      ...sentinelOptions(d!),
      sentinelPassword: "sentinel-pw",
      upstreamPassword: "data-pw",
    });
    const io = new Redis({ port: proxy.port, host: "127.0.0.1" });
    try {
      expect(await io.set("pw:k", "v")).to.equal("OK");
      expect(await (await d!.master()).call("GET", "pw:k")).to.equal("v");
    } finally {
      io.disconnect();
    }
  });

  it("a wrong sentinel password: the start fails at once, naming the credentials", async () => {
    const started = Date.now();
    const err = await startProxy([], {
      ...sentinelOptions(d!),
      sentinelPassword: "wrong",
      upstreamPassword: "data-pw",
    }).then(
      () => null,
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
    expect(err).to.match(/cannot use the sentinels: .*credentials/);
    expect(Date.now() - started).to.be.below(5000);
  });
});
