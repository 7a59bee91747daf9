/**
 * Large results: `GB('KeysOnlyReader').run()` over N keys (default 1,000,000, made with DEBUG
 * POPULATE) through gears-proxy at its default settings, against one redis-server. For each
 * run: the reply's size in bytes (RESP, as the proxy writes it), the proxy's RSS before, its
 * peak during the run (sampled every 10 ms from /proc, worker threads included) and after
 * (right after the reply, and 2 s later), in the same process and run. Run 0 is a one-result
 * execution on the fresh proxy (the fixed cost of a first execution: an isolate and its
 * spare); the large runs follow it. The bench fails unless every run returns exactly N keys.
 * With `--b-cli`, a second build is measured the same way in each round, a fresh proxy per
 * build and round, the order alternating, against the same populated server (A/B in one run);
 * `--smaps` says where the first large result's growth is; `--b-node-args` makes B this build (or
 * --b-cli's) with other node flags. During each large run a second connection sends PINGs: the
 * longest wait is the longest the proxy's main thread answered no one (a GC pause among it). Each build is measured twice per
 * round: on a fresh proxy, and on one that has first carried `--traffic` ordinary commands, as
 * a proxy in service has (V8 touches its young generation, ~16 MB, only once it has allocated
 * that much: any traffic does it, and on a fresh proxy the first large result pays it). See
 * `--help`.
 */
import fs from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { Redis } from "ioredis";
import { startRedis, type RedisNode } from "../spec/harness/redis.js";
import { sendCommand } from "../spec/harness/resp.js";
import {
  HOST,
  machineLines,
  mb,
  runBench,
  sampleRss,
  say,
  sleep,
  startGears,
  statusKb,
  stopChild,
  table,
  median,
} from "./support.js";

const HELP = `Usage: node dist/bench/large-results.js [options]

  --keys N     keys in the database (default 1000000)
  --runs N     executions, one after the other on the same proxy (default 3)
  --quick      100,000 keys, 2 runs
  --script S   the script of the large runs (default GB('KeysOnlyReader').run()); e.g.
               GB('KeysOnlyReader').count().run() for what reading alone costs
  --cli PATH          another build's dist/src/cli.js (e.g. one from before results streamed)
  --b-cli PATH        a second build's dist/src/cli.js, measured beside the first (A/B) in each round
  --rounds N          fresh proxies per build, alternating A-B / B-A (default 1); medians of the
                      first large result's growth / reply size at the end
  --smaps             where the first large result's growth is, by kind of mapping (/proc/PID/smaps)
  --traffic N         ordinary commands (pipelined SET/GET of small values) sent to a second,
                      "in service" proxy per build and round before its runs (default 200000;
                      0: fresh proxies only)
  --proxy-args "..."  extra gears-proxy flags, e.g. "--gears-config ScriptMemoryLimitMB=512"
  --node-args="..."   extra node flags for the proxy process, e.g. --node-args=--max-semi-space-size=2
  --b-node-args="..." a build B measured beside A with these node flags instead (B is --b-cli, or
                      this build without --b-cli): an A/B of node flags, e.g. --b-node-args=--single-threaded-gc
  --help
`;

/** Bytes of a bulk string of `len` bytes in RESP. */
const bulkBytes = (len: number): number => 1 + String(len).length + 2 + len + 2;

/** The RESP size of `[results, errors]` as ioredis decoded it (results and errors are bulk strings). */
function replySize(reply: Buffer[][]): number {
  const [results, errors] = reply;
  let size = 4 + 1 + String(results.length).length + 2 + 1 + String(errors.length).length + 2;
  for (const r of results) size += bulkBytes(r.length);
  for (const e of errors) size += bulkBytes(e.length);
  return size;
}

/** One build's proxy, as the runs below measure it. */
interface Build {
  label: string;
  cli: string | undefined;
  /** Node flags of this build's proxy process. */
  nodeArgs: string[];
  /** Ordinary commands the proxy carries before its first execution (0: a fresh proxy). */
  traffic: number;
}

/** `n` small SETs and GETs, pipelined a thousand at a time, as a proxy in service has carried. */
async function carryTraffic(client: Redis, n: number): Promise<void> {
  for (let done = 0; done < n; done += 1000) {
    const p = client.pipeline();
    for (let i = 0; i < 1000; i += 2)
      p.set(`bench:traffic:${i % 100}`, "v".repeat(32)).get(`bench:traffic:${i % 100}`);
    await p.exec();
  }
  const stale: string[] = [];
  for (let i = 0; i < 100; i++) stale.push(`bench:traffic:${i}`);
  await client.del(...stale);
}

/**
 * A second connection that sends PING, one at a time and 1 ms apart, while a large run goes on,
 * from a worker thread (the bench's own thread is busy decoding the large reply): the longest
 * wait is how long the proxy's main thread stopped answering anyone (a GC pause among it).
 */
