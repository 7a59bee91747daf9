/**
 * Pass-through benchmark: redis-benchmark against redis-server directly, gears-proxy and
 * twemproxy (nutcracker) in front of the same server, then gears-proxy in front of a
 * 3-master cluster beside `redis-benchmark --cluster` against the shards directly; plus the
 * proxy's RSS with idle clients and under load. Every figure is the median of alternating
 * rounds run side by side in this one invocation. See `--help`.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { startCluster, type RedisCluster } from "../spec/harness/cluster.js";
import { freePort } from "../spec/harness/ports.js";
import { startRedis, type RedisNode } from "../spec/harness/redis.js";
import type { RespValue } from "../spec/harness/resp.js";
import {
  HOST,
  PROXY_CLI,
  children,
  machineLines,
  mb,
  median,
  ping,
  profileTimes,
  rankProfile,
  run,
  runBench,
  sampleRss,
  say,
  sleep,
  startChild,
  startGears,
  statusKb,
  stopChild,
  table,
  waitFor,
  which,
  type Proxy,
  treeCpuSeconds,
} from "./support.js";

// ---- options -----------------------------------------------------------------------------

/**
 * `mset_tag` is MSET with its 10 keys under one hash tag, as `redis-benchmark --cluster` makes
 * its own MSET keys (`key{tag}:N`, the tag chosen per node): the same single-slot command on
 * both sides of a cluster row. Plain `mset` sends untagged keys through the proxy, which
 * splits each MSET over the 3 masters, so the servers do several times the direct side's work.
 * In front of one server the two are the same, so `mset_tag` runs in the cluster part only.
 */
const ALL_TESTS = ["set", "get", "incr", "lpush", "lrange_100", "mset", "mset_tag"] as const;
type TestName = (typeof ALL_TESTS)[number];
const ALL_TARGETS = ["direct", "gears", "twemproxy"] as const;
type Target = (typeof ALL_TARGETS)[number];
type Mode = "standalone" | "cluster";

interface Variant {
  cli: string;
  args: string[];
  nodeArgs: string[];
}

interface Options {
  rounds: number;
  seconds: number;
  tests: TestName[];
  pipelines: number[];
  sizes: number[];
  clients: number;
  keyspace: number;
  targets: Target[];
  standalone: boolean;
  cluster: boolean;
  memory: boolean;
  idleClients: number;
  profileDir: string | undefined;
  /** Extra gears-proxy flags, and extra node flags for the proxy process. */
  proxyArgs: string[];
  proxyNodeArgs: string[];
  /** A second gears-proxy measured beside the first ("gears-b"), for A/B comparisons in one run. */
  variant: Variant | undefined;
  /** The variant is this proxy with --metrics-port: rows and a verdict for metrics on/off. */
  metricsAb: boolean;
  json: string | undefined;
}

const HELP = `Usage: node dist/bench/passthrough.js [options]

  --quick              one round of get,set,mset at -d 3, 0.4 s per measurement
  --rounds N           alternating rounds; medians are reported (default 3)
  --seconds S          target duration of one measurement; -n is sized from the rates seen (default 0.5)
  --tests LIST         of ${ALL_TESTS.join(",")} (default all)
  --pipelines LIST     redis-benchmark -P values (default 1,16)
  --sizes LIST         redis-benchmark -d values (default 3,1024)
  --clients N          redis-benchmark -c (default 50)
  --keyspace N         redis-benchmark -r (default 100000)
  --targets LIST       of direct,gears,twemproxy for the standalone part (default all)
  --no-standalone      skip the standalone part
  --no-cluster         skip the cluster part
  --no-memory          skip the idle-clients RSS measurement
  --idle-clients N     idle clients for the RSS measurement (default 1000)
  --profile DIR        run each gears-proxy under node --cpu-prof (profiles land in DIR) and
                       print its hottest functions at the end
  --proxy-args="..."   extra gears-proxy flags (e.g. --proxy-args="--upstream-connections 1")
  --proxy-node-args="..."  extra node flags for the proxy (e.g. --proxy-node-args=--max-semi-space-size=64)
  --b-cli PATH         also measure a second gears-proxy ("gears-b") beside the first: another
                       build's dist/src/cli.js (default: this one) ...
  --b-args="..."       ... with these proxy flags ...
  --b-node-args="..."  ... and these node flags; reported as a gears-b/gears ratio
  --metrics-ab         gears-b is this proxy with --metrics-port 0 (metrics on), gears without:
                       gears-b/gears is the on/off ratio per row, with a >= 0.97x verdict per P
  (flags whose value starts with a dash need the --flag=value form)
  --json FILE          also write every sample as JSON
  --from-json FILE     print the report of a run saved with --json, without running anything
  --help

Profile example: --profile /tmp/prof --targets gears --no-cluster --no-memory --tests get --sizes 3 --rounds 1 --seconds 5
`;

function list(text: string, what: string): string[] {
  const items = text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (items.length === 0) throw new Error(`${what}: empty list`);
  return items;
}

