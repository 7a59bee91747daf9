/**
 * Idle cost of StreamReader consumers: N streams, each with one entry already handled, matched
 * by one StreamReader registration; then, with nothing written, the proxy's CPU and the commands
 * Redis runs per second (INFO commandstats delta, every command including those a script
 * calls, INFO itself left out) over a window. Plus a throughput row: one stream of 100,000
 * entries read and run by a registration (entries/s from RG.EXECUTE to the group's last ack).
 * This build and a base build (--base) alternate in every round, each on a fresh redis-server.
 * See `--help`.
 */
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { startRedis } from "../spec/harness/redis.js";
import { startCluster } from "../spec/harness/cluster.js";
import {
  HOST,
  PROXY_CLI,
  appendReport,
  cpuSeconds,
  machineLines,
  median,
  runBench,
  say,
  sleep,
  startGears,
  stopChild,
  stopChildren,
  table,
  type Proxy,
} from "./support.js";

interface Options {
  sizes: number[];
  rounds: number;
  seconds: number;
  backlog: number;
  base: string;
  append: string | undefined;
  cluster: boolean;
}

const HELP = `Usage: node dist/bench/stream-idle.js [options]

  --quick            sizes 100,1000, one round, 5 s windows, a 20,000-entry backlog
  --sizes LIST       idle stream counts (default 100,1000,5000)
  --rounds N         alternating rounds; medians are reported (default 3)
  --seconds S        measuring window of an idle run (default 10)
  --backlog N        entries of the throughput row's stream (default 100000)
  --base CLI         the base build's dist/src/cli.js (default /work/base1/dist/src/cli.js)
  --append FILE      append the markdown report to FILE
  --cluster          in front of a 3-master Redis Cluster (figures summed over the masters)
  --help
`;

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      sizes: { type: "string" },
      rounds: { type: "string" },
      seconds: { type: "string" },
      backlog: { type: "string" },
      base: { type: "string" },
      append: { type: "string" },
      cluster: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help === true) return null;
  const quick = values.quick === true;
  return {
    sizes: (values.sizes ?? (quick ? "100,1000" : "100,1000,5000")).split(",").map(Number),
    rounds: Number(values.rounds ?? (quick ? 1 : 3)),
    seconds: Number(values.seconds ?? (quick ? 5 : 10)),
    backlog: Number(values.backlog ?? (quick ? 20_000 : 100_000)),
    base: values.base ?? "/work/base1/dist/src/cli.js",
    append: values.append,
    cluster: values.cluster === true,
  };
}

const IDLE_SCRIPT = "GB('StreamReader').foreach(x => execute('INCR', 'bench:seen')).register('idle:*')";
const BACKLOG_SCRIPT = "GB('StreamReader').foreach(x => {}).register('backlog', {batch: 512, duration: 50})";

/** Total calls per command in INFO commandstats, summed over the masters. */
async function commandCalls(masters: Redis[]): Promise<Map<string, number>> {
  const calls = new Map<string, number>();
  for (const c of masters) {
    const info = await c.info("commandstats");
    for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm))
      calls.set(m[1], (calls.get(m[1]) ?? 0) + Number(m[2]));
  }
  return calls;
}

/**
 * CPU seconds (user + system) the masters used, and the bytes they received (requests: a
 * script's calls inside it are counted as commands but never cross the network), summed.
 */
async function redisUse(masters: Redis[]): Promise<{ cpu: number; bytesIn: number }> {
  let cpu = 0;
  let bytesIn = 0;
  for (const c of masters) {
    const info = await c.info();
    for (const m of info.matchAll(/^used_cpu_(?:sys|user):([\d.]+)/gm)) cpu += Number(m[1]);
    bytesIn += Number(/^total_net_input_bytes:(\d+)/m.exec(info)?.[1] ?? 0);
  }
  return { cpu, bytesIn };
}

