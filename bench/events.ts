/**
 * Events benchmark (issue #5): the all-keys KeysReader registration
 *   GB().filter(x => x.key !== 'all_keys').foreach(x => execute('SADD', 'all_keys', x.key)).register()
 * with writes through gears-proxy, and the same registration in Python as RedisGears 1.x
 * documents it (RG.PYEXECUTE, the proxy started with --python), beside a hand-written ioredis keyspace-notification consumer
 * (a child process PSUBSCRIBEd to `__keyevent@0__:*` on every master, SADDing each key into
 * `all_keys_direct`) with writes straight to Redis; on one redis-server and on a 3-master
 * cluster, in alternating rounds. Two phases per side and round:
 * - throughput: N distinct keys SET by many pipelined writers, timed until SCARD of the
 *   set says every key arrived (events/s), then checked for lost events;
 * - latency: a paced writer; each write's effect (its key in the set) is detected by a
 *   keyevent-triggered SMISMEMBER, and the time from the write's reply to that is recorded.
 * See `--help`.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import calculateSlot from "cluster-key-slot";
import { Redis } from "ioredis";
import { startCluster, type RedisCluster } from "../spec/harness/cluster.js";
import { startRedis, type RedisNode } from "../spec/harness/redis.js";
import {
  HOST,
  PROXY_CLI,
  children,
  forkChild,
  machineHeader,
  profileTimes,
  rankProfile,
  appendReport,
  runBench,
  say,
  sleep,
  startGears,
  stopChild,
  table,
  type Child,
  type Proxy,
  cpuSeconds,
  median,
} from "./support.js";

// ---- options -----------------------------------------------------------------------------

type Setup = "standalone" | "cluster";
const SETUPS: readonly Setup[] = ["standalone", "cluster"];

interface Options {
  setups: Setup[];
  rounds: number;
  writes: number;
  writers: number;
  pipeline: number;
  rates: number[];
  latencySeconds: number;
  /** Writes through the proxy, untimed, before its first round: its JIT and the guest's wasm warmed up. */
  warmup: number;
  autoPipelining: boolean;
  registration: string;
  /** Also run the Python registration (RG.PYEXECUTE) in each round. */
  python: boolean;
  profileDir: string | undefined;
  /** Idle time after the warm-up, before the first round: the JIT and GC work it left finish first. */
  settleMs: number;
  /** Where the proxy's allocation profiles of its throughput runs go (events-alloc.ts). */
  allocDir: string | undefined;
  proxyArgs: string[];
  proxyNodeArgs: string[];
  append: string | undefined;
  json: string | undefined;
  /** Another build's dist/src/cli.js: each round runs it too, alternating with this one. */
  base: string | undefined;
  /** Node flags for the base build's proxy instead of --proxy-node-args (A/B of node flags on one build). */
  baseNodeArgs: string[] | undefined;
}

const HELP = `Usage: node dist/bench/events.js [options]

  --quick                  one round, 10,000 writes, 1.5 s of paced writes at 1000/s (smoke run)
  --setups LIST            standalone,cluster (default both)
  --rounds N               alternating rounds; medians are reported (default 3)
  --writes N               keys SET per throughput run (default 30000)
  --writers N              writer connections in the throughput phase (default 50)
  --pipeline N             SETs per pipelined batch of a writer (default 10)
  --rates LIST             paced writes per second in the latency phase, one set of runs per rate
                           (default 200,1000: light load, and the issue's rate)
  --latency-seconds S      length of a latency run, warm-up included (default 3)
  --warmup N               N writes through the proxy, untimed, before its first round (each proxy
                           process): the rounds then show the steady state, without V8's one-time
                           compiling (JIT, the guest's wasm tiered up) of a fresh process
  --no-auto-pipelining     the hand-written consumer SADDs without ioredis' enableAutoPipelining
  --no-python              leave out the Python registration (RG.PYEXECUTE, the proxy with --python)
  --registration SCRIPT    register this instead of the issue's script (for experiments; it must
                           SADD every key but 'all_keys' into 'all_keys', and nothing else)
  --profile DIR            run gears-proxy under node --cpu-prof and print the hottest functions
  --settle MS              after the warm-up, leave the proxy idle MS ms before the first round (the
                           V8 compile and GC work the warm-up queued runs then, not inside round 1)
  --alloc-profile DIR      sample the proxy main thread's allocations, garbage included, during each
                           throughput run (bench/events-alloc.ts) and print bytes per write by function
  --proxy-args "..."       extra gears-proxy flags
  --proxy-node-args "..."  extra node flags for the proxy process
  --base CLI               also run another build (its dist/src/cli.js) in every round, alternating
                           with this one (each build with its own fresh deployment per round), and
                           compare the two (same-run A/B)
  --base-node-args "..."   node flags for the base build's proxy instead of --proxy-node-args
                           (with --base naming this build: an A/B of node flags)
  --append FILE            append the markdown report to FILE
                           (EVENTS_THREADS=1 in the environment prints each thread's CPU per throughput run)
  --json FILE              also write every sample as JSON
  --help
`;

