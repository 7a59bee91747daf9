import { spawn, execFile, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "./ports.js";
import { track, untrack, type Tracked } from "./registry.js";
import { sendCommand, type RespValue } from "./resp.js";

export interface StartRedisOptions {
  /** Port to listen on; a free one is picked when omitted. */
  port?: number;
  /** Extra redis-server arguments, appended last (so they override the defaults). */
  args?: string[];
  /** Sets `--requirepass`; cli() and call() authenticate with it. */
  password?: string;
  /** Data dir; a fresh temp dir (removed on stop) is used when omitted. */
  dir?: string;
  /** How long to wait for the server to answer PING. Default 10 s. */
  readyTimeoutMs?: number;
  /** TLS only: `port` becomes the TLS port (the plain one is off); cli() and call() use TLS. */
  tls?: TlsFiles;
  /** The server binary: `redis-server` unless given (`valkey-server` for the Valkey specs). */
  binary?: string;
}

/** PEM files: the server's certificate and key (also shown as a client's) and the CA both trust. */
export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
}

/** redis-cli's flags for a TLS connection with these files. */
export function redisCliTlsArgs(files: TlsFiles): string[] {
  return ["--tls", "--cacert", files.ca, "--cert", files.cert, "--key", files.key];
}

export interface RedisNode {
  readonly host: string;
  readonly port: number;
  /** Pid of the current process (changes on restart; the last pid after kill/stop). */
  readonly pid: number;
  readonly dir: string;
  readonly password: string | undefined;
  /** Whether the process is currently alive. */
  readonly running: boolean;
  /** SIGTERM, SIGKILL after 3 s; waits for exit; removes the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL now and wait for exit. Keeps the dir so restart() can reuse it. */
  kill(): Promise<void>;
  /** Stops the process if running (keeping the dir), starts it again on the same port/dir/args, waits ready. */
  restart(): Promise<void>;
  /** Runs `redis-cli -h host -p port [-a password] ...args`, resolves trimmed stdout. */
  cli(...args: string[]): Promise<string>;
  /** Sends one command over a fresh connection and resolves the decoded reply (error replies reject). */
  call(...args: string[]): Promise<RespValue>;
  /** The tail of the server's stdout+stderr (its log). */
  output(): string;
  /** Set when the server speaks TLS only. */
  readonly tls: TlsFiles | undefined;
}

const HOST = "127.0.0.1";
const OUTPUT_LIMIT = 64 * 1024;
const STOP_GRACE_MS = 3000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

class RedisServer implements RedisNode, Tracked {
  readonly host = HOST;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private lastPid = -1;
  private log = "";

  constructor(
    readonly port: number,
    readonly dir: string,
    private readonly ownsDir: boolean,
    private readonly args: readonly string[],
    readonly password: string | undefined,
    private readonly readyTimeoutMs: number,
    readonly tls: TlsFiles | undefined,
    private readonly binary: string,
  ) {}

  get pid(): number {
    return this.lastPid;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  get livePid(): number | undefined {
    return this.child?.pid;
  }

  get ownedDir(): string | undefined {
    return this.ownsDir ? this.dir : undefined;
  }

  output(): string {
    return this.log;
  }

  async start(): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    this.log = "";
    const child = spawn(this.binary, this.args, { cwd: this.dir, stdio: ["ignore", "pipe", "pipe"] });
    const append = (chunk: Buffer): void => {
      this.log = (this.log + chunk.toString()).slice(-OUTPUT_LIMIT);
    };
    child.stdout?.on("data", append);
    child.stderr?.on("data", append);
    let exitInfo: string | undefined;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        exitInfo = `exited with code ${code} signal ${signal}`;
        if (this.child === child) this.child = undefined;
        resolve();
      });
      child.once("error", (err) => {
        exitInfo = `failed to spawn: ${err.message}`;
        if (this.child === child) this.child = undefined;
        resolve();
      });
    });
    this.child = child;
    this.lastPid = child.pid ?? -1;
    track(this);
    const deadline = Date.now() + this.readyTimeoutMs;
    while (true) {
      if (exitInfo !== undefined) {
        throw new Error(`redis-server on port ${this.port} ${exitInfo} before ready; output:\n${this.log}`);
      }
      try {
        if ((await this.call("PING")) === "PONG") return;
      } catch {
        // not ready yet (refused, LOADING, ...)
      }
      if (Date.now() > deadline) {
        await this.terminate("SIGKILL");
        throw new Error(
          `redis-server on port ${this.port} did not answer PING within ${this.readyTimeoutMs} ms; output:\n${this.log}`,
        );
      }
      await sleep(50);
    }
  }

  /** Sends `signal`, escalates to SIGKILL after the grace period, and waits for the exit. */
  private async terminate(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (child === undefined) return;
    child.kill(signal);
    if (signal === "SIGKILL") return this.exited;
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(): Promise<void> {
    await this.terminate("SIGTERM");
    if (this.ownsDir) fs.rmSync(this.dir, { recursive: true, force: true });
    untrack(this);
  }

  async kill(): Promise<void> {
    await this.terminate("SIGKILL");
  }

  async restart(): Promise<void> {
    await this.terminate("SIGTERM");
    await this.start();
  }

  cli(...args: string[]): Promise<string> {
    const auth = this.password !== undefined ? ["-a", this.password, "--no-auth-warning"] : [];
    const secure = this.tls !== undefined ? redisCliTlsArgs(this.tls) : [];
    const argv = ["-h", this.host, "-p", String(this.port), ...auth, ...secure, ...args];
    return new Promise((resolve, reject) => {
      execFile("redis-cli", argv, { timeout: 10_000 }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`redis-cli ${args.join(" ")} failed: ${err.message}\n${stdout}${stderr}`.trim()));
        } else {
          resolve(stdout.trim());
        }
      });
    });
  }

  call(...args: string[]): Promise<RespValue> {
    const files = this.tls;
    const tls = files && {
      ca: fs.readFileSync(files.ca),
      cert: fs.readFileSync(files.cert),
      key: fs.readFileSync(files.key),
    };
    return sendCommand(this.port, args, { host: this.host, password: this.password, timeoutMs: 2000, tls });
  }
}

/** Launches a real redis-server and waits until it answers PING. */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisNode> {
  const port = opts.port ?? (await freePort());
  const ownsDir = opts.dir === undefined;
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "gears-proxy-redis-"));
  const args = [
    "--port",
    String(port),
    "--bind",
    HOST,
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
    "--daemonize",
    "no",
    ...(opts.password !== undefined ? ["--requirepass", opts.password] : []),
    ...(opts.tls !== undefined
      ? ["--port", "0", "--tls-port", String(port), "--tls-cert-file", opts.tls.cert]
      : []),
    ...(opts.tls !== undefined ? ["--tls-key-file", opts.tls.key, "--tls-ca-cert-file", opts.tls.ca] : []),
    ...(opts.args ?? []),
  ];
  const server = new RedisServer(
    port,
    dir,
    ownsDir,
    args,
    opts.password,
    opts.readyTimeoutMs ?? 10_000,
    opts.tls,
    opts.binary ?? "redis-server",
  );
  try {
    await server.start();
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}