async function fill(c: Redis, key: (i: number) => string, n: number): Promise<void> {
  for (let from = 0; from < n; from += 1000) {
    const p = c.pipeline();
    for (let i = from; i < Math.min(n, from + 1000); i++) p.xadd(key(i), "*", "n", String(i));
    await p.exec();
  }
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/**
 * A fresh Redis (one server, or a 3-master cluster) and a proxy of `cli` in front of it.
 * `data`: where keys are written and read (the server itself; in a cluster the proxy, which
 * routes them); `masters`: a connection to each master, for its statistics.
 */
async function withProxy<T>(
  cli: string,
  cluster: boolean,
  body: (proxy: Proxy, data: Redis, masters: Redis[]) => Promise<T>,
): Promise<T> {
  const servers = cluster ? (await startCluster({ masters: 3 })).nodes : [await startRedis()];
  const masters = servers.map((s) => new Redis({ port: s.port, host: HOST }));
  let proxy: Proxy | null = null;
  let data: Redis | null = null;
  try {
    proxy = await startGears(servers[0].port, {
      profileDir: undefined,
      nodeArgs: [],
      args: [],
      readyWhen: "ping",
      cli,
    });
    data = cluster ? new Redis({ port: proxy.port, host: HOST }) : masters[0];
    return await body(proxy, data, masters);
  } finally {
    data?.disconnect();
    for (const m of masters) m.disconnect();
    if (proxy !== null) await stopChild(proxy.child);
    for (const s of servers) await s.stop();
  }
}

interface IdleSample {
  cpuPct: number;
  /** Redis' CPU, summed over the masters. */
  redisCpuPct: number;
  /** KB/s the masters received (summed). */
  kbInPerSec: number;
  commandsPerSec: number;
  top: string;
}

/** N idle streams: the proxy's CPU % and Redis' commands/s over the window. */
async function idleRun(cli: string, cluster: boolean, n: number, seconds: number): Promise<IdleSample> {
  return withProxy(cli, cluster, async (proxy, direct, masters) => {
    await fill(direct, (i) => `idle:${i}`, n);
    const c = new Redis({ port: proxy.port, host: HOST });
    await c.call("RG.EXECUTE", IDLE_SCRIPT, "ID", "idle");
    c.disconnect();
    await until(
      "every stream's entry handled",
      async () => Number(await direct.get("bench:seen")) >= n,
      120_000,
    );
    await sleep(3000);
    const calls0 = await commandCalls(masters);
    const redis0 = await redisUse(masters);
    const cpu0 = cpuSeconds(proxy.child.pid);
    const t0 = Date.now();
    await sleep(seconds * 1000);
    const cpu1 = cpuSeconds(proxy.child.pid);
    const redis1 = await redisUse(masters);
    const calls1 = await commandCalls(masters);
    const elapsed = (Date.now() - t0) / 1000;
    const deltas: [string, number][] = [];
    for (const [name, count] of calls1) {
      if (name === "info") continue;
      const d = count - (calls0.get(name) ?? 0);
      if (d > 0) deltas.push([name, d / elapsed]);
    }
    deltas.sort((a, b) => b[1] - a[1]);
    return {
      cpuPct: ((cpu1 - cpu0) / elapsed) * 100,
      redisCpuPct: ((redis1.cpu - redis0.cpu) / elapsed) * 100,
      kbInPerSec: (redis1.bytesIn - redis0.bytesIn) / 1024 / elapsed,
      commandsPerSec: deltas.reduce((s, [, d]) => s + d, 0),
      top: deltas
        .slice(0, 4)
        .map(([name, d]) => `${name} ${d.toFixed(0)}`)
        .join(", "),
    };
  });
}

/** One stream of `n` entries: entries/s from the registration to its group's last acknowledgement. */
async function backlogRun(cli: string, cluster: boolean, n: number): Promise<number> {
  return withProxy(cli, cluster, async (proxy, direct) => {
    await fill(direct, () => "backlog", n);
    const last = ((await direct.xrevrange("backlog", "+", "-", "COUNT", 1)) as [string, string[]][])[0][0];
    const c = new Redis({ port: proxy.port, host: HOST });
    const started = Date.now();
    await c.call("RG.EXECUTE", BACKLOG_SCRIPT, "ID", "backlog");
    c.disconnect();
    await until(
      "the backlog read and acknowledged",
      async () => {
        const groups = (await direct.call("XINFO", "GROUPS", "backlog")) as unknown[][];
        if (groups.length === 0) return false;
        const g = groups[0];
        const field = (name: string): unknown => g[g.indexOf(name) + 1];
        return String(field("last-delivered-id")) === last && Number(field("pending")) === 0;
      },
      300_000,
    );
    return n / ((Date.now() - started) / 1000);
  });
}

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  if (o === null) {
    process.stdout.write(HELP);
    return 0;
  }
  const builds = [
    { name: "base", cli: o.base },
    { name: "this build", cli: PROXY_CLI },
  ];
  const header = machineLines();
  const idle = new Map<string, IdleSample[]>();
  const backlog = new Map<string, number[]>();
  for (let round = 0; round < o.rounds; round++) {
    // Alternating which build goes first.
    const order = round % 2 === 0 ? builds : [...builds].reverse();
    for (const n of o.sizes) {
      for (const b of order) {
        const s = await idleRun(b.cli, o.cluster, n, o.seconds);
        say(
          `round ${round + 1}, ${n} streams, ${b.name}: ${s.cpuPct.toFixed(1)} % CPU, Redis ${s.redisCpuPct.toFixed(1)} % CPU, ${s.kbInPerSec.toFixed(1)} KB/s in, ${s.commandsPerSec.toFixed(0)} commands/s (${s.top})`,
        );
        const key = `${b.name}|${n}`;
        idle.set(key, [...(idle.get(key) ?? []), s]);
      }
    }
    for (const b of order) {
      const rate = await backlogRun(b.cli, o.cluster, o.backlog);
      say(`round ${round + 1}, backlog of ${o.backlog}, ${b.name}: ${rate.toFixed(0)} entries/s`);
      backlog.set(b.name, [...(backlog.get(b.name) ?? []), rate]);
    }
  }
  const rows: string[][] = [];
  for (const n of o.sizes) {
    const [base, mine] = builds.map((b) => idle.get(`${b.name}|${n}`) ?? []);
    const cpu = (xs: IdleSample[]): number => median(xs.map((x) => x.cpuPct));
    const cmds = (xs: IdleSample[]): number => median(xs.map((x) => x.commandsPerSec));
    const redis = (xs: IdleSample[]): number => median(xs.map((x) => x.redisCpuPct));
    const kbIn = (xs: IdleSample[]): number => median(xs.map((x) => x.kbInPerSec));
    const cell = (xs: IdleSample[]): string =>
      `${cpu(xs).toFixed(1)} % CPU; Redis ${redis(xs).toFixed(1)} % CPU, ${kbIn(xs).toFixed(1)} KB/s in, ${cmds(xs).toFixed(0)} cmd/s`;
    rows.push([`${n} idle streams`, cell(base), cell(mine), mine.at(-1)?.top ?? ""]);
  }
  const [rb, rm] = builds.map((b) => median(backlog.get(b.name) ?? []));
  rows.push([
    `backlog of ${o.backlog} entries (batch 512)`,
    `${rb.toFixed(0)} entries/s`,
    `${rm.toFixed(0)} entries/s`,
    `${(rm / rb).toFixed(2)}x`,
  ]);
  const report = [
    `### StreamReader idle cost (bench/stream-idle.ts${o.cluster ? ", 3-master cluster" : ""}), ${o.rounds} alternating round(s), medians`,
    "",
    ...header.map((l) => `${l}  `),
    `command: node dist/bench/stream-idle.js ${process.argv.slice(2).join(" ")} (base: ${o.base})`,
    `windows of ${o.seconds} s, 3 s after every stream's entry was handled; commands/s: INFO commandstats delta summed over the masters (script-called commands included, INFO left out); Redis CPU: INFO cpu (user + sys), KB/s in: total_net_input_bytes (requests only, a script's own calls never cross the network), both summed over the masters`,
    "",
    table(["", "base", "this build", "this build's top commands/s (last round) / ratio"], rows),
    "",
  ].join("\n");
  process.stdout.write(report);
  if (o.append !== undefined) appendReport(o.append, report);
  return 0;
}

runBench(main, () => stopChildren());
