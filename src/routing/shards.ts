import { encodeCommand, encodeError, type Arg } from "../resp/encode.js";
import type { RespValue } from "../resp/values.js";
import type { UpstreamConnection } from "../upstream/connection.js";
import type { UpstreamNode } from "../upstream/node.js";
import type { SlotRange } from "../upstream/topology.js";
import { PromiseSink, UpstreamError, type ReplySink } from "../upstream/reply-sink.js";
import type { Router, WriteTap } from "./router.js";
import { HeldPatterns } from "./own-patterns.js";

export { UpstreamError };
export type { SlotRange };

/** One master as the gears rooms see it: a name, never a connection. */
export interface Shard {
  /** host:port: how events, leases and subscriptions name the shard. */
  readonly id: string;
  /** Its node id in the Redis Cluster (zeros for a lone server). */
  readonly clusterId: string;
  readonly host: string;
  readonly port: number;
}

/**
 * A dedicated connection to one node in subscribed mode: commands sent on it get no
 * matched reply, every frame goes to `onFrame`.
 */
export interface NodeSubscription {
  readonly closed: boolean;
  /** Replies the node still owes (0: it is idle and can go back to the pool). */
  readonly inFlight: number;
  send(argv: Buffer): void;
  /** Hands the connection back to the node's pool (its state must be clean: unsubscribed). */
  release(): void;
  /** Closes the connection (its state cannot be trusted). */
  destroy(): void;
}

export interface SubscriptionHandlers {
  onFrame(frame: Buffer): void;
  /** The connection died; called once, with the reason. */
  onLost(reason: string): void;
}

/** How often the list of masters is compared for onChange listeners. */
const CHANGE_POLL_MS = 250;

/**
 * The one door the gears rooms use to reach Redis beyond ordinary routed commands: the
 * masters and their slots, a command to one shard, a pipeline to one shard, a
 * subscription on one node, and word of topology changes. Everything here is routing's
 * to decide; the gears rooms never hold a node or a connection.
 */
