/**
 * gears-proxy started as a child process (dist/src/cli.js), so a spec can SIGKILL it the way
 * a crash or an OOM kill would end it: no clean shutdown, no lease given back.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { freePort, sendCommand } from "../harness/index.js";

/** dist/spec/support/child-proxy.js -> dist/src/cli.js */
const CLI = fileURLToPath(new URL("../../src/cli.js", import.meta.url));
const OUTPUT_LIMIT = 256 * 1024;
const STOP_GRACE_MS = 3000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface ChildProxyOptions {
  /** Upstream seed nodes (a standalone server or cluster nodes). */
  upstreams: { host?: string; port: number }[];
  /** `--gears-config Name=Value` settings. */
  gearsConfig?: Record<string, string>;
  /** More command-line flags, e.g. ["--shutdown-timeout", "5000"]. */
  args?: string[];
  /** How long to wait for the proxy to answer PING. Default 15 s. */
  readyTimeoutMs?: number;
}

export class ChildProxy {
  private log = "";
  private readonly exited: Promise<void>;
  private alive = true;
  private code: number | null = null;

  private constructor(
    readonly port: number,
    private readonly child: ChildProcess,
  ) {
    const echo = (process.env.GEARS_PROXY_TEST_LOG ?? "") !== "";
    const append = (chunk: Buffer): void => {
      this.log = (this.log + chunk.toString()).slice(-OUTPUT_LIMIT);
      if (echo) process.stderr.write(`[proxy :${port}] ${chunk.toString()}`);
    };
    child.stdout?.on("data", append);
    child.stderr?.on("data", append);
    this.exited = new Promise((resolve) => {
      child.once("exit", (code) => {
        this.code = code;
        this.alive = false;
        resolve();
      });
      child.once("error", () => {
        this.alive = false;
        resolve();
      });
    });
  }

  get running(): boolean {
    return this.alive;
  }

  /** The exit code once exited (null while running, or when ended by a signal). */
  get exitCode(): number | null {
    return this.code;
  }

  /** Sends a signal and returns at once; `exited()` tells when the proxy is gone. */
  signal(signal: NodeJS.Signals): void {
    if (this.alive) this.child.kill(signal);
  }

  /** Resolves once the process has exited. */
  waitForExit(): Promise<void> {
    return this.exited;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** The tail of the proxy's stdout+stderr (JSON log lines). */
  output(): string {
    return this.log;
  }

  static async start(opts: ChildProxyOptions): Promise<ChildProxy> {
    const port = await freePort();
    const level = process.env.GEARS_PROXY_TEST_LOG || "warn";
    const args = [CLI, "--port", String(port), "--log-level", level];
    for (const u of opts.upstreams) args.push("--upstream", `${u.host ?? "127.0.0.1"}:${u.port}`);
    args.push(...(opts.args ?? []));
    for (const [name, value] of Object.entries(opts.gearsConfig ?? {})) {
      args.push("--gears-config", `${name}=${value}`);
    }
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    const proxy = new ChildProxy(port, child);
    running.add(proxy);
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
    for (;;) {
      if (!proxy.alive) throw new Error(`gears-proxy exited before it was ready; output:\n${proxy.log}`);
      try {
        if ((await sendCommand(port, ["PING"], { timeoutMs: 1000 })) === "PONG") return proxy;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await proxy.kill();
        throw new Error(`gears-proxy did not answer PING on ${port}; output:\n${proxy.log}`);
      }
      await sleep(50);
    }
  }

  /** SIGKILL now (a crash: nothing is cleaned up) and wait for the exit. */
  async kill(): Promise<void> {
    if (this.alive) this.child.kill("SIGKILL");
    await this.exited;
    running.delete(this);
  }

  /** SIGTERM, SIGKILL after a grace period; waits for the exit. */
  async stop(): Promise<void> {
    if (this.alive) {
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), STOP_GRACE_MS);
      await this.exited;
      clearTimeout(timer);
    }
    running.delete(this);
  }
}

const running = new Set<ChildProxy>();

/** Stops every child proxy still running (for after/afterEach hooks). */
export async function stopChildProxies(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop()));
}

process.on("exit", () => {
  for (const p of running) {
    try {
      if (p.running) process.kill(p.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});
