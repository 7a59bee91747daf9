import { execFile } from "node:child_process";
import { freeClusterPort } from "./ports.js";
import { redisCliTlsArgs, startRedis, type RedisNode, type TlsFiles } from "./redis.js";
import type { RespValue } from "./resp.js";
import { fromSpare } from "./spares.js";

export const SLOT_COUNT = 16384;

export interface StartClusterOptions {
  masters: number;
  replicasPerMaster?: number;
  /** Extra redis-server args for every node, appended after the cluster defaults (so they override them). */
  args?: string[];
  /** How long to wait for the cluster to become healthy. Default 30 s. */
  timeoutMs?: number;
  /** TLS-only nodes: clients, the cluster bus and replication all speak TLS. */
  tls?: TlsFiles;
  /** The server binary of every node (startRedis' `binary`). */
  binary?: string;
}

export interface RedisCluster {
  readonly nodes: RedisNode[];
  /** Running nodes whose current ROLE is master (roles change on failover). */
  masters(): Promise<RedisNode[]>;
  /** Running nodes whose current ROLE is slave. */
  replicas(): Promise<RedisNode[]>;
  /** The master currently serving `slot`, per CLUSTER SLOTS of the first running node that answers. */
  nodeForSlot(slot: number): Promise<RedisNode>;
  /**
   * ok=true: every running node reports cluster_state:ok and the same slot map covering all 16384 slots,
   * with every slot owned by a running node. ok=false: every running node reports cluster_state:fail.
   */
  waitForState(ok: boolean, timeoutMs?: number): Promise<void>;
  /**
   * Gives `slots` (empty, or their keys migrated already) to master `to`: CLUSTER SETSLOT NODE
   * on every master, then waits until every master agrees (15 s at most).
   */
  assignSlots(slots: readonly number[], to: RedisNode): Promise<void>;
  /** Stops every node and removes their dirs. */
  stop(): Promise<void>;
}

/**
 * Cluster defaults. Diskless sync delay 0 so replicas attach without the default 5 s wait; a 1 s
 * replication ping so replica offsets become non-zero quickly (CLUSTER SLOTS hides replicas whose
 * offset is still 0, which otherwise takes up to 10 s on an idle master).
 */
const CLUSTER_ARGS = [
  "--cluster-enabled",
  "yes",
  "--cluster-config-file",
  "nodes.conf",
  "--repl-diskless-sync-delay",
  "0",
  "--repl-ping-replica-period",
  "1",
];

/**
 * With replicas, 2 s: the failover specs wait for a replica's promotion, which takes one to two
 * node timeouts. Without replicas nothing can fail over, and a short timeout only hurts: on a
 * loaded machine a node late answering the bus's pings for 2 s was marked failing and the whole
 * cluster answered CLUSTERDOWN (a CI flake), so those clusters wait 15 s.
 */
const nodeTimeoutMs = (replicasPerMaster: number): number => (replicasPerMaster > 0 ? 2000 : 15_000);

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** One CLUSTER SLOTS range, reduced to ports. */
interface SlotRange {
  start: number;
  end: number;
  master: number;
  replicas: number[];
}

function parseSlots(reply: RespValue): SlotRange[] {
  if (!Array.isArray(reply)) throw new Error("CLUSTER SLOTS: expected an array");
  const port = (entry: RespValue): number => (Array.isArray(entry) ? Number(entry[1]) : NaN);
  return reply
    .map((range): SlotRange => {
      if (!Array.isArray(range)) throw new Error("CLUSTER SLOTS: expected an array per range");
      const [start, end, master, ...replicas] = range;
      return {
        start: Number(start),
        end: Number(end),
        master: port(master),
        replicas: replicas.map(port).sort((a, b) => a - b),
      };
    })
    .sort((a, b) => a.start - b.start);
}

/** True when the ranges cover 0..16383 exactly once. */
function coversAllSlots(ranges: readonly SlotRange[]): boolean {
  let next = 0;
  for (const r of ranges) {
    if (r.start !== next || r.end < r.start) return false;
    next = r.end + 1;
  }
  return next === SLOT_COUNT;
}

function info(text: RespValue, field: string): string | undefined {
  if (typeof text !== "string") return undefined;
  const line = text.split("\r\n").find((l) => l.startsWith(`${field}:`));
  return line?.slice(field.length + 1);
}

async function tryCall(node: RedisNode, ...args: string[]): Promise<RespValue | undefined> {
  try {
    return await node.call(...args);
  } catch {
    return undefined;
  }
}