export class Shards {
  private readonly listeners = new Set<() => void>();
  private signature = "";
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly router: Router) {}

  get clustered(): boolean {
    return this.router.topology.mode === "cluster";
  }

  /** Whether the masters may move (a cluster, Sentinel): a lost one is worth asking the topology about. */
  get followsFailovers(): boolean {
    return this.router.topology.followsFailovers;
  }

  /** Every master, each once, ordered by the first slot it serves (partition order). */
  masters(): Shard[] {
    return this.router.topology.masters().map(shardOf);
  }

  /** Slot ranges as [first, last, index into masters()]: the same array until the slot map changes. */
  slotRanges(): readonly SlotRange[] {
    return this.router.topology.slotRanges();
  }

  /** The id of the master serving `slot`. */
  idForSlot(slot: number): string {
    return this.router.topology.nodeForSlot(slot).id;
  }

  /**
   * The replicas of a master (ids as host:port), as the master itself lists them (INFO
   * replication); none in front of one server, where the proxy follows no failover (a
   * cluster's and Sentinel's replicas are listed: either may be promoted).
   */
  async replicasOf(shard: string): Promise<string[]> {
    if (!this.followsFailovers) return [];
    const info = await this.callNode(shard, ["INFO", "replication"]);
    const text = Buffer.isBuffer(info) ? info.toString() : typeof info === "string" ? info : "";
    const out: string[] = [];
    for (const m of text.matchAll(/^slave\d+:ip=([^,]+),port=(\d+)/gm)) out.push(`${m[1]}:${m[2]}`);
    return out;
  }

  /** Re-reads the topology now (joins a refresh under way). */
  refresh(): Promise<void> {
    return this.router.topology.refresh();
  }

  /**
   * A command to one master, redirects followed (a keyless command runs on that master);
   * error replies resolve as RespError, a dead shard rejects with UpstreamError.
   */
  call(shard: string, argv: readonly Arg[], affinity = 0, db = 0): Promise<RespValue> {
    const sink = new PromiseSink();
    this.router.sendTo(this.node(shard), encodeCommand(argv), sink, affinity, -1, 2, db);
    return sink.promise;
  }

  /** A command to exactly that node, no redirect (its configuration, its own SCAN). */
  callNode(shard: string, argv: readonly Arg[]): Promise<RespValue> {
    return this.nodeNamed(shard).call(argv);
  }

  /** An encoded command to one master; resolves with the reply's bytes, error replies too. */
  callRaw(shard: string, payload: Buffer, affinity = 0, db = 0): Promise<Buffer> {
    const sink = new RawSink();
    this.router.sendTo(this.node(shard), payload, sink, affinity, -1, 2, db);
    return sink.promise;
  }

  /**
   * `count` encoded commands to one master as one write, in database `db`; resolves with
   * their replies' bytes in order. No redirects: the caller sees MOVED or ASK and reads again.
   */
  pipeline(shard: string, payload: Buffer, count: number, affinity = 0, db = 0): Promise<Buffer[]> {
    const node = this.node(shard);
    const sink = new ManySink(count);
    const conn = node.sharedConnection(affinity);
    if (conn === null) sink.fail(`ERR ${node.id} is unreachable`);
    else conn.sendMany(payload, new Array<ReplySink>(count).fill(sink), db);
    return sink.promise;
  }

  /**
   * A dedicated connection to the master `shard` for a subscription; a text saying why
   * when the node cannot be reached now.
   */
  subscribe(shard: string, handlers: SubscriptionHandlers): NodeSubscription | string {
    const node = this.node(shard);
    const conn = node.acquire();
    if (conn === null) return node.failure || "node unavailable";
    const held = new HeldPatterns(this.router.ownPatterns, node.id);
    conn.pushHandler = (frame) => handlers.onFrame(frame);
    conn.onBorrowerLost = (reason) => {
      held.clear();
      handlers.onLost(reason);
    };
    return new LentSubscription(node, conn, held);
  }

  /**
   * Watches the writes forwarded (clients' and the proxy's own, in every database, those
   * queued in MULTI included; not a module's, router.isServerWrite): `watch` sees each as it leaves (argv and keys are valid only
   * during the call) and may return what to call with its outcome: the reply when the write
   * succeeded, null when it failed or its connection was lost. One watcher at a time;
   * returns the function that stops it. `byFunction`: a T&F function's or trigger's write
   * (RouteContext.byFunction).
   */
  onWrite(
    watch: (
      name: string,
      argv: readonly Buffer[],
      keys: Buffer[],
      db: number,
      byFunction: boolean,
    ) => ((reply: Buffer | null) => void) | null,
  ): () => void {
    const router = this.router;
    const queued = (
      name: string,
      argv: Buffer[],
      db: number,
      byFunction = false,
    ): ((reply: Buffer | null) => void) | null =>
      router.isServerWrite(name, argv) ? watch(name, argv, router.keysOf(name, argv), db, byFunction) : null;
    const tap: WriteTap = (name, argv, sink, db, byFunction) => {
      const done = queued(name, argv, db, byFunction);
      return done === null ? sink : new WatchedSink(sink, done, router);
    };
    router.tap = tap;
    router.queuedTap = queued;
    return () => {
      if (router.tap === tap) router.tap = null;
      if (router.queuedTap === queued) router.queuedTap = null;
    };
  }

  /**
   * Calls `listener` whenever the set of masters changes (a failover, a shard added or
   * removed); returns the function that stops it.
   */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    if (this.timer === null) {
      this.signature = this.currentSignature();
      this.timer = setInterval(() => this.checkChange(), CHANGE_POLL_MS);
      this.timer.unref();
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0 && this.timer !== null) {
        clearInterval(this.timer);
        this.timer = null;
      }
    };
  }

  private currentSignature(): string {
    return this.router.topology
      .masters()
      .map((n) => n.id)
      .join(",");
  }

  private checkChange(): void {
    const now = this.currentSignature();
    if (now === this.signature) return;
    this.signature = now;
    for (const listener of [...this.listeners]) listener();
  }

  /**
   * The master named `shard`; for one no longer a master, in a cluster the node at that
   * address (its MOVED leads on), in front of one server the master now (nothing would).
   */
  private node(shard: string): UpstreamNode {
    const topology = this.router.topology;
    if (topology.mode === "cluster") return this.nodeNamed(shard);
    return topology.masters().find((n) => n.id === shard) ?? topology.nodeForSlot(0);
  }

  /** Exactly the node at host:port `shard`, a master or not (a replica's configuration). */
  private nodeNamed(shard: string): UpstreamNode {
    const topology = this.router.topology;
    const found = topology.masters().find((n) => n.id === shard);
    if (found !== undefined) return found;
    const colon = shard.lastIndexOf(":");
    return topology.nodeAt(shard.slice(0, colon), Number(shard.slice(colon + 1)));
  }
}