function positive(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${what}: '${text}' is not a positive number`);
  return n;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      setups: { type: "string" },
      rounds: { type: "string" },
      writes: { type: "string" },
      writers: { type: "string" },
      pipeline: { type: "string" },
      rates: { type: "string" },
      "latency-seconds": { type: "string" },
      warmup: { type: "string" },
      "no-auto-pipelining": { type: "boolean" },
      "no-python": { type: "boolean" },
      registration: { type: "string" },
      profile: { type: "string" },
      "alloc-profile": { type: "string" },
      settle: { type: "string" },
      "proxy-args": { type: "string" },
      "proxy-node-args": { type: "string" },
      append: { type: "string" },
      json: { type: "string" },
      base: { type: "string" },
      "base-node-args": { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(HELP);
    return null;
  }
  const quick = values.quick === true;
  const setups = (values.setups ?? SETUPS.join(",")).split(",").map((s) => s.trim());
  const bad = setups.find((s) => !SETUPS.some((k) => k === s));
  if (bad !== undefined || setups.length === 0) throw new Error(`--setups: '${values.setups}'`);
  const int = (text: string | undefined, dflt: number, what: string): number =>
    text === undefined ? dflt : Math.round(positive(text, what));
  return {
    setups: SETUPS.filter((s) => setups.includes(s)),
    rounds: int(values.rounds, quick ? 1 : 3, "--rounds"),
    writes: int(values.writes, quick ? 10_000 : 30_000, "--writes"),
    writers: int(values.writers, 50, "--writers"),
    pipeline: int(values.pipeline, 10, "--pipeline"),
    rates: (values.rates ?? (quick ? "1000" : "200,1000"))
      .split(",")
      .map((r) => Math.round(positive(r.trim(), "--rates"))),
    latencySeconds:
      values["latency-seconds"] !== undefined
        ? positive(values["latency-seconds"], "--latency-seconds")
        : quick
          ? 1.5
          : 3,
    warmup: values.warmup === undefined ? 0 : Math.round(positive(values.warmup, "--warmup")),
    autoPipelining: values["no-auto-pipelining"] !== true,
    registration: values.registration ?? REGISTRATION,
    python: values["no-python"] !== true,
    profileDir: values.profile,
    settleMs: values.settle === undefined ? 0 : Math.round(positive(values.settle, "--settle")),
    allocDir: values["alloc-profile"] === undefined ? undefined : path.resolve(values["alloc-profile"]),
    proxyArgs: (values["proxy-args"] ?? "").split(/\s+/).filter((a) => a !== ""),
    proxyNodeArgs: (values["proxy-node-args"] ?? "").split(/\s+/).filter((a) => a !== ""),
    append: values.append,
    json: values.json,
    base: values.base,
    baseNodeArgs:
      values["base-node-args"] === undefined
        ? undefined
        : values["base-node-args"].split(/\s+/).filter((a) => a !== ""),
  };
}

// ---- constants -----------------------------------------------------------------------------

/** The allocation sampler --alloc-profile preloads into the proxy. */
const ALLOC_PRELOAD = fileURLToPath(new URL("./events-alloc.js", import.meta.url));
const PROXY_SET = "all_keys";
const DIRECT_SET = "all_keys_direct";
const FLOOR_SET = "all_keys_floor";
const REGISTRATION = `GB().filter(x => x.key !== '${PROXY_SET}').foreach(x => execute('SADD', '${PROXY_SET}', x.key)).register()`;
/** Time left to the proxy, after its first RG.PYEXECUTEs, to restore its warm interpreters. */
const PYTHON_SETTLE_MS = 4000;
/** The same registration in Python, verbatim as RedisGears 1.x documents it. */
const PY_REGISTRATION = `GearsBuilder().filter(lambda x: x['key'] != '${PROXY_SET}').foreach(lambda x: execute('sadd', '${PROXY_SET}', x['key'])).register()`;
/** What a hand-written consumer (and the detection floor) turns on; the proxy must do it itself. */
const NOTIFY_FLAGS = "AE";
const KEYEVENT_PATTERN = "__keyevent@0__:*";
const SADD_CHANNEL = "__keyevent@0__:sadd";
/** Latency samples of the writes sent in this first part of a run are dropped (JIT, connection warm-up). */
const WARMUP_SECONDS = 0.5;
/** A run whose set stops growing for this long after the last write has lost events. */
const STALL_MS = 5000;
const SCARD_POLL_MS = 5;

// ---- the hand-written consumer (a child process) ---------------------------------------------

interface ConsumerStats {
  /** Keyevent notifications received, its own set's included. */
  events: number;
  sadds: number;
  errors: number;
  lastError: string | null;
}

type ToConsumer =
  | { type: "start"; set: string; ports: number[]; saddPort: number; autoPipelining: boolean }
  | { type: "stats" }
  | { type: "stop" };

type FromConsumer =
  { type: "started" } | { type: "stats"; stats: ConsumerStats } | { type: "failed"; message: string };

/**
 * The baseline, in its own process so that it competes for the CPU like the proxy does, not
 * inside the writers' event loop: enable notifications, PSUBSCRIBE every master, SADD each
 * key seen (except the set's own) into the set.
 */
function consumerMain(): void {
  let subs: Redis[] = [];
  let writer: Redis | null = null;
  let stats: ConsumerStats = { events: 0, sadds: 0, errors: 0, lastError: null };
  const reply = (m: FromConsumer): void => void process.send?.(m);
  const close = (): void => {
    for (const c of [...subs, ...(writer !== null ? [writer] : [])]) c.disconnect();
    subs = [];
    writer = null;
  };
  const start = async (m: Extract<ToConsumer, { type: "start" }>): Promise<void> => {
    close();
    stats = { events: 0, sadds: 0, errors: 0, lastError: null };
    const w = (writer = new Redis({ host: HOST, port: m.saddPort, enableAutoPipelining: m.autoPipelining }));
    const set = m.set;
    for (const port of m.ports) {
      const admin = new Redis({ host: HOST, port });
      const current = String(((await admin.config("GET", "notify-keyspace-events")) as string[])[1] ?? "");
      if (!current.includes("E") || !current.includes("A"))
        await admin.config("SET", "notify-keyspace-events", `${current}${NOTIFY_FLAGS}`);
      admin.disconnect();
      const sub = new Redis({ host: HOST, port });
      sub.on("pmessage", (_pattern: string, _channel: string, key: string) => {
        stats.events++;
        if (key === set) return;
        w.sadd(set, key).then(
          () => stats.sadds++,
          (err: unknown) => {
            stats.errors++;
            stats.lastError = err instanceof Error ? err.message : String(err);
          },
        );
      });
      await sub.psubscribe(KEYEVENT_PATTERN);
      subs.push(sub);
    }
  };
  process.on("message", (m: ToConsumer) => {
    switch (m.type) {
      case "start":
        start(m).then(
          () => reply({ type: "started" }),
          (err: unknown) => reply({ type: "failed", message: String(err) }),
        );
        break;
      case "stats":
        reply({ type: "stats", stats });
        break;
      case "stop":
        close();
        reply({ type: "stats", stats });
        break;
    }
  });
  process.on("disconnect", () => {
    close();
    process.exit(0);
  });
}

/** The parent's handle on the consumer child: one request at a time, answered in order. */
class Consumer {
  private waiting: ((m: FromConsumer) => void)[] = [];

  constructor(readonly child: Child) {
    child.proc.on("message", (m: FromConsumer) => this.waiting.shift()?.(m));
  }

  private ask(m: ToConsumer): Promise<FromConsumer> {
    return new Promise((resolve, reject) => {
      if (this.child.done) reject(new Error(`consumer exited:\n${this.child.output}`));
      const timer = setTimeout(() => reject(new Error(`consumer did not answer ${m.type}`)), 15_000);
      this.waiting.push((answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      this.child.proc.send(m);
    });
  }

  async start(set: string, ports: number[], saddPort: number, autoPipelining: boolean): Promise<void> {
    const a = await this.ask({ type: "start", set, ports, saddPort, autoPipelining });
    if (a.type !== "started") throw new Error(`consumer start: ${JSON.stringify(a)}`);
  }

  async stats(stop = false): Promise<ConsumerStats> {
    const a = await this.ask({ type: stop ? "stop" : "stats" });
    if (a.type !== "stats") throw new Error(`consumer stats: ${JSON.stringify(a)}`);
    return a.stats;
  }
}

// ---- deployments ---------------------------------------------------------------------------

function client(port: number, extra: { autoPipelining?: boolean } = {}): Redis {
  const c = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    enableAutoPipelining: extra.autoPipelining ?? false,
  });
  c.on("error", () => {}); // failures surface as rejected commands
  stack.clients.push(c);
  return c;
}

async function connected(c: Redis): Promise<Redis> {
  await c.connect();
  return c;
}

/** The masters of one setup, with a connection to each, and which one owns a key. */
interface Deployment {
  setup: Setup;
  ports: number[];
  /** The masters' redis-server pids, for their CPU time. */
  pids: number[];
  /** Per master port: a connection for bench chores (SCARD polling, FLUSHALL, CONFIG). */
  admin: Map<number, Redis>;
  ownerPort(key: string): number;
  stop(): Promise<void>;
}

async function deploy(setup: Setup): Promise<Deployment> {
  let node: RedisNode | undefined;
  let cluster: RedisCluster | undefined;
  let ports: number[];
  let pids: number[];
  const owners = new Int32Array(16384);
  if (setup === "standalone") {
    node = await startRedis();
    ports = [node.port];
    pids = [node.pid];
    owners.fill(node.port);
  } else {
    cluster = await startCluster({ masters: 3 });
    const masters = (await cluster.masters()).sort((a, b) => a.port - b.port);
    ports = masters.map((n) => n.port);
    pids = masters.map((n) => n.pid);
    const reply = (await cluster.nodes[0].call("CLUSTER", "SLOTS")) as unknown[];
    owners.fill(-1);
    for (const range of reply) {
      const [start, end, master] = range as [number, number, [string, number]];
      owners.fill(Number(master[1]), Number(start), Number(end) + 1);
    }
    if (owners.includes(-1)) throw new Error("CLUSTER SLOTS does not cover every slot");
  }
  const admin = new Map(await Promise.all(ports.map(async (p) => [p, await connected(client(p))] as const)));
  const stop = async (): Promise<void> => {
    for (const c of admin.values()) c.disconnect();
    await node?.stop();
    await cluster?.stop();
  };
  stack.stops.push(stop);
  return {
    setup,
    ports,
    pids,
    admin,
    ownerPort: (key) => (setup === "standalone" ? ports[0] : owners[calculateSlot(key)]),
    stop,
  };
}

/** Empties every master and turns keyspace notifications off, so each side must turn them on. */
async function reset(dep: Deployment): Promise<void> {
  for (const c of dep.admin.values()) {
    await c.flushall();
    await c.config("SET", "notify-keyspace-events", "");
  }
}

async function notifyFlags(dep: Deployment): Promise<string[]> {
  return Promise.all(
    [...dep.admin.values()].map(async (c) =>
      String(((await c.config("GET", "notify-keyspace-events")) as string[])[1] ?? ""),
    ),
  );
}

const keyeventsOn = (flags: string): boolean =>
  flags.includes("E") && (flags.includes("A") || [..."g$lshzxet"].every((c) => flags.includes(c)));

// ---- the proxy's registration ----------------------------------------------------------------

/** A flat [k1, v1, k2, v2, ...] reply as a map. */
function pairs(reply: unknown): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) out.set(String(reply[i]), reply[i + 1]);
  return out;
}

interface RegStats {
  id: string;
  numTriggered: number;
  numSuccess: number;
  numFailures: number;
  numAborted: number;
  lastError: string | null;
}

async function registrations(proxy: Redis): Promise<RegStats[]> {
  const reply = await proxy.call("RG.DUMPREGISTRATIONS");
  if (!Array.isArray(reply)) throw new Error(`RG.DUMPREGISTRATIONS: ${JSON.stringify(reply)}`);
  return reply.map((entry) => {
    const e = pairs(entry);
    const d = pairs(e.get("RegistrationData"));
    const last = d.get("lastError");
    return {
      id: String(e.get("id")),
      numTriggered: Number(d.get("numTriggered")),
      numSuccess: Number(d.get("numSuccess")),
      numFailures: Number(d.get("numFailures")),
      numAborted: Number(d.get("numAborted")),
      lastError: last === null || last === undefined ? null : String(last),
    };
  });
}

/** Registers the all-keys registration and checks the proxy turned notifications on. */
async function register(
  proxy: Redis,
  dep: Deployment,
  script: string,
  command: "RG.EXECUTE" | "RG.PYEXECUTE",
): Promise<{ id: string; flags: string[] }> {
  const before = await registrations(proxy);
  if (before.length > 0) throw new Error(`registrations left over: ${before.map((r) => r.id).join(", ")}`);
  const reply = await proxy.call(command, [script]);
  if (reply !== "OK") throw new Error(`${command} register: ${JSON.stringify(reply)}`);
  const regs = await registrations(proxy);
  if (regs.length !== 1) throw new Error(`expected one registration, found ${regs.length}`);
  const flags = await notifyFlags(dep);
  if (!flags.every(keyeventsOn)) {
    throw new Error(
      `the proxy did not enable keyevent notifications: notify-keyspace-events ${flags.join(", ")}`,
    );
  }
  return { id: regs[0].id, flags };
}

// ---- writing -------------------------------------------------------------------------------

/** Sends pipelined SETs of a batch of keys and resolves when all are acknowledged. */
type BatchWriter = (keys: string[]) => Promise<void>;

function checkReplies(replies: [Error | null, unknown][] | null): void {
  const failed = (replies ?? []).find(([err]) => err !== null);
  if (failed !== undefined) throw new Error(`SET failed: ${String(failed[0])}`);
}

function proxyWriter(conn: Redis): BatchWriter {
  return async (keys) => {
    const p = conn.pipeline();
    for (const k of keys) p.set(k, "1");
    checkReplies(await p.exec());
  };
}

/** Straight to the masters: one pipeline per owning master, as a cluster-aware client would. */
function directWriter(dep: Deployment, conns: Map<number, Redis>): BatchWriter {
  return async (keys) => {
    const byPort = new Map<number, string[]>();
    for (const k of keys) {
      const port = dep.ownerPort(k);
      const list = byPort.get(port) ?? [];
      list.push(k);
      byPort.set(port, list);
    }
    await Promise.all(
      [...byPort].map(async ([port, list]) => {
        const p = conns.get(port)!.pipeline();
        for (const k of list) p.set(k, "1");
        checkReplies(await p.exec());
      }),
    );
  };
}

// ---- phases --------------------------------------------------------------------------------

interface Settled {
  /** For the proxy: the registration's counters; for the consumer: events seen. */
  triggered: number;
  failures: number;
  lastError: string | null;
}

/** Waits until a side's counters reach `expected` and stop moving (the set's own events come last). */
async function settle(read: () => Promise<Settled>, expected: number): Promise<Settled> {
  const deadline = Date.now() + 15_000;
  let last = await read();
  let stableSince = Date.now();
  while (Date.now() < deadline) {
    await sleep(100);
    const now = await read();
    if (now.triggered !== last.triggered) stableSince = Date.now();
    last = now;
    if (now.triggered >= expected && Date.now() - stableSince >= 300) break;
    if (now.triggered < expected && Date.now() - stableSince >= 3000) break;
  }
  return last;
}

interface ThroughputRun {
  setup: Setup;
  side: Side;
  round: number;
  writes: number;
  /** From the first write to the set holding every key. */
  ms: number;
  /** From the first write to the last write's acknowledgement. */
  writeMs: number;
  eventsPerS: number;
  /** CPU seconds during the run (first write to the last key in the set): the handler's process, the masters. */
  handlerCpu: number;
  /** The handler process's main thread alone (the proxy's event loop; the consumer's only thread). */
  mainCpu: number;
  /** The busiest other thread (the proxy's guest worker), and the rest (V8's GC helpers...). */
  workerCpu: number;
  helpersCpu: number;
  /**
   * Of helpersCpu, the threads started after the process's first second (the rest, V8's platform
   * workers, GC and JIT, start with it): in the proxy, other isolates' workers, such as a warm
   * spare starting (src/sandbox/warm-isolates.ts starts one once the registration's isolate has
   * been at work for busyStartMs, 1 s, or idle for keptIdleMs).
   */
  startedCpu: number;
  redisCpu: number;
  scard: number;
  lost: number;
  triggered: number;
  expectedTriggered: number;
  failures: number;
  lastError: string | null;
}

/** CLK_TCK, for the main thread's CPU time. */
let clockTicks = 0;

/**
 * CPU seconds (user + system) of the main thread of process `pid` alone (its tid is its
 * pid): the proxy's event loop, without the guests' worker threads. NaN when unreadable.
 */
function mainThreadCpuSeconds(pid: number): number {
  try {
    if (clockTicks === 0)
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" })) || 100;
    const stat = fs.readFileSync(`/proc/${pid}/task/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return NaN;
  }
}