class Cluster implements RedisCluster {
  constructor(readonly nodes: RedisNode[]) {}

  private running(): RedisNode[] {
    return this.nodes.filter((n) => n.running);
  }

  private async byRole(role: string): Promise<RedisNode[]> {
    const nodes = this.running();
    const roles = await Promise.all(nodes.map((n) => tryCall(n, "ROLE")));
    return nodes.filter((_, i) => {
      const r = roles[i];
      return Array.isArray(r) && r[0] === role;
    });
  }

  masters(): Promise<RedisNode[]> {
    return this.byRole("master");
  }

  replicas(): Promise<RedisNode[]> {
    return this.byRole("slave");
  }

  async assignSlots(slots: readonly number[], to: RedisNode): Promise<void> {
    const toId = String(await to.call("CLUSTER", "MYID"));
    const masters = await this.masters();
    for (const node of [to, ...masters.filter((m) => m !== to)])
      for (const slot of slots) await node.call("CLUSTER", "SETSLOT", String(slot), "NODE", toId);
    // SETSLOT NODE moves no epoch: `to` takes a newer one, so a late gossip message of the old
    // owner cannot win a slot back on some master (seen on loaded machines).
    await to.call("CLUSTER", "BUMPEPOCH");
    const deadline = Date.now() + 15_000;
    for (;;) {
      const maps = await Promise.all(masters.map((m) => tryCall(m, "CLUSTER", "SLOTS")));
      const agreed = maps.every((reply) => {
        if (reply === undefined) return false;
        const ranges = parseSlots(reply);
        return slots.every(
          (slot) => ranges.find((r) => r.start <= slot && slot <= r.end)?.master === to.port,
        );
      });
      if (agreed) return;
      if (Date.now() > deadline)
        throw new Error(`assignSlots: the masters do not agree on ${slots.join(",")}`);
      await sleep(50);
    }
  }

  async nodeForSlot(slot: number): Promise<RedisNode> {
    for (const node of this.running()) {
      const reply = await tryCall(node, "CLUSTER", "SLOTS");
      if (reply === undefined) continue;
      const range = parseSlots(reply).find((r) => r.start <= slot && slot <= r.end);
      const owner = this.nodes.find((n) => n.port === range?.master);
      if (owner !== undefined) return owner;
    }
    throw new Error(`nodeForSlot(${slot}): no running node knows an owner`);
  }

  /** Undefined when healthy, else a reason. `replicasPerMaster` also demands attached replicas. */
  async problem(ok: boolean, replicasPerMaster?: number): Promise<string | undefined> {
    const nodes = this.running();
    if (nodes.length === 0) return "no running nodes";
    const states = await Promise.all(nodes.map((n) => tryCall(n, "CLUSTER", "INFO")));
    const want = ok ? "ok" : "fail";
    const wrong = nodes.find((_, i) => info(states[i] ?? "", "cluster_state") !== want);
    if (wrong !== undefined) return `node ${wrong.port} cluster_state is not ${want}`;
    if (!ok) return undefined;

    const runningPorts = new Set(nodes.map((n) => n.port));
    let reference: string | undefined;
    for (const node of nodes) {
      const reply = await tryCall(node, "CLUSTER", "SLOTS");
      if (reply === undefined) return `node ${node.port} did not answer CLUSTER SLOTS`;
      const ranges = parseSlots(reply);
      if (!coversAllSlots(ranges)) return `node ${node.port} does not see all ${SLOT_COUNT} slots covered`;
      const dead = ranges.find((r) => !runningPorts.has(r.master));
      if (dead !== undefined)
        return `node ${node.port} maps slot ${dead.start} to stopped node ${dead.master}`;
      if (replicasPerMaster !== undefined) {
        const short = ranges.find((r) => r.replicas.length !== replicasPerMaster);
        if (short !== undefined)
          return `node ${node.port} sees ${short.replicas.length} replicas for ${short.master}`;
      }
      const key = JSON.stringify(
        replicasPerMaster !== undefined ? ranges : ranges.map((r) => [r.start, r.master]),
      );
      if (reference === undefined) reference = key;
      else if (key !== reference) return `node ${node.port} disagrees on the slot map`;
    }

    if (replicasPerMaster !== undefined) {
      const replicas = await this.replicas();
      const masters = await this.masters();
      if (replicas.length !== masters.length * replicasPerMaster) {
        return `${replicas.length} replicas for ${masters.length} masters`;
      }
      for (const replica of replicas) {
        const status = info((await tryCall(replica, "INFO", "replication")) ?? "", "master_link_status");
        if (status !== "up") return `replica ${replica.port} master_link_status is ${status}`;
      }
    }
    return undefined;
  }

