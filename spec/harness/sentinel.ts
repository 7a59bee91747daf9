import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ProxyConfig } from "../../src/config.js";
import { freePort } from "./ports.js";
import { startProxy, type RunningProxy } from "./proxy.js";
import { startRedis, type RedisNode } from "./redis.js";
import { track, untrack, type Tracked } from "./registry.js";
import { sendCommand, type RespValue } from "./resp.js";
import { fromSpare } from "./spares.js";

const HOST = "127.0.0.1";
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** One `redis-server <conf> --sentinel` process (a sentinel rewrites its config file: a temp dir of its own). */
export interface SentinelNode {
  readonly host: string;
  readonly port: number;
  readonly running: boolean;
  call(...args: string[]): Promise<RespValue>;
  kill(): Promise<void>;
  stop(): Promise<void>;
  output(): string;
}

class SentinelProcess implements SentinelNode, Tracked {
  readonly host = HOST;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private log = "";

  constructor(
    readonly port: number,
    private readonly dir: string,
    private readonly password: string | undefined,
  ) {}

  get running(): boolean {
    return this.child !== undefined;
  }

  get livePid(): number | undefined {
    return this.child?.pid;
  }

  get ownedDir(): string {
    return this.dir;
  }

  output(): string {
    return this.log;
  }

  async start(): Promise<void> {
    const conf = path.join(this.dir, "sentinel.conf");
    const child = spawn("redis-server", [conf, "--sentinel"], {
      cwd: this.dir,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const append = (chunk: Buffer): void => {
      this.log = (this.log + chunk.toString()).slice(-64 * 1024);
    };
    child.stdout?.on("data", append);
    child.stderr?.on("data", append);
    this.exited = new Promise((resolve) => {
      child.once("exit", () => {
        if (this.child === child) this.child = undefined;
        resolve();
      });
    });
    this.child = child;
    track(this);
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        if ((await this.call("PING")) === "PONG") return;
      } catch {
        // not up yet
      }
      if (this.child === undefined || Date.now() > deadline) {
        throw new Error(`sentinel on port ${this.port} did not start; output:\n${this.log}`);
      }
      await sleep(50);
    }
  }

  call(...args: string[]): Promise<RespValue> {
    return sendCommand(this.port, args, { host: HOST, timeoutMs: 2000, password: this.password });
  }

  async kill(): Promise<void> {
    this.child?.kill("SIGKILL");
    await this.exited;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child !== undefined) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await this.exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    untrack(this);
  }
}

export interface StartSentinelsOptions {
  /** The name the sentinels monitor the master under. Default "mymaster". */
  name?: string;
  /** Default 3, quorum 2. */
  sentinels?: number;
  downAfterMs?: number;
  failoverTimeoutMs?: number;
  /** requirepass of the master and the replica (the sentinels get it as auth-pass). */
  password?: string;
  /** requirepass of the sentinels (and the password they use with each other). */
  sentinelPassword?: string;
}

/** A master, one replica and sentinels watching them, all on loopback ports of their own. */
export interface SentinelDeployment {
  readonly name: string;
  /** The data nodes: [the first master, its replica]. */
  readonly nodes: RedisNode[];
  readonly sentinels: SentinelNode[];
  /** The master as the sentinels name it now (the node of `nodes` at that address). */
  master(): Promise<RedisNode>;
  /** Waits until every live sentinel names a master other than `old` and it says ROLE master. */
  waitForNewMaster(old: RedisNode, timeoutMs?: number): Promise<RedisNode>;
  stop(): Promise<void>;
}

function field(reply: RespValue, name: string): string | undefined {
  if (!Array.isArray(reply)) return undefined;
  for (let i = 0; i + 1 < reply.length; i += 2) if (String(reply[i]) === name) return String(reply[i + 1]);
  return undefined;
}

/**
 * Why a deployment is not ready for a failover yet (undefined once it is): the replica in sync,
 * and every sentinel seeing the master up, the replica (from the master's INFO) and the other
 * sentinels (hello messages).
 */
async function notReady(
  name: string,
  replica: RedisNode,
  sentinels: readonly SentinelNode[],
): Promise<string | undefined> {
  const link = String(await replica.call("INFO", "replication").catch(() => ""));
  if (!link.includes("master_link_status:up")) return `replica not in sync: ${link}`;
  const states = await Promise.all(
    sentinels.map((s) => s.call("SENTINEL", "MASTER", name).catch(() => null)),
  );
  const ready = states.every(
    (s) =>
      s !== null &&
      field(s, "flags") === "master" &&
      field(s, "num-slaves") === "1" &&
      field(s, "num-other-sentinels") === String(sentinels.length - 1),
  );
  return ready ? undefined : `sentinels not ready: ${JSON.stringify(states)}`;
}

/**
 * Starts a master, a replica of it and `sentinels` sentinels (quorum 2) and waits until every
 * sentinel has seen the replica and the other sentinels, so a failover can run at once. The
 * deployment is a spare started ahead with the same options when there is one (spares.ts), and
 * another starts for the next caller.
 */
export function startSentinels(opts: StartSentinelsOptions = {}): Promise<SentinelDeployment> {
  return fromSpare<SentinelDeployment>({
    key: JSON.stringify(["sentinels", opts]),
    start: () => createSentinels(opts),
    // Idle, it may have failed over (a server stalled on a loaded machine): only as started.
    usable: async (d) =>
      d.nodes.every((n) => n.running) &&
      d.sentinels.every((s) => s.running) &&
      (await d.master().catch(() => undefined)) === d.nodes[0] &&
      (await notReady(d.name, d.nodes[1], d.sentinels)) === undefined,
    discard: (d) => d.stop(),
  });
}

