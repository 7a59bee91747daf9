import type { HostPort } from "../config.js";
import type { Logger } from "../observability/log.js";
import { UpstreamConnection, type ConnectionOptions } from "./connection.js";
import { encodeCommand, type Arg } from "../resp/encode.js";
import type { Protocol, RespValue } from "../resp/values.js";
import { PromiseSink, type ReplySink } from "./reply-sink.js";

/** What metrics learn from the nodes (src/observability/metrics.ts implements it). */
export interface NodeObserver {
  /** The function told each request's round trip to node `id`, in seconds. */
  roundTripFor(id: string): (seconds: number) => void;
  /** The master followed through Redis Sentinel named `master` moved to another node. */
  sentinelSwitch?(master: string): void;
}

/** Where commands wait while their node cannot be reached (waiting-requests.ts implements it). */
export interface WaitingRoom {
  /** Commands waiting now. */
  readonly size: number;
  /** Whether the commands wait for `node` (the master followed). */
  isFor(node: UpstreamNode): boolean;
  add(affinity: number, payload: Buffer, sink: ReplySink, db: number, proto: Protocol): void;
}

/** Idle dedicated connections kept per node for the next transaction or blocking call. */
const MAX_IDLE_DEDICATED = 32;
const FIRST_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 2000;

/**
 * One Redis node as the proxy sees it: a few shared pipelined connections that carry
 * ordinary commands, and a pool of dedicated ones lent to clients for MULTI, blocking
 * commands and pub/sub. Both exist per protocol (the RESP3 ones opened on first use), so
 * a reply is forwarded as the server sent it, in the protocol its client speaks. A control
 * connection of its own carries the commands that must reach a busy server (SCRIPT KILL).
 * A dead connection is replaced on next use; after a failed connect, commands fail fast
 * during a growing back-off instead of storming the node.
 */
export class UpstreamNode {
  readonly id: string;
  /** The node's id in its Redis Cluster (40 hex characters); zeros for a lone server. */
  clusterId = "0".repeat(40);
  /** Shared connections, by protocol: [RESP2, RESP3]. */
  private readonly shared: [(UpstreamConnection | null)[], (UpstreamConnection | null)[]];
  /** Idle dedicated connections, by protocol: [RESP2, RESP3]. */
  private readonly idle: [UpstreamConnection[], UpstreamConnection[]] = [[], []];
  private controlConn: UpstreamConnection | null = null;
  private readonly lent = new Set<UpstreamConnection>();
  private backoffMs = 0;
  private downUntil = 0;
  private lastFailure = "";
  /** Set from the first failure until a connection succeeds again, so each outage logs twice only. */
  private lost = false;
  /** Set by retire(): no connection is opened to this node again. */
  private retired = false;
  /** Set by holdRequests(): the clients' connections hold back what is sent until releaseRequests(). */
  private holding = false;
  /** The connection probe() opened, until it is answered or fails. */
  private probing: UpstreamConnection | null = null;
  /** Where "upstream lost" and "upstream back" go; unset while the proxy only probes a seed. */
  log: Logger | undefined;

  constructor(
    readonly address: HostPort,
    private readonly options: ConnectionOptions & {
      sharedConnections: number;
      readOnly?: boolean;
      /** Told when a connection to this node fails, so the topology can be re-read. */
      onLost?: () => void;
      /** Where "upstream lost" and "upstream back" are written. */
      log?: Logger;
      /** Times the round trips (metrics on). */
      observer?: NodeObserver;
      /**
       * Where commands wait while this node, the Sentinel master, cannot be reached, instead of
       * failing (waiting-requests.ts); unset elsewhere, and when --cluster-retry-timeout is 0.
       */
      waiting?: WaitingRoom;
    },
  ) {
    this.id = `${address.host}:${address.port}`;
    this.log = options.log;
    const count = Math.max(1, options.sharedConnections);
    this.shared = [
      new Array<UpstreamConnection | null>(count).fill(null),
      new Array<UpstreamConnection | null>(count).fill(null),
    ];
  }

  /** False from a lost connection or a failed connect until a connection succeeds again. */
  get reachable(): boolean {
    return !this.lost && !this.down;
  }

