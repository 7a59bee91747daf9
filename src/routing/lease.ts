import type { Arg } from "../resp/encode.js";
import type { Protocol, RespValue } from "../resp/values.js";
import { isBookkeeping, type UpstreamConnection } from "../upstream/connection.js";
import type { UpstreamNode } from "../upstream/node.js";
import type { ReplySink } from "../upstream/reply-sink.js";
import { ServerPause } from "./pause.js";
import { CROSS_SLOT, CROSSSLOT_ERROR, NO_KEYS, type Router } from "./router.js";

export { DISCARD, type ReplySink } from "../upstream/reply-sink.js";
/** For a transaction that puts its own SELECT inside MULTI, or ends on a lost connection (client/transaction.ts). */
export { ANY_DB, CONNECTION_LOST, selectCommand, UNKNOWN_DB } from "../upstream/connection.js";

/**
 * A pipelined connection a client sends raw requests down: the shared one of a lone
 * server (the pass-through fast path), or a lease.
 */
export interface Pipe {
  send(payload: Buffer, sink: ReplySink, db?: number): void;
  sendMany(payload: Buffer, sinks: readonly ReplySink[], db?: number): void;
}

/**
 * An upstream connection lent to one client alone (MULTI/WATCH, a blocking command, a
 * subscription, a script, MONITOR, a server user's login). It goes back with release()
 * when its state is clean, or is closed with destroy() when it cannot be trusted.
 */
export class Lease implements Pipe {
  private done = false;

  constructor(
    private readonly node: UpstreamNode,
    private readonly conn: UpstreamConnection,
  ) {}

  /** The node's host:port: two leases with the same id reach the same server. */
  get nodeId(): string {
    return this.node.id;
  }

  get proto(): Protocol {
    return this.conn.proto;
  }

  /** The database the connection is in (UNKNOWN_DB when a refused SELECT left it in doubt). */
  get db(): number {
    return this.conn.selectedDb;
  }

  get closed(): boolean {
    return this.done || this.conn.closed;
  }

  send(payload: Buffer, sink: ReplySink, db?: number): void {
    this.conn.send(payload, sink, db);
  }

  sendMany(payload: Buffer, sinks: readonly ReplySink[], db?: number): void {
    this.conn.sendMany(payload, sinks, db);
  }

  /** A request whose replies come as pushes (SUBSCRIBE): no reply is matched to it. */
  sendUnmatched(payload: Buffer): void {
    this.conn.sendUnmatched(payload);
  }

  /**
   * Writes the requests sent so far at once: they reach the server before anything another
   * client sends after them, which waits for the turn's end (see io/output-buffer.ts).
   */
  flush(): void {
    this.conn.flush();
  }

  /**
   * Resolves once what the proxy sent on opening the connection (CLIENT ID) is answered.
   * Redis 7.2 to 8.0 drop a failed AUTH's error reply while earlier replies on its
   * connection are pending (redis/redis#15640): a login waits for this first.
   */
  get opened(): Promise<void> {
    return this.conn.idKnown;
  }

  /** The proxy's own request on this connection; error replies resolve as RespError. */
  call(argv: readonly Arg[]): Promise<RespValue> {
    return this.conn.call(argv);
  }

  /**
   * The proxy's own request on the node's control connection, beside a command this lease
   * is blocked in (WAIT reads the replicas' progress while one waits); null when the node is down.
   */
  callBeside(argv: readonly Arg[]): Promise<RespValue> | null {
    return this.node.control()?.call(argv) ?? null;
  }

  /** The server changed the connection's database itself (SELECT inside EXEC). */
  noteDb(db: number): void {
    this.conn.noteDb(db);
  }

  /** Frames nobody asked for (messages, MONITOR lines) go to `handler`; null stops them. */
  onPush(handler: ((frame: Buffer) => void) | null): void {
    this.conn.pushHandler = handler;
  }

  /** MONITOR lines, without the commands the proxy adds on its own account. */
  onMonitorLine(handler: (line: Buffer) => void): void {
    this.conn.pushHandler = (line) => {
      if (!isBookkeeping(line)) handler(line);
    };
  }

