import type { UpstreamNode } from "./node.js";

/** Slots first..last (inclusive) served by masters()[master]. */
export type SlotRange = readonly [first: number, last: number, master: number];

/** Which nodes serve which hash slots. The router asks it; it owns the node objects. */
export interface Topology {
  readonly mode: "standalone" | "cluster";
  /**
   * Whether a replica may become the master behind the proxy's back (a cluster, Sentinel):
   * then replicas are prepared in advance (keyspace notifications) for their promotion.
   */
  readonly followsFailovers: boolean;
  /** The master serving `slot` (standalone: the one server for every slot). */
  nodeForSlot(slot: number): UpstreamNode;
  /** Every master, each once, ordered by the first slot they serve. */
  masters(): UpstreamNode[];
  /** The slot ranges: the same array until the slot map changes (so callers may key caches on it). */
  slotRanges(): readonly SlotRange[];
  /**
   * The node at host:port, a master or not (a replica asked for its configuration), created
   * on first use and closed with the topology.
   */
  nodeAt(host: string, port: number): UpstreamNode;
  /** Lines for INFO's proxy section about how the master is found (Sentinel); none otherwise. */
  infoLines?(): string[];
  /** Re-reads the topology now (no-op for one server). */
  refresh(): Promise<void>;
  close(): void;
}

/** Every slot on masters()[0]: the slot map of a topology with one master. */
export const ALL_SLOTS: readonly SlotRange[] = Object.freeze([Object.freeze([0, 16383, 0] as const)]);

/** One Redis server behind the proxy. */
export class StandaloneTopology implements Topology {
  readonly mode = "standalone" as const;
  readonly followsFailovers = false;
  constructor(readonly node: UpstreamNode) {}

  /** The one server: the proxy knows no other node (and follows no failover to one). */
  nodeAt(): UpstreamNode {
    return this.node;
  }

  nodeForSlot(): UpstreamNode {
    return this.node;
  }

  masters(): UpstreamNode[] {
    return [this.node];
  }

  slotRanges(): readonly SlotRange[] {
    return ALL_SLOTS;
  }

  async refresh(): Promise<void> {}

  close(): void {
    this.node.close();
  }
}