  /** True while the node refuses connections and we are backing off, and for good once retired. */
  get down(): boolean {
    return this.retired || Date.now() < this.downUntil;
  }

  /** Sends on the shared connection assigned to `affinity`, so one client's commands stay in order. */
  send(affinity: number, payload: Buffer, sink: ReplySink, db: number, proto: Protocol = 2): void {
    const conn = this.sharedConnection(affinity, proto);
    if (conn === null) this.cannotSend(affinity, payload, sink, db, proto);
    else conn.send(payload, sink, db);
  }

  /** A command with no connection to take: it waits for the master (Sentinel mode), or fails. */
  private cannotSend(affinity: number, payload: Buffer, sink: ReplySink, db: number, proto: Protocol): void {
    const waiting = this.options.waiting;
    if (waiting !== undefined && this.waitsForMaster()) waiting.add(affinity, payload, sink, db, proto);
    else sink.fail(this.failure);
  }

  /**
   * True while commands for this node must wait rather than go (options.waiting): it is the
   * master, lost since its last connection, or earlier commands still wait. A fresh connection
   * would only fail them with "unavailable" while a dead master is being replaced.
   */
  private waitsForMaster(): boolean {
    const waiting = this.options.waiting;
    return (
      waiting !== undefined &&
      !this.retired &&
      (this.lost || this.down || waiting.size > 0) &&
      waiting.isFor(this)
    );
  }

  /**
   * Opens a connection to learn whether the node answers again (reachable() once it does);
   * `answered` is told then. Nothing while backing off, or while one probe is under way.
   */
  probe(answered: () => void): void {
    if (this.probing !== null || this.down) return;
    const conn = this.open(2);
    this.probing = conn;
    const done = (): void => {
      this.probing = null;
      conn.close();
    };
    conn.call(["PING"]).then(() => {
      done();
      answered();
    }, done);
  }

  /** The proxy's own request; error replies resolve as RespError, a dead node rejects. */
  call(argv: readonly Arg[], db = 0, affinity = 0): Promise<RespValue> {
    const sink = new PromiseSink();
    this.send(affinity, encodeCommand(argv), sink, db);
    return sink.promise;
  }

  /** The shared connection for `affinity`, created if needed; null while backing off. */
  sharedConnection(affinity: number, proto: Protocol = 2): UpstreamConnection | null {
    const shared = this.shared[proto - 2];
    const i = affinity % shared.length;
    let conn = shared[i];
    if (conn === null || conn.closed) {
      if (this.down || this.waitsForMaster()) return null;
      conn = this.open(proto);
      if (this.holding) conn.hold();
      shared[i] = conn;
    }
    return conn;
  }

  /**
   * The connection for commands that must not wait behind others (SCRIPT KILL, CLIENT
   * PAUSE): used for nothing else, so it is free whenever the server reads at all.
   */
  control(): UpstreamConnection | null {
    if (this.controlConn === null || this.controlConn.closed) {
      if (this.down) return null;
      this.controlConn = this.open(2);
    }
    return this.controlConn;
  }

  /**
   * A connection for one client's exclusive use; give it back with release() or destroy it.
   * One already in database `db` is preferred: it needs no SELECT in front, which a busy
   * server refuses while it still takes the MULTI or WATCH behind it.
   */
  acquire(proto: Protocol = 2, db?: number): UpstreamConnection | null {
    const idle = this.idle[proto - 2];
    let conn: UpstreamConnection | undefined;
    if (db !== undefined) {
      for (let i = idle.length - 1; i >= 0; i--)
        if (idle[i].selectedDb === db && !idle[i].closed) {
          conn = idle.splice(i, 1)[0];
          break;
        }
    }
    while (conn === undefined && (conn = idle.pop()) !== undefined) {
      if (conn.closed) conn = undefined;
    }
    if (conn === undefined) {
      if (this.down) return null;
      conn = this.open(proto);
      conn.learnId();
    }
    if (this.holding) conn.hold();
    this.lent.add(conn);
    return conn;
  }