async function createSentinels(opts: StartSentinelsOptions): Promise<SentinelDeployment> {
  const name = opts.name ?? "mymaster";
  const count = opts.sentinels ?? 3;
  const nodes: RedisNode[] = [];
  const sentinels: SentinelProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all([...sentinels.map((s) => s.stop()), ...nodes.map((n) => n.stop())]);
  };
  try {
    // No diskless-sync delay: the replica is in sync within milliseconds, not 5 s.
    const auth = opts.password === undefined ? [] : ["--masterauth", opts.password];
    const master = await startRedis({
      args: ["--repl-diskless-sync-delay", "0", ...auth],
      password: opts.password,
    });
    nodes.push(master);
    const replica = await startRedis({
      args: ["--replicaof", HOST, String(master.port), "--repl-diskless-sync-delay", "0", ...auth],
      password: opts.password,
    });
    nodes.push(replica);
    for (let i = 0; i < count; i++) {
      const port = await freePort();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gears-proxy-sentinel-"));
      fs.writeFileSync(
        path.join(dir, "sentinel.conf"),
        [
          `port ${port}`,
          `bind ${HOST}`,
          "daemonize no",
          `dir ${dir}`,
          `sentinel monitor ${name} ${HOST} ${master.port} 2`,
          `sentinel down-after-milliseconds ${name} ${opts.downAfterMs ?? 1000}`,
          `sentinel failover-timeout ${name} ${opts.failoverTimeoutMs ?? 3000}`,
          `sentinel parallel-syncs ${name} 1`,
          ...(opts.password === undefined ? [] : [`sentinel auth-pass ${name} ${opts.password}`]),
          ...(opts.sentinelPassword === undefined
            ? []
            : [`requirepass ${opts.sentinelPassword}`, `sentinel sentinel-pass ${opts.sentinelPassword}`]),
          "",
        ].join("\n"),
      );
      const sentinel = new SentinelProcess(port, dir, opts.sentinelPassword);
      sentinels.push(sentinel);
      await sentinel.start();
    }
    const deadline = Date.now() + 30_000;
    for (;;) {
      const reason = await notReady(name, replica, sentinels);
      if (reason === undefined) break;
      if (Date.now() > deadline) throw new Error(reason);
      await sleep(reason.startsWith("replica") ? 50 : 200);
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const byAddress = async (sentinel: SentinelNode): Promise<RedisNode | undefined> => {
    const reply = await sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name);
    const port = Array.isArray(reply) ? Number(reply[1]) : NaN;
    return nodes.find((n) => n.port === port);
  };
  return {
    name,
    nodes,
    sentinels,
    async master() {
      const live = sentinels.find((s) => s.running);
      const found = live && (await byAddress(live));
      if (found === undefined) throw new Error("no sentinel names a known master");
      return found;
    },
    async waitForNewMaster(old, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const named = await Promise.all(
          sentinels.filter((s) => s.running).map((s) => byAddress(s).catch(() => undefined)),
        );
        const first = named[0];
        if (first !== undefined && first !== old && named.every((n) => n === first)) {
          const role = await first.call("ROLE").catch(() => null);
          if (Array.isArray(role) && role[0] === "master") return first;
        }
        if (Date.now() > deadline) throw new Error(`no failover from ${old.port} within ${timeoutMs} ms`);
        await sleep(100);
      }
    },
    stop,
  };
}

/** How a proxy is started in front of the deployment: every sentinel listed, `extra` ones first. */
export function sentinelOptions(
  d: SentinelDeployment,
  extra: { port: number }[] = [],
): Pick<ProxyConfig, "sentinels" | "sentinelMaster"> {
  return {
    sentinels: [...extra, ...d.sentinels].map((s) => ({ host: HOST, port: s.port })),
    sentinelMaster: d.name,
  };
}

/** What useSentinelProxy() set up, for the tests of its describe block. */
export interface SentinelProxy {
  readonly d: SentinelDeployment;
  readonly proxy: RunningProxy;
}

/**
 * A deployment (startSentinels) and a proxy in front of it, for the tests of the enclosing
 * describe: started once for them all, or for each test with `each` (a failover leaves the
 * deployment changed). Stopped after, the proxy first. `proxy` adds to the proxy's options.
 */
export function useSentinelProxy(
  opts: {
    each?: boolean;
    deployment?: StartSentinelsOptions;
    /** The proxy's options beyond the sentinels' (which it may replace), or a function of the deployment giving them. */
    proxy?: Partial<ProxyConfig> | ((d: SentinelDeployment) => Partial<ProxyConfig>);
  } = {},
): SentinelProxy {
  let d: SentinelDeployment | undefined;
  let proxy: RunningProxy | undefined;
  const setUp = async function (this: Mocha.Context): Promise<void> {
    this.timeout(60_000);
    d = await startSentinels(opts.deployment);
    const extra = typeof opts.proxy === "function" ? opts.proxy(d) : opts.proxy;
    proxy = await startProxy([], { ...sentinelOptions(d), ...extra });
  };
  const tearDown = async function (this: Mocha.Context): Promise<void> {
    this.timeout(30_000);
    await proxy?.close();
    await d?.stop();
    proxy = undefined;
    d = undefined;
  };
  if (opts.each) {
    beforeEach(setUp);
    afterEach(tearDown);
  } else {
    before(setUp);
    after(tearDown);
  }
  return {
    get d(): SentinelDeployment {
      if (d === undefined) throw new Error("no sentinel deployment: used outside its describe's tests");
      return d;
    },
    get proxy(): RunningProxy {
      if (proxy === undefined) throw new Error("no proxy: used outside its describe's tests");
      return proxy;
    },
  };
}