const READONLY = Buffer.from("-READONLY ");

/** Whether an error reply is "-READONLY You can't write against a read only replica." */
/**
 * A watched write's sink: passes the reply on, then tells the watcher its outcome. A class,
 * not an object of two closures: one is made for every write while a registration follows
 * them (the event path), and a plain object of three fields is the least garbage.
 */
class WatchedSink implements ReplySink {
  constructor(
    private readonly sink: ReplySink,
    private readonly done: (reply: Buffer | null) => void,
    private readonly router: Router,
  ) {}

  reply(data: Buffer): void {
    this.sink.reply(data);
    if (data[0] !== 45 /* - */) return this.done(data);
    // A master that answers READONLY was demoted behind the proxy's back: the topology
    // is re-read now (Sentinel: the sentinels asked), not at its next periodic check.
    // Looked at here because this branch reads error replies anyway; others' are not.
    if (isReadOnlyError(data)) void this.router.topology.refresh().catch(() => {});
    this.done(null);
  }

  fail(message: string): void {
    this.sink.fail(message);
    this.done(null);
  }
}

function isReadOnlyError(reply: Buffer): boolean {
  return (
    reply.length > READONLY.length && reply.compare(READONLY, 0, READONLY.length, 0, READONLY.length) === 0
  );
}

function shardOf(node: UpstreamNode): Shard {
  return { id: node.id, clusterId: node.clusterId, host: node.address.host, port: node.address.port };
}

class LentSubscription implements NodeSubscription {
  constructor(
    private readonly node: UpstreamNode,
    private readonly conn: UpstreamConnection,
    /** The patterns it subscribes, which PUBSUB NUMPAT leaves out. */
    private readonly held: HeldPatterns,
  ) {}

  get closed(): boolean {
    return this.conn.closed;
  }

  get inFlight(): number {
    return this.conn.inFlight;
  }

  send(argv: Buffer): void {
    this.held.sent(argv);
    this.conn.sendUnmatched(argv);
  }

  private detach(): void {
    this.held.clear();
    this.conn.pushHandler = null;
    this.conn.onBorrowerLost = null;
  }

  release(): void {
    this.detach();
    this.node.release(this.conn);
  }

  destroy(): void {
    this.detach();
    this.node.destroy(this.conn);
  }
}

/**
 * Resolves with the reply's bytes, error replies included: the caller reads them itself. A
 * failed connection rejects with an UpstreamError, or, with `failAsReply`, resolves as the
 * error reply a client would be given.
 */
export class RawSink implements ReplySink {
  readonly promise: Promise<Buffer>;
  private resolve!: (v: Buffer) => void;
  private reject!: (e: Error) => void;

  constructor(private readonly failAsReply = false) {
    this.promise = new Promise<Buffer>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  reply(data: Buffer): void {
    this.resolve(data);
  }

  fail(message: string): void {
    if (this.failAsReply) this.resolve(encodeError(message));
    else this.reject(new UpstreamError(message));
  }
}

/** Takes the replies of `count` commands sent together, in order; one failure fails them all. */
class ManySink implements ReplySink {
  readonly promise: Promise<Buffer[]>;
  private readonly replies: Buffer[] = [];
  private resolve!: (v: Buffer[]) => void;
  private reject!: (e: Error) => void;
  private failed = false;

  constructor(private readonly count: number) {
    this.promise = new Promise<Buffer[]>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    if (count === 0) this.resolve([]);
  }

  reply(data: Buffer): void {
    if (this.failed) return;
    this.replies.push(data);
    if (this.replies.length === this.count) this.resolve(this.replies);
  }

  fail(message: string): void {
    if (this.failed) return;
    this.failed = true;
    this.reject(new UpstreamError(message));
  }
}
