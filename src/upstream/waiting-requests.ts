import type { Protocol } from "../resp/values.js";
import type { UpstreamNode, WaitingRoom } from "./node.js";
import type { ReplySink } from "./reply-sink.js";

/** A command that could not be sent to the master: it never left the proxy. */
interface WaitingRequest {
  readonly affinity: number;
  readonly payload: Buffer;
  readonly sink: ReplySink;
  readonly db: number;
  readonly proto: Protocol;
  /** When it fails if the master is still out of reach (ms). */
  readonly deadline: number;
}

/** How often the waiting requests look for the master again. */
const TICK_MS = 50;

/**
 * Sentinel mode's counterpart of cluster mode's retry of a connect failure (routing/redirect.ts,
 * --cluster-retry-timeout): while the master cannot be reached (its connection lost, a connect
 * refused), the shared connections' commands wait here, never sent, instead of failing with
 * "unavailable"; they go, in the order they came, to the new master at the switch, or to the
 * same one once it answers again, and fail as before once they waited `timeoutMs`.
 *
 * The healthy path never comes here: UpstreamNode asks only when it has no open connection for
 * a command. While requests wait, the node sends nothing itself (UpstreamNode.sharedConnection),
 * so that no later command overtakes an earlier one of the same client.
 */
export class WaitingRequests implements WaitingRoom {
  private queue: WaitingRequest[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    readonly timeoutMs: number,
    /** The node the requests are for now (the master followed). */
    private readonly master: () => UpstreamNode,
  ) {}

  /** Whether `node` is the master the requests are for. */
  isFor(node: UpstreamNode): boolean {
    return this.master() === node;
  }

  get size(): number {
    return this.queue.length;
  }

  /** Takes a request for the master that cannot be sent now. */
  add(affinity: number, payload: Buffer, sink: ReplySink, db: number, proto: Protocol): void {
    this.queue.push({ affinity, payload, sink, db, proto, deadline: Date.now() + this.timeoutMs });
    if (this.timer === null) {
      this.timer = setInterval(() => this.tick(), TICK_MS);
      this.timer.unref();
      this.tick();
    }
  }

  /** Sends what waits to the master (a new one at a switch), in the order it came. */
  flush(): void {
    const queue = this.queue;
    this.queue = [];
    this.stop();
    const node = this.master();
    for (const r of queue) node.send(r.affinity, r.payload, r.sink, r.db, r.proto);
  }

  /** Fails what waits with the master's failure (the topology closes). */
  failAll(message: string): void {
    const queue = this.queue;
    this.queue = [];
    this.stop();
    for (const r of queue) r.sink.fail(message);
  }

  private tick(): void {
    const node = this.master();
    if (node.reachable) return this.flush();
    // In arrival order, so deadlines only grow: those past theirs are at the front.
    const now = Date.now();
    let expired = 0;
    while (expired < this.queue.length && this.queue[expired].deadline <= now) expired++;
    if (expired > 0) {
      const failure = node.failure || `ERR upstream ${node.id} unavailable`;
      for (const r of this.queue.splice(0, expired)) r.sink.fail(failure);
      if (this.queue.length === 0) return this.stop();
    }
    node.probe(() => this.tick());
  }

  private stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
