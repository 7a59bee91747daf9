import type { HostPort } from "../config.js";
import type { Logger } from "../observability/log.js";
import { RespError, type RespValue } from "../resp/values.js";
import type { ConnectionOptions } from "./connection.js";
import { UpstreamNode } from "./node.js";
import type { SlotRange, Topology } from "./topology.js";

export const SLOT_COUNT = 16384;
const PERIODIC_REFRESH_MS = 10_000;
const MIN_REFRESH_GAP_MS = 100;

type NodeOptions = ConnectionOptions & { sharedConnections: number };

/** One master and the slots it serves, as CLUSTER SLOTS reported them. */
interface ShardView {
  master: HostPort;
  replicas: HostPort[];
  /** The master's cluster node id. */
  id: string;
  ranges: [number, number][];
}

function text(v: RespValue | undefined): string {
  return Buffer.isBuffer(v) ? v.toString() : typeof v === "string" ? v : "";
}

/** Reads a CLUSTER SLOTS reply; `queried` stands in for masters announced with an empty host. */
export function parseClusterSlots(reply: RespValue, queried: HostPort): ShardView[] {
  if (!Array.isArray(reply)) throw new Error("unexpected CLUSTER SLOTS reply");
  const byMaster = new Map<string, ShardView>();
  for (const entry of reply) {
    if (!Array.isArray(entry) || entry.length < 3 || !Array.isArray(entry[2])) continue;
    const [start, end, master] = entry;
    let host = text(master[0]);
    if (host === "" || host === "?") host = queried.host;
    const port = Number(master[1]);
    const key = `${host}:${port}`;
    let shard = byMaster.get(key);
    if (shard === undefined) {
      shard = { master: { host, port }, replicas: [], id: text(master[2]), ranges: [] };
      byMaster.set(key, shard);
      for (const replica of entry.slice(3)) {
        if (!Array.isArray(replica)) continue;
        const replicaHost = text(replica[0]);
        shard.replicas.push({
          host: replicaHost === "" || replicaHost === "?" ? queried.host : replicaHost,
          port: Number(replica[1]),
        });
      }
    }
    shard.ranges.push([Number(start), Number(end)]);
  }
  return [...byMaster.values()];
}

/**
 * The slot map of a Redis Cluster and a node object for each master. It refreshes from
 * CLUSTER SLOTS periodically, on MOVED, and when a connection to a node is lost;
 * refreshes are coalesced so a storm of redirects costs one query.
 */
export class ClusterTopology implements Topology {
  readonly mode = "cluster" as const;
  readonly followsFailovers = true;
  private readonly slots = new Array<UpstreamNode | undefined>(SLOT_COUNT);
  /** Replicas of each master, for --read-from-replicas. */
  private replicasOf = new Map<UpstreamNode, UpstreamNode[]>();
  private readonly nodes = new Map<string, UpstreamNode>();
  /** Masters ordered by their first slot: stable across failovers, so SCAN cursors stay valid. */
  private masterList: UpstreamNode[] = [];
  /** slotRanges() of the current slot map; null once it changed. */
  private ranges: readonly SlotRange[] | null = null;
  private refreshing: Promise<void> | null = null;
  private lastRefresh = 0;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  /** Slot map reads started, by cause (metrics read them at scrape time). */
  readonly refreshCounts = { periodic: 0, requested: 0 };

  constructor(
    private readonly seeds: HostPort[],
    private readonly options: NodeOptions,
    private readonly log: Logger,
  ) {
    this.timer = setInterval(() => void this.refresh("periodic").catch(() => {}), PERIODIC_REFRESH_MS);
    this.timer.unref();
  }

  nodeForSlot(slot: number): UpstreamNode {
    return this.slots[slot] ?? this.masterList[0];
  }

  masters(): UpstreamNode[] {
    return this.masterList;
  }

  /** Every master's replicas that are not known to be down. */
  replicas(): UpstreamNode[] {
    return [...this.replicasOf.values()].flat().filter((node) => !node.down);
  }

  slotRanges(): readonly SlotRange[] {
    // Computed once per slot map: a walk of every slot, asked for by each batch of events.
    if (this.ranges !== null) return this.ranges;
    const index = new Map(this.masterList.map((n, i) => [n, i]));
    const ranges: [number, number, number][] = [];
    for (let s = 0; s < SLOT_COUNT; s++) {
      const owner = index.get(this.slots[s]!);
      if (owner === undefined) continue;
      const last = ranges[ranges.length - 1];
      if (last !== undefined && last[2] === owner && last[1] === s - 1) last[1] = s;
      else ranges.push([s, s, owner]);
    }
    return (this.ranges = ranges);
  }

  /** The node for a slot, or for a keyless command (slot -1) a master chosen by affinity. */
  route(slot: number, affinity: number): UpstreamNode {
    if (slot >= 0) return this.nodeForSlot(slot);
    return this.masterList[affinity % this.masterList.length];
  }

  /** A replica serving `slot` chosen by affinity, or its master when it has none. */
  replicaFor(slot: number, affinity: number): UpstreamNode {
    const master = this.nodeForSlot(slot);
    const replicas = (this.replicasOf.get(master) ?? []).filter((r) => !r.down);
    return replicas.length === 0 ? master : replicas[affinity % replicas.length];
  }

