/**
 * The zero-config start: with no --upstream, the proxy runs its own redis-server (found on PATH)
 * on a free loopback port, with its data in a directory of the user's choosing.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import readline from "node:readline";
import type { Logger } from "../observability/log.js";

export interface EmbeddedRedis {
  host: string;
  port: number;
  pid: number;
  /** Absolute path of the data directory. */
  dataDir: string;
  /** SIGTERM (redis-server saves and exits), SIGKILL if it is still running after 5 s. */
  stop(): Promise<void>;
}

export const REDIS_INSTALL_HINT =
  "redis-server was not found on PATH. Install Redis (Debian/Ubuntu: `sudo apt-get install redis-server`; " +
  "macOS: `brew install redis`), or point the proxy at a running server with --upstream host:port.";

const HOST = "127.0.0.1";
const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;
const OUTPUT_LINES_KEPT = 40;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

/** The first executable called `name` in the PATH directories, if any. */
export function findOnPath(name: string, searchPath = process.env.PATH ?? ""): string | undefined {
  for (const dir of searchPath.split(path.delimiter)) {
    if (dir === "") continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A loopback port nobody listened on a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.unref();
    probe.once("error", reject);
    probe.listen(0, HOST, () => {
      const address = probe.address();
      probe.close(() => (typeof address === "object" && address ? resolve(address.port) : reject()));
    });
  });
}

/** True when a PING on a fresh connection gets +PONG within a second. */
function pingOnce(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    let reply = "";
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk: Buffer) => {
      reply += chunk.toString("latin1");
      if (reply.includes("\r\n")) done(reply.startsWith("+PONG"));
    });
  });
}

/** A started redis-server child, its recent output and its exit. */
class RedisChild {
  readonly output: string[] = [];
  readonly exited: Promise<Exit>;
  private exit?: Exit;
  private stopping = false;
  private readonly removeExitHook: () => void;

  constructor(
    readonly child: ChildProcess,
    readonly log: Logger,
  ) {
    this.exited = new Promise((resolve) => {
      child.once("error", (error) => resolve((this.exit = { code: null, signal: null, error })));
      child.once("exit", (code, signal) => resolve((this.exit = { code, signal })));
    });
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) readline.createInterface({ input: stream }).on("line", (line) => this.onLine(line));
    }
    // Should the proxy die without stop(), redis-server still gets told to save and exit.
    const hook = (): void => {
      if (!this.exit && child.pid) child.kill("SIGTERM");
    };
    process.once("exit", hook);
    this.removeExitHook = () => process.removeListener("exit", hook);
    void this.exited.then((exit) => this.onExit(exit));
  }

  get hasExited(): boolean {
    return this.exit !== undefined;
  }

  recentOutput(): string {
    return this.output.length === 0 ? "(no output)" : this.output.join("\n");
  }

  private onLine(line: string): void {
    this.output.push(line);
    if (this.output.length > OUTPUT_LINES_KEPT) this.output.shift();
    this.log.debug({ redis: line }, "redis-server output");
  }

  private onExit(exit: Exit): void {
    this.removeExitHook();
    if (this.stopping) return;
    this.log.error(
      {
        pid: this.child.pid,
        code: exit.code,
        signal: exit.signal,
        err: exit.error,
        output: this.recentOutput(),
      },
      "embedded redis-server exited unexpectedly",
    );
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.hasExited) return;
    this.child.kill("SIGTERM");
    const timer = sleep(STOP_GRACE_MS).then(() => "timeout" as const);
    if ((await Promise.race([this.exited, timer])) === "timeout") {
      this.log.warn({ pid: this.child.pid }, "embedded redis-server did not exit after SIGTERM: killing it");
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }

  /** Resolves once PING answers; rejects (and kills the child) if it exits or takes too long. */
  async waitUntilReady(port: number): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!this.hasExited) {
      if (await pingOnce(port)) return;
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(
          `redis-server did not answer PING on port ${port} within ${READY_TIMEOUT_MS / 1000} s. ` +
            `Its output:\n${this.recentOutput()}`,
        );
      }
      await sleep(50);
    }
    this.stopping = true;
    const exit = await this.exited;
    const how = exit.error ? exit.error.message : `exit code ${exit.code ?? exit.signal}`;
    throw new Error(`redis-server stopped during startup (${how}). Its output:\n${this.recentOutput()}`);
  }
}

function redisArgs(port: number, dataDir: string): string[] {
  return [
    "--port",
    String(port),
    "--bind",
    HOST,
    "--dir",
    dataDir,
    "--daemonize",
    "no",
    "--save",
    ...["3600", "1", "300", "100", "60", "10000"],
    "--appendonly",
    "no",
    "--protected-mode",
    "yes",
  ];
}

