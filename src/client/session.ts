import type { Socket } from "node:net";
import { encodeError } from "../resp/encode.js";
import type { Protocol, RespValue } from "../resp/values.js";
import { ProtocolError, type Request } from "../resp/request-parser.js";
import type { Lease } from "../routing/lease.js";
import type { GearsCaller } from "../gears/commands.js";
import type { ProxyContext } from "./context.js";
import { Dispatcher, type DispatchHost } from "./dispatch.js";
import type { ClientHandle } from "./registry.js";
import type { ClientMemory } from "./memory-guard.js";
import type { TrackingState } from "./tracking/state.js";
import { clientListLine } from "./client-list-line.js";
import { since74, since80 } from "./server-features.js";
import { ReplyWriter, type WriterHost } from "./reply-writer.js";
import type { ReplySlot } from "./reply-slot.js";
import type { Lane } from "./lane.js";
import { SharedLane } from "./shared-lane.js";
import { ClientSocket, type SocketHost } from "./client-socket.js";
import { Holds } from "./holds.js";
import { ClientUser } from "./client-user.js";
import { Transaction } from "./transaction.js";
import { BlockingCall } from "./blocking.js";
import { ScriptLane } from "./scripts.js";
import { PausedLane } from "./paused-lane.js";
import { Subscriber } from "./pubsub.js";
import { Monitor } from "./monitor.js";
import { GearsBranch } from "./gears-branch.js";
import { runAtExec } from "./local-in-multi.js";
import { LOCAL_COMMANDS } from "./dispatch-table.js";

/**
 * Commands one client may have at the upstreams at once. Beyond it the client's input
 * waits, so one client pipelining without reading cannot make the proxy hold an
 * unbounded number of replies.
 */
const MAX_IN_FLIGHT = 128;

/**
 * One client connection, and the seam its commands pass: read (onData) -> parse
 * (processInput) -> dispatch (execute: the local table, gears, or a lane) -> apply (the
 * lane's module sends it) -> write (newSlot: a place in the ReplyQueue, in request order).
 * Ordinary commands share pipelined upstream connections (forward); MULTI/WATCH
 * (transaction.ts), blocking commands (blocking.ts), scripts (scripts.ts), subscriptions
 * (pubsub.ts), MONITOR (monitor.ts) and paused servers (paused-lane.ts) lease their own.
 */
export class ClientSession implements SocketHost, WriterHost, ClientHandle, DispatchHost {
  readonly id: number;
  readonly addr: string;
  readonly laddr: string;
  readonly createdAt = Date.now();
  /** Query or output bytes past which the memory guard checks at once (client/memory-guard.ts). */
  memoryMark: number;

  db = 0;
  /** RESP2 until HELLO 3. */
  proto: Protocol = 2;
  name = "";
  libName = "";
  libVersion = "";
  /** CLIENT REPLY: on, off, or skip the next reply. */
  replyMode: "on" | "off" | "skip" = "on";
  /** CLIENT TRACKING settings (tracking/); null while tracking is off. */
  tracking: TrackingState | null = null;

  private readonly io: ClientSocket;
  readonly replies: ReplyWriter;
  private lane: Lane = "shared";
  /** A request waiting for the replies in flight before it may switch lanes. */
  private deferred: Request | null = null;
  private processing = false;
  closed = false;
  /** Set once a reply that ends the connection (QUIT, protocol error) is queued. */
  private ending = false;
  /** processInput stopped early (lane switch or blocking call) and must run again on a reply. */
  private stalled = false;
  /** Replies the client must have before its next command runs. */
  readonly holds = new Holds(() => (this.stalled = true));

  readonly user: ClientUser;
  private readonly shared = new SharedLane(this);
  private readonly txn = new Transaction(this);
  private readonly blocking = new BlockingCall(this);
  private readonly scripts = new ScriptLane(this);
  private readonly paused = new PausedLane(this);
  private readonly pubsub = new Subscriber(this);
  readonly monitor = new Monitor(this);
  private readonly gears = new GearsBranch(this);
  private readonly dispatcher = new Dispatcher(this, {
    txn: this.txn,
    pubsub: this.pubsub,
    gears: this.gears,
    blocking: this.blocking,
    scripts: this.scripts,
    paused: this.paused,
    shared: this.shared,
  });

  constructor(
    socket: Socket,
    readonly ctx: ProxyContext,
  ) {
    this.id = ctx.clients.allocateId();
    this.memoryMark = ctx.memoryGuard?.step ?? Infinity;
    this.io = new ClientSocket(socket, this);
    this.addr = this.io.addr;
    this.laddr = this.io.laddr;
    this.user = new ClientUser(this);
    this.replies = new ReplyWriter(this.io.out, this);
  }

  // ---- read and parse ------------------------------------------------------------------

  readable(): void {
    this.processInput();
  }