/** A thread's start, in clock ticks after boot, by tid (threadCpuSeconds() notes them). */
const threadStarts = new Map<number, number>();

/**
 * CPU seconds of each thread of process `pid`, by tid. Node names none of its threads, so
 * the bench tells them apart by what they did: the busiest one besides the main thread is the
 * guest's worker (one registration, one isolate), the rest V8's helpers (GC) and libuv's pool.
 */
function threadCpuSeconds(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  if (clockTicks === 0) mainThreadCpuSeconds(pid);
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(Number(tid), (Number(fields[11]) + Number(fields[12])) / clockTicks);
      threadStarts.set(Number(tid), Number(fields[19]));
    } catch {
      // ended meanwhile
    }
  }
  return out;
}

/**
 * Between two threadCpuSeconds(): the busiest thread besides the main one, the others together,
 * and of those the ones started after the process's first second. Node names none of its
 * threads (all are "node"): V8's platform workers (GC, JIT) start with the process, isolates'
 * workers later.
 */
function workerAndHelpers(
  pid: number,
  before: Map<number, number>,
  after: Map<number, number>,
): { worker: number; helpers: number; started: number } {
  let worker = 0;
  let workerTid = -1;
  let all = 0;
  if (process.env.EVENTS_THREADS === "1") {
    const used = [...after].map(
      ([tid, s]) => `${tid - pid}${late(pid, tid) ? "*" : ""}:${(s - (before.get(tid) ?? 0)).toFixed(2)}`,
    );
    say(`    threads (tid - pid, * started after the process's first second: CPU s): ${used.join(" ")}`);
  }
  for (const [tid, seconds] of after) {
    if (tid === pid) continue;
    const used = seconds - (before.get(tid) ?? 0);
    all += used;
    if (used > worker) {
      worker = used;
      workerTid = tid;
    }
  }
  let started = 0;
  for (const [tid, seconds] of after)
    if (tid !== pid && tid !== workerTid && late(pid, tid)) started += seconds - (before.get(tid) ?? 0);
  return { worker, helpers: all - worker, started };
}