  /** The node at an address a redirect named, created if the map does not know it yet. */
  nodeAt(host: string, port: number): UpstreamNode {
    return this.nodeIn(this.nodes, host, port, false);
  }

  private readonly replicaNodes = new Map<string, UpstreamNode>();

  private nodeIn(
    map: Map<string, UpstreamNode>,
    host: string,
    port: number,
    readOnly: boolean,
  ): UpstreamNode {
    const id = `${host}:${port}`;
    let node = map.get(id);
    if (node === undefined) {
      node = new UpstreamNode(
        { host, port },
        { ...this.options, readOnly, onLost: () => this.scheduleRefresh() },
      );
      map.set(id, node);
    }
    return node;
  }

  /** A MOVED reply: the slot lives elsewhere now. Fix that slot at once, then re-read the map. */
  moved(slot: number, node: UpstreamNode): void {
    this.slots[slot] = node;
    this.ranges = null;
    this.scheduleRefresh();
  }

  /** Asks for a refresh soon, without starting a second one while one runs. */
  scheduleRefresh(): void {
    if (this.refreshing !== null || this.closed) return;
    const wait = Math.max(0, this.lastRefresh + MIN_REFRESH_GAP_MS - Date.now());
    this.refreshing = new Promise<void>((resolve) => setTimeout(resolve, wait))
      .then(() => this.load())
      .catch((err: Error) => this.log.warn({ err: err.message }, "cluster topology refresh failed"))
      .finally(() => {
        this.refreshing = null;
      });
  }

  /** Re-reads the slot map now (or joins the refresh already running). */
  refresh(cause: keyof ClusterTopology["refreshCounts"] = "requested"): Promise<void> {
    if (this.refreshing === null) {
      this.refreshing = this.load(cause).finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  private async load(cause: keyof ClusterTopology["refreshCounts"] = "requested"): Promise<void> {
    this.refreshCounts[cause]++;
    this.lastRefresh = Date.now();
    const candidates = [...this.masterList, ...this.seeds.map((s) => this.nodeAt(s.host, s.port))];
    let lastError = "no node answered";
    for (const node of candidates) {
      if (node.down) continue;
      try {
        const reply = await node.call(["CLUSTER", "SLOTS"]);
        if (reply instanceof RespError) throw new Error(reply.message);
        const shards = parseClusterSlots(reply, node.address);
        if (shards.length === 0) throw new Error("the cluster has no slots assigned");
        this.apply(shards);
        return;
      } catch (err) {
        lastError = `${node.id}: ${err instanceof Error ? err.message : String(err)}`;
      }
    }
    throw new Error(lastError);
  }

  private apply(shards: ShardView[]): void {
    const masters: { node: UpstreamNode; first: number }[] = [];
    const replicasOf = new Map<UpstreamNode, UpstreamNode[]>();
    const firstLoad = this.masterList.length === 0;
    let movedSlots = 0;
    for (const shard of shards) {
      const node = this.nodeAt(shard.master.host, shard.master.port);
      replicasOf.set(
        node,
        shard.replicas.map((r) => this.nodeIn(this.replicaNodes, r.host, r.port, true)),
      );
      node.clusterId = shard.id;
      let first = SLOT_COUNT;
      for (const [start, end] of shard.ranges) {
        for (let s = start; s <= end; s++) {
          if (this.slots[s] !== node) movedSlots++;
          this.slots[s] = node;
        }
        first = Math.min(first, start);
      }
      masters.push({ node, first });
    }
    masters.sort((a, b) => a.first - b.first);
    const previous = { masters: this.masterList, replicasOf: this.replicasOf };
    this.replicasOf = replicasOf;
    this.masterList = masters.map((m) => m.node);
    this.ranges = null;
    const ids = this.masterList.map((n) => n.id);
    if (firstLoad) {
      this.log.info({ masters: ids }, "cluster topology loaded");
      return;
    }
    this.logFailovers(previous.masters, previous.replicasOf);
    if (movedSlots > 0) {
      this.log.info(
        { slots: movedSlots, masters: ids },
        `cluster slot map changed: ${movedSlots} slots moved`,
      );
    }
  }

  /** A master of the previous map replaced by one of its own replicas: a failover the proxy followed. */
  private logFailovers(before: UpstreamNode[], replicasBefore: Map<UpstreamNode, UpstreamNode[]>): void {
    const now = new Set(this.masterList);
    for (const old of before) {
      if (now.has(old)) continue;
      const formerReplicas = new Set((replicasBefore.get(old) ?? []).map((r) => r.id));
      const successor = this.masterList.find((m) => formerReplicas.has(m.id) && !before.includes(m));
      if (successor !== undefined) {
        this.log.warn(
          { from: old.id, to: successor.id },
          `failover followed: ${successor.id} now serves the slots of ${old.id}`,
        );
      } else {
        this.log.warn({ node: old.id }, `cluster node ${old.id} no longer serves slots`);
      }
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    for (const node of this.nodes.values()) node.close();
    for (const node of this.replicaNodes.values()) node.close();
  }
}
