/**
 * What the benches share: starting, waiting for and stopping child processes (gears-proxy among
 * them), /proc readings of their memory, CPU profile totals, the machine description, markdown
 * tables and the signal/exit handling that stops every process a bench started.
 */
import { spawn, fork, execFileSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../spec/harness/ports.js";
import { sendCommand } from "../spec/harness/resp.js";

// ---- processes -----------------------------------------------------------------------------

export const HOST = "127.0.0.1";
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const PROXY_CLI = path.join(REPO, "dist", "src", "cli.js");
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process we started, with a promise for its exit. */
export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<void>;
  done: boolean;
  output: string;
}

/** Every child process started and not yet exited. */
export const children = new Set<Child>();

export function startChild(name: string, cmd: string, args: string[], keepOutput = true): Child {
  return track(name, spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }), keepOutput);
}

/**
 * Forks a node module with an IPC channel (for a helper process the bench talks to with
 * messages), tracked like startChild's children so cleanup stops it.
 */
export function forkChild(name: string, modulePath: string, args: string[]): Child {
  return track(name, fork(modulePath, args, { stdio: ["ignore", "pipe", "pipe", "ipc"] }), true);
}

/** Registers a started process in `children` until it exits, keeping the tail of its output. */
function track(name: string, proc: ChildProcess, keepOutput: boolean): Child {
  const child: Child = {
    name,
    proc,
    pid: proc.pid ?? -1,
    done: false,
    output: "",
    exited: new Promise((resolve) => {
      proc.once("exit", () => resolve());
      proc.once("error", (err) => {
        child.output += `\nstart failed: ${err.message}`;
        resolve();
      });
    }),
  };
  void child.exited.then(() => {
    child.done = true;
    children.delete(child);
  });
  const append = (chunk: Buffer): void => {
    if (keepOutput) child.output = (child.output + chunk.toString()).slice(-256 * 1024);
  };
  proc.stdout?.on("data", append);
  proc.stderr?.on("data", append);
  children.add(child);
  return child;
}

/** SIGTERM (SIGKILL after the grace period) and wait for the exit. */
export async function stopChild(child: Child, graceMs = 5000): Promise<void> {
  if (child.done) return;
  try {
    process.kill(child.pid, "SIGTERM");
  } catch {
    // already gone
  }
  const timer = setTimeout(() => {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }, graceMs);
  await child.exited;
  clearTimeout(timer);
}

/** Runs a command to completion; rejects on a non-zero exit or after timeoutMs. */
export async function run(name: string, cmd: string, args: string[], timeoutMs: number): Promise<string> {
  const child = startChild(name, cmd, args);
  let stdout = "";
  child.proc.stdout?.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void stopChild(child, 1000);
  }, timeoutMs);
  await child.exited;
  clearTimeout(timer);
  const code = child.proc.exitCode;
  if (timedOut) throw new Error(`${name} timed out after ${timeoutMs} ms: ${child.output.slice(-2000)}`);
  if (code !== 0) throw new Error(`${name} exited with ${code}: ${child.output.slice(-2000)}`);
  return stdout;
}

export async function ping(port: number): Promise<boolean> {
  try {
    return (await sendCommand(port, ["PING"], { host: HOST, timeoutMs: 1000 })) === "PONG";
  } catch {
    return false;
  }
}

export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  child: Child,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (child.done) throw new Error(`${what} exited before it was ready:\n${child.output}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms:\n${child.output}`);
    await sleep(50);
  }
}

export interface Proxy {
  readonly child: Child;
  readonly port: number;
}

export interface GearsOptions {
  /** Run under node --cpu-prof with the profiles landing here. */
  profileDir: string | undefined;
  /** Extra node flags for the proxy process. */
  nodeArgs: string[];
  /** The proxy's cli.js (default: this build's). */
  cli?: string;
  /** Extra gears-proxy flags. */
  args: string[];
  /**
   * Ready when a keyed command succeeds (in front of a cluster, PING answers before the slot
   * map is read; a keyed command does not), or when it answers PING.
   */
  readyWhen: "keyed" | "ping";
}

/** Starts gears-proxy in front of upstreamPort on a free port, and waits until it is ready. */
export async function startGears(upstreamPort: number, o: GearsOptions): Promise<Proxy> {
  const port = await freePort();
  const profile = o.profileDir !== undefined ? ["--cpu-prof", "--cpu-prof-dir", o.profileDir] : [];
  const args = [
    ...profile,
    ...o.nodeArgs,
    o.cli ?? PROXY_CLI,
    "--port",
    String(port),
    "--upstream",
    `${HOST}:${upstreamPort}`,
    "--log-level",
    "warn",
    ...o.args,
  ];
  const child = startChild("gears-proxy", process.execPath, args);
  const keyed = async (): Promise<boolean> => {
    try {
      return (await sendCommand(port, ["SET", "bench:ready", "1"], { host: HOST, timeoutMs: 1000 })) === "OK";
    } catch {
      return false;
    }
  };
  await waitFor("gears-proxy", o.readyWhen === "keyed" ? keyed : () => ping(port), child);
  return { child, port };
}

// ---- memory --------------------------------------------------------------------------------