/**
 * Has the proxy (preloaded with events-alloc.ts) write its allocation profile so far, as
 * `label`, and start a new one; resolves with the file once it is there.
 */
async function allocMark(dir: string, pid: number, label: string): Promise<string> {
  const file = path.join(dir, `${label}.heapprofile`);
  fs.rmSync(file, { force: true });
  fs.writeFileSync(path.join(dir, "label"), label);
  process.kill(pid, "SIGUSR2");
  for (const until = Date.now() + 10_000; Date.now() < until; await sleep(10)) {
    // Written in one call, but not atomically: a file that does not parse yet is looked at again.
    try {
      JSON.parse(fs.readFileSync(file, "utf8"));
      return file;
    } catch {
      // not yet
    }
  }
  throw new Error(`no allocation profile ${file} from the proxy (pid ${pid})`);
}

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

/** Bytes allocated per write on the proxy's main thread, by function (self), garbage included. */
function summarizeAllocations(file: string, writes: number, top = 20): string {
  const head = (JSON.parse(fs.readFileSync(file, "utf8")) as { head: HeapNode }).head;
  const bytes = new Map<string, number>();
  const walk = (n: HeapNode): void => {
    const f = n.callFrame;
    const url = f.url.replace(/^file:\/\//, "").replace(/^.*\/dist\//, "");
    const name = `${f.functionName || "(anonymous)"} ${url}:${f.lineNumber + 1}`;
    bytes.set(name, (bytes.get(name) ?? 0) + n.selfSize);
    for (const c of n.children) walk(c);
  };
  walk(head);
  const total = [...bytes.values()].reduce((a, b) => a + b, 0);
  const lines = [...bytes]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, b]) => `      ${Math.round(b / writes)} B  ${name}`);
  return [
    `    allocated on the main thread: ${Math.round(total / writes)} B per write (sampled; self, top ${top}):`,
    ...lines,
  ].join("\n");
}

/** Whether thread `tid` of `pid` started more than a second after the process. */
function late(pid: number, tid: number): boolean {
  return (threadStarts.get(tid) ?? 0) - (threadStarts.get(pid) ?? 0) > clockTicks;
}

async function throughput(
  dep: Deployment,
  side: Side,
  round: number,
  writers: BatchWriter[],
  opts: Options,
  counters: () => Promise<Settled>,
  handlerPid: number,
): Promise<ThroughputRun> {
  const set = side === "direct" ? DIRECT_SET : PROXY_SET;
  const poller = dep.admin.get(dep.ownerPort(set))!;
  const prefix = `ev:${round}${side.slice(0, 2)}:`;
  const n = opts.writes;
  let next = 0;
  let writeMs = NaN;
  const redisCpu = (): number => dep.pids.reduce((a, pid) => a + cpuSeconds(pid), 0);
  const sampling = opts.allocDir !== undefined && side === "proxy" && round > 0;
  if (sampling) fs.rmSync(await allocMark(opts.allocDir!, handlerPid, "before"));
  // After the mark: writing the profile is not the round's work.
  const cpu0 = [cpuSeconds(handlerPid), redisCpu(), mainThreadCpuSeconds(handlerPid)];
  const threads0 = threadCpuSeconds(handlerPid);
  const t0 = performance.now();
  const writing = Promise.all(
    writers.map(async (write) => {
      while (next < n) {
        const from = next;
        next = Math.min(n, next + opts.pipeline);
        const keys: string[] = [];
        for (let i = from; i < next; i++) keys.push(prefix + i);
        await write(keys);
      }
    }),
  ).then(() => {
    writeMs = performance.now() - t0;
  });
  let writeError: unknown = null;
  writing.catch((err: unknown) => (writeError = err));
  let scard = 0;
  let changedAt = performance.now();
  let doneAt = NaN;
  while (writeError === null) {
    await sleep(SCARD_POLL_MS);
    const now = await poller.scard(set);
    const at = performance.now();
    if (now !== scard) changedAt = at;
    scard = now;
    if (scard >= n) {
      doneAt = at;
      break;
    }
    if (!Number.isNaN(writeMs) && at - changedAt > STALL_MS) break;
  }
  const cpu1 = [cpuSeconds(handlerPid), redisCpu(), mainThreadCpuSeconds(handlerPid)];
  const threads = workerAndHelpers(handlerPid, threads0, threadCpuSeconds(handlerPid));
  if (sampling) {
    const file = await allocMark(opts.allocDir!, handlerPid, `pid${handlerPid}-round${round}`);
    say(summarizeAllocations(file, n));
  }
  await writing;
  const s = await settle(counters, 2 * n);
  scard = await poller.scard(set);
  const ms = Number.isNaN(doneAt) ? NaN : doneAt - t0;
  return {
    setup: dep.setup,
    side,
    round,
    writes: n,
    ms,
    writeMs,
    eventsPerS: (n * 1000) / ms,
    handlerCpu: cpu1[0] - cpu0[0],
    mainCpu: cpu1[2] - cpu0[2],
    workerCpu: threads.worker,
    helpersCpu: threads.helpers,
    startedCpu: threads.started,
    redisCpu: cpu1[1] - cpu0[1],
    scard,
    lost: n - scard,
    // Every SET is an event, and so is every SADD that adds a new member to the set.
    triggered: s.triggered,
    expectedTriggered: 2 * n,
    failures: s.failures,
    lastError: s.lastError,
  };
}

/**
 * Finds when each write's key shows up in the set. A check (one SMISMEMBER of every key not
 * yet seen) runs on each `sadd` keyevent of the set, and again if another came while it was in
 * flight; so nothing polls while nothing happens, and a key is seen at most one notification
 * plus one round trip after it was added. The time recorded is when the SMISMEMBER reply
 * arrives (an upper bound of when the key was added).
 */
class Detector {
  private readonly sentAt = new Map<string, number>();
  private readonly repliedAt = new Map<string, number>();
  private readonly seenAt = new Map<string, number>();
  private readonly unseen = new Set<string>();
  private checking = false;
  private again = false;
  private failure: unknown = null;
  private readonly fallback: NodeJS.Timeout;

