/**
 * Map/reduce benchmark: the count-by-genre example over `movie:<i>` hashes on a 3-master
 * cluster, timed (a) as a hand-written ioredis client in this process (SCAN each master,
 * pipelined HGET, counting in a Map), (b) through gears-proxy with the KeysReader form and
 * (c) through gears-proxy with the execute() form, in alternating rounds of one invocation.
 * All three must give the counts computed while generating the data, or the bench fails.
 * See `--help`.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import calculateSlot from "cluster-key-slot";
import { Redis } from "ioredis";
import { startCluster, type RedisCluster } from "../spec/harness/cluster.js";
import {
  HOST,
  PROXY_CLI,
  children,
  machineHeader,
  mb,
  profileTimes,
  rankProfile,
  appendReport,
  runBench,
  sampleRss,
  say,
  sleep,
  startGears,
  statusKb,
  stopChild,
  table,
  type Proxy,
  cpuSeconds,
  median,
} from "./support.js";

// ---- options -----------------------------------------------------------------------------

type Variant = "a" | "b" | "c" | "d" | "p" | "b0" | "c0";
const VARIANTS: readonly Variant[] = ["a", "b", "c", "d", "p", "b0", "c0"];
/** What --variants may name; b0 and c0 come with --b-cli. */
const NAMED: readonly Variant[] = ["a", "b", "c", "d", "p"];

interface Options {
  movies: number;
  rounds: number;
  warmup: boolean;
  variants: Variant[];
  scriptTimeoutMs: number | undefined;
  profileDir: string | undefined;
  proxyArgs: string[];
  proxyNodeArgs: string[];
  append: string | undefined;
  json: string | undefined;
  /** A second gears-proxy build (its cli.js) whose (b) and (c) run in the same rounds. */
  bCli: string | undefined;
}

const HELP = `Usage: node dist/bench/mapreduce.js [options]

  --quick                 10,000 movies, one round (smoke run)
  --movies N              number of movie:<i> hashes (default 200000)
  --rounds N              alternating rounds; medians are reported (default 3)
  --no-warmup             skip the untimed warm-up run of each variant
  --variants LIST         of a,b,c,d,p (default a,b,c,p; ratios need a), e.g. --variants b for profiling;
                          d (not required by the targets) is the executeAsync() form of (c);
                          p is (c) in Python (RG.PYEXECUTE; the proxy gets --python)
  --script-timeout-ms N   RG.CONFIGSET ScriptTimeoutMS N before the rounds (by default it is
                          left at the proxy's default and only raised, to 60000, if a warm-up
                          run fails with a timeout; the report says so)
  --profile DIR           run gears-proxy under node --cpu-prof (one profile per thread,
                          the guest's worker threads included) and print the hottest functions
  --proxy-args "..."      extra gears-proxy flags
  --proxy-node-args "..." extra node flags for the proxy process
  --b-cli PATH            also start this build's gears-proxy (e.g. a frozen copy of main's
                          dist/src/cli.js) and run its (b) and (c) in the same rounds, as (b0)
                          and (c0): a same-run A/B of two builds
  --append FILE           append the markdown report to FILE (e.g. bench/RESULTS.md)
  --json FILE             also write every sample as JSON
  --help
`;