  /** Runs requests until input runs out or a request must wait (blocking call, lane switch). */
  private processInput(): void {
    if (this.processing) return;
    this.processing = true;
    try {
      while (!this.closed && !this.ending && !this.io.draining) {
        if (this.deferred !== null) {
          if (this.replies.queue.inFlight > 0) {
            this.stalled = true;
            break;
          }
          const request = this.deferred;
          this.deferred = null;
          this.lane = "idle";
          this.dispatcher.execute(request);
          continue;
        }
        if (
          this.blocking.active ||
          this.txn.blocked ||
          this.holds.blocking ||
          this.io.paused ||
          this.replies.queue.inFlight >= MAX_IN_FLIGHT
        ) {
          this.stalled = true;
          break;
        }
        let request: Request | null;
        try {
          request = this.io.parser.next();
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
          this.protocolError(err.message);
          break;
        }
        if (request === null) break;
        // Not one that joins the held commands: it runs once their replies are in.
        if (this.holds.defers(request)) this.deferred = request;
        else this.dispatcher.execute(request);
      }
    } finally {
      this.processing = false;
      // Outside `processing`: a slot failed at once (dead connection) may need to rerun us.
      this.shared.flush();
    }
  }

  private protocolError(message: string): void {
    this.ctx.stats.protocolErrors++;
    this.ctx.log.debug({ client: this.id, addr: this.addr, message }, "protocol error");
    this.replyAndClose(encodeError(`ERR Protocol error: ${message}`));
  }

  // ---- lanes ---------------------------------------------------------------------------

  /** Switches to `lane`, unless replies on another lane are still due: then the request waits. */
  enterLane(lane: Lane, request: Request): boolean {
    if (lane !== this.lane && this.replies.queue.inFlight > 0) {
      this.deferred = request;
      return false;
    }
    // Every reply on it is in: the connection goes back once the client leaves the lane.
    if (lane !== "paused") this.paused.leave();
    this.lane = lane;
    return true;
  }

  markLane(lane: Lane): void {
    this.lane = lane;
  }

  enterSharedLane(request: Request): boolean {
    return this.enterLane("shared", request);
  }

  /** Lets `request` run only once every earlier reply has arrived (RESET, lane changes). */
  waitForIdle(request: Request): boolean {
    if (this.pubsub.count > 0) this.pubsub.drain();
    return this.enterLane("idle", request);
  }

  enterPinnedLane(request: Request): boolean {
    return this.enterLane("pinned", request);
  }

  // ---- apply: the shared connections ---------------------------------------------------

  /** An ordinary command: the shared pipelined connection of the node that owns its keys. */
  forward(name: string, request: Request): void {
    if (this.user.onServer) return this.user.sendAsServerUser(name, request);
    if (this.paused.takes(name, request)) return this.paused.send(name, request);
    this.shared.send(name, request, this.processing);
  }

  forwardInDb(argv: Buffer[], db: number, slot: ReplySlot): void {
    this.shared.sendInDb(argv, db, slot);
  }

  get pinned(): Lease | null {
    return this.txn.pinnedConnection;
  }

  flushRuns(): void {
    this.shared.flush();
  }

  /** Runs the input again, `request` first (a server user's connection is open now). */
  resume(request: Request | null): void {
    if (request !== null) this.deferred = request;
    this.processInput();
  }

  // ---- write: each command's place in the reply order ----------------------------------

  upstreamSlot(): ReplySlot {
    return this.replies.awaited();
  }

  laterSlot(): ReplySlot {
    return this.replies.awaited();
  }

  replyNow(data: Buffer): ReplySlot {
    return this.replies.now(data);
  }

  replyError(message: string): void {
    this.replies.error(message);
  }

  replyText(text: string): void {
    this.replies.text(text);
  }

  replyValue(value: RespValue): void {
    this.replies.value(value);
  }

  replyLater(reply: Promise<Buffer>, hold: boolean): void {
    this.gears.answerLater(reply, hold);
  }

  replyAndClose(data: Buffer): void {
    this.ending = true;
    this.replies.last(data);
  }

  /** A frame the server sent unasked (a message, a MONITOR line): written after what is queued. */
  pushed(frame: Buffer): void {
    this.replies.pushed(frame);
  }

  /** An invalidation of `keys` (null: every key), placed after the replies that may carry their old values. */
  deliver(frame: Buffer, keys: readonly Buffer[] | null): void {
    if (!this.closed) this.replies.invalidation(frame, keys);
  }

  // ---- what the reply queue reports ---------------------------------------------------

  replyArrived(): void {
    if (this.stalled) {
      this.stalled = false;
      this.processInput();
    }
  }

  flushed(): void {
    this.io.applyBackpressure();
    this.endIfDrained();
  }

  endAfterWrite(): void {
    this.ending = true;
    this.replies.queue.clear();
    this.io.endAfterWrite();
    this.release();
  }

  // ---- who the client is ---------------------------------------------------------------

  get userName(): string {
    return this.user.name;
  }

  authenticatedChanged(authenticated: boolean): void {
    this.io.parser.authenticated = authenticated;
  }

  /** Who runs an RG or T&F command: the client's protocol, database, id and user. */
  caller(): GearsCaller {
    const acl = this.ctx.acl === null ? null : this.user.name;
    return { proto: this.proto, db: this.db, clientId: this.id, user: acl, admin: this.user.admin };
  }