  constructor(
    private readonly sub: Redis,
    private readonly checker: Redis,
    private readonly set: string,
  ) {
    sub.on("message", (_channel: string, key: string) => {
      if (key === set) this.poke();
    });
    // Only matters if a notification went missing: then the key is still found, late.
    this.fallback = setInterval(() => this.poke(), 100);
  }

  static async open(port: number, set: string): Promise<Detector> {
    const sub = await connected(client(port));
    await sub.subscribe(SADD_CHANNEL);
    return new Detector(sub, await connected(client(port)), set);
  }

  sent(key: string): void {
    this.sentAt.set(key, performance.now());
    this.unseen.add(key);
  }

  replied(key: string): void {
    this.repliedAt.set(key, performance.now());
  }

  get pending(): number {
    return this.unseen.size;
  }

  private poke(): void {
    if (this.checking) {
      this.again = true;
      return;
    }
    if (this.unseen.size === 0) return;
    this.checking = true;
    void this.check().finally(() => (this.checking = false));
  }

  private async check(): Promise<void> {
    try {
      do {
        this.again = false;
        const keys = [...this.unseen];
        if (keys.length === 0) return;
        const flags = (await this.checker.call("SMISMEMBER", [this.set, ...keys])) as number[];
        const at = performance.now();
        keys.forEach((k, i) => {
          if (flags[i] !== 1) return;
          this.unseen.delete(k);
          this.seenAt.set(k, at);
        });
      } while (this.again);
    } catch (err) {
      this.failure = err;
    }
  }

  /** Latencies (ms, write reply to effect seen) of the keys sent after `since`. */
  samples(since: number): number[] {
    if (this.failure !== null) throw this.failure;
    const out: number[] = [];
    for (const [k, seen] of this.seenAt) {
      if (this.sentAt.get(k)! < since) continue;
      out.push(seen - this.repliedAt.get(k)!);
    }
    return out;
  }

  close(): void {
    clearInterval(this.fallback);
    this.sub.disconnect();
    this.checker.disconnect();
  }
}

interface LatencyRun {
  setup: Setup;
  side: Side | "floor";
  round: number;
  rate: number;
  writes: number;
  samples: number;
  p50: number;
  p99: number;
  max: number;
  /** Writes whose effect was never seen. */
  lost: number;
  scard: number;
  triggered: number;
  expectedTriggered: number;
  failures: number;
  lastError: string | null;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/**
 * Paced writes (`write` per key, `rate` per second for `latencySeconds`), each one's effect
 * detected in `set`. The pacing sends what is due every millisecond or so.
 */
async function latency(
  dep: Deployment,
  side: Side | "floor",
  round: number,
  rate: number,
  set: string,
  write: (key: string) => Promise<unknown>,
  opts: Options,
  counters: (() => Promise<Settled>) | null,
): Promise<LatencyRun> {
  const detector = await Detector.open(dep.ownerPort(set), set);
  try {
    const total = Math.max(1, Math.round(rate * opts.latencySeconds));
    const prefix = `lat:${round}${side.slice(0, 2)}${rate}:`;
    const inflight: Promise<void>[] = [];
    const start = performance.now();
    let sent = 0;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
      for (; sent < due; sent++) {
        const key = prefix + sent;
        detector.sent(key);
        inflight.push(write(key).then(() => detector.replied(key)));
      }
      await sleep(1);
    }
    await Promise.all(inflight);
    const deadline = performance.now() + STALL_MS;
    while (detector.pending > 0 && performance.now() < deadline) await sleep(10);
    const lost = detector.pending;
    const samples = detector.samples(start + WARMUP_SECONDS * 1000).sort((a, b) => a - b);
    const s = counters !== null ? await settle(counters, 2 * total) : null;
    return {
      setup: dep.setup,
      side,
      round,
      rate,
      writes: total,
      samples: samples.length,
      p50: percentile(samples, 50),
      p99: percentile(samples, 99),
      max: samples.length > 0 ? samples[samples.length - 1] : NaN,
      lost,
      scard: await dep.admin.get(dep.ownerPort(set))!.scard(set),
      triggered: s?.triggered ?? NaN,
      expectedTriggered: counters !== null ? 2 * total : NaN,
      failures: s?.failures ?? 0,
      lastError: s?.lastError ?? null,
    };
  } finally {
    detector.close();
  }
}

// ---- one setup -----------------------------------------------------------------------------

/** proxy: the JavaScript registration; python: the same in Python; direct: the baseline. */
type Side = "proxy" | "direct" | "python";

interface SetupResult {
  throughput: ThroughputRun[];
  latency: LatencyRun[];
  proxyFlags: string[];
  profileFiles: string[];
}

