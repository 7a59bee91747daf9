/**
 * What a queued keyspace event costs the proxy: a handler that holds its first event for a
 * long time while N writes go straight to Redis (past the proxy, so nothing slows them), and
 * the proxy's live heap (after a full GC) and RSS once all N events wait in its queue. For an
 * RG KeysReader registration and a T&F keyspace trigger; with `--base CLI`, another build too,
 * alternating which goes first.
 *
 *   node dist/bench/event-queue-memory.js --events 400000 --base /work/base1/dist/src/cli.js
 *
 * Each build runs in a child process of its own (node --expose-gc) that starts the proxy
 * in-process from that build's dist/src/server.js, so the heap can be read after a GC.
 */
import { fork } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { startRedis } from "../spec/harness/redis.js";
import { freePort } from "../spec/harness/ports.js";
import { HOST, machineLines, median, runBench, say, sleep, table } from "./support.js";

const HERE = fileURLToPath(import.meta.url);
const OWN_DIST = path.resolve(path.dirname(HERE), "..");

interface Mem {
  heapUsed: number;
  rss: number;
  external: number;
  arrayBuffers: number;
}

// ---- the child: a proxy in-process, its memory on request -------------------------------------

async function driver(dist: string, upstream: number, port: number, metricsPort: number): Promise<void> {
  const { ProxyServer } = (await import(path.join(dist, "src", "server.js"))) as {
    ProxyServer: new (config: unknown, log: unknown) => { start(): Promise<{ port: number }> };
  };
  const { DEFAULT_CONFIG } = (await import(path.join(dist, "src", "config.js"))) as {
    DEFAULT_CONFIG: Record<string, unknown>;
  };
  const { createLogger } = (await import(path.join(dist, "src", "observability", "log.js"))) as {
    createLogger: (level: string) => unknown;
  };
  const config = {
    ...DEFAULT_CONFIG,
    port,
    metricsPort,
    logLevel: "error",
    upstreams: [{ host: HOST, port: upstream }],
    gearsConfig: { ScriptTimeoutMS: "120000", "redisgears_2.lock-redis-timeout": "1000" },
  };
  const server = new ProxyServer(config, createLogger("error"));
  await server.start();
  const gc = (globalThis as { gc?: () => void }).gc!;
  process.on("message", () => {
    gc();
    gc();
    const m = process.memoryUsage();
    process.send!({ heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers });
  });
  process.send!("ready");
}

// ---- the parent ------------------------------------------------------------------------------

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "400000" },
    rounds: { type: "string", default: "1" },
    base: { type: "string" },
    driver: { type: "string" },
    upstream: { type: "string" },
    port: { type: "string" },
    metrics: { type: "string" },
    only: { type: "string" },
  },
});

interface Running {
  ask(): Promise<Mem>;
  stop(): void;
}

async function startDriver(
  dist: string,
  upstream: number,
): Promise<{ run: Running; port: number; metrics: number }> {
  const port = await freePort();
  const metrics = await freePort();
  const child = fork(
    HERE,
    ["--driver", dist, "--upstream", String(upstream), "--port", String(port), "--metrics", String(metrics)],
    { execArgv: ["--expose-gc"], stdio: ["ignore", "inherit", "inherit", "ipc"] },
  );
  await new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("exit", (code) => reject(new Error(`driver exited ${code}`)));
  });
  const run: Running = {
    ask: () =>
      new Promise<Mem>((resolve) => {
        child.once("message", (m) => resolve(m as Mem));
        child.send("mem");
      }),
    stop: () => child.kill("SIGKILL"),
  };
  return { run, port, metrics };
}

async function queueLength(metricsPort: number): Promise<number> {
  const res = await fetch(`http://${HOST}:${metricsPort}/metrics`);
  const text = await res.text();
  let n = 0;
  for (const m of text.matchAll(/^gears_proxy_gears_registration_queue_length\{[^}]*\} (\d+)/gm))
    n += Number(m[1]);
  return n;
}