function numbers(text: string, what: string): number[] {
  return list(text, what).map((s) => {
    const n = Number(s);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${what}: '${s}' is not a positive number`);
    return n;
  });
}

function oneOf<T extends string>(allowed: readonly T[], text: string, what: string): T[] {
  return list(text, what).map((s) => {
    const found = allowed.find((a) => a === s.toLowerCase());
    if (found === undefined) throw new Error(`${what}: '${s}' is not one of ${allowed.join(",")}`);
    return found;
  });
}

const words = (text: string | undefined): string[] => (text ?? "").split(/\s+/).filter((a) => a !== "");

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      rounds: { type: "string" },
      seconds: { type: "string" },
      tests: { type: "string" },
      pipelines: { type: "string" },
      sizes: { type: "string" },
      clients: { type: "string" },
      keyspace: { type: "string" },
      targets: { type: "string" },
      "no-standalone": { type: "boolean" },
      "no-cluster": { type: "boolean" },
      "no-memory": { type: "boolean" },
      "idle-clients": { type: "string" },
      profile: { type: "string" },
      "proxy-args": { type: "string" },
      "proxy-node-args": { type: "string" },
      "b-cli": { type: "string" },
      "b-args": { type: "string" },
      "b-node-args": { type: "string" },
      "metrics-ab": { type: "boolean" },
      json: { type: "string" },
      "from-json": { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(HELP);
    return null;
  }
  if (values["from-json"] !== undefined) {
    const record = JSON.parse(fs.readFileSync(values["from-json"], "utf8")) as RunRecord;
    process.stdout.write(render(record));
    return null;
  }
  const quick = values.quick === true;
  const metricsAb = values["metrics-ab"] === true;
  if (metricsAb && (values["b-cli"] ?? values["b-args"] ?? values["b-node-args"]) !== undefined)
    throw new Error("--metrics-ab makes its own gears-b: drop --b-cli/--b-args/--b-node-args");
  const one = (text: string | undefined, fallback: number, what: string): number =>
    text === undefined ? fallback : numbers(text, what)[0];
  return {
    rounds: Math.round(one(values.rounds, quick ? 1 : 3, "--rounds")),
    seconds: one(values.seconds, quick ? 0.4 : 0.5, "--seconds"),
    tests: oneOf(ALL_TESTS, values.tests ?? (quick ? "get,set,mset" : ALL_TESTS.join(",")), "--tests"),
    pipelines: numbers(values.pipelines ?? "1,16", "--pipelines").map(Math.round),
    sizes: numbers(values.sizes ?? (quick ? "3" : "3,1024"), "--sizes").map(Math.round),
    clients: Math.round(one(values.clients, 50, "--clients")),
    keyspace: Math.round(one(values.keyspace, 100_000, "--keyspace")),
    targets: oneOf(ALL_TARGETS, values.targets ?? ALL_TARGETS.join(","), "--targets"),
    standalone: values["no-standalone"] !== true,
    cluster: values["no-cluster"] !== true,
    memory: values["no-memory"] !== true,
    idleClients: Math.round(one(values["idle-clients"], 1000, "--idle-clients")),
    profileDir: values.profile,
    proxyArgs: words(values["proxy-args"]),
    proxyNodeArgs: words(values["proxy-node-args"]),
    metricsAb,
    variant: metricsAb
      ? {
          cli: PROXY_CLI,
          args: [...words(values["proxy-args"]), "--metrics-port", "0"],
          nodeArgs: words(values["proxy-node-args"]),
        }
      : values["b-cli"] === undefined && values["b-args"] === undefined && values["b-node-args"] === undefined
        ? undefined
        : {
            cli: path.resolve(values["b-cli"] ?? PROXY_CLI),
            args: words(values["b-args"]),
            nodeArgs: words(values["b-node-args"]),
          },
    json: values.json,
  };
}

// ---- processes -----------------------------------------------------------------------------

function startGearsFor(
  upstreamPort: number,
  opts: Options,
  cluster: boolean,
  variant?: Variant,
): Promise<Proxy> {
  return startGears(upstreamPort, {
    profileDir: opts.profileDir,
    nodeArgs: variant?.nodeArgs ?? opts.proxyNodeArgs,
    cli: variant?.cli,
    args: variant?.args ?? opts.proxyArgs,
    readyWhen: cluster ? "keyed" : "ping",
  });
}

/** Makes sure nutcracker is installed; a reason when it is not and cannot be. */
function ensureTwemproxy(): string | undefined {
  if (which("nutcracker")) return undefined;
  if (process.getuid?.() !== 0)
    return "nutcracker is not installed and we are not root (apt-get install nutcracker)";
  process.stderr.write("installing nutcracker (twemproxy) with apt-get...\n");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = (): void => {
    execFileSync("apt-get", ["install", "-y", "--no-install-recommends", "nutcracker"], {
      env,
      stdio: "ignore",
    });
  };
  try {
    install();
  } catch {
    try {
      execFileSync("apt-get", ["update"], { env, stdio: "ignore" });
      install();
    } catch (err) {
      return `apt-get install nutcracker failed: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  return which("nutcracker") ? undefined : "nutcracker still missing after apt-get install";
}

async function startTwemproxy(upstreamPort: number, dir: string): Promise<Proxy> {
  const port = await freePort();
  const statsPort = await freePort();
  const conf = path.join(dir, "nutcracker.yml");
  fs.writeFileSync(
    conf,
    [
      "bench:",
      `  listen: ${HOST}:${port}`,
      "  hash: fnv1a_64",
      "  distribution: ketama",
      "  redis: true",
      "  auto_eject_hosts: false",
      "  servers:",
      `    - ${HOST}:${upstreamPort}:1`,
      "",
    ].join("\n"),
  );
  const args = ["-c", conf, "-s", String(statsPort), "-a", HOST, "-v", "4", "-o", path.join(dir, "nc.log")];
  const child = startChild("nutcracker", "nutcracker", args);
  await waitFor("nutcracker", () => ping(port), child);
  return { child, port };
}

// ---- memory --------------------------------------------------------------------------------

const PING_FRAME = Buffer.from("*1\r\n$4\r\nPING\r\n");

/** Opens `count` connections that each PING once and then stay idle; resolves them. */
async function openIdleClients(port: number, count: number): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  const openOne = (): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const socket = net.connect({ host: HOST, port });
      let got = "";
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error("idle client: no PONG within 10 s"));
      }, 10_000);
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once("connect", () => socket.write(PING_FRAME));
      socket.on("data", (chunk: Buffer) => {
        got += chunk.toString();
        if (got.includes("\r\n")) {
          clearTimeout(timer);
          if (got.startsWith("+PONG")) resolve(socket);
          else {
            socket.destroy();
            reject(new Error(`idle client: unexpected reply ${JSON.stringify(got)}`));
          }
        }
      });
    });
  try {
    for (let i = 0; i < count; i += 100) {
      const batch = await Promise.all(Array.from({ length: Math.min(100, count - i) }, openOne));
      sockets.push(...batch);
    }
  } catch (err) {
    for (const s of sockets) s.destroy();
    throw err;
  }
  return sockets;
}