function positive(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${what}: '${text}' is not a positive number`);
  return Math.round(n);
}

function parseVariants(text: string): Variant[] {
  const picked = text.split(",").map((s) => s.trim().toLowerCase());
  const bad = picked.find((s) => !NAMED.some((v) => v === s));
  if (bad !== undefined || picked.length === 0)
    throw new Error(`--variants: '${text}' is not a list of a,b,c,d,p`);
  return NAMED.filter((v) => picked.includes(v));
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      movies: { type: "string" },
      rounds: { type: "string" },
      "no-warmup": { type: "boolean" },
      variants: { type: "string" },
      "script-timeout-ms": { type: "string" },
      profile: { type: "string" },
      "proxy-args": { type: "string" },
      "proxy-node-args": { type: "string" },
      append: { type: "string" },
      json: { type: "string" },
      "b-cli": { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(HELP);
    return null;
  }
  const quick = values.quick === true;
  return {
    movies: values.movies !== undefined ? positive(values.movies, "--movies") : quick ? 10_000 : 200_000,
    rounds: values.rounds !== undefined ? positive(values.rounds, "--rounds") : quick ? 1 : 3,
    warmup: values["no-warmup"] !== true,
    variants: parseVariants(values.variants ?? "a,b,c,p"),
    scriptTimeoutMs:
      values["script-timeout-ms"] !== undefined
        ? positive(values["script-timeout-ms"], "--script-timeout-ms")
        : undefined,
    profileDir: values.profile,
    proxyArgs: (values["proxy-args"] ?? "").split(/\s+/).filter((a) => a !== ""),
    proxyNodeArgs: (values["proxy-node-args"] ?? "").split(/\s+/).filter((a) => a !== ""),
    append: values.append,
    json: values.json,
    bCli: values["b-cli"],
  };
}

// ---- data ----------------------------------------------------------------------------------

const GENRES = [
  "Action",
  "Adventure",
  "Animation",
  "Comedy",
  "Crime",
  "Documentary",
  "Drama",
  "Fantasy",
  "Horror",
  "Romance",
] as const;

const PATTERN = "movie:*";
const SCAN_COUNT = 1000;

/** mulberry32: a small seeded PRNG, so every run loads the same movies. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Counts = Map<string, number>;

function bump(counts: Counts, key: string, by = 1): void {
  counts.set(key, (counts.get(key) ?? 0) + by);
}

/** The port of the master owning each slot, from CLUSTER SLOTS. */
async function slotOwners(client: Redis): Promise<Int32Array> {
  const owners = new Int32Array(16384).fill(-1);
  const reply = (await client.call("CLUSTER", ["SLOTS"])) as [number, number, [string, number]][];
  for (const [start, end, master] of reply) owners.fill(Number(master[1]), start, end + 1);
  if (owners.includes(-1)) throw new Error("CLUSTER SLOTS does not cover every slot");
  return owners;
}

/**
 * Loads `count` movie hashes, each pipelined straight to the master owning its slot; resolves
 * the genre counts of what was written, the ground truth the three variants must reproduce.
 */
async function loadMovies(masters: Map<number, Redis>, owners: Int32Array, count: number): Promise<Counts> {
  const random = prng(20240601);
  const truth: Counts = new Map();
  const CHUNK = 5000;
  for (let start = 0; start < count; start += CHUNK) {
    const pipelines = new Map([...masters].map(([port, client]) => [port, client.pipeline()]));
    for (let i = start; i < Math.min(count, start + CHUNK); i++) {
      const key = `movie:${i}`;
      const n = 1 + Math.floor(random() * 3);
      const picked = new Set<string>();
      while (picked.size < n) picked.add(GENRES[Math.floor(random() * GENRES.length)]);
      for (const g of picked) bump(truth, g);
      const year = 1920 + Math.floor(random() * 105);
      pipelines
        .get(owners[calculateSlot(key)])!
        .hset(key, "title", `Movie number ${i}`, "year", String(year), "genres", [...picked].join(","));
    }
    const results = await Promise.all([...pipelines.values()].map((p) => p.exec()));
    for (const replies of results) {
      const failed = (replies ?? []).find(([err]) => err !== null);
      if (failed !== undefined) throw new Error(`loading movies: ${String(failed[0])}`);
    }
  }
  return truth;
}

// ---- the three variants --------------------------------------------------------------------

const SCRIPT_KEYS = `GB().map(r => r.value.genres).filter(Boolean).flatmap(g => g.split(',')).countby().run('movie:*')`;
const SCRIPT_EXECUTE = `GB('KeysOnlyReader').map(k => execute('HGET', k, 'genres')).filter(g => g != null).flatmap(g => g.split(',')).countby().run('movie:*')`;
const SCRIPT_ASYNC = `GB('KeysOnlyReader').map(k => executeAsync('HGET', k, 'genres')).filter(g => g != null).flatmap(g => g.split(',')).countby().run('movie:*')`;

const SCRIPT_PYTHON = `GB('KeysOnlyReader').map(lambda k: execute('HGET', k, 'genres')).filter(lambda g: g is not None).flatmap(lambda g: g.split(',')).countby().run('movie:*')`;

const LABELS: Record<Variant, string> = {
  a: "(a) hand-written ioredis (SCAN + pipelined HGET per master)",
  b: "(b) RG.EXECUTE, KeysReader form",
  c: "(c) RG.EXECUTE, execute() form",
  d: "(d) RG.EXECUTE, executeAsync() form (informative)",
  p: "(p) RG.PYEXECUTE, execute() form in Python (informative)",
  b0: "(b0) (b) on the --b-cli build",
  c0: "(c0) (c) on the --b-cli build",
};

/** CPU time (user + system, every thread) a process has used so far, in ms. */
const processCpuMs = (pid: number): number => cpuSeconds(pid) * 1000;

/** (a): SCAN every master in parallel, a pipelined HGET per SCAN batch, counting in a Map. */
async function handWritten(masters: Redis[]): Promise<Counts> {
  const counts: Counts = new Map();
  await Promise.all(
    masters.map(async (m) => {
      let cursor = "0";
      do {
        const [next, keys] = await m.scan(cursor, "MATCH", PATTERN, "COUNT", SCAN_COUNT);
        cursor = next;
        if (keys.length === 0) continue;
        const pipeline = m.pipeline();
        for (const k of keys) pipeline.hget(k, "genres");
        const replies = (await pipeline.exec()) ?? [];
        for (const [err, genres] of replies) {
          if (err !== null) throw err;
          if (typeof genres !== "string") continue;
          for (const g of genres.split(",")) bump(counts, g);
        }
      } while (cursor !== "0");
    }),
  );
  return counts;
}

/** Runs a script through the proxy; the countby records as counts. Errors of any kind throw. */
async function rgExecute(proxy: Redis, script: string, command = "RG.EXECUTE"): Promise<Counts> {
  const reply = await proxy.call(command, [script]);
  if (!Array.isArray(reply) || reply.length !== 2 || !Array.isArray(reply[0]) || !Array.isArray(reply[1])) {
    throw new Error(`RG.EXECUTE: unexpected reply ${JSON.stringify(reply).slice(0, 500)}`);
  }
  const [results, errors] = reply as [unknown[], unknown[]];
  if (errors.length > 0)
    throw new Error(`RG.EXECUTE reported errors: ${errors.slice(0, 5).map(String).join("; ")}`);
  const counts: Counts = new Map();
  for (const r of results) {
    // Python's records are its str() of a dict: {'key': 'Drama', 'value': 12}.
    const text = command === "RG.PYEXECUTE" ? String(r).replaceAll("'", '"') : String(r);
    const record = JSON.parse(text) as { key?: unknown; value?: unknown };
    if (typeof record.key !== "string" || typeof record.value !== "number") {
      throw new Error(`RG.EXECUTE: unexpected record ${String(r)}`);
    }
    if (counts.has(record.key)) throw new Error(`RG.EXECUTE: group '${record.key}' appears twice`);
    counts.set(record.key, record.value);
  }
  return counts;
}

/** Undefined when equal, else a readable difference. */
function difference(expected: Counts, got: Counts): string | undefined {
  const keys = [...new Set([...expected.keys(), ...got.keys()])].sort();
  const diffs = keys
    .filter((k) => expected.get(k) !== got.get(k))
    .map((k) => `${k}: expected ${expected.get(k) ?? "none"}, got ${got.get(k) ?? "none"}`);
  return diffs.length === 0 ? undefined : diffs.join("; ");
}

// ---- report helpers ------------------------------------------------------------------------

/** The hottest functions of a .cpuprofile by self time, and by inclusive time for the proxy's code. */
function summarizeProfile(file: string, top = 20): string {
  const { total, selfByName, inclByName } = profileTimes(file);
  const idle = selfByName.get("(idle)") ?? 0;
  const pct = (us: number): string => `${((100 * us) / Math.max(1, total - idle)).toFixed(1)}%`;
  return [
    `profile ${path.basename(file)}: ${(total / 1e6).toFixed(1)} s sampled, ${((total - idle) / 1e6).toFixed(1)} s not idle (percentages of the non-idle time)`,
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

// ---- main ----------------------------------------------------------------------------------

interface Stack {
  cluster?: RedisCluster;
  proxy?: Proxy;
  baseProxy?: Proxy;
  clients: Redis[];
}

const stack: Stack = { clients: [] };
let cleaning: Promise<void> | null = null;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of stack.clients) c.disconnect();
    if (stack.proxy !== undefined) await stopChild(stack.proxy.child, 10_000);
    if (stack.baseProxy !== undefined) await stopChild(stack.baseProxy.child, 10_000);
    await Promise.allSettled([...children].map((c) => stopChild(c, 10_000)));
    if (stack.cluster !== undefined) await stack.cluster.stop().catch(() => {});
  })();
  return cleaning;
}

function client(port: number): Redis {
  const c = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
  });
  c.on("error", () => {}); // failures surface as rejected commands
  stack.clients.push(c);
  return c;
}

const isTimeout = (err: unknown): boolean => err instanceof Error && /timed out after/i.test(err.message);

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  if (opts === null) return 0;
  if (!fs.existsSync(PROXY_CLI)) throw new Error(`${PROXY_CLI} missing: build first (npx tsc -p .)`);
  if (opts.profileDir !== undefined) fs.mkdirSync(opts.profileDir, { recursive: true });
  const profilesBefore = new Set(opts.profileDir !== undefined ? fs.readdirSync(opts.profileDir) : []);
  const startedAt = Date.now();
  const header = machineHeader();
  const command =
    `node ${path.relative(process.cwd(), process.argv[1])} ${process.argv.slice(2).join(" ")}`.trim();
  say(header);

  const times = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]));
  const cpus = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]));
  const peaks = new Map<Variant, number>();
  const variants: Variant[] = opts.variants.flatMap((v): Variant[] =>
    opts.bCli === undefined ? [v] : v === "b" ? ["b", "b0"] : v === "c" ? ["c", "c0"] : [v],
  );
  const run = { loadSeconds: 0, hwmKb: NaN, rssAfterLoadKb: NaN, perMaster: [] as string[] };
  let timeoutNote = "ScriptTimeoutMS left at the proxy's default (5000 ms); no timeout occurred";
  try {
    // cluster, data
    const cluster = (stack.cluster = await startCluster({ masters: 3 }));
    const seed = cluster.nodes[0];
    const masterNodes = await cluster.masters();
    const masters = new Map(masterNodes.map((n) => [n.port, client(n.port)]));
    await Promise.all([...masters.values()].map((c) => c.connect()));
    const owners = await slotOwners(masters.get(seed.port) ?? [...masters.values()][0]);
    say(`cluster: masters ${[...masters.keys()].join(",")}; loading ${opts.movies} movies...`);
    const loadStart = performance.now();
    const truth = await loadMovies(masters, owners, opts.movies);
    run.loadSeconds = (performance.now() - loadStart) / 1000;
    const sizes = await Promise.all([...masters.values()].map((c) => c.dbsize()));
    run.perMaster = sizes.map(String);
    if (sizes.reduce((a, b) => a + b, 0) !== opts.movies) {
      throw new Error(`expected ${opts.movies} keys on the masters, found ${sizes.join("+")}`);
    }
    say(`loaded in ${run.loadSeconds.toFixed(1)} s (keys per master: ${run.perMaster.join(", ")})`);

    // proxy
    const proxy = (stack.proxy = await startGears(seed.port, {
      profileDir: opts.profileDir,
      nodeArgs: opts.proxyNodeArgs,
      args: [...opts.proxyArgs, ...(opts.variants.includes("p") ? ["--python"] : [])],
      readyWhen: "keyed",
    }));
    const proxyClient = client(proxy.port);
    await proxyClient.connect();
    let baseClient = proxyClient;
    if (opts.bCli !== undefined) {
      const base = (stack.baseProxy = await startGears(seed.port, {
        profileDir: undefined,
        nodeArgs: opts.proxyNodeArgs,
        cli: opts.bCli,
        args: opts.proxyArgs,
        readyWhen: "keyed",
      }));
      baseClient = client(base.port);
      await baseClient.connect();
      say(`base gears-proxy (${opts.bCli}) pid ${base.child.pid} on port ${base.port}`);
    }
    /** The process whose CPU a variant's run costs (for (a), this one: the ioredis client). */
    const pidOf = (v: Variant): number =>
      v === "a" ? process.pid : v === "b0" || v === "c0" ? stack.baseProxy!.child.pid : proxy.child.pid;
    run.rssAfterLoadKb = statusKb(proxy.child.pid, "VmRSS");
    say(`gears-proxy pid ${proxy.child.pid} on port ${proxy.port}, RSS ${mb(run.rssAfterLoadKb)}`);
    if (opts.scriptTimeoutMs !== undefined) {
      await proxyClient.call("RG.CONFIGSET", ["ScriptTimeoutMS", String(opts.scriptTimeoutMs)]);
      if (baseClient !== proxyClient)
        await baseClient.call("RG.CONFIGSET", ["ScriptTimeoutMS", String(opts.scriptTimeoutMs)]);
      timeoutNote = `ScriptTimeoutMS set to ${opts.scriptTimeoutMs} with RG.CONFIGSET (--script-timeout-ms)`;
    }

    const masterClients = [...masters.values()];
    const runOnce = async (v: Variant): Promise<Counts> => {
      switch (v) {
        case "a":
          return handWritten(masterClients);
        case "b":
          return rgExecute(proxyClient, SCRIPT_KEYS);
        case "c":
          return rgExecute(proxyClient, SCRIPT_EXECUTE);
        case "b0":
          return rgExecute(baseClient, SCRIPT_KEYS);
        case "c0":
          return rgExecute(baseClient, SCRIPT_EXECUTE);
        case "d":
          return rgExecute(proxyClient, SCRIPT_ASYNC);
        case "p":
          return rgExecute(proxyClient, SCRIPT_PYTHON, "RG.PYEXECUTE");
      }
    };
    const check = (v: Variant, got: Counts): void => {
      const diff = difference(truth, got);
      if (diff !== undefined) throw new Error(`${LABELS[v]} gave wrong counts: ${diff}`);
    };

    if (opts.warmup) {
      for (const v of variants) {
        const t0 = performance.now();
        let got: Counts;
        try {
          got = await runOnce(v);
        } catch (err) {
          if (v === "a" || opts.scriptTimeoutMs !== undefined || !isTimeout(err)) throw err;
          say(
            `warm-up ${v} timed out (${err instanceof Error ? err.message : String(err)}); raising ScriptTimeoutMS`,
          );
          await proxyClient.call("RG.CONFIGSET", ["ScriptTimeoutMS", "60000"]);
          if (baseClient !== proxyClient) await baseClient.call("RG.CONFIGSET", ["ScriptTimeoutMS", "60000"]);
          timeoutNote =
            `ScriptTimeoutMS raised to 60000 with RG.CONFIGSET after variant (${v}) timed out at the default ` +
            `(${err instanceof Error ? err.message : String(err)})`;
          got = await runOnce(v);
        }
        check(v, got);
        say(`  warm-up ${LABELS[v]}: ${(performance.now() - t0).toFixed(0)} ms`);
      }
    }

    for (let round = 0; round < opts.rounds; round++) {
      const vs = variants;
      const order = vs.map((_, k) => vs[(k + round) % vs.length]);
      for (const v of order) {
        await sleep(200);
        const pid = pidOf(v);
        const stopSampling = sampleRss(v === "a" ? proxy.child.pid : pid, 50);
        const cpu0 = processCpuMs(pid);
        const t0 = performance.now();
        const got = await runOnce(v);
        const ms = performance.now() - t0;
        const cpuMs = processCpuMs(pid) - cpu0;
        const peak = stopSampling();
        check(v, got);
        times.get(v)!.push(ms);
        cpus.get(v)!.push(cpuMs);
        if (v !== "a") peaks.set(v, Math.max(peaks.get(v) ?? 0, peak));
        say(
          `  round ${round + 1}/${opts.rounds} ${LABELS[v]}: ${ms.toFixed(0)} ms, CPU ${cpuMs.toFixed(0)} ms (counts verified)`,
        );
      }
    }
    run.hwmKb = statusKb(proxy.child.pid, "VmHWM");
  } finally {
    await cleanup();
  }

  // report
  const med = (v: Variant): number => (times.get(v)!.length > 0 ? median(times.get(v)!) : NaN);
  const ratio = (r: number): string => (Number.isNaN(r) ? "n/a" : `${r.toFixed(2)}x`);
  const verdict = (r: number, limit: number): string =>
    Number.isNaN(r) ? "n/a" : r <= limit ? "met" : "MISSED";
  /** Each round's time of v over that round's (a): the side-by-side ratios. */
  const roundRatios = (v: Variant): number[] => {
    const mine = times.get(v)!;
    const base = times.get("a")!;
    return mine.length === base.length ? mine.map((t, i) => t / base[i]) : [];
  };
  /** The verdicts use the median of the per-round ratios (noise from other load hits both sides of a round). */
  const medRatio = (v: Variant): number => (roundRatios(v).length > 0 ? median(roundRatios(v)) : NaN);
  const ratioB = medRatio("b");
  const ratioC = medRatio("c");
  const ratioB0 = medRatio("b0");
  const ratioC0 = medRatio("c0");
  const medCpu = (v: Variant): number => (cpus.get(v)!.length > 0 ? median(cpus.get(v)!) : NaN);
  const fmt = (ms: number): string => `${ms.toFixed(0)} ms`;
  const out: string[] = [];
  out.push("## Map/reduce (count by genre)", "", "```", header, `command: ${command}`, "```", "");
  out.push(
    `${opts.movies.toLocaleString("en-US")} \`movie:<i>\` hashes (title, year, genres = 1-3 of ${GENRES.length} genres) ` +
      `on a 3-master cluster (keys per master: ${run.perMaster.join(", ")}; loaded in ${run.loadSeconds.toFixed(1)} s, ` +
      `pipelined to the owning masters). gears-proxy runs as a child process in front of the cluster; ` +
      `(a) runs in the bench process. ` +
      `${opts.warmup ? "One untimed warm-up run of each variant, then " : ""}` +
      `${opts.rounds} alternating round(s); the ratio of a round is its time over the same round's (a), ` +
      `and the verdicts use the median of those per-round ratios (the ratio of the median times is shown ` +
      `beside it). Every run's counts were checked against ` +
      `the counts computed while generating the data, and all were identical.`,
    "",
    "Scripts:",
    "",
    `- (b) \`${SCRIPT_KEYS}\``,
    `- (c) \`${SCRIPT_EXECUTE}\``,
    ...(opts.variants.includes("d") ? [`- (d) \`${SCRIPT_ASYNC}\``] : []),
    ...(opts.variants.includes("p") ? [`- (p) \`${SCRIPT_PYTHON}\``] : []),
    ...(opts.bCli !== undefined
      ? [`- (b0), (c0): (b) and (c) on a second gears-proxy started from \`${opts.bCli}\` (--b-cli)`]
      : []),
    "",
    `${timeoutNote}.`,
    "",
  );
  out.push(
    table(
      [
        "variant",
        "median",
        "runs (ms)",
        "per-round ratios to (a)",
        "median of per-round ratios",
        "ratio of medians",
        "median CPU per run (proxy; for (a) the bench's client)",
        "proxy peak RSS during the runs",
      ],
      variants.map((v) => [
        LABELS[v],
        fmt(med(v)),
        times
          .get(v)!
          .map((t) => t.toFixed(0))
          .join(", "),
        v === "a" ? "" : roundRatios(v).map(ratio).join(", "),
        v === "a" ? "1.00x" : ratio(medRatio(v)),
        v === "a" ? "1.00x" : ratio(med(v) / med("a")),
        `${medCpu(v).toFixed(0)} ms`,
        v === "a" ? "" : mb(peaks.get(v) ?? NaN),
      ]),
    ),
    "",
  );
  out.push(
    `gears-proxy RSS: ${mb(run.rssAfterLoadKb)} after start; peak (VmHWM over the whole run, worker threads included) ${mb(run.hwmKb)}.`,
    "",
  );
  out.push(
    table(
      ["target", "median of per-round ratios", "met"],
      [
        ["(b)/(a) KeysReader form within 1.1x", ratio(ratioB), verdict(ratioB, 1.1)],
        ["(c)/(a) execute() form within 1.8x", ratio(ratioC), verdict(ratioC, 1.8)],
        ...(opts.bCli !== undefined
          ? [
              ["(b0)/(a), the --b-cli build", ratio(ratioB0), verdict(ratioB0, 1.1)],
              ["(c0)/(a), the --b-cli build", ratio(ratioC0), verdict(ratioC0, 1.8)],
            ]
          : []),
      ],
    ),
    "",
  );
  if (opts.profileDir !== undefined) {
    const files = fs
      .readdirSync(opts.profileDir)
      .filter((f) => f.endsWith(".cpuprofile") && !profilesBefore.has(f))
      .map((f) => path.join(opts.profileDir!, f));
    for (const f of files) out.push("### CPU profile", "", summarizeProfile(f), "");
  }
  out.push(
    `total time: ${((Date.now() - startedAt) / 1000).toFixed(0)} s; load average at the end: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
    "",
  );
  const report = out.join("\n");
  process.stdout.write(report);
  if (opts.append !== undefined) appendReport(opts.append, report);
  if (opts.json !== undefined) {
    fs.writeFileSync(
      opts.json,
      JSON.stringify(
        {
          header,
          command,
          opts,
          times: Object.fromEntries(times),
          cpus: Object.fromEntries(cpus),
          peaks: Object.fromEntries(peaks),
          run,
        },
        null,
        2,
      ),
    );
  }
  return 0;
}

runBench(main, cleanup);