export function statusKb(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

export const mb = (kb: number): string => (Number.isNaN(kb) ? "n/a" : `${(kb / 1024).toFixed(1)} MB`);

/** Samples a process' RSS every intervalMs until stopped; the stop function returns the peak in kB. */
export function sampleRss(pid: number, intervalMs: number): () => number {
  let peak = statusKb(pid, "VmRSS");
  const timer = setInterval(() => {
    const now = statusKb(pid, "VmRSS");
    if (!(now <= peak)) peak = now;
  }, intervalMs);
  return () => {
    clearInterval(timer);
    const now = statusKb(pid, "VmRSS");
    return Number.isNaN(peak) || now > peak ? now : peak;
  };
}

// ---- report helpers ------------------------------------------------------------------------

export function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]): string => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** A .cpuprofile's sampled microseconds, in all and per function (by self and by inclusive time). */
export interface ProfileTimes {
  total: number;
  selfByName: Map<string, number>;
  inclByName: Map<string, number>;
}

export function profileTimes(file: string): ProfileTimes {
  const profile = JSON.parse(fs.readFileSync(file, "utf8")) as CpuProfile;
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const name = (n: ProfileNode): string => {
    const f = n.callFrame;
    const url = f.url.replace(/^file:\/\//, "").replace(`${REPO}/`, "");
    return `${f.functionName || "(anonymous)"} ${url ? `${url}:${f.lineNumber + 1}` : ""}`.trim();
  };
  const selfByName = new Map<string, number>();
  const inclByName = new Map<string, number>();
  const bump = (m: Map<string, number>, key: string, us: number): void => {
    m.set(key, (m.get(key) ?? 0) + us);
  };
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    bump(selfByName, name(node), us);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur);
      if (n === undefined) break;
      const key = name(n);
      if (seen.has(key)) continue;
      seen.add(key);
      bump(inclByName, key, us);
    }
  }
  return { total, selfByName, inclByName };
}

/** The top entries of m passing filter, hottest first, as [percentage, function] rows. */
export function rankProfile(
  m: Map<string, number>,
  filter: (k: string) => boolean,
  top: number,
  pct: (us: number) => string,
): string[][] {
  return [...m.entries()]
    .filter(([k]) => filter(k))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, us]) => [pct(us), k]);
}

/** The date, load average and machine lines of a report's header. */
export function machineLines(): string[] {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  return [
    `date: ${new Date().toISOString()}; load average at start: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
    `machine: nproc ${os.availableParallelism()}, ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.type()} ${os.release()}`,
  ];
}

/** machineLines() and a line with node's and redis-server's versions: a report's header. */
export function machineHeader(): string {
  let redis = "redis-server: unknown";
  try {
    redis = execFileSync("redis-server", ["--version"], { encoding: "utf8" }).trim();
  } catch {
    // reported as unknown
  }
  return [...machineLines(), `node ${process.version}; ${redis}`].join("\n");
}

export function which(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** The median of the figures that are numbers (NaN when none is). */
export function median(xs: number[]): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

// ---- running -------------------------------------------------------------------------------

export function say(text: string): void {
  process.stderr.write(`${text}\n`);
}

/**
 * Runs main, then stops every child process the bench started and runs `cleanup` (which stops
 * what the bench started otherwise: its redis-servers), and exits with main's code; on a
 * failure, or on SIGINT/SIGTERM, the same stopping runs first too.
 */
export function runBench(main: () => Promise<number>, stopOwn: () => Promise<void>): void {
  const cleanup = async (): Promise<void> => {
    await stopChildren();
    await stopOwn();
  };
  let interrupted = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (interrupted) process.exit(130);
      interrupted = true;
      say(`\n${signal}: stopping every process started by the bench...`);
      void cleanup().finally(() => process.exit(130));
    });
  }

  main().then(
    (code) => void cleanup().finally(() => process.exit(code)),
    (err: unknown) => {
      say(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      void cleanup().finally(() => process.exit(1));
    },
  );
}

/** Stops every child process the bench started and has not stopped yet. */
export async function stopChildren(graceMs = 5000): Promise<void> {
  for (const child of [...children]) await stopChild(child, graceMs);
}

/** Appends a markdown report to `file`, one blank line from what is already there. */
export function appendReport(file: string, text: string): void {
  const existing = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
  const sep = existing === "" || existing.endsWith("\n\n") ? "" : existing.endsWith("\n") ? "\n" : "\n\n";
  fs.appendFileSync(file, `${sep}${text}`);
  say(`appended to ${file}`);
}

// ---- CPU time from /proc ---------------------------------------------------------------------

let clockTicks = 0;

/** Clock ticks per second, the unit of utime and stime in /proc/<pid>/stat. */
function ticksPerSecond(): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime + stime of one /proc/<pid>/stat, in seconds, and the parent's pid; null if it is gone. */
function readStat(pid: number | string): { seconds: number; parent: number } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // The fields after the ")" closing the command name (which may hold spaces): the parent's
    // pid is field 4 of the line, utime and stime fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return {
      seconds: (Number(fields[11]) + Number(fields[12])) / ticksPerSecond(),
      parent: Number(fields[1]),
    };
  } catch {
    return null;
  }
}

/** CPU seconds (user + system, every thread) process `pid` has used so far; NaN once it is gone. */
export function cpuSeconds(pid: number): number {
  return readStat(pid)?.seconds ?? NaN;
}

/**
 * CPU seconds of process `pid` (`own`) and of it with its direct children (`total`): a
 * `--threads N` proxy is a supervisor whose data planes are child processes.
 */
export function treeCpuSeconds(pid: number): { own: number; total: number } {
  let own = 0;
  let total = 0;
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(entry);
    if (stat === null) continue;
    if (Number(entry) === pid) own += stat.seconds;
    if (Number(entry) === pid || stat.parent === pid) total += stat.seconds;
  }
  return { own, total };
}