  /** Takes back a lent connection whose state is clean (no MULTI, WATCH or subscription). */
  release(conn: UpstreamConnection): void {
    this.lent.delete(conn);
    conn.onBorrowerLost = null;
    if (conn.closed || conn.pushHandler !== null) return;
    const idle = this.idle[conn.proto - 2];
    if (idle.length < MAX_IDLE_DEDICATED) idle.push(conn);
    else conn.close();
  }

  /** Closes a lent connection whose state cannot be trusted (a client left mid-transaction). */
  destroy(conn: UpstreamConnection): void {
    this.lent.delete(conn);
    conn.close();
  }

  /** Why the node is unusable, as a RESP error text. */
  get failure(): string {
    return this.retired ? `ERR upstream ${this.id} is no longer the master` : this.lastFailure;
  }

  /**
   * Closes the node for good: the node is no longer the master (a Sentinel failover), and a
   * reference to it kept somewhere (a request in flight, a gears room) must not open a
   * connection to it again and write there. Everything sent to it from now fails at once.
   */
  retire(): void {
    this.retired = true;
    this.close();
  }

  /**
   * Holds back what clients and the gears rooms send to this node (shared and dedicated
   * connections; not the control one), each connection in order, until releaseRequests():
   * a new Sentinel master, while the old one settles what it owes (handover.ts).
   */
  holdRequests(): void {
    this.holding = true;
    for (const conn of this.all()) if (conn !== this.controlConn) conn.hold();
  }

  releaseRequests(): void {
    this.holding = false;
    for (const conn of this.all()) conn.release();
  }

  /**
   * retire(), but the shared connections that still owe replies, and the control connection,
   * are handed to the caller open instead of closed (a Sentinel switch: handover.ts), each
   * shared one with its protocol and its place (the affinity that picks it).
   */
  retireHandingOver(): {
    shared: { conn: UpstreamConnection; proto: Protocol; index: number }[];
    control: UpstreamConnection | null;
  } {
    const shared: { conn: UpstreamConnection; proto: Protocol; index: number }[] = [];
    this.shared.forEach((conns, p) =>
      conns.forEach((conn, index) => {
        if (conn === null || conn.closed || conn.inFlight === 0) return;
        shared.push({ conn, proto: (p + 2) as Protocol, index });
        conns[index] = null;
      }),
    );
    const control = this.controlConn !== null && !this.controlConn.closed ? this.controlConn : null;
    this.controlConn = null;
    this.retire();
    return { shared, control };
  }

  close(): void {
    for (const conn of this.all()) conn.close();
    for (const shared of this.shared) shared.fill(null);
    for (const idle of this.idle) idle.length = 0;
    this.lent.clear();
    this.controlConn = null;
  }

  private *all(): Iterable<UpstreamConnection> {
    for (const shared of this.shared) for (const conn of shared) if (conn !== null) yield conn;
    for (const idle of this.idle) yield* idle;
    yield* this.lent;
    if (this.controlConn !== null) yield this.controlConn;
  }

  /** Requests sent to this node whose replies are still awaited, over all its connections. */
  get inFlight(): number {
    let count = 0;
    for (const conn of this.all()) if (!conn.closed) count += conn.inFlight;
    return count;
  }

  get connectionCount(): number {
    let count = 0;
    for (const conn of this.all()) if (!conn.closed) count++;
    return count;
  }

  private open(proto: Protocol): UpstreamConnection {
    const roundTrip = this.options.observer?.roundTripFor(this.id);
    const conn = new UpstreamConnection(this.address, { ...this.options, proto, roundTrip });
    let answered = false;
    conn.onConnect = () => {
      answered = true;
      this.backoffMs = 0;
      if (this.lost) {
        this.lost = false;
        this.log?.info({ upstream: this.id }, `upstream ${this.id} back`);
      }
    };
    conn.onClose = (message) => {
      this.options.onLost?.();
      if (!conn.closedByProxy && !this.lost) {
        this.lost = true;
        this.log?.warn({ upstream: this.id, err: message }, `upstream ${this.id} lost`);
      }
      if (answered) return;
      this.backoffMs = this.backoffMs === 0 ? FIRST_BACKOFF_MS : Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
      this.downUntil = Date.now() + this.backoffMs;
      this.lastFailure = message;
    };
    return conn;
  }
}