interface IdleMemory {
  target: string;
  /** "fresh" (just started) or "warm" (after the warm-up load). */
  phase: string;
  beforeKb: number;
  idleKb: number;
  clients: number;
}

async function measureIdle(target: string, phase: string, proxy: Proxy, count: number): Promise<IdleMemory> {
  await sleep(300);
  const beforeKb = statusKb(proxy.child.pid, "VmRSS");
  const sockets = await openIdleClients(proxy.port, count);
  await sleep(1000);
  const idleKb = statusKb(proxy.child.pid, "VmRSS");
  for (const s of sockets) s.destroy();
  await sleep(500);
  return { target, phase, beforeKb, idleKb, clients: count };
}

// ---- redis-benchmark -----------------------------------------------------------------------

interface Sample {
  rps: number;
  p50: number;
  p99: number;
  n: number;
  seconds: number;
  /** CPU time (user + system) the proxy process spent per request, in microseconds; NaN for direct. */
  cpuUs: number;
  /** read- and write-type system calls the proxy process made per request (/proc/PID/io); NaN for direct. */
  sysPerReq: number;
  /** The alternating round it was measured in (0-based): pairs targets' samples of one round. */
  round?: number;
}

/** Which CSV row reports a test: LRANGE_100 is preceded by its own LPUSH fill, which we skip. */
function rowFor(test: TestName, name: string): boolean {
  const upper = name.toUpperCase();
  switch (test) {
    case "lpush":
      return upper === "LPUSH";
    case "lrange_100":
      return upper.startsWith("LRANGE_100");
    case "mset":
    case "mset_tag":
      return upper.startsWith("MSET");
    default:
      return upper === test.toUpperCase();
  }
}