  /** Told once if the connection dies while lent; null: nobody is told. */
  onLost(handler: (() => void) | null): void {
    this.conn.onBorrowerLost = handler;
  }

  /**
   * CLIENT UNBLOCK for the command waiting on this connection, sent on the node's control
   * connection (this one is busy): how many clients the server unblocked.
   */
  unblock(withError: boolean): Promise<number> {
    const control = this.node.control();
    if (control === null || this.conn.serverId < 0) return Promise.resolve(0);
    const argv = ["CLIENT", "UNBLOCK", this.conn.serverId, withError ? "ERROR" : "TIMEOUT"];
    return control.call(argv).then(
      (n) => (typeof n === "number" ? n : 0),
      () => 0,
    );
  }

  /** Gives the connection back for another client (its state is clean). */
  release(): void {
    if (this.done) return;
    this.done = true;
    this.node.release(this.conn);
  }

  /** Closes the connection: its state (MULTI, subscriptions, a login) must not reach another client. */
  destroy(): void {
    if (this.done) return;
    this.done = true;
    this.conn.onBorrowerLost = null;
    this.conn.pushHandler = null;
    this.node.destroy(this.conn);
  }
}

/** Borrows a connection to `node`, or gives the node's failure as an error text. */
function leaseOn(node: UpstreamNode, proto: Protocol, db?: number): Lease | string {
  const conn = node.acquire(proto, db);
  return conn === null ? node.failure : new Lease(node, conn);
}

/**
 * Where a client's dedicated connections come from. Every lease goes to the node the
 * router picks, so a client never learns of upstream nodes itself.
 */
export class Leases {
  /** CLIENT PAUSE in effect: clients then take leases for ordinary commands too. */
  readonly pause = new ServerPause();

  constructor(private readonly router: Router) {}

  /**
   * A lease on the node that owns argv's keys, or the error to answer (CROSSSLOT, node down);
   * `db`: the client's database, which a connection already in it saves a SELECT for.
   */
  forCommand(
    name: string,
    argv: readonly Buffer[],
    affinity: number,
    proto: Protocol,
    db?: number,
  ): Lease | string {
    const node = this.router.nodeFor(name, argv, affinity);
    return typeof node === "string" ? node : leaseOn(node, proto, db);
  }

  /** A lease on the node of `slot` (any master for NO_KEYS; the lone server outside a cluster). */
  forSlot(slot: number, affinity: number, proto: Protocol, db?: number): Lease | string {
    if (slot === CROSS_SLOT) return CROSSSLOT_ERROR;
    const cluster = this.router.topology.mode === "cluster";
    const node = cluster ? this.router.routeSlot(slot, affinity) : this.router.topology.nodeForSlot(0);
    return leaseOn(node, proto, db);
  }

  /** The node id a lease for `slot` would reach, to tell whether a pinned lease must move. */
  nodeIdForSlot(slot: number, affinity: number): string {
    if (this.router.topology.mode !== "cluster") return this.router.topology.nodeForSlot(0).id;
    return this.router.routeSlot(slot === CROSS_SLOT ? NO_KEYS : slot, affinity).id;
  }

  /** The node id argv goes to, or the error to answer when its keys span slots. */
  nodeIdFor(name: string, argv: readonly Buffer[], affinity: number): { id: string } | string {
    const node = this.router.nodeFor(name, argv, affinity);
    return typeof node === "string" ? node : { id: node.id };
  }

  /** One lease per master, in master order (MONITOR relays each node's stream). */
  onEveryMaster(proto: Protocol): (Lease | string)[] {
    return this.router.masters().map((node) => leaseOn(node, proto));
  }

  /** A lease on the master `nodeId` (a client's keyspace notifications from every master). */
  onMaster(nodeId: string, proto: Protocol): Lease | string {
    const node = this.router.masters().find((m) => m.id === nodeId);
    return node === undefined ? `ERR ${nodeId} is no longer a master` : leaseOn(node, proto);
  }
}
