import type { ProxyConfig } from "../config.js";
import type { Logger } from "../observability/log.js";
import type { Metrics } from "../observability/metrics.js";
import type { SlowLog, SlowLogRow } from "../observability/slowlog.js";
import type { Router, ServerIdentity } from "../routing/router.js";
import type { Leases } from "../routing/lease.js";
import type { GearsEngine } from "../gears/engine.js";
import type { ClientRegistry } from "./registry.js";
import type { TrackingTable } from "./tracking/table.js";
import type { AccessControl } from "../acl/access-control.js";

import type { MemoryGuard } from "./memory-guard.js";

/** Counters shown in INFO's Proxy section. */
export interface ProxyStats {
  startedAt: number;
  connectionsReceived: number;
  rejectedConnections: number;
  commandsProcessed: number;
  protocolErrors: number;
  outputLimitDisconnections: number;
  /** Clients disconnected because all clients together held more than --maxmemory-clients. */
  evictedClients: number;
  /** What all clients held at the last memory check, in bytes. */
  clientsMemory: number;
}

/** What every client session shares: configuration, the router and the other clients. */
export interface ProxyContext {
  config: ProxyConfig;
  log: Logger;
  router: Router;
  /** Dedicated upstream connections (MULTI, blocking, pub/sub, scripts, MONITOR, server users). */
  leases: Leases;
  clients: ClientRegistry;
  stats: ProxyStats;
  /** What the upstream says it is (redis 7.0.15, valkey 8.0.1): HELLO reports it as its own. */
  upstreamServer: ServerIdentity;
  /** The RG.* commands' engine. */
  gears: GearsEngine;
  /** Where commands and bytes are counted; null when --metrics-port is not given. */
  metrics: Metrics | null;
  /** The proxy's own SLOWLOG. */
  slowlog: SlowLog;
  /** Client-side caching: who read which key, and the invalidations owed. */
  tracking: TrackingTable;
  /** The proxy's users and their permissions (--aclfile, user lines); null without them. */
  acl: AccessControl | null;
  /** Bounds what clients hold (--maxmemory-clients, client-output-buffer-limit); absent in unit setups. */
  memoryGuard?: MemoryGuard;
  /** The other threads of a --threads proxy (src/threads/); absent with one thread. */
  threads?: ThreadPeers;
}

/** What the client commands ask of every thread of a --threads proxy, this one included. */
export interface ThreadPeers {
  /** CLIENT LIST's lines over every thread (`args`: what follows LIST, already checked). */
  clientList(args: string[]): Promise<string>;
  /** CLIENT KILL with filters on every thread; how many clients were killed. */
  clientKill(args: string[], callerId: number): Promise<number>;
  /** CLIENT UNBLOCK of a client of any thread; 1 when it was blocked, else 0. */
  clientUnblock(id: number, withError: boolean): Promise<number>;
  /** INFO's proxy section with the threads' counters summed. */
  proxySection(): Promise<string>;
  /** SLOWLOG GET over every thread's slow log: the newest `count` (-1: all), newest first. */
  slowlogGet(count: number): Promise<SlowLogRow[]>;
  /** SLOWLOG LEN summed over the threads. */
  slowlogLen(): Promise<number>;
  /** SLOWLOG RESET on every thread. */
  slowlogReset(): Promise<void>;
  /** Tells every thread of a client's CONFIG SET (each keeps its own slow log and tracking table). */
  configSet(argv: readonly Buffer[]): void;
}

/** One thread of a --threads proxy: its place among them, and its answers to the others. */
export interface ThreadLink extends ThreadPeers {
  readonly index: number;
  readonly count: number;
  /** /metrics: every thread's metrics, summed as prom-client's cluster aggregation does. */
  metricsText(): Promise<string>;
  /** Starts answering the other threads' questions about this thread's clients and gears. */
  serve(ctx: ProxyContext): void;
}

/**
 * A client's CONFIG (which also reaches the upstream): a SET's settings that the proxy keeps
 * itself, its slow log, tracking table and subscribers' output limits, are followed. Each
 * thread of a --threads proxy keeps its own, so each runs this for every client's CONFIG SET.
 * Whether it was a CONFIG SET.
 */
export function followConfigSet(ctx: ProxyContext, argv: readonly Buffer[]): boolean {
  if (argv.length < 4 || argv[1].toString().toLowerCase() !== "set") return false;
  for (let i = 2; i + 1 < argv.length; i += 2) {
    const name = argv[i].toString().toLowerCase();
    const value = argv[i + 1].toString();
    ctx.slowlog.followSetting(name, value);
    ctx.tracking.followSetting(name, value);
    ctx.acl?.log.followSetting(name, value);
    if (name === "client-output-buffer-limit") ctx.memoryGuard?.followOutputLimits(value);
  }
  return true;
}