const PINGER = `
const { parentPort, workerData } = require("node:worker_threads");
const net = require("node:net");
const waits = [];
let sentAt = 0;
let going = true;
const sock = net.connect(workerData.port, workerData.host, () => send());
sock.setNoDelay(true);
function send() {
  if (!going) return;
  sentAt = performance.now();
  sock.write("PING\\r\\n");
}
let pending = "";
sock.on("data", (d) => {
  pending += d.toString();
  while (pending.includes("\\r\\n")) {
    pending = pending.slice(pending.indexOf("\\r\\n") + 2);
    waits.push(performance.now() - sentAt);
    setTimeout(send, 1);
  }
});
parentPort.on("message", () => {
  going = false;
  sock.destroy();
  parentPort.postMessage(waits);
});
`;

/** Starts the pinger; stop() resolves to the longest wait and the 99th percentile, in ms, and the count. */
function watchPings(port: number): { stop: () => Promise<{ max: number; p99: number; count: number }> } {
  const worker = new Worker(PINGER, { eval: true, workerData: { port, host: HOST } });
  return {
    stop: () =>
      new Promise((resolve, reject) => {
        worker.once("message", (waits: number[]) => {
          void worker.terminate();
          waits.sort((a, b) => a - b);
          const at = (q: number): number =>
            waits[Math.min(waits.length - 1, Math.floor(q * waits.length))] ?? NaN;
          resolve({ max: waits[waits.length - 1] ?? NaN, p99: at(0.99), count: waits.length });
        });
        worker.once("error", reject);
        worker.postMessage("stop");
      }),
  };
}

/** What one fresh proxy gave: its table rows, and the first large result's growth over its reply. */
interface Measured {
  rows: string[][];
  firstRatio: number;
  /** The longest PING wait (ms) during each large run. */
  pauses: number[];
  /** Peak minus before, by kind of mapping, for the first large result (--smaps). */
  smaps: Map<string, number> | null;
  failed: boolean;
}

/**
 * Resident kB by kind of mapping in /proc/PID/smaps: the main thread's malloc heap, V8's
 * 256 KB pages, the 64 MB malloc arenas of other threads, wasm memories (reserved in GBs),
 * the rest. Enough to tell which side of the proxy a growth is on.
 */
