import type { UpstreamNode } from "./node.js";

/** Which nodes serve which hash slots. The router asks it; it owns the node objects. */
export interface Topology {
  readonly mode: "standalone" | "cluster";
  /** The master serving `slot` (standalone: the one server for every slot). */
  nodeForSlot(slot: number): UpstreamNode;
  /** Every master, each once, ordered by the first slot they serve. */
  masters(): UpstreamNode[];
  /** Slot ranges as [first, last, index into masters()]. */
  slotRanges(): [number, number, number][];
  /** Re-reads the topology now (no-op for one server). */
  refresh(): Promise<void>;
  close(): void;
}

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

  slotRanges(): [number, number, number][] {
    return [[0, 16383, 0]];
  }

  async refresh(): Promise<void> {}

  close(): void {
    this.node.close();
  }
}