const RG_SCRIPT = `GB().foreach(x => { if (x.key === 'mq:first') { const t = Date.now(); while (Date.now() - t < 90000) {} } }).register('mq:*')`;
const TF_LIBRARY = `#!js api_version=1.0 name=mqlib
redis.registerKeySpaceTrigger('slow', 'mq:', function(client, data) { const t = Date.now(); while (Date.now() - t < 400) {} });`;

/** One build, one kind: the heap and RSS added by `events` queued events, per event. */
async function measure(
  dist: string,
  kind: "rg" | "tf",
  events: number,
): Promise<{ heap: number; rss: number }> {
  const redis = await startRedis();
  const { run, port, metrics } = await startDriver(dist, redis.port);
  const proxy = new Redis({ port, host: HOST, maxRetriesPerRequest: 0 });
  const direct = new Redis({ port: redis.port, host: HOST });
  try {
    if (kind === "rg") await proxy.call("RG.EXECUTE", RG_SCRIPT);
    else await proxy.call("TFUNCTION", "LOAD", TF_LIBRARY);
    await direct.set("mq:first", "v");
    await sleep(1000);
    const before = await run.ask();
    for (let i = 0; i < events; i += 10_000) {
      const p = direct.pipeline();
      for (let j = i; j < Math.min(events, i + 10_000); j++) p.set(`mq:${j}`, "v");
      await p.exec();
    }
    let after = await run.ask();
    if (kind === "rg") {
      for (let t = 0; t < 600 && (await queueLength(metrics)) < events; t++) await sleep(100);
      after = await run.ask();
    } else {
      // No queue figure for T&F: until the heap stops growing.
      for (let t = 0; t < 60; t++) {
        await sleep(500);
        const next = await run.ask();
        const grew = next.heapUsed - after.heapUsed;
        const settled = grew < 0.01 * next.heapUsed && next.external - after.external < 0.01 * next.external;
        after = next;
        if (settled) break;
      }
    }
    // Typed arrays and Buffers live outside the JS heap (external): both count.
    const live = (m: Mem): number => m.heapUsed + m.external;
    return { heap: (live(after) - live(before)) / events, rss: (after.rss - before.rss) / events };
  } finally {
    proxy.disconnect();
    direct.disconnect();
    run.stop();
    await redis.stop();
  }
}

async function main(): Promise<number> {
  if (values.driver !== undefined) {
    await driver(values.driver, Number(values.upstream), Number(values.port), Number(values.metrics));
    return -1;
  }
  const events = Number(values.events);
  const rounds = Number(values.rounds);
  const builds: [string, string][] = [["this build", OWN_DIST]];
  if (values.base !== undefined) builds.push(["base", path.resolve(path.dirname(values.base), "..")]);
  const kinds = (values.only === undefined ? ["rg", "tf"] : [values.only]) as ("rg" | "tf")[];
  const results = new Map<string, { heap: number[]; rss: number[] }>();
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? builds : [...builds].reverse();
    for (const kind of kinds) {
      for (const [name, dist] of order) {
        const r = await measure(dist, kind, events);
        say(
          `round ${round + 1} ${kind} ${name}: heap ${r.heap.toFixed(0)} B/event, RSS ${r.rss.toFixed(0)} B/event`,
        );
        const key = `${kind}\0${name}`;
        const slot = results.get(key) ?? { heap: [], rss: [] };
        slot.heap.push(r.heap);
        slot.rss.push(r.rss);
        results.set(key, slot);
      }
    }
  }
  const rows = [...results].map(([key, r]) => {
    const [kind, name] = key.split("\0");
    return [
      kind === "rg" ? "RG KeysReader" : "T&F keyspace trigger",
      name,
      `${median(r.heap).toFixed(0)} B`,
      `${median(r.rss).toFixed(0)} B`,
    ];
  });
  say(machineLines().join("\n"));
  say(`${events} events queued, ${rounds} round(s), medians per queued event:`);
  say(table(["queue", "build", "live heap + external / event", "RSS / event"], rows));
  return 0;
}

runBench(
  async () => {
    const code = await main();
    // The driver stays up, answering its parent, until killed.
    if (code === -1) await new Promise(() => {});
    return code;
  },
  async () => {},
);