function smapsKinds(pid: number): Map<string, number> {
  const kinds = new Map<string, number>();
  let kind = "";
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/smaps`, "utf8");
  } catch {
    return kinds;
  }
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m !== null) {
      const kb = (parseInt(m[2], 16) - parseInt(m[1], 16)) / 1024;
      const name = m[3];
      if (name === "[heap]") kind = "main malloc heap (brk)";
      else if (name !== "") kind = name.startsWith("[") ? name : "files";
      else if (kb >= 2 ** 20) kind = "wasm memories (anon >= 1 GB)";
      else if (kb === 256) kind = "V8 pages (anon 256 kB)";
      else if (kb >= 32 * 1024 && kb <= 64 * 1024) kind = "thread arenas (anon 32-64 MB)";
      else kind = kb > 256 ? "other anon > 256 kB" : "other anon < 256 kB";
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss !== null && kind !== "") kinds.set(kind, (kinds.get(kind) ?? 0) + Number(rss[1]));
  }
  return kinds;
}

/** sampleRss, also keeping the smaps kinds at the highest sample (read again when RSS grew 256 kB more). */
function sampleSmaps(pid: number, intervalMs: number): () => { peakKb: number; kinds: Map<string, number> } {
  let peak = statusKb(pid, "VmRSS");
  let kinds = smapsKinds(pid);
  let read = peak;
  const timer = setInterval(() => {
    const now = statusKb(pid, "VmRSS");
    if (!(now <= peak)) peak = now;
    if (now >= read + 256) {
      kinds = smapsKinds(pid);
      read = now;
    }
  }, intervalMs);
  return () => {
    clearInterval(timer);
    return { peakKb: peak, kinds };
  };
}

async function measure(
  build: Build,
  o: {
    keys: number;
    runs: number;
    script: string;
    scriptGiven: boolean;
    proxyArgs: string[];
    smaps: boolean;
  },
): Promise<Measured> {
  const proxy = await startGears(redis!.port, {
    profileDir: undefined,
    nodeArgs: build.nodeArgs,
    args: o.proxyArgs,
    cli: build.cli,
    readyWhen: "ping",
  });
  const pid = proxy.child.pid;
  const client = new Redis({ port: proxy.port, host: HOST, maxRetriesPerRequest: 0 });
  const rows: string[][] = [];
  let failed = false;
  let firstRatio = NaN;
  const pauses: number[] = [];
  let smaps: Map<string, number> | null = null;
  try {
    // The ready check's key is a user key too.
    await client.del("bench:ready");
    if (build.traffic > 0) await carryTraffic(client, build.traffic);
    {
      // What any first execution costs a fresh proxy, whatever its result: an isolate and the
      // spare started when it is taken. Measured apart, so the runs below show what the size adds.
      await sleep(1000);
      const beforeKb = statusKb(pid, "VmRSS");
      const stop = sampleRss(pid, 10);
      const reply = (await client.callBuffer("RG.EXECUTE", "GB('ShardsIDReader').run()")) as Buffer[][];
      const peakKb = stop();
      const afterKb = statusKb(pid, "VmRSS");
      await sleep(2000);
      const size = replySize(reply);
      rows.push([
        build.label,
        "0: first execution, 1 result (fixed cost)",
        String(reply[0].length),
        `${size} B`,
        "",
        "",
        mb(beforeKb),
        mb(peakKb),
        mb(afterKb),
        mb(statusKb(pid, "VmRSS")),
        mb(peakKb - beforeKb),
        "",
      ]);
    }
    for (let i = 0; i < o.runs; i++) {
      await sleep(1000);
      const beforeKb = statusKb(pid, "VmRSS");
      const watchSmaps = o.smaps && i === 0;
      const before = watchSmaps ? smapsKinds(pid) : null;
      const stopSmaps = watchSmaps ? sampleSmaps(pid, 10) : null;
      const stop = watchSmaps ? null : sampleRss(pid, 10);
      const pinger = watchPings(proxy.port);
      await sleep(20);
      const t0 = Date.now();
      const reply = (await client.callBuffer("RG.EXECUTE", o.script)) as Buffer[][];
      const ms = Date.now() - t0;
      const pings = await pinger.stop();
      pauses.push(pings.max);
      let peakKb: number;
      if (stopSmaps !== null && before !== null) {
        const atPeak = stopSmaps();
        peakKb = atPeak.peakKb;
        smaps = new Map();
        for (const k of new Set([...before.keys(), ...atPeak.kinds.keys()])) {
          smaps.set(k, (atPeak.kinds.get(k) ?? 0) - (before.get(k) ?? 0));
        }
      } else peakKb = stop!();
      const afterKb = statusKb(pid, "VmRSS");
      await sleep(2000);
      const laterKb = statusKb(pid, "VmRSS");
      const size = replySize(reply);
      const count = reply[0].length;
      if ((!o.scriptGiven && count !== o.keys) || reply[1].length !== 0) {
        failed = true;
        say(`run ${i + 1}: ${count} results of ${o.keys}, errors ${reply[1].map(String).join("; ")}`);
      }
      const growthKb = peakKb - beforeKb;
      const ratio = growthKb / (size / 1024);
      if (i === 0) firstRatio = ratio;
      rows.push([
        build.label,
        `${i + 1}${i === 0 ? ": first large result" : ""}`,
        count.toLocaleString("en-US"),
        `${(size / 2 ** 20).toFixed(1)} MB`,
        `${ms} ms`,
        `${pings.max.toFixed(1)} / ${pings.p99.toFixed(1)} ms (${pings.count})`,
        mb(beforeKb),
        mb(peakKb),
        mb(afterKb),
        mb(laterKb),
        mb(growthKb),
        size >= 1024 ? `${ratio.toFixed(2)}x` : "",
      ]);
      say(
        `${build.label} run ${i + 1}: ${count} keys, ${size} bytes, ${ms} ms, RSS ${mb(beforeKb)} -> ${mb(peakKb)} -> ${mb(laterKb)} (${ratio.toFixed(2)}x), longest PING ${pings.max.toFixed(1)} ms`,
      );
    }
  } finally {
    client.disconnect();
    await stopChild(proxy.child, 2000);
  }
  return { rows, firstRatio, pauses, smaps, failed };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      keys: { type: "string" },
      runs: { type: "string" },
      rounds: { type: "string" },
      quick: { type: "boolean" },
      script: { type: "string" },
      cli: { type: "string" },
      "b-cli": { type: "string" },
      traffic: { type: "string" },
      smaps: { type: "boolean" },
      "proxy-args": { type: "string" },
      "node-args": { type: "string" },
      "b-node-args": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help === true) {
    process.stdout.write(HELP);
    return 0;
  }
  const keys = Number(values.keys ?? (values.quick === true ? 100_000 : 1_000_000));
  const runs = Number(values.runs ?? (values.quick === true ? 2 : 3));
  const rounds = Number(values.rounds ?? 1);
  const script = values.script ?? "GB('KeysOnlyReader').run()";
  const started = Date.now();
  const lines = machineLines();
  redis = await startRedis({ args: ["--enable-debug-command", "yes", "--save", ""] });
  // A million keys can take longer than call()'s 2 s on a loaded machine.
  await sendCommand(redis.port, ["DEBUG", "POPULATE", String(keys)], { host: HOST, timeoutMs: 60_000 });
  const words = (s: string | undefined): string[] => (s ?? "").split(" ").filter((a) => a !== "");
  const options = {
    keys,
    runs,
    script,
    scriptGiven: values.script !== undefined,
    proxyArgs: words(values["proxy-args"]),
    smaps: values.smaps === true,
  };
  const traffic = Number(values.traffic ?? 200_000);
  const nodeArgs = words(values["node-args"]);
  const bNodeArgs = values["b-node-args"] === undefined ? nodeArgs : words(values["b-node-args"]);
  const withB = values["b-cli"] !== undefined || values["b-node-args"] !== undefined;
  const builds: Build[] = [
    { label: values["b-cli"] === undefined ? "A" : "A (this build)", cli: values.cli, nodeArgs, traffic: 0 },
  ];
  if (withB) builds.push({ label: "B", cli: values["b-cli"] ?? values.cli, nodeArgs: bNodeArgs, traffic: 0 });
  if (traffic > 0) {
    for (const b of [...builds]) {
      builds.push({ ...b, label: `${b.label.split(" ")[0]} in service`, traffic });
    }
  }
  const rows: string[][] = [];
  const ratios = new Map<string, number[]>(builds.map((b) => [b.label, []]));
  const pauses = new Map<string, number[]>(builds.map((b) => [b.label, []]));
  const smapsRows: string[][] = [];
  let failed = false;
  for (let round = 0; round < rounds; round++) {
    // Alternate which build goes first, so neither always meets the machine in the same state.
    const order = round % 2 === 0 ? builds : [...builds].reverse();
    for (const build of order) {
      const m = await measure(build, options);
      rows.push(...m.rows);
      ratios.get(build.label)!.push(m.firstRatio);
      pauses.get(build.label)!.push(...m.pauses);
      failed ||= m.failed;
      if (m.smaps !== null) {
        const parts = [...m.smaps].filter(([, kb]) => Math.abs(kb) >= 512).sort((a, b) => b[1] - a[1]);
        smapsRows.push([build.label, String(round + 1), parts.map(([k, kb]) => `${k} ${mb(kb)}`).join("; ")]);
      }
    }
  }
  const load = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
  const summary = builds.map((b) => {
    const rs = ratios.get(b.label)!;
    const ps = pauses.get(b.label)!;
    return [
      b.label,
      `${b.cli ?? "this build"}${b.nodeArgs.length > 0 ? ` (node ${b.nodeArgs.join(" ")})` : ""}`,
      rs.map((r) => r.toFixed(2)).join(", "),
      `${median(rs).toFixed(2)}x`,
      `${median(ps).toFixed(1)} / ${Math.max(...ps).toFixed(1)} ms`,
    ];
  });
  const out = [
    ...lines,
    `command: node dist/bench/large-results.js${values.quick === true ? " --quick" : ""}; ${keys.toLocaleString("en-US")} keys (DEBUG POPULATE), one redis-server; script ${script}; ${rounds} round(s), a fresh proxy per build and round${traffic > 0 ? `, and one per build and round that first carried ${traffic.toLocaleString("en-US")} ordinary commands ("in service")` : ""}; gears ${options.proxyArgs.join(" ") || "(default gears settings)"}${nodeArgs.length > 0 ? `; node ${nodeArgs.join(" ")}` : ""}${withB ? `; B: ${values["b-cli"] ?? "this build"}, node ${bNodeArgs.join(" ") || "(no flags)"}` : ""}`,
    "",
    table(
      [
        "build",
        "run",
        "results",
        "reply size (RESP)",
        "RG.EXECUTE time",
        "longest / p99 PING wait meanwhile (PINGs)",
        "proxy RSS before",
        "peak during the run",
        "right after the reply",
        "2 s later",
        "peak growth",
        "peak growth / reply size",
      ],
      rows,
    ),
    "",
    "First large result, peak growth / reply size, by round:",
    "",
    table(["build", "proxy", "rounds", "median", "longest PING wait per large run: median / max"], summary),
    ...(smapsRows.length > 0
      ? [
          "",
          "Where the first large result's growth is (peak minus before, /proc/PID/smaps):",
          "",
          table(["build", "round", "growth by kind of mapping"], smapsRows),
        ]
      : []),
    "",
    `total time: ${Math.round((Date.now() - started) / 1000)} s; load average at the end: ${load}`,
  ];
  process.stdout.write(`${out.join("\n")}\n`);
  return failed ? 1 : 0;
}

let redis: RedisNode | undefined;

runBench(main, async () => {
  await redis?.stop();
});
