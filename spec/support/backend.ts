import { execFileSync } from "node:child_process";
import calculateSlot from "cluster-key-slot";
import { startCluster, startRedis, type RedisCluster, type RedisNode } from "../harness/index.js";
import { RawClient, toText, type Reply, type Value } from "./raw-client.js";

/** What sits behind the proxy in a client spec. */
export type BackendMode = "standalone" | "cluster";

/** Every client spec runs once per mode. */
export const BACKEND_MODES: readonly BackendMode[] = ["standalone", "cluster"];

/**
 * The server behind the proxy: Redis (7.0), Valkey (a fork that loads no Redis module either),
 * Redis 6.0 (what many running clusters and managed services still are), or Redis 8.0 (what new
 * deployments get: CLIENT SETINFO, hash-field expiry, new fields in HELLO and CLIENT LIST).
 */
export type ServerKind = "redis" | "valkey" | "redis6" | "redis8";

/**
 * Each mode on Redis, then on Valkey, Redis 6.0 and Redis 8.0: the specs that must not tell the
 * servers from the proxy.
 */
export const SERVERS_AND_MODES: readonly [ServerKind, BackendMode][] = (
  ["redis", "valkey", "redis6", "redis8"] as const
).flatMap((server) => BACKEND_MODES.map((mode): [ServerKind, BackendMode] => [server, mode]));

/** The environment variable that makes a server kind's specs fail, not skip, without its binary. */
const REQUIRED_BY: Record<ServerKind, string | null> = {
  redis: null,
  valkey: "GEARS_PROXY_VALKEY",
  redis6: "GEARS_PROXY_REDIS6",
  redis8: "GEARS_PROXY_REDIS8",
};

const found = new Map<ServerKind, boolean>();

/**
 * Whether the specs of a server kind run: its `<kind>-server` on PATH (`redis6-server`,
 * `redis8-server`: what scripts/redis6.sh and scripts/redis8.sh install). `.ci/run` installs
 * Valkey and Redis 6.0 and sets GEARS_PROXY_VALKEY=required and GEARS_PROXY_REDIS6=required, so
 * that there a missing binary fails instead of skipping; GEARS_PROXY_REDIS8=required does the
 * same for Redis 8.0.
 */
export function serverAvailable(kind: ServerKind): boolean {
  let ok = found.get(kind);
  if (ok === undefined) {
    try {
      execFileSync(`${kind}-server`, ["--version"], { stdio: "ignore" });
      ok = true;
    } catch {
      ok = false;
    }
    found.set(kind, ok);
  }
  const required = REQUIRED_BY[kind];
  if (!ok && required !== null && process.env[required] === "required")
    throw new Error(`${required}=required but ${kind}-server is not on PATH`);
  return ok;
}

/** Whether the Valkey specs run (serverAvailable). */
export function valkeyAvailable(): boolean {
  return serverAvailable("valkey");
}

/** Redis Cluster's own refusal of SELECT n (n != 0). */
export const SELECT_IN_CLUSTER_ERROR = "ERR SELECT is not allowed in cluster mode";

/** Commands whose first argument is not a key: Direct sends them to any node. */
const KEYLESS = new Set([
  "auth",
  "client",
  "cluster",
  "config",
  "dbsize",
  "discard",
  "echo",
  "exec",
  "flushall",
  "hello",
  "info",
  "multi",
  "ping",
  "publish",
  "pubsub",
  "select",
]);

/**
 * A standalone redis-server or a 3-master cluster, with what the specs need to look "on the
 * server": the node that owns a key's slot, and direct connections to it.
 */
export class Backend {
  private readonly owners = new Map<number, RedisNode>();

  private constructor(
    readonly mode: BackendMode,
    private readonly single: RedisNode | null,
    readonly cluster: RedisCluster | null,
  ) {}

  static async start(mode: BackendMode, server: ServerKind = "redis"): Promise<Backend> {
    const binary = `${server}-server`;
    if (mode === "standalone") return new Backend(mode, await startRedis({ binary }), null);
    return new Backend(mode, null, await startCluster({ masters: 3, binary }));
  }

  get isCluster(): boolean {
    return this.cluster !== null;
  }