/**
 * Where a proxy notes the redis-server it runs on `dataDir`: a proxy killed with SIGKILL leaves
 * it running (its own process group, so that Ctrl-C stops them in order), and the next start
 * must not run a second server on the same files (the older dump.rdb, which the first would
 * later overwrite with its own).
 */
const RUNNING_FILE = "gears-proxy-redis.json";
const ORPHAN_EXIT_MS = 60_000;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether `pid` is a redis-server started in `dir` (launch gives it `dir` as its working
 * directory): a pid the system gave to another process since is left alone. Without /proc
 * (not Linux), a redis-server answering PING on the noted port.
 */
async function servesDir(pid: number, port: number, dir: string): Promise<boolean> {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "latin1");
    return cmdline.includes("redis-server") && fs.realpathSync(`/proc/${pid}/cwd`) === fs.realpathSync(dir);
  } catch {
    return fs.existsSync("/proc/self") ? false : pingOnce(port);
  }
}

/**
 * A redis-server an earlier proxy left running on `dir` (it was killed before it could stop
 * it): told to save and exit (SIGTERM), and waited for, so that the new one loads what it held.
 */
async function stopOrphan(dir: string, log: Logger): Promise<void> {
  const file = path.join(dir, RUNNING_FILE);
  let noted: { pid?: unknown; port?: unknown; proxy?: unknown };
  try {
    noted = JSON.parse(fs.readFileSync(file, "utf8")) as typeof noted;
  } catch {
    return;
  }
  const { pid, port, proxy } = noted;
  if (typeof pid === "number" && typeof port === "number" && processAlive(pid)) {
    if (typeof proxy === "number" && proxy !== process.pid && processAlive(proxy))
      throw new Error(
        `${dir} is the data directory of a redis-server that another running gears-proxy (pid ${proxy}) started; give this one another --data-dir, or --upstream 127.0.0.1:${port} to share that server`,
      );
    if (await servesDir(pid, port, dir)) {
      log.warn(
        { pid, port, dir },
        "an embedded redis-server left running by an earlier proxy holds this data directory: stopping it (it saves first)",
      );
      process.kill(pid, "SIGTERM");
      const deadline = Date.now() + ORPHAN_EXIT_MS;
      while (processAlive(pid)) {
        if (Date.now() > deadline)
          throw new Error(
            `the redis-server (pid ${pid}) an earlier proxy left running on ${dir} did not exit within ${ORPHAN_EXIT_MS / 1000} s of SIGTERM; stop it, then start again`,
          );
        await sleep(100);
      }
    }
  }
  fs.rmSync(file, { force: true });
}

async function launch(binary: string, port: number, dataDir: string, log: Logger): Promise<EmbeddedRedis> {
  // Its own process group: Ctrl-C reaches the proxy only, which then stops redis-server in order.
  const child = spawn(binary, redisArgs(port, dataDir), {
    cwd: dataDir,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const redis = new RedisChild(child, log);
  await redis.waitUntilReady(port);
  const pid = child.pid as number;
  const noted = path.join(dataDir, RUNNING_FILE);
  fs.writeFileSync(noted, JSON.stringify({ pid, port, proxy: process.pid }));
  log.info({ port, pid, dir: dataDir }, `started embedded redis-server on ${HOST}:${port}`);
  return {
    host: HOST,
    port,
    pid,
    dataDir,
    stop: async () => {
      await redis.stop();
      fs.rmSync(noted, { force: true });
    },
  };
}

/**
 * Starts redis-server from PATH on a free loopback port, with its data in `dataDir`. `avoid`:
 * the proxy's own ports, free now because the proxy binds them only after this server is up
 * (a free-port probe handed one of them to redis-server once, and the proxy's listen failed).
 */
export async function startEmbeddedRedis(
  dataDir: string,
  log: Logger,
  avoid: readonly (number | null | undefined)[] = [],
): Promise<EmbeddedRedis> {
  const binary = findOnPath("redis-server");
  if (!binary) throw new Error(REDIS_INSTALL_HINT);
  const dir = path.resolve(dataDir);
  fs.mkdirSync(dir, { recursive: true });
  await stopOrphan(dir, log);
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    if (avoid.includes(port)) continue;
    try {
      return await launch(binary, port, dir, log);
    } catch (err) {
      // Another process may have taken the port between the probe and redis-server's bind.
      const taken = err instanceof Error && /already in use/i.test(err.message);
      if (!taken || attempt >= 3) throw err;
      log.debug({ port }, "port taken before redis-server could bind it: trying another");
    }
  }
}
