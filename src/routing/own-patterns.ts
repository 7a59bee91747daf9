import { decodeReply } from "../resp/decode.js";

/**
 * The channel patterns the proxy itself subscribes on each node (its keyspace notifications'
 * `__keyevent@*__:*`, made through Shards.subscribe), so that PUBSUB NUMPAT can leave them
 * out, as PUBSUB CHANNELS leaves out its channels.
 */
export class OwnPatterns {
  /** Node id -> pattern -> how many of the proxy's connections there subscribe it. */
  private readonly byNode = new Map<string, Map<string, number>>();

  /** The proxy's patterns on node `nodeId`. */
  on(nodeId: string): Iterable<string> {
    return this.byNode.get(nodeId)?.keys() ?? [];
  }

  add(nodeId: string, pattern: string): void {
    let patterns = this.byNode.get(nodeId);
    if (patterns === undefined) this.byNode.set(nodeId, (patterns = new Map()));
    patterns.set(pattern, (patterns.get(pattern) ?? 0) + 1);
  }

  remove(nodeId: string, pattern: string): void {
    const patterns = this.byNode.get(nodeId);
    const count = patterns?.get(pattern);
    if (patterns === undefined || count === undefined) return;
    if (count > 1) patterns.set(pattern, count - 1);
    else patterns.delete(pattern);
    if (patterns.size === 0) this.byNode.delete(nodeId);
  }
}

/**
 * What one subscription connection of the proxy's own holds of `patterns`: the PSUBSCRIBEs
 * and PUNSUBSCRIBEs sent on it, followed from the commands themselves.
 */
export class HeldPatterns {
  private readonly held = new Set<string>();

  constructor(
    private readonly registry: OwnPatterns,
    private readonly nodeId: string,
  ) {}

  /** A command sent on the connection (RESP-encoded). */
  sent(payload: Buffer): void {
    // Only (P)(UN)SUBSCRIBE commands say "subscribe"; the others (PINGs) are not decoded.
    if (!payload.includes("ubscribe") && !payload.includes("UBSCRIBE")) return;
    const argv = decodeReply(payload);
    if (!Array.isArray(argv) || argv.length === 0 || !Buffer.isBuffer(argv[0])) return;
    const name = argv[0].toString().toLowerCase();
    const names = argv.slice(1).flatMap((a) => (Buffer.isBuffer(a) ? [a.toString("latin1")] : []));
    if (name === "psubscribe") {
      for (const pattern of names) {
        if (this.held.has(pattern)) continue;
        this.held.add(pattern);
        this.registry.add(this.nodeId, pattern);
      }
    } else if (name === "punsubscribe") {
      for (const pattern of names.length === 0 ? [...this.held] : names) {
        if (!this.held.delete(pattern)) continue;
        this.registry.remove(this.nodeId, pattern);
      }
    }
  }

  /** The connection is released, closed or lost: it holds nothing any more. */
  clear(): void {
    for (const pattern of this.held) this.registry.remove(this.nodeId, pattern);
    this.held.clear();
  }
}