async function benchSetup(
  setup: Setup,
  opts: Options,
  consumerModule: string,
  /** The proxy build to run (this one's when undefined). */
  cli?: string,
): Promise<SetupResult> {
  const result: SetupResult = { throughput: [], latency: [], proxyFlags: [], profileFiles: [] };
  say(`\n== ${setup}${cli === undefined ? "" : ` (${cli})`}`);
  const dep = await deploy(setup);
  const profilesBefore = new Set(opts.profileDir !== undefined ? fs.readdirSync(opts.profileDir) : []);
  const proxy = await startGears(dep.ports[0], {
    cli,
    profileDir: opts.profileDir,
    nodeArgs: [...(opts.allocDir !== undefined ? ["--import", ALLOC_PRELOAD] : []), ...opts.proxyNodeArgs],
    args: [...opts.proxyArgs, ...(opts.python ? ["--python"] : [])],
    readyWhen: "keyed",
  });
  stack.proxies.push(proxy);
  const consumer = new Consumer(forkChild("consumer", consumerModule, ["--consumer"]));
  try {
    say(`masters ${dep.ports.join(",")}; gears-proxy pid ${proxy.child.pid} on port ${proxy.port}`);
    const rg = await connected(client(proxy.port));
    const proxyConns = await Promise.all(
      Array.from({ length: opts.writers }, () => connected(client(proxy.port))),
    );
    const directConns = await Promise.all(
      Array.from({ length: opts.writers }, async () => {
        const m = new Map<number, Redis>();
        for (const p of dep.ports) m.set(p, await connected(client(p)));
        return m;
      }),
    );
    const proxyWriters = proxyConns.map(proxyWriter);
    const directWriters = directConns.map((m) => directWriter(dep, m));
    const pacerProxy = await connected(client(proxy.port));
    const pacerDirect = new Map(
      await Promise.all(dep.ports.map(async (p) => [p, await connected(client(p))] as const)),
    );
    const pacerFor = (key: string): Redis => pacerDirect.get(dep.ownerPort(key))!;

    let regId = "";
    const proxyCounters = async (): Promise<Settled> => {
      const r = (await registrations(rg)).find((x) => x.id === regId);
      if (r === undefined) throw new Error(`registration ${regId} is gone`);
      return { triggered: r.numTriggered, failures: r.numFailures + r.numAborted, lastError: r.lastError };
    };
    const directCounters = async (): Promise<Settled> => {
      const s = await consumer.stats();
      return { triggered: s.events, failures: s.errors, lastError: s.lastError };
    };
    const begin = async (side: Side): Promise<void> => {
      await reset(dep);
      if (side !== "direct") {
        const r =
          side === "proxy"
            ? await register(rg, dep, opts.registration, "RG.EXECUTE")
            : await register(rg, dep, PY_REGISTRATION, "RG.PYEXECUTE");
        regId = r.id;
        result.proxyFlags = r.flags;
      } else {
        await consumer.start(DIRECT_SET, dep.ports, dep.ownerPort(DIRECT_SET), opts.autoPipelining);
      }
    };
    const end = async (side: Side): Promise<void> => {
      if (side !== "direct") {
        const reply = await rg.call("RG.UNREGISTER", [regId]);
        if (reply !== "OK") throw new Error(`RG.UNREGISTER: ${JSON.stringify(reply)}`);
      } else {
        await consumer.stats(true);
      }
    };
    const lostNote = (what: string, lost: number, failures: number): void => {
      if (lost > 0 || failures > 0) say(`  !! ${what}: ${lost} lost, ${failures} failures`);
    };

    if (opts.python) {
      // The proxy loads its warm interpreters in the background after it starts (seconds of
      // CPU): that must not land in the first rows timed. Each RG.PYEXECUTE waits for one.
      for (let i = 0; i < 4; i++) await rg.call("RG.PYEXECUTE", ["GB('ShardsIDReader').run()"]);
      await sleep(PYTHON_SETTLE_MS);
    }
    if (opts.warmup > 0) {
      await begin("proxy");
      const w = await throughput(
        dep,
        "proxy",
        0,
        proxyWriters,
        { ...opts, writes: opts.warmup },
        proxyCounters,
        proxy.child.pid,
      );
      await end("proxy");
      say(
        `  warm-up: ${w.writes} writes through the proxy, ${w.eventsPerS.toFixed(0)} events/s (not counted)`,
      );
      if (opts.settleMs > 0) await sleep(opts.settleMs);
    }
    for (let round = 1; round <= opts.rounds; round++) {
      const order: Side[] = opts.python ? ["proxy", "direct", "python"] : ["proxy", "direct"];
      const sides: Side[] = round % 2 === 1 ? order : [...order].reverse();
      for (const side of sides) {
        await begin(side);
        const r = await throughput(
          dep,
          side,
          round,
          side === "direct" ? directWriters : proxyWriters,
          opts,
          side === "direct" ? directCounters : proxyCounters,
          side === "direct" ? consumer.child.pid : proxy.child.pid,
        );
        await end(side);
        result.throughput.push(r);
        say(
          `  round ${round} throughput ${side}: ${r.eventsPerS.toFixed(0)} events/s ` +
            `(${r.writes} writes in ${r.writeMs.toFixed(0)} ms, all in the set after ${r.ms.toFixed(0)} ms; ` +
            `scard ${r.scard}, triggered ${r.triggered}/${r.expectedTriggered}, failures ${r.failures}; ` +
            `CPU ${side === "direct" ? "consumer" : "proxy"} ${r.handlerCpu.toFixed(2)} s (main thread ${r.mainCpu.toFixed(2)} s, busiest other thread ${r.workerCpu.toFixed(2)} s, the rest ${r.helpersCpu.toFixed(2)} s of which later threads ${r.startedCpu.toFixed(2)} s), redis ${r.redisCpu.toFixed(2)} s)`,
        );
        lostNote(`throughput ${side}`, r.lost, r.failures);
      }
      for (const rate of opts.rates) {
        // The detection floor: the bench SADDs itself, so the number is the method's own delay.
        await reset(dep);
        for (const c of dep.admin.values()) await c.config("SET", "notify-keyspace-events", NOTIFY_FLAGS);
        const floor = await latency(
          dep,
          "floor",
          round,
          rate,
          FLOOR_SET,
          (k) => pacerFor(FLOOR_SET).sadd(FLOOR_SET, k),
          opts,
          null,
        );
        result.latency.push(floor);
        for (const side of sides) {
          await begin(side);
          const set = side === "direct" ? DIRECT_SET : PROXY_SET;
          const write =
            side === "direct"
              ? (k: string) => pacerFor(k).set(k, "1")
              : (k: string) => pacerProxy.set(k, "1");
          const r = await latency(
            dep,
            side,
            round,
            rate,
            set,
            write,
            opts,
            side === "direct" ? directCounters : proxyCounters,
          );
          await end(side);
          result.latency.push(r);
          lostNote(`latency ${side}`, r.lost, r.failures);
        }
        for (const r of result.latency.filter((x) => x.round === round && x.rate === rate)) {
          say(
            `  round ${round} latency at ${rate}/s ${r.side}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ` +
              `max ${r.max.toFixed(1)} ms (${r.samples} samples, ${r.lost} unseen, scard ${r.scard}/${r.writes}` +
              `${Number.isNaN(r.triggered) ? "" : `, triggered ${r.triggered}/${r.expectedTriggered}`})`,
          );
        }
      }
    }
  } finally {
    await stopChild(consumer.child, 5000);
    await stopChild(proxy.child, 10_000);
    stack.proxies.splice(stack.proxies.indexOf(proxy), 1);
    for (const c of stack.clients.splice(0)) c.disconnect();
    await dep.stop();
    stack.stops.splice(stack.stops.indexOf(dep.stop), 1);
  }
  if (opts.profileDir !== undefined) {
    result.profileFiles = fs
      .readdirSync(opts.profileDir)
      .filter((f) => f.endsWith(".cpuprofile") && !profilesBefore.has(f))
      .map((f) => path.join(opts.profileDir!, f));
  }
  return result;
}

// ---- report --------------------------------------------------------------------------------

const ms2 = (x: number): string => (Number.isNaN(x) ? "n/a" : `${x.toFixed(2)} ms`);
const ratio = (x: number): string => (Number.isNaN(x) ? "n/a" : `${x.toFixed(2)}x`);
const int = (x: number): string => (Number.isNaN(x) ? "n/a" : Math.round(x).toLocaleString("en-US"));

function summarizeProfile(file: string, top = 15): string {
  const { total, selfByName, inclByName } = profileTimes(file);
  const idle = selfByName.get("(idle)") ?? 0;
  const busy = Math.max(1, total - idle);
  const pct = (us: number): string => `${((100 * us) / busy).toFixed(1)}%`;
  return [
    `${path.basename(file)}: ${(total / 1e6).toFixed(1)} s sampled, ${((total - idle) / 1e6).toFixed(1)} s busy (percentages of the busy time)`,
    "",
    table(
      ["self", "function"],
      rankProfile(selfByName, (k) => !k.startsWith("(idle)"), top, pct),
    ),
    "",
    table(
      ["inclusive", "function (dist/src)"],
      rankProfile(inclByName, (k) => k.includes("dist/src/"), top, pct),
    ),
  ].join("\n");
}