  async waitUntil(ok: boolean, timeoutMs: number, replicasPerMaster?: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const reason = await this.problem(ok, replicasPerMaster);
      if (reason === undefined) return;
      if (Date.now() > deadline)
        throw new Error(`cluster not ${ok ? "ok" : "failed"} after ${timeoutMs} ms: ${reason}`);
      await sleep(100);
    }
  }

  /** Whether the first `masters` nodes are the masters and the others replicas, all healthy. */
  async isAsStarted(masters: number, replicasPerMaster: number): Promise<boolean> {
    if ((await this.problem(true, replicasPerMaster)) !== undefined) return false;
    const roles = await Promise.all(this.nodes.map((n) => tryCall(n, "ROLE")));
    return roles.every((r, i) => Array.isArray(r) && r[0] === (i < masters ? "master" : "slave"));
  }

  waitForState(ok: boolean, timeoutMs = 20_000): Promise<void> {
    return this.waitUntil(ok, timeoutMs);
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()));
  }
}

function clusterCreate(
  nodes: readonly RedisNode[],
  replicasPerMaster: number,
  tls: TlsFiles | undefined,
): Promise<void> {
  const argv = [
    ...(tls !== undefined ? redisCliTlsArgs(tls) : []),
    "--cluster",
    "create",
    ...nodes.map((n) => `${n.host}:${n.port}`),
    "--cluster-replicas",
    String(replicasPerMaster),
    "--cluster-yes",
  ];
  return new Promise((resolve, reject) => {
    execFile("redis-cli", argv, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli --cluster create failed: ${err.message}\n${stdout}${stderr}`));
      else resolve();
    });
  });
}

/**
 * Starts masters * (1 + replicasPerMaster) cluster-enabled nodes, joins them with
 * `redis-cli --cluster create`, and waits until all agree on the slots and replicas are linked.
 * The first `masters` nodes are the masters. Without TLS the cluster is a spare started ahead
 * for these options when there is one (spares.ts), and another starts for the next caller.
 */
export function startCluster(opts: StartClusterOptions): Promise<RedisCluster> {
  if (opts.tls !== undefined) return createCluster(opts);
  const replicasPerMaster = opts.replicasPerMaster ?? 0;
  return fromSpare<Cluster>({
    key: JSON.stringify([
      "cluster",
      opts.masters,
      replicasPerMaster,
      opts.args ?? [],
      opts.binary ?? "redis-server",
    ]),
    start: () => createCluster(opts),
    usable: (c) => c.isAsStarted(opts.masters, replicasPerMaster),
    discard: (c) => c.stop(),
  });
}

async function createCluster(opts: StartClusterOptions): Promise<Cluster> {
  const replicasPerMaster = opts.replicasPerMaster ?? 0;
  if (opts.masters < 3) throw new Error("startCluster: redis-cli --cluster create needs at least 3 masters");
  const count = opts.masters * (1 + replicasPerMaster);
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await freeClusterPort());
  const tlsArgs = opts.tls !== undefined ? ["--tls-cluster", "yes", "--tls-replication", "yes"] : [];
  const args = [
    ...CLUSTER_ARGS,
    "--cluster-node-timeout",
    String(nodeTimeoutMs(replicasPerMaster)),
    ...tlsArgs,
    ...(opts.args ?? []),
  ];
  const startNode = async (first: number): Promise<RedisNode> => {
    for (let port = first, attempt = 0; ; attempt++) {
      try {
        return await startRedis({ port, args, tls: opts.tls, binary: opts.binary });
      } catch (err) {
        // Another process (a test run beside this one) took the port or its bus port (+10000)
        // since it was probed free: another pair.
        if (attempt >= 3 || !/Address already in use/.test(String(err))) throw err;
        port = await freeClusterPort();
      }
    }
  };
  const started = await Promise.allSettled(ports.map(startNode));
  const nodes = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const cluster = new Cluster(nodes);
  try {
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
    await clusterCreate(nodes, replicasPerMaster, opts.tls);
    await cluster.waitUntil(true, opts.timeoutMs ?? 30_000, replicasPerMaster);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