  /** TransactionHost: SUBSCRIBE inside MULTI left the transaction's connection subscribed. */
  subscribedBy(lease: Lease, count: number, frames: readonly Buffer[]): void {
    this.pubsub.adopt(lease, count, frames);
  }

  /** TransactionHost: a CLIENT, AUTH or HELLO queued in MULTI, run as EXEC runs it. */
  runAtExec(request: Request): Promise<{ reply: Buffer; close: boolean }> {
    return runAtExec(this, request, LOCAL_COMMANDS.get(request.name)!);
  }

  /** TransactionHost: a TFCALL queued in MULTI, run at EXEC. */
  tfCallInMulti(argv: Buffer[]): Promise<Buffer> {
    return this.gears.tfCallInMulti(argv, this.proto, this.db);
  }

  // ---- ClientHandle --------------------------------------------------------------------

  get idleMs(): number {
    return this.io.idleMs;
  }

  get exemptFromTimeout(): boolean {
    return this.blocking.active || this.txn.blocked || this.isPubSub;
  }

  /** MemoryHolder: when its output went over the pubsub soft limit, 0 while under. */
  softLimitSince = 0;
  /** MemoryHolder, CLIENT NO-EVICT (RESET keeps it, as in Redis). */
  noEvict = false;

  get isPubSub(): boolean {
    return this.pubsub.count > 0;
  }

  subscribesPattern(pattern: string): boolean {
    return this.pubsub.names.patterns.has(pattern);
  }

  kill(reason: string): void {
    this.ctx.log.debug({ client: this.id, addr: this.addr, reason }, "closing client");
    this.close();
  }

  unblock(withError: boolean): Promise<number> {
    return this.blocking.unblock(withError);
  }

  memory(): ClientMemory {
    // Replies that arrived behind one still awaited (a slow upstream, a blocked command) are
    // held here too.
    return { query: this.io.parser.buffered, output: this.io.out.pending + this.replies.queue.held() };
  }

  describe(): string {
    const last = this.replies.lastRequest;
    const tracking = this.tracking;
    return clientListLine({
      id: this.id,
      addr: this.addr,
      laddr: this.laddr,
      name: this.name,
      ageMs: Date.now() - this.createdAt,
      idleMs: this.idleMs,
      flags:
        (this.txn.flaggedMulti ? "x" : "") +
          (this.blocking.active || this.txn.blocked ? "b" : "") +
          (this.isPubSub ? "P" : "") +
          (tracking !== null ? "t" : "") +
          (tracking?.brokenRedirect ? "R" : "") +
          (tracking?.bcast ? "B" : "") +
          (this.noEvict ? "e" : "") || "N",
      db: this.db,
      sub: this.pubsub.names.channels.size,
      psub: this.pubsub.names.patterns.size,
      ssub: this.pubsub.names.shardChannels.size,
      multi: this.txn.queuedCommands,
      watch: since74(this.ctx.upstreamServer) ? this.txn.watchCount : null,
      // Redis counts the command being run in the query buffer still.
      qbuf: this.io.parser.buffered + (this.processing && last !== null ? last.end - last.start : 0),
      memory: this.memory(),
      cmd: last,
      user: this.user.name,
      redir: tracking?.redirect ?? -1,
      resp: this.proto,
      libName: this.libName,
      libVersion: this.libVersion,
      ioThread: since80(this.ctx.upstreamServer),
    });
  }

  // ---- lifetime ------------------------------------------------------------------------

  /**
   * Graceful end: runs no further command, waits for every reply owed (the commands already
   * forwarded), writes them, then closes. Resolves once the connection is closed.
   */
  shutdown(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const closed = this.io.drain();
    // Subscribers and monitors have no reply owed; they end now, as Redis ends them.
    if (this.isPubSub || this.monitor.active) this.close();
    // A blocked command might never be answered: Redis answers it as timed out, and that
    // reply ends the client at a command boundary like any other.
    else if (this.blocking.active) void this.unblock(false);
    this.endIfDrained();
    return closed;
  }

  private endIfDrained(): void {
    if (
      !this.io.draining ||
      this.closed ||
      this.ending ||
      !this.replies.queue.empty ||
      this.replies.queue.inFlight > 0
    )
      return;
    this.endAfterWrite();
  }

  /** Drops every dedicated connection and client state, as RESET does. */
  resetState(): void {
    this.release();
    this.stopTracking();
    this.db = 0;
    this.proto = 2;
    this.name = "";
    this.replyMode = "on";
    this.lane = "shared";
    this.user.reset();
  }

  private stopTracking(): void {
    if (this.tracking === null) return;
    this.ctx.tracking.disable(this.id, this.tracking);
    this.tracking = null;
  }

  private release(): void {
    this.txn.abandon();
    this.user.end();
    this.blocking.drop();
    this.paused.drop();
    this.monitor.drop();
    this.scripts.drop();
    this.pubsub.drop();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ctx.clients.remove(this);
    this.stopTracking();
    this.release();
    this.replies.queue.close();
    this.io.destroy();
  }
}