function report(opts: Options, results: Map<Setup, SetupResult>, header: string, command: string): string {
  const out: string[] = [];
  out.push("## Events (all-keys registration)", "", "```", header, `command: ${command}`, "```", "");
  out.push(
    `Registration, through gears-proxy (async mode, the default): \`RG.EXECUTE "${opts.registration}"\`` +
      `${opts.registration !== REGISTRATION ? " (**not the issue's registration**: --registration)" : ""}` +
      `${opts.python ? `; in Python, verbatim as RedisGears 1.x documents it: \`RG.PYEXECUTE "${PY_REGISTRATION}"\` (the proxy runs with --python)` : ""}. ` +
      `Baseline: a hand-written ioredis consumer in a child process, PSUBSCRIBEd to \`${KEYEVENT_PATTERN}\` on ` +
      `every master, SADDing each key into \`${DIRECT_SET}\` (ioredis enableAutoPipelining ` +
      `${opts.autoPipelining ? "on" : "off"}); its writes go straight to the masters. ` +
      `Before every run the masters are flushed and notify-keyspace-events is set to "" so that each side ` +
      `has to turn notifications on itself (the consumer sets "${NOTIFY_FLAGS}"; the proxy did it on its own ` +
      `in every run: CONFIG GET after RG.EXECUTE gave ${[...new Set([...results.values()].flatMap((r) => r.proxyFlags))].map((f) => `"${f}"`).join(", ")}). ` +
      `${opts.rounds} alternating round(s) per setup; ratios are per round (proxy over baseline), and the ` +
      `tables give the median of those ratios.`,
    "",
    `- Throughput: ${opts.writes.toLocaleString("en-US")} distinct keys SET by ${opts.writers} connections in ` +
      `pipelined batches of ${opts.pipeline}, through the proxy or straight to the owning master. Timed from ` +
      `the first write until SCARD of the set (polled every ${SCARD_POLL_MS} ms on another connection) ` +
      `equals the number of writes; events/s = writes / that time. Then the set must hold every key ` +
      `(no lost events; a set has no duplicates) and the side's counters must settle at 2 x writes ` +
      `(each SET, and each SADD that adds a member, is a keyspace event): numTriggered of RG.DUMPREGISTRATIONS ` +
      `for the proxy, notifications received for the consumer; numFailures + numAborted must be 0. ` +
      `CPU use is read from /proc (user + system time of all threads) at the first write and when the last ` +
      `key is in the set: the handler process is gears-proxy (which also passes the writes on) or the ` +
      `consumer child (which does not see the writes).`,
    `- Latency: one connection writes SETs at a steady ${opts.rates.join(" and ")} per second (one set of runs ` +
      `per rate) for ${opts.latencySeconds} s (the first ` +
      `${WARMUP_SECONDS} s are not counted). Each write's effect is found by the bench itself: it SUBSCRIBEs to ` +
      `\`${SADD_CHANNEL}\` on the set's master, and on each notification for the set sends one SMISMEMBER ` +
      `of the keys not yet seen (again if another notification came meanwhile). Nothing polls while nothing ` +
      `happens, so the detection adds one notification and one round trip, not a polling interval, and little ` +
      `load. The sample is the time from the SET's reply to the SMISMEMBER reply that first shows the key. ` +
      `The "floor" row measures the method itself: the bench SADDs the keys straight into a set and detects ` +
      `them the same way.`,
    "",
  );
  const summary: string[][] = [];
  for (const [setup, r] of results) {
    const rounds = [...new Set(r.throughput.map((x) => x.round))].sort((a, b) => a - b);
    const tp = (side: Side): ThroughputRun[] => r.throughput.filter((x) => x.side === side);
    const tpRatiosOf = (side: Side, over: Side = "direct"): number[] =>
      rounds.map((k) => {
        const p = tp(side).find((x) => x.round === k);
        const d = tp(over).find((x) => x.round === k);
        return p !== undefined && d !== undefined ? p.eventsPerS / d.eventsPerS : NaN;
      });
    const tpRatios = tpRatiosOf("proxy");
    const lat = (side: LatencyRun["side"], rate: number): LatencyRun[] =>
      r.latency.filter((x) => x.side === side && x.rate === rate);
    const latRatios = (field: "p50" | "p99", rate: number, side: Side = "proxy"): number[] =>
      rounds.map((k) => {
        const p = lat(side, rate).find((x) => x.round === k);
        const d = lat("direct", rate).find((x) => x.round === k);
        return p !== undefined && d !== undefined ? p[field] / d[field] : NaN;
      });
    out.push(`### ${setup === "standalone" ? "Standalone (one redis-server)" : "Cluster (3 masters)"}`, "");
    const tpRow = (side: Side, label: string): string[] => {
      const runs = tp(side);
      const sideRatios = side === "direct" ? [] : tpRatiosOf(side);
      const perRound = sideRatios.map(ratio).join(", ");
      return [
        label,
        int(median(runs.map((x) => x.eventsPerS))),
        runs.map((x) => int(x.eventsPerS)).join(", "),
        int(median(runs.map((x) => (x.writes * 1000) / x.writeMs))),
        `${int(median(runs.map((x) => x.ms - x.writeMs)))} ms`,
        `${int(median(runs.map((x) => (100 * x.handlerCpu * 1000) / x.ms)))}% / ${int(median(runs.map((x) => (100 * x.redisCpu * 1000) / x.ms)))}%`,
        `${int(median(runs.map((x) => (x.handlerCpu * 1e6) / x.writes)))} / ${int(median(runs.map((x) => (x.redisCpu * 1e6) / x.writes)))}`,
        perRound,
        side === "direct" ? "1.00x" : ratio(median(sideRatios)),
        runs
          .map(
            (x) =>
              `${x.lost} / ${x.triggered - x.expectedTriggered >= 0 ? "+" : ""}${x.triggered - x.expectedTriggered} / ${x.failures}`,
          )
          .join("; "),
      ];
    };
    out.push(
      table(
        [
          "throughput",
          "events/s (median)",
          "runs",
          "writes/s (writes acknowledged)",
          "last key in the set after the last write's reply (median)",
          "CPU use during the run: handler process / redis-servers (median, % of one core)",
          "CPU µs per write: handler / redis (median)",
          "per-round ratio to baseline",
          "median ratio",
          "lost / triggered minus expected / failures, per run",
        ],
        [
          tpRow("direct", "baseline: ioredis consumer, writes to Redis"),
          tpRow("proxy", "gears-proxy registration, writes through the proxy"),
          ...(opts.python
            ? [tpRow("python", "gears-proxy registration in Python (RG.PYEXECUTE), writes through the proxy")]
            : []),
        ],
      ),
      "",
    );
    const latRow = (side: LatencyRun["side"], rate: number, label: string): string[] => {
      const runs = lat(side, rate);
      return [
        `${rate}/s`,
        label,
        ms2(median(runs.map((x) => x.p50))),
        ms2(median(runs.map((x) => x.p99))),
        runs.map((x) => `${x.p50.toFixed(2)} / ${x.p99.toFixed(2)} / ${x.max.toFixed(1)}`).join("; "),
        side === "proxy" || side === "python"
          ? `${ratio(median(latRatios("p50", rate, side)))} / ${ratio(median(latRatios("p99", rate, side)))}`
          : "",
        runs
          .map(
            (x) =>
              `${x.lost}${Number.isNaN(x.triggered) ? "" : ` / ${x.triggered - x.expectedTriggered >= 0 ? "+" : ""}${x.triggered - x.expectedTriggered} / ${x.failures}`}`,
          )
          .join("; "),
      ];
    };
    out.push(
      table(
        [
          "writes/s",
          "latency, write reply to effect",
          "p50 (median)",
          "p99 (median)",
          "runs: p50 / p99 / max (ms)",
          "median per-round ratio p50 / p99",
          "unseen / triggered minus expected / failures, per run",
        ],
        opts.rates.flatMap((rate) => [
          latRow("floor", rate, "detection floor (the bench SADDs itself)"),
          latRow("direct", rate, "baseline: ioredis consumer"),
          latRow("proxy", rate, "gears-proxy registration"),
          ...(opts.python ? [latRow("python", rate, "gears-proxy registration in Python")] : []),
        ]),
      ),
      "",
    );
    summary.push([
      setup,
      ratio(median(tpRatios)),
      tpRatios.map(ratio).join(", "),
      ...opts.rates.flatMap((rate) => [
        ratio(median(latRatios("p50", rate))),
        ratio(median(latRatios("p99", rate))),
      ]),
      ...(opts.python
        ? [
            ratio(median(tpRatiosOf("python"))),
            ratio(median(tpRatiosOf("python", "proxy"))),
            ...opts.rates.map((rate) => ratio(median(latRatios("p50", rate, "python")))),
          ]
        : []),
    ]);
  }
  out.push(
    "### Ratios (gears-proxy over the hand-written consumer, median of per-round ratios)",
    "",
    table(
      [
        "setup",
        "events/s ratio",
        "per round",
        ...opts.rates.flatMap((rate) => [`p50 latency ratio at ${rate}/s`, `p99 latency ratio at ${rate}/s`]),
        ...(opts.python
          ? [
              "Python events/s ratio",
              "Python over JavaScript, events/s",
              ...opts.rates.map((rate) => `Python p50 latency ratio at ${rate}/s`),
            ]
          : []),
      ],
      summary,
    ),
    "",
  );
  for (const [setup, r] of results)
    for (const f of r.profileFiles) out.push(`### CPU profile (${setup})`, "", summarizeProfile(f), "");
  return out.join("\n");
}

