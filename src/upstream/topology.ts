import type { UpstreamNode } from "./node.js";

/** Slots first..last (inclusive) served by masters()[master]. */
export type SlotRange = readonly [first: number, last: number, master: number];

/** Which nodes serve which hash slots. The router asks it; it owns the node objects. */
export interface Topology {
  readonly mode: "standalone" | "cluster";
  /** The master serving `slot` (standalone: the one server for every slot). */
  nodeForSlot(slot: number): UpstreamNode;
  /** Every master, each once, ordered by the first slot they serve. */
  masters(): UpstreamNode[];
  /** The slot ranges: the same array until the slot map changes (so callers may key caches on it). */
  slotRanges(): readonly SlotRange[];
  /** Re-reads the topology now (no-op for one server). */
  refresh(): Promise<void>;
  close(): void;
}

const ALL_SLOTS: readonly SlotRange[] = Object.freeze([Object.freeze([0, 16383, 0] as const)]);

/** One Redis server behind the proxy. */
export class StandaloneTopology implements Topology {
  readonly mode = "standalone" as const;
  constructor(readonly node: UpstreamNode) {}

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