  /** "one redis-server" or "a 3-master cluster", for describe titles. */
  static label(mode: BackendMode, server: ServerKind = "redis"): string {
    if (server === "valkey") return mode === "standalone" ? "one valkey-server" : "a 3-master Valkey cluster";
    if (server === "redis6")
      return mode === "standalone" ? "one Redis 6.0 server" : "a 3-master Redis 6.0 Cluster";
    if (server === "redis8")
      return mode === "standalone" ? "one Redis 8.0 server" : "a 3-master Redis 8.0 Cluster";
    return mode === "standalone" ? "one redis-server" : "a 3-master Redis Cluster";
  }

  /** The node to give the proxy as its upstream (a seed node for a cluster). */
  get seed(): RedisNode {
    return this.single ?? this.cluster!.nodes[0];
  }

  /** The node serving `key`: nodeForSlot(calculateSlot(key)) in a cluster (cached per slot). */
  async nodeOf(key: string | Buffer): Promise<RedisNode> {
    if (this.cluster === null) return this.single!;
    const slot = calculateSlot(key);
    let node = this.owners.get(slot);
    if (node === undefined) {
      node = await this.cluster.nodeForSlot(slot);
      this.owners.set(slot, node);
    }
    return node;
  }

  /**
   * One name per master (a key, a shard channel): `prefix` and the first number whose slot is
   * that master's, in the order found.
   */
  async onePerMaster(prefix: string): Promise<string[]> {
    const masters = (await this.masters()).length;
    const byPort = new Map<number, string>();
    for (let i = 0; byPort.size < masters; i++) {
      const name = `${prefix}${i}`;
      const port = (await this.nodeOf(name)).port;
      if (!byPort.has(port)) byPort.set(port, name);
    }
    return [...byPort.values()];
  }

  /** Every master (the one server when standalone). */
  async masters(): Promise<RedisNode[]> {
    return this.cluster === null ? [this.single!] : this.cluster.masters();
  }

  /** A fresh connection to the node serving `key` (or the seed); the caller closes it. */
  async connect(key?: string | Buffer): Promise<RawClient> {
    const node = key === undefined ? this.seed : await this.nodeOf(key);
    return RawClient.connect(node.port);
  }

  async stop(): Promise<void> {
    await (this.single ?? this.cluster)?.stop();
  }
}

/**
 * Looks at the data "on the server", bypassing the proxy: each command goes to the node that
 * owns the slot of its first argument (keyless commands to the seed node). In a cluster, MGET
 * is answered key by key from each key's owner, and subscriber counts are summed over masters.
 */
export class Direct {
  private readonly conns = new Map<number, Promise<RawClient>>();

  constructor(private readonly backend: Backend) {}

  private connection(node: RedisNode): Promise<RawClient> {
    let conn = this.conns.get(node.port);
    if (conn === undefined) {
      conn = RawClient.connect(node.port);
      this.conns.set(node.port, conn);
    }
    return conn;
  }

  /** The persistent direct connection to the node serving `key`. */
  async on(key: string | Buffer): Promise<RawClient> {
    return this.connection(await this.backend.nodeOf(key));
  }

  async call(...args: (string | Buffer)[]): Promise<Reply> {
    const name = args[0].toString().toLowerCase();
    if (KEYLESS.has(name) || args.length < 2) return (await this.connection(this.backend.seed)).call(...args);
    if (name === "mget" && this.backend.isCluster) {
      const values: Reply[] = [];
      for (const key of args.slice(1)) values.push(await (await this.on(key)).call("GET", key));
      return values;
    }
    return (await this.on(args[1])).call(...args);
  }

  async text(...args: string[]): Promise<Value> {
    return toText(await this.call(...args));
  }

  /** PUBSUB NUMSUB of `channel`, summed over every master. */
  async subscribers(channel: string): Promise<number> {
    let total = 0;
    for (const node of await this.backend.masters()) {
      const reply = await (await this.connection(node)).text("PUBSUB", "NUMSUB", channel);
      if (!Array.isArray(reply)) throw new Error("PUBSUB NUMSUB: expected an array");
      total += Number(reply[1]);
    }
    return total;
  }

  /** The master holding the (single) subscription to `channel`, e.g. to PUBLISH where it counts. */
  async subscribedNode(channel: string): Promise<RedisNode> {
    for (const node of await this.backend.masters()) {
      const reply = await (await this.connection(node)).text("PUBSUB", "NUMSUB", channel);
      if (Array.isArray(reply) && Number(reply[1]) > 0) return node;
    }
    throw new Error(`no node has a subscriber to ${channel}`);
  }

  async close(): Promise<void> {
    const conns = [...this.conns.values()];
    this.conns.clear();
    for (const c of conns) (await c).close();
  }
}