/** This build against the base, per setup: the medians of the rounds of each. */
function abReport(opts: Options, mine: Map<Setup, SetupResult>, base: Map<Setup, SetupResult>): string {
  const rows: string[][] = [];
  for (const setup of opts.setups) {
    for (const [build, r] of [
      ["this build", mine.get(setup)],
      ["base", base.get(setup)],
    ] as const) {
      if (r === undefined) continue;
      const tp = (side: Side): ThroughputRun[] => r.throughput.filter((x) => x.side === side);
      const rounds = [...new Set(r.throughput.map((x) => x.round))].sort((a, b) => a - b);
      const ratios = rounds.map((k) => {
        const p = tp("proxy").find((x) => x.round === k);
        const d = tp("direct").find((x) => x.round === k);
        return p !== undefined && d !== undefined ? p.eventsPerS / d.eventsPerS : NaN;
      });
      const cpu = tp("proxy").map((x) => (x.handlerCpu * 1e6) / x.writes);
      const mainCpu = tp("proxy").map((x) => (x.mainCpu * 1e6) / x.writes);
      const p50s = opts.rates.map((rate) => {
        const of = (side: LatencyRun["side"]): number =>
          median(r.latency.filter((x) => x.side === side && x.rate === rate).map((x) => x.p50));
        return `${ms2(of("proxy"))} / ${ms2(of("direct"))}`;
      });
      rows.push([
        setup,
        build,
        int(median(tp("proxy").map((x) => x.eventsPerS))),
        int(median(tp("direct").map((x) => x.eventsPerS))),
        `${ratio(median(ratios))} (${ratios.map(ratio).join(", ")})`,
        `${int(median(cpu))} (${cpu.map(int).join(", ")})`,
        `${int(median(mainCpu))} (${mainCpu.map(int).join(", ")})`,
        int(median(tp("proxy").map((x) => (x.workerCpu * 1e6) / x.writes))),
        `${int(median(tp("proxy").map((x) => (x.helpersCpu * 1e6) / x.writes)))} (${int(median(tp("proxy").map((x) => (x.startedCpu * 1e6) / x.writes)))})`,
        int(median(tp("direct").map((x) => (x.handlerCpu * 1e6) / x.writes))),
        ...p50s,
      ]);
    }
  }
  return [
    "### This build against the base (medians of the rounds)",
    "",
    table(
      [
        "setup",
        "build",
        "proxy events/s",
        "consumer events/s",
        "ratio to the consumer (per round)",
        "proxy CPU µs per write (per round)",
        "proxy main thread CPU µs per write (per round)",
        "proxy worker µs per write",
        "proxy other threads µs per write (of which threads started after the process's first second: other isolates)",
        "consumer CPU µs per write",
        ...opts.rates.map((rate) => `p50 at ${rate}/s: proxy / consumer`),
      ],
      rows,
    ),
    "",
  ].join("\n");
}

// ---- main ----------------------------------------------------------------------------------

interface Stack {
  clients: Redis[];
  proxies: Proxy[];
  stops: (() => Promise<void>)[];
}

const stack: Stack = { clients: [], proxies: [], stops: [] };
let cleaning: Promise<void> | null = null;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of stack.clients) c.disconnect();
    for (const p of stack.proxies) await stopChild(p.child, 10_000);
    await Promise.allSettled([...children].map((c) => stopChild(c, 10_000)));
    for (const stop of stack.stops) await stop().catch(() => {});
  })();
  return cleaning;
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  if (opts === null) return 0;
  if (!fs.existsSync(PROXY_CLI)) throw new Error(`${PROXY_CLI} missing: build first (npx tsc -p .)`);
  if (opts.profileDir !== undefined) fs.mkdirSync(opts.profileDir, { recursive: true });
  if (opts.allocDir !== undefined) {
    fs.mkdirSync(opts.allocDir, { recursive: true });
    process.env.EVENTS_ALLOC_DIR = opts.allocDir;
  }
  const startedAt = Date.now();
  const header = machineHeader();
  const command =
    `node ${path.relative(process.cwd(), process.argv[1])} ${process.argv.slice(2).join(" ")}`.trim();
  say(header);
  const results = new Map<Setup, SetupResult>();
  const baseResults = new Map<Setup, SetupResult>();
  const consumerModule = fileURLToPath(import.meta.url);
  for (const setup of opts.setups) {
    if (opts.base === undefined) {
      results.set(setup, await benchSetup(setup, opts, consumerModule));
      continue;
    }
    // Same-run A/B: every round runs both builds, in alternating order, each on a fresh
    // deployment (two proxies on one Redis would share registrations through it).
    for (let round = 1; round <= opts.rounds; round++) {
      const builds: [Map<Setup, SetupResult>, string | undefined][] = [
        [results, undefined],
        [baseResults, opts.base],
      ];
      if (round % 2 === 0) builds.reverse();
      for (const [into, cli] of builds) {
        const nodeArgs =
          cli !== undefined && opts.baseNodeArgs !== undefined ? opts.baseNodeArgs : opts.proxyNodeArgs;
        const r = await benchSetup(
          setup,
          { ...opts, rounds: 1, proxyNodeArgs: nodeArgs },
          consumerModule,
          cli,
        );
        for (const x of [...r.throughput, ...r.latency]) x.round = round;
        const acc = into.get(setup);
        if (acc === undefined) into.set(setup, r);
        else {
          acc.throughput.push(...r.throughput);
          acc.latency.push(...r.latency);
          acc.profileFiles.push(...r.profileFiles);
        }
      }
    }
  }

  const text = [
    report(opts, results, header, command),
    ...(opts.base === undefined
      ? []
      : [
          `### The base build (${opts.base}), same run, alternating rounds`,
          "",
          report(opts, baseResults, header, command).replace(/^## .*\n/, ""),
          abReport(opts, results, baseResults),
        ]),
    `total time: ${((Date.now() - startedAt) / 1000).toFixed(0)} s; load average at the end: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
    "",
  ].join("\n");
  process.stdout.write(text);
  if (opts.append !== undefined) appendReport(opts.append, text);
  if (opts.json !== undefined)
    fs.writeFileSync(
      opts.json,
      JSON.stringify({ header, command, opts, results: Object.fromEntries(results) }, null, 2),
    );
  const bad = [...results.values(), ...baseResults.values()].some(
    (r) =>
      r.throughput.some((x) => x.lost !== 0 || x.failures !== 0 || x.triggered !== x.expectedTriggered) ||
      r.latency.some((x) => x.lost !== 0 || x.failures !== 0 || x.scard !== x.writes),
  );
  if (bad) say("some runs lost events or had failures: see the tables");
  return bad ? 1 : 0;
}

if (process.argv[2] === "--consumer") consumerMain();
else runBench(main, cleanup);