function parseCsv(text: string, test: TestName): Sample | undefined {
  const lines = text.split("\n").filter((l) => l.startsWith('"'));
  if (lines.length === 0) return undefined;
  const header = [...lines[0].matchAll(/"([^"]*)"/g)].map((m) => m[1]);
  for (const line of lines.slice(1)) {
    const fields = [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
    if (!rowFor(test, fields[0] ?? "")) continue;
    const get = (col: string): number => {
      const i = header.indexOf(col);
      return i < 0 ? NaN : Number(fields[i]);
    };
    return {
      rps: get("rps"),
      p50: get("p50_latency_ms"),
      p99: get("p99_latency_ms"),
      n: 0,
      seconds: 0,
      cpuUs: NaN,
      sysPerReq: NaN,
    };
  }
  return undefined;
}

/** A rough first guess of requests/s, before anything was measured; later rounds use what was seen. */
function guessRps(test: TestName, pipeline: number, size: number): number {
  let rps = pipeline === 1 ? 60_000 : 40_000 * Math.min(pipeline, 16);
  if (test === "mset" || test === "mset_tag") rps *= pipeline === 1 ? 0.8 : 0.35;
  if (test === "lrange_100") rps *= size > 512 ? (pipeline === 1 ? 0.25 : 0.03) : pipeline === 1 ? 0.7 : 0.25;
  else if (size > 512 && pipeline > 1) rps *= 0.4;
  return rps;
}

interface Config {
  mode: Mode;
  test: TestName;
  pipeline: number;
  size: number;
}

const configKey = (c: Config): string => `${c.mode} ${c.test} P=${c.pipeline} d=${c.size}`;

class Bench {
  /** Samples by config key, then by target label. */
  readonly samples = new Map<string, Map<string, Sample[]>>();
  readonly failures: string[] = [];
  private readonly rates = new Map<string, number>();

  constructor(private readonly opts: Options) {}

  requests(c: Config, label: string): number {
    const key = configKey(c);
    const rate =
      this.rates.get(`${key} ${label}`) ?? this.rates.get(key) ?? guessRps(c.test, c.pipeline, c.size);
    const floor = this.opts.clients * c.pipeline * 4;
    return Math.max(floor, Math.round((rate * this.opts.seconds) / 1000) * 1000);
  }

  async measure(
    c: Config,
    label: string,
    port: number,
    round: number,
    extra: string[] = [],
    pid?: number,
  ): Promise<Sample | undefined> {
    const n = this.requests(c, label);
    const cpuBefore = pid === undefined ? NaN : treeCpuSeconds(pid).total;
    const sysBefore = pid === undefined ? NaN : ioSyscalls(pid);
    const o = this.opts;
    const args = [
      ...["-h", HOST, "-p", String(port), "-c", String(o.clients), "-n", String(n)],
      ...["-P", String(c.pipeline), "-d", String(c.size), "-r", String(o.keyspace)],
      ...["--csv", ...extra],
      // A custom command goes last: redis-benchmark reads every word after it as its arguments.
      ...(c.test === "mset_tag" ? taggedMset(c.size) : ["-t", c.test]),
    ];
    const started = performance.now();
    let sample: Sample | undefined;
    try {
      const out = await run("redis-benchmark", "redis-benchmark", args, Math.max(60_000, o.seconds * 30_000));
      sample = parseCsv(out, c.test);
      if (sample === undefined) throw new Error(`no CSV row for ${c.test} in:\n${out}`);
    } catch (err) {
      this.failures.push(`${configKey(c)} ${label}: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    }
    sample.n = n;
    sample.round = round;
    sample.seconds = (performance.now() - started) / 1000;
    if (pid !== undefined) {
      sample.cpuUs = ((treeCpuSeconds(pid).total - cpuBefore) * 1e6) / n;
      sample.sysPerReq = (ioSyscalls(pid) - sysBefore) / n;
    }
    const key = configKey(c);
    this.rates.set(`${key} ${label}`, sample.rps);
    // A target not measured yet in this config gets the slowest rate seen, so it cannot overrun.
    this.rates.set(key, Math.min(this.rates.get(key) ?? Infinity, sample.rps));
    let byTarget = this.samples.get(key);
    if (byTarget === undefined) this.samples.set(key, (byTarget = new Map()));
    const list = byTarget.get(label) ?? [];
    list.push(sample);
    byTarget.set(label, list);
    return sample;
  }

  median(c: Config, label: string, field: "rps" | "p50" | "p99" | "cpuUs" | "sysPerReq"): number {
    return medianOf((this.samples.get(configKey(c))?.get(label) ?? []).map((s) => s[field]));
  }

  /**
   * `field` of label a over label b in each round both were measured in, in round order: the
   * two sat side by side in time, so the machine's other load moves both alike (a ratio of
   * medians can pair a's quiet round with b's busy one). Samples of a run saved before rounds
   * were recorded pair by their place in the list.
   */
  perRound(c: Config, a: string, b: string, field: "rps" | "p99" | "cpuUs"): number[] {
    const byTarget = this.samples.get(configKey(c));
    const round = (list: Sample[]): Map<number, number> =>
      new Map(list.map((s, i) => [s.round ?? i, s[field]]));
    const as = round(byTarget?.get(a) ?? []);
    const bs = round(byTarget?.get(b) ?? []);
    const ratios: number[] = [];
    for (const [r, v] of as) {
      const w = bs.get(r);
      if (w !== undefined) ratios.push(v / w);
    }
    return ratios;
  }
}

/**
 * The read- and write-type system calls (syscr + syscw of /proc/PID/io: read, write, readv,
 * writev...) process `pid` made so far, all its threads; NaN where the file cannot be read.
 * On loopback a write also does the receiver's TCP work, so fewer writes per request is
 * often what lowers the proxy's CPU.
 */
function ioSyscalls(pid: number): number {
  try {
    const io = fs.readFileSync(`/proc/${pid}/io`, "latin1");
    const field = (name: string): number => Number(new RegExp(`^${name}: (\\d+)`, "m").exec(io)?.[1] ?? NaN);
    return field("syscr") + field("syscw");
  } catch {
    return NaN;
  }
}

// ---- data housekeeping ---------------------------------------------------------------------

async function call(node: RedisNode, ...args: string[]): Promise<RespValue> {
  return node.call(...args);
}

/** Drops the lists LPUSH/LRANGE_100 grow without bound (mylist, mylist{tag}). */
async function dropLists(nodes: readonly RedisNode[]): Promise<void> {
  for (const node of nodes) {
    const keys = await call(node, "KEYS", "mylist*");
    if (Array.isArray(keys)) for (const k of keys) await call(node, "UNLINK", String(k));
  }
}

async function flushAll(nodes: readonly RedisNode[]): Promise<void> {
  for (const node of nodes) await call(node, "FLUSHALL");
}

/** Fills the keyspace GET reads (key:N, or key{tag}:N in --cluster mode) with values of `size` bytes. */
async function prefill(port: number, opts: Options, size: number, extra: string[] = []): Promise<void> {
  const args = [
    ...["-h", HOST, "-p", String(port), "-c", "50", "-n", String(opts.keyspace * 3), "-P", "16"],
    ...["-d", String(size), "-r", String(opts.keyspace), "-t", "set", "-q", ...extra],
  ];
  await run("redis-benchmark (prefill)", "redis-benchmark", args, 120_000);
}

/** Warms a proxy up (JIT, buffers) before it is measured: the selected tests, pipelined and not. */
async function warmUp(port: number, opts: Options, extra: string[] = []): Promise<void> {
  for (const [pipeline, n] of [
    [16, 60_000],
    [1, 10_000],
  ]) {
    const args = [
      ...[
        "-h",
        HOST,
        "-p",
        String(port),
        "-c",
        String(opts.clients),
        "-n",
        String(n),
        "-P",
        String(pipeline),
      ],
      ...["-r", String(opts.keyspace), "-t", opts.tests.join(","), "-q", ...extra],
    ];
    await run("redis-benchmark (warm-up)", "redis-benchmark", args, 120_000);
  }
}

// ---- reporting -----------------------------------------------------------------------------

const fmtRps = (v: number): string => (Number.isNaN(v) ? "n/a" : Math.round(v).toLocaleString("en-US"));
const fmtMs = (v: number): string => (Number.isNaN(v) ? "n/a" : v.toFixed(3));
const fmtUs = (v: number): string => (Number.isFinite(v) ? v.toFixed(2) : "n/a");
const fmtRatio = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}x` : "n/a");

/** The median of the finite values (a round that measured nothing gives NaN or Infinity). */
const medianOf = (values: number[]): number => median(values.filter(Number.isFinite));

/** Per-round ratios as "median (min-max)". */
function fmtSpread(ratios: number[]): string {
  const ok = ratios.filter(Number.isFinite);
  if (ok.length === 0) return "n/a";
  return `${fmtRatio(medianOf(ok))} (${Math.min(...ok).toFixed(2)}-${Math.max(...ok).toFixed(2)})`;
}
const TEST_LABEL: Record<TestName, string> = {
  set: "SET",
  get: "GET",
  incr: "INCR",
  lpush: "LPUSH",
  lrange_100: "LRANGE_100",
  mset: "MSET (10 keys)",
  mset_tag: "MSET (10 keys, one hash tag)",
};

/** redis-benchmark's own cluster MSET as a custom command: `{tag}` is replaced per node with --cluster. */
function taggedMset(size: number): string[] {
  const value = "x".repeat(size);
  const args = ["MSET"];
  for (let i = 0; i < 10; i++) args.push("key{tag}:__rand_int__", value);
  return args;
}

function geomean(values: number[]): number {
  const ok = values.filter((v) => Number.isFinite(v) && v > 0);
  if (ok.length === 0) return NaN;
  return Math.exp(ok.reduce((s, v) => s + Math.log(v), 0) / ok.length);
}

/**
 * A target judged on the geometric mean of its rows (single rows are noisy on a shared machine),
 * with the rows that miss it counted.
 */
interface Verdict {
  target: string;
  rows: number;
  worst: number;
  geomean: number;
  /** Rows that miss the target on their own. */
  missing: number;
  met: boolean;
}

function verdict(target: string, ratios: number[], ok: (r: number) => boolean, worstIsMax = false): Verdict {
  const valid = ratios.filter((r) => Number.isFinite(r));
  const worst = valid.length === 0 ? NaN : worstIsMax ? Math.max(...valid) : Math.min(...valid);
  const mean = geomean(valid);
  return {
    target,
    rows: valid.length,
    worst,
    geomean: mean,
    missing: valid.filter((r) => !ok(r)).length,
    met: valid.length > 0 && ok(mean),
  };
}

function verdictText(v: Verdict): string {
  if (!v.met) return `MISSED (${v.missing} of ${v.rows} rows miss)`;
  return v.missing === 0 ? "met (every row)" : `met on geomean; ${v.missing} of ${v.rows} rows miss`;
}

function configs(mode: Mode, opts: Options): Config[] {
  const out: Config[] = [];
  for (const size of opts.sizes)
    for (const pipeline of opts.pipelines)
      for (const test of opts.tests)
        if (mode === "cluster" || test !== "mset_tag") out.push({ mode, test, pipeline, size });
  return out;
}

function standaloneReport(
  bench: Bench,
  opts: Options,
  labels: string[],
): { text: string; verdicts: Verdict[] } {
  const has = (l: string): boolean => labels.includes(l);
  const header = ["test", "P", "d"];
  for (const l of labels) header.push(`${l} rps`);
  if (has("direct") && has("gears")) header.push("gears/direct");
  if (has("twemproxy") && has("gears")) header.push("gears/twemproxy");
  if (has("gears-b") && has("gears")) header.push("gears-b/gears");
  if (has("gears-3") && has("gears")) header.push("gears RESP3/RESP2");
  for (const l of labels) header.push(`${l} p50/p99 ms`);
  if (has("twemproxy") && has("gears")) header.push("p99 gears/twem");
  const proxies = labels.filter((l) => !l.startsWith("direct"));
  for (const l of proxies) header.push(`${l} CPU µs/req`);
  // Each round's own ratio, beside the ratio of the medians: their spread shows what one
  // row's figure is worth on a loaded machine (3 short rounds can put a row 0.3x off).
  const cpuPairs: [string, string][] = [];
  if (has("twemproxy") && has("gears")) cpuPairs.push(["gears", "twemproxy"]);
  if (has("gears-b") && has("gears")) cpuPairs.push(["gears-b", "gears"]);
  for (const [a, b] of cpuPairs) header.push(`CPU ${a}/${b} per round: median (range)`);
  const rows: string[][] = [];
  const roundCpuByP = new Map<number, number[]>();
  const byP = new Map<number, number[]>();
  const cpuByP = new Map<number, number[]>();
  const p99Ratios: number[] = [];
  const resp3Ratios: number[] = [];
  /** gears-b/gears rps by P (the metrics on/off ratio with --metrics-ab). */
  const bByP = new Map<number, number[]>();
  for (const c of configs("standalone", opts)) {
    const row = [TEST_LABEL[c.test], String(c.pipeline), String(c.size)];
    const rps = (l: string): number => bench.median(c, l, "rps");
    for (const l of labels) row.push(fmtRps(rps(l)));
    if (has("direct") && has("gears")) row.push(fmtRatio(rps("gears") / rps("direct")));
    if (has("twemproxy") && has("gears")) {
      const r = rps("gears") / rps("twemproxy");
      row.push(fmtRatio(r));
      const list = byP.get(c.pipeline) ?? [];
      list.push(r);
      byP.set(c.pipeline, list);
    }
    if (has("gears-b") && has("gears")) {
      const r = rps("gears-b") / rps("gears");
      row.push(fmtRatio(r));
      bByP.set(c.pipeline, [...(bByP.get(c.pipeline) ?? []), r]);
    }
    if (has("gears-3") && has("gears")) {
      const r = rps("gears-3") / rps("gears");
      resp3Ratios.push(r);
      row.push(fmtRatio(r));
    }
    for (const l of labels)
      row.push(`${fmtMs(bench.median(c, l, "p50"))} / ${fmtMs(bench.median(c, l, "p99"))}`);
    if (has("twemproxy") && has("gears")) {
      const r = bench.median(c, "gears", "p99") / bench.median(c, "twemproxy", "p99");
      p99Ratios.push(r);
      row.push(fmtRatio(r));
    }
    for (const l of proxies) row.push(fmtUs(bench.median(c, l, "cpuUs")));
    for (const [a, b] of cpuPairs) row.push(fmtSpread(bench.perRound(c, a, b, "cpuUs")));
    if (has("twemproxy") && has("gears")) {
      const list = cpuByP.get(c.pipeline) ?? [];
      list.push(bench.median(c, "gears", "cpuUs") / bench.median(c, "twemproxy", "cpuUs"));
      cpuByP.set(c.pipeline, list);
      const perRound = roundCpuByP.get(c.pipeline) ?? [];
      perRound.push(medianOf(bench.perRound(c, "gears", "twemproxy", "cpuUs")));
      roundCpuByP.set(c.pipeline, perRound);
    }
    rows.push(row);
  }
  const verdicts: Verdict[] = [];
  for (const [p, ratios] of byP) {
    const need = p === 1 ? 0.8 : 0.7;
    verdicts.push(verdict(`standalone P=${p}: gears >= ${need}x twemproxy rps`, ratios, (r) => r >= need));
  }
  if (opts.metricsAb)
    for (const [p, ratios] of bByP)
      verdicts.push(
        verdict(
          `standalone P=${p}: gears --metrics-port >= 0.97x gears without (gears-b/gears)`,
          ratios,
          (r) => r >= 0.97,
        ),
      );
  if (resp3Ratios.length > 0)
    verdicts.push(verdict("standalone: gears RESP3 >= 0.95x gears RESP2 rps", resp3Ratios, (r) => r >= 0.95));
  if (p99Ratios.length > 0)
    verdicts.push(verdict("standalone: gears p99 <= 1.5x twemproxy p99", p99Ratios, (r) => r <= 1.5, true));
  const cpu = [...cpuByP]
    .map(
      ([p, r]) =>
        `P=${p} ${fmtRatio(geomean(r))} (of the per-round medians ${fmtRatio(geomean(roundCpuByP.get(p) ?? []))})`,
    )
    .join(", ");
  const note =
    cpu === ""
      ? ""
      : `\n\nCPU time per request, gears/twemproxy (geomean over the rows; less sensitive to other load ` +
        `on the machine than rps): ${cpu}.`;
  return { text: table(header, rows) + note, verdicts };
}

function clusterReport(bench: Bench, opts: Options): { text: string; verdicts: Verdict[] } {
  const withB = opts.variant !== undefined;
  const labels = withB ? ["direct", "gears", "gears-b"] : ["direct", "gears"];
  const header = ["test", "P", "d", "direct --cluster rps", "gears rps"];
  if (withB) header.push("gears-b rps");
  header.push("gears/direct");
  if (withB) header.push("gears-b/gears");
  header.push("direct p50/p99 ms", "gears p50/p99 ms");
  if (withB) header.push("gears-b p50/p99 ms");
  header.push("gears CPU µs/req");
  if (withB) header.push("gears-b CPU µs/req");
  header.push("gears syscalls/req");
  if (withB) header.push("gears-b syscalls/req");
  const rows: string[][] = [];
  const ratios: number[] = [];
  for (const c of configs("cluster", opts)) {
    const rps = (l: string): number => bench.median(c, l, "rps");
    ratios.push(rps("gears") / rps("direct"));
    const row = [TEST_LABEL[c.test], String(c.pipeline), String(c.size)];
    for (const l of labels) row.push(fmtRps(rps(l)));
    row.push(fmtRatio(rps("gears") / rps("direct")));
    if (withB) row.push(fmtRatio(rps("gears-b") / rps("gears")));
    for (const l of labels)
      row.push(`${fmtMs(bench.median(c, l, "p50"))} / ${fmtMs(bench.median(c, l, "p99"))}`);
    for (const l of labels.slice(1)) row.push(fmtUs(bench.median(c, l, "cpuUs")));
    for (const l of labels.slice(1)) row.push(bench.median(c, l, "sysPerReq").toFixed(3));
    rows.push(row);
  }
  return {
    text: table(header, rows),
    verdicts: [verdict("cluster: gears >= 0.6x redis-benchmark --cluster", ratios, (r) => r >= 0.6)],
  };
}

// ---- cpu profiles --------------------------------------------------------------------------

/** The hottest functions of a .cpuprofile by self time, and by inclusive time for the proxy's own code. */
function summarizeProfile(file: string, top = 25): string {
  const { total, selfByName, inclByName } = profileTimes(file);
  const pct = (us: number): string => `${((100 * us) / total).toFixed(1)}%`;
  return [
    `profile ${file}: ${(total / 1e6).toFixed(1)} s sampled`,
    "",
    "Self time:",
    table(
      ["self", "function"],
      rankProfile(selfByName, () => true, top, pct),
    ),
    "",
    "Inclusive time, proxy code (dist/src):",
    table(
      ["total", "function"],
      rankProfile(inclByName, (k) => k.includes("dist/src/"), top, pct),
    ),
  ].join("\n");
}

// ---- main ----------------------------------------------------------------------------------

function machine(): string {
  const version = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
    } catch (err) {
      const e = err as { stderr?: Buffer | string };
      return String(e.stderr ?? "n/a").trim();
    }
  };
  let nutcracker = "not installed";
  if (which("nutcracker")) {
    const r = spawnSyncText("nutcracker", ["-V"]);
    nutcracker = r.split("\n")[0] ?? "unknown";
  }
  return [
    ...machineLines(),
    `node ${process.version}; ${version("redis-server", ["--version"])}; ${version("redis-benchmark", ["--version"])}; ${nutcracker}`,
  ].join("\n");
}

function spawnSyncText(cmd: string, args: string[]): string {
  try {
    // nutcracker -V prints to stderr
    return execFileSync("sh", ["-c", `${cmd} ${args.join(" ")} 2>&1`], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

interface Stack {
  redis?: RedisNode;
  cluster?: RedisCluster;
  proxies: Proxy[];
  tmp?: string;
}

const stack: Stack = { proxies: [] };
let cleaning: Promise<void> | null = null;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    const all = [...children].filter((c) => c.name !== "gears-proxy" && c.name !== "nutcracker");
    await Promise.allSettled(all.map((c) => stopChild(c, 1000)));
    await Promise.allSettled(stack.proxies.map((p) => stopChild(p.child)));
    await Promise.allSettled([...children].map((c) => stopChild(c)));
    if (stack.redis !== undefined) await stack.redis.stop().catch(() => {});
    if (stack.cluster !== undefined) await stack.cluster.stop().catch(() => {});
    if (stack.tmp !== undefined) fs.rmSync(stack.tmp, { recursive: true, force: true });
  })();
  return cleaning;
}

async function runStandalone(
  bench: Bench,
  opts: Options,
  memory: IdleMemory[],
  peaks: Map<string, number>,
  twemproxyMissing: string | undefined,
): Promise<string[]> {
  const redis = (stack.redis = await startRedis());
  // "-3" rows: the same load with redis-benchmark speaking RESP3 (HELLO 3).
  const targets: { label: string; port: number; pid?: number; extra?: string[] }[] = [];
  if (opts.targets.includes("direct")) {
    targets.push({ label: "direct", port: redis.port });
    targets.push({ label: "direct-3", port: redis.port, extra: ["-3"] });
  }
  let gears: Proxy | undefined;
  if (opts.targets.includes("gears")) {
    gears = await startGearsFor(redis.port, opts, false);
    stack.proxies.push(gears);
    targets.push({ label: "gears", port: gears.port, pid: gears.child.pid });
    targets.push({ label: "gears-3", port: gears.port, pid: gears.child.pid, extra: ["-3"] });
  }
  let gearsB: Proxy | undefined;
  if (opts.variant !== undefined) {
    gearsB = await startGearsFor(redis.port, opts, false, opts.variant);
    stack.proxies.push(gearsB);
    targets.push({ label: "gears-b", port: gearsB.port, pid: gearsB.child.pid });
  }
  let twem: Proxy | undefined;
  if (opts.targets.includes("twemproxy")) {
    const why = twemproxyMissing;
    if (why !== undefined) say(`twemproxy column skipped: ${why}`);
    else {
      twem = await startTwemproxy(redis.port, stack.tmp!);
      stack.proxies.push(twem);
      targets.push({ label: "twemproxy", port: twem.port, pid: twem.child.pid });
    }
  }
  say(`standalone: redis ${redis.port}${targets.map((t) => `, ${t.label} ${t.port}`).join("")}`);

  const proxies: [string, Proxy | undefined][] = [
    ["gears-proxy", gears],
    ["gears-b", gearsB],
    ["twemproxy", twem],
  ];
  for (const phase of ["fresh", "warm"]) {
    if (phase === "warm") for (const [, p] of proxies) if (p !== undefined) await warmUp(p.port, opts);
    await flushAll([redis]);
    if (!opts.memory) continue;
    for (const [name, p] of proxies)
      if (p !== undefined) memory.push(await measureIdle(name, phase, p, opts.idleClients));
  }

  // Sizes outermost, so the keyspace GET reads is filled once per size; rounds alternate within.
  for (const size of opts.sizes) {
    await flushAll([redis]);
    if (opts.tests.includes("get")) await prefill(redis.port, opts, size);
    const all = configs("standalone", opts).filter((c) => c.size === size);
    for (let round = 0; round < opts.rounds; round++)
      for (let i = 0; i < all.length; i++) {
        const c = all[i];
        const order = targets.map((_, k) => targets[(k + round + i) % targets.length]);
        for (const t of order) {
          const stopSampling = t.pid !== undefined ? sampleRss(t.pid, 100) : undefined;
          const s = await bench.measure(c, t.label, t.port, round, t.extra ?? [], t.pid);
          if (stopSampling !== undefined) {
            const key = `${t.label} standalone P=${c.pipeline}`;
            peaks.set(key, Math.max(peaks.get(key) ?? 0, stopSampling()));
          }
          if (c.test === "lpush" || c.test === "lrange_100") await dropLists([redis]);
          say(
            `  round ${round + 1}/${opts.rounds} ${configKey(c)} ${t.label}: ${s ? `${fmtRps(s.rps)} rps, p99 ${fmtMs(s.p99)} ms (n=${s.n}, ${s.seconds.toFixed(2)} s)` : "FAILED"}`,
          );
        }
      }
  }
  return targets.map((t) => t.label);
}

async function runCluster(bench: Bench, opts: Options, peaks: Map<string, number>): Promise<void> {
  const cluster = (stack.cluster = await startCluster({ masters: 3 }));
  const seed = cluster.nodes[0];
  const gears = await startGearsFor(seed.port, opts, true);
  stack.proxies.push(gears);
  say(`cluster: nodes ${cluster.nodes.map((n) => n.port).join(",")}, gears ${gears.port}`);
  const direct = ["--cluster"];
  const targets: { label: string; port: number; extra: string[]; pid: number | undefined }[] = [
    { label: "direct", port: seed.port, extra: direct, pid: undefined },
    { label: "gears", port: gears.port, extra: [], pid: gears.child.pid },
  ];
  if (opts.variant !== undefined) {
    const b = await startGearsFor(seed.port, opts, true, opts.variant);
    stack.proxies.push(b);
    targets.push({ label: "gears-b", port: b.port, extra: [], pid: b.child.pid });
  }
  for (const t of targets) if (t.pid !== undefined) await warmUp(t.port, opts);
  for (const size of opts.sizes) {
    await flushAll(cluster.nodes);
    if (opts.tests.includes("get")) {
      await prefill(seed.port, opts, size, direct);
      await prefill(gears.port, opts, size);
    }
    const all = configs("cluster", opts).filter((c) => c.size === size);
    for (let round = 0; round < opts.rounds; round++)
      for (let i = 0; i < all.length; i++) {
        const c = all[i];
        const order = targets.map((_, k) => targets[(k + round + i) % targets.length]);
        for (const t of order) {
          const stopSampling = t.pid !== undefined ? sampleRss(t.pid, 100) : undefined;
          const s = await bench.measure(c, t.label, t.port, round, t.extra, t.pid);
          if (stopSampling !== undefined) {
            const key = `${t.label} cluster P=${c.pipeline}`;
            peaks.set(key, Math.max(peaks.get(key) ?? 0, stopSampling()));
          }
          if (c.test === "lpush" || c.test === "lrange_100") await dropLists(cluster.nodes);
          say(
            `  round ${round + 1}/${opts.rounds} ${configKey(c)} ${t.label}: ${s ? `${fmtRps(s.rps)} rps, p99 ${fmtMs(s.p99)} ms (n=${s.n}, ${s.seconds.toFixed(2)} s)` : "FAILED"}`,
          );
        }
      }
  }
  // Stopped while the cluster still answers, with time to write a --profile.
  for (const p of stack.proxies) await stopChild(p.child, 15_000);
  stack.proxies = [];
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  if (opts === null) return 0;
  if (!fs.existsSync(PROXY_CLI)) throw new Error(`${PROXY_CLI} missing: build first (npx tsc -p .)`);
  if (opts.profileDir !== undefined) fs.mkdirSync(opts.profileDir, { recursive: true });
  const startedAt = Date.now();
  const twemproxyMissing =
    opts.standalone && opts.targets.includes("twemproxy") ? ensureTwemproxy() : undefined;
  const header = machine();
  const command =
    `node ${path.relative(process.cwd(), process.argv[1])} ${process.argv.slice(2).join(" ")}`.trim();
  say(header);
  stack.tmp = fs.mkdtempSync(path.join(os.tmpdir(), "gears-bench-"));
  const bench = new Bench(opts);
  const memory: IdleMemory[] = [];
  const peaks = new Map<string, number>();
  let labels: string[] = [];
  const profilesBefore = new Set(opts.profileDir !== undefined ? fs.readdirSync(opts.profileDir) : []);
  try {
    if (opts.standalone) labels = await runStandalone(bench, opts, memory, peaks, twemproxyMissing);
    if (stack.redis !== undefined) {
      for (const p of stack.proxies) await stopChild(p.child);
      stack.proxies = [];
      await stack.redis.stop();
      stack.redis = undefined;
    }
    if (opts.cluster && opts.targets.includes("gears")) await runCluster(bench, opts, peaks);
  } finally {
    await cleanup();
  }

  const profiles: string[] = [];
  if (opts.profileDir !== undefined) {
    const files = fs
      .readdirSync(opts.profileDir)
      .filter((f) => f.endsWith(".cpuprofile") && !profilesBefore.has(f))
      .map((f) => path.join(opts.profileDir!, f));
    for (const f of files) profiles.push(summarizeProfile(f));
  }
  const record: RunRecord = {
    header,
    command,
    opts,
    labels,
    samples: Object.fromEntries([...bench.samples].map(([k, m]) => [k, Object.fromEntries(m)])),
    failures: bench.failures,
    memory,
    peaks: [...peaks],
    twemproxyMissing,
    profiles,
    seconds: (Date.now() - startedAt) / 1000,
    loadEnd: os.loadavg(),
  };
  if (opts.json !== undefined) fs.writeFileSync(opts.json, JSON.stringify(record, null, 2));
  process.stdout.write(render(record));
  return bench.failures.length > 0 ? 1 : 0;
}

/** Everything a run produced; --json writes it, --from-json renders it again. */
interface RunRecord {
  header: string;
  command: string;
  opts: Options;
  labels: string[];
  samples: Record<string, Record<string, Sample[]>>;
  failures: string[];
  memory: IdleMemory[];
  peaks: [string, number][];
  twemproxyMissing: string | undefined;
  profiles: string[];
  seconds: number;
  loadEnd: number[];
}

function render(r: RunRecord): string {
  const opts = r.opts;
  const bench = new Bench(opts);
  for (const [key, byTarget] of Object.entries(r.samples)) {
    bench.samples.set(key, new Map(Object.entries(byTarget)));
  }
  const out: string[] = [];
  out.push("## gears-proxy pass-through benchmark", "", "```", r.header, `command: ${r.command}`, "```", "");
  out.push(
    `redis-benchmark -c ${opts.clients} -r ${opts.keyspace}, -n sized for ~${opts.seconds} s per measurement; ` +
      `median of ${opts.rounds} alternating round(s); latencies in ms; CPU µs/req is the proxy process' ` +
      "user+system time per request.",
    "",
  );
  const verdicts: Verdict[] = [];
  if (opts.standalone && r.labels.length > 0) {
    const rep = standaloneReport(bench, opts, r.labels);
    out.push("### Standalone (one redis-server)", "", rep.text, "");
    verdicts.push(...rep.verdicts);
  }
  if (opts.cluster && [...bench.samples.keys()].some((k) => k.startsWith("cluster"))) {
    const rep = clusterReport(bench, opts);
    out.push("### Cluster (3 masters)", "", rep.text, "");
    verdicts.push(...rep.verdicts);
  }
  const memRows = r.memory.map((m) => [
    m.target,
    m.phase === "fresh" ? "just started" : "after the warm-up load",
    mb(m.beforeKb),
    `${mb(m.idleKb)} (${m.clients} clients)`,
  ]);
  const peakRows = r.peaks.map(([k, kb]) => [k, mb(kb)]);
  if (memRows.length > 0 || peakRows.length > 0) {
    out.push("### Memory (RSS)", "");
    if (memRows.length > 0)
      out.push(table(["process", "when", "RSS before", "RSS with idle clients"], memRows), "");
    if (peakRows.length > 0)
      out.push(table(["process / load", "peak RSS during the measurements"], peakRows), "");
    const gearsIdle = r.memory
      .filter((m) => m.target === "gears-proxy")
      .sort((x, y) => y.idleKb - x.idleKb)[0];
    if (gearsIdle !== undefined) {
      const worst = gearsIdle.idleKb / 1024;
      const met = worst < 150;
      verdicts.push({
        target: `gears RSS with ${gearsIdle.clients} idle clients < 150 MB (highest of fresh/warm)`,
        rows: 1,
        worst,
        geomean: worst,
        missing: met ? 0 : 1,
        met,
      });
    }
  }
  if (verdicts.length > 0) {
    out.push("### Targets", "");
    out.push(
      table(
        ["target", "geomean", "worst row", "verdict"],
        verdicts.map((v) => {
          const rss = v.target.includes("RSS");
          return [
            v.target,
            rss ? `${v.geomean.toFixed(1)} MB` : fmtRatio(v.geomean),
            rss ? "" : fmtRatio(v.worst),
            verdictText(v),
          ];
        }),
      ),
      "",
    );
  }
  if (r.twemproxyMissing) out.push(`Note: twemproxy column skipped: ${r.twemproxyMissing}`, "");
  if (r.failures.length > 0) {
    out.push("### Failed measurements", "", ...r.failures.map((f) => `- ${f.split("\n")[0]}`), "");
  }
  for (const p of r.profiles) out.push("### CPU profile", "", p, "");
  out.push(
    `total time: ${r.seconds.toFixed(0)} s; load average at the end: ` +
      `${r.loadEnd.map((l) => l.toFixed(2)).join(" ")} (other processes on the machine add noise)`,
  );
  return `${out.join("\n")}\n`;
}

runBench(main, cleanup);
