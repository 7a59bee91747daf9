import type { Socket } from "node:net";
import { OutputBuffer } from "../io/output-buffer.js";
import { inProtocol, partsInProtocol } from "../resp/convert.js";
import { encodeCommand, encodeError, encodeValue, OK } from "../resp/encode.js";
import { RespVerbatim, type Protocol, type RespValue } from "../resp/values.js";
import { ProtocolError, RequestParser, type Request } from "../resp/request-parser.js";
import {
  ALLOWED_WHILE_SUBSCRIBED,
  SUBSCRIBE_FAMILY,
  isBlocking,
  isScript,
} from "../routing/command-kinds.js";
import type { Lease, Leases } from "../routing/lease.js";
import { holdJoinKey, holdsClient, isGearsCommand, runGearsCommand } from "../gears/commands.js";
import { runTfCallInMulti } from "../gears/tf/tf-commands.js";
import type { ProxyContext } from "./context.js";
import { LOCAL_COMMANDS, NO_AUTH_COMMANDS } from "./dispatch-table.js";
import type { ClientHandle } from "./registry.js";
import type { ClientMemory } from "./memory-guard.js";
import type { CommandHost } from "./command-host.js";
import { Transaction, type TransactionHost } from "./transaction.js";
import { NO_KEYS, type Router } from "../routing/router.js";
import type { ReplySlot } from "./reply-slot.js";
import { ReplyQueue, type QueueOwner } from "./reply-queue.js";
import { RequestRuns } from "./request-runs.js";
import { Subscriber, type SubscriberHost } from "./pubsub.js";
import { clientListLine } from "./client-list-line.js";
import { Metrics } from "../observability/metrics.js";
import type { TrackingState } from "./tracking/state.js";
import { noPermission, type AclUser } from "../acl/access-control.js";
import { UpstreamIdentity } from "./upstream-identity.js";

/** Where a client's commands currently go. Switching lanes waits for replies in flight. */
type Lane = "shared" | "pinned" | "blocking" | "script" | "subscribed" | "paused" | "idle";

/** Stop reading from a client whose replies pile up beyond this; resume on drain. */
const PAUSE_READING_BYTES = 4 * 1024 * 1024;
/**
 * Commands one client may have at the upstreams at once. Beyond it the client's input
 * waits, so one client pipelining without reading cannot make the proxy hold an
 * unbounded number of replies.
 */
const MAX_IN_FLIGHT = 128;
/** Redis' client-query-buffer-limit: unparsed input a client may leave with us. */
const QUERY_BUFFER_LIMIT = 1024 * 1024 * 1024;

const MONITOR = encodeCommand(["MONITOR"]);

/**
 * Names execute() must look at closely: answered locally, allowed before AUTH or while
 * subscribed, or changing the client's lane. Every other command, once the client is
 * authenticated, unsubscribed and outside MULTI, goes straight to forwarding.
 */
const SPECIAL = new Set([
  ...LOCAL_COMMANDS.keys(),
  ...NO_AUTH_COMMANDS,
  ...ALLOWED_WHILE_SUBSCRIBED,
  ...SUBSCRIBE_FAMILY,
  "multi",
  "watch",
  // CONFIG takes the full path: the gears room answers it for T&F's settings.
  "config",
]);

function isSpecial(name: string, argv: readonly Buffer[]): boolean {
  return SPECIAL.has(name) || isGearsCommand(name, argv);
}

/** Commands a server user may not send in cluster mode: its connections are per node. */
const TRANSACTION_COMMANDS = new Set(["multi", "exec", "discard", "watch", "unwatch"]);

/**
 * One client connection: parses its requests, sends each where it belongs, and writes the
 * replies back in request order. Ordinary commands share pipelined upstream connections;
 * MULTI/WATCH, blocking commands and subscriptions borrow a dedicated one.
 */
export class ClientSession implements QueueOwner, SubscriberHost, ClientHandle, TransactionHost, CommandHost {
  readonly id: number;
  readonly addr: string;
  readonly laddr: string;
  readonly createdAt = Date.now();
  /** Query or output bytes past which the memory guard checks at once (client/memory-guard.ts). */
  memoryMark: number;
  private lastActivity = Date.now();
  private lastRequest: Request | null = null;

  db = 0;
  /** RESP2 until HELLO 3. */
  proto: Protocol = 2;
  name = "";
  libName = "";
  libVersion = "";
  authenticated = false;
  userName = "default";
  /** The permissions checked before each command: null without ACLs, or for a user who may run anything. */
  private aclUser: AclUser | null = null;
  /** Logged in as a user of the server's own ACL (AUTH user pass without --aclfile). */
  private upstreamIdentity: UpstreamIdentity | null = null;
  /** Neither of the two: ordinary commands take the fast path. */
  private plain = true;
  /** CLIENT REPLY: on, off, or skip the next reply. */
  replyMode: "on" | "off" | "skip" = "on";
  /** CLIENT TRACKING settings (tracking/); null while tracking is off. */
  tracking: TrackingState | null = null;

  private readonly parser: RequestParser;
  private readonly out: OutputBuffer;
  private readonly replies: ReplyQueue;
  private readonly runs = new RequestRuns();
  private lane: Lane = "shared";
  /** A request waiting for the replies in flight before it may switch lanes. */
  private deferred: Request | null = null;
  private processing = false;
  private closed = false;
  /** Set once a reply that ends the connection (QUIT, protocol error) is queued. */
  private ending = false;
  private readingPaused = false;
  /** The proxy is shutting down: no new command runs; the connection ends once replies are out. */
  private draining = false;

  private readonly txn: Transaction;
  private blocking: Lease | null = null;
  /** This client's own connection while the servers are paused (ServerPause). */
  private paused: Lease | null = null;
  private readonly pubsub = new Subscriber(this);
  /** processInput stopped early (lane switch or blocking call) and must run again on a reply. */
  private stalled = false;
  /** Replies the client must have before its next command runs (blocking RG.* commands). */
  private holds = 0;
  /** Of `holds`, those a next command with this join key passes (holdJoinKey: TFCALLs of one library). */
  private joinHolds = 0;
  private joinKey: string | null = null;
  /** The command being executed and its arrival time, until its reply slot takes them (metrics on). */
  private metered: Request | null = null;
  /** Commands are timed only for metrics or the slow log. */
  private readonly timed: boolean;
  private meteredAt = 0;

  constructor(
    private readonly socket: Socket,
    readonly ctx: ProxyContext,
  ) {
    this.id = ctx.clients.allocateId();
    this.memoryMark = ctx.memoryGuard?.step ?? Infinity;
    this.timed = ctx.metrics !== null || ctx.slowlog.enabled;
    this.addr = `${socket.remoteAddress}:${socket.remotePort}`;
    this.laddr = `${socket.localAddress}:${socket.localPort}`;
    this.parser = new RequestParser({ maxBulkLen: ctx.config.protoMaxBulkLen, maxArgs: 1024 * 1024 });
    this.resetUser();
    this.out = new OutputBuffer(socket);
    this.replies = new ReplyQueue(this.out, this, ctx.metrics !== null);
    this.txn = new Transaction(this);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => this.close());
    socket.on("close", () => this.close());
    socket.on("drain", () => this.resumeReading());
  }

  // ---- ClientHandle -------------------------------------------------------------------

  get idleMs(): number {
    return Date.now() - this.lastActivity;
  }

  get exemptFromTimeout(): boolean {
    return this.blocking !== null || this.txn.blocked || this.isPubSub;
  }

  get isPubSub(): boolean {
    return this.pubsub.count > 0;
  }

  kill(reason: string): void {
    this.ctx.log.debug({ client: this.id, addr: this.addr, reason }, "closing client");
    this.close();
  }

  unblock(withError: boolean): Promise<number> {
    return this.blocking?.unblock(withError) ?? Promise.resolve(0);
  }

  memory(): ClientMemory {
    // Replies that arrived behind one still awaited (a slow upstream, a blocked command) are
    // held here too.
    return { query: this.parser.buffered, output: this.out.pending + this.replies.held() };
  }

  describe(): string {
    const last = this.lastRequest;
    return clientListLine({
      id: this.id,
      addr: this.addr,
      laddr: this.laddr,
      name: this.name,
      ageMs: Date.now() - this.createdAt,
      idleMs: this.idleMs,
      flags:
        (this.txn.inMulti ? "x" : "") +
          (this.blocking !== null || this.txn.blocked ? "b" : "") +
          (this.isPubSub ? "P" : "") +
          (this.tracking !== null ? "t" : "") +
          (this.tracking?.brokenRedirect ? "R" : "") +
          (this.tracking?.bcast ? "B" : "") || "N",
      db: this.db,
      sub: this.pubsub.count,
      multi: this.txn.inMulti ? 0 : -1,
      // Redis counts the command being run in the query buffer still.
      qbuf: this.parser.buffered + (this.processing && last !== null ? last.end - last.start : 0),
      memory: this.memory(),
      cmd: last,
      user: this.userName,
      redir: this.tracking?.redirect ?? -1,
      resp: this.proto,
      libName: this.libName,
      libVersion: this.libVersion,
    });
  }

  // ---- input ---------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    this.lastActivity = Date.now();
    this.ctx.metrics?.clientBytesIn(chunk.length);
    this.parser.push(chunk);
    if (this.parser.buffered > QUERY_BUFFER_LIMIT) {
      this.ctx.log.warn({ client: this.id, addr: this.addr }, "client query buffer limit reached");
      this.kill("query buffer limit reached");
      return;
    }
    if (this.parser.buffered > this.memoryMark) {
      this.ctx.memoryGuard?.grew();
      if (this.closed) return;
    }
    this.processInput();
  }

  /** Runs requests until input runs out or a request must wait (blocking call, lane switch). */
  private processInput(): void {
    if (this.processing) return;
    this.processing = true;
    try {
      while (!this.closed && !this.ending && !this.draining) {
        if (this.deferred !== null) {
          if (this.replies.inFlight > 0) {
            this.stalled = true;
            break;
          }
          const request = this.deferred;
          this.deferred = null;
          this.lane = "idle";
          this.execute(request);
          continue;
        }
        if (
          this.blocking !== null ||
          this.txn.blocked ||
          (this.holds > 0 && this.holds !== this.joinHolds) ||
          this.readingPaused ||
          this.replies.inFlight >= MAX_IN_FLIGHT
        ) {
          this.stalled = true;
          break;
        }
        let request: Request | null;
        try {
          request = this.parser.next();
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
          this.protocolError(err.message);
          break;
        }
        if (request === null) break;
        if (this.holds > 0 && holdJoinKey(request.name, request.argv.slice(1)) !== this.joinKey) {
          // Not one that joins the held commands: it runs once their replies are in.
          this.deferred = request;
          continue;
        }
        this.execute(request);
      }
    } finally {
      this.processing = false;
      // Outside `processing`: a slot failed at once (dead connection) may need to rerun us.
      this.runs.flush();
    }
  }

  private protocolError(message: string): void {
    this.ctx.stats.protocolErrors++;
    this.ctx.log.debug({ client: this.id, addr: this.addr, message }, "protocol error");
    this.replyAndClose(encodeError(`ERR Protocol error: ${message}`));
  }

  private execute(request: Request): void {
    const name = request.name;
    this.ctx.stats.commandsProcessed++;
    if (name === "config") {
      this.ctx.slowlog.noteConfigSet(request.argv);
      this.ctx.tracking.noteConfigSet(request.argv);
    }
    const tracking = this.ctx.tracking;
    if (tracking.watching)
      tracking.beforeCommand(this.id, this.tracking, name, request.argv, this.txn.inMulti);
    if (this.timed) {
      this.metered = request;
      this.meteredAt = Metrics.now();
    }
    this.lastRequest = request;
    if (
      this.authenticated &&
      (this.pubsub.count === 0 || this.proto === 3) &&
      !this.txn.inMulti &&
      !isSpecial(name, request.argv)
    ) {
      // What the chain below comes to for an ordinary command, without its lookups; a user
      // of the proxy's ACL keeps it (a set lookup first), a server user takes the chain.
      if (this.plain) return this.executeOrdinary(name, request);
      if (this.aclUser !== null) {
        if (this.permitted(name, request.argv)) this.executeOrdinary(name, request);
        return;
      }
    }
    this.runs.flush();
    const argv = request.argv;
    if (!this.authenticated && !NO_AUTH_COMMANDS.has(name)) {
      this.replyError("NOAUTH Authentication required.");
      return;
    }
    if (this.pubsub.count > 0 && this.proto === 2 && !ALLOWED_WHILE_SUBSCRIBED.has(name)) {
      this.replyError(
        `ERR Can't execute '${name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`,
      );
      return;
    }
    if (this.aclUser !== null && !NO_AUTH_COMMANDS.has(name) && !this.endsTransaction(name)) {
      if (!this.permitted(name, argv)) return;
    }
    if (this.txn.inMulti) {
      if (name === "quit" || name === "reset") LOCAL_COMMANDS.get(name)!(this, request);
      else this.txn.queueCommand(name, request);
      return;
    }
    if (this.isPubSub && this.proto === 2 && name === "ping") {
      this.sendSubscription(name, request);
      return;
    }
    const local = LOCAL_COMMANDS.get(name);
    if (local !== undefined) {
      local(this, request);
      return;
    }
    if (isGearsCommand(name, argv.slice(1))) this.runGears(name, request);
    else if (this.ctx.gears.hookFor(name, argv)) this.answerLater(this.ctx.gears.runHook(name, argv), true);
    else if (this.upstreamIdentity !== null && !SUBSCRIBE_FAMILY.has(name)) this.sendAsUser(name, request);
    else if (SUBSCRIBE_FAMILY.has(name)) this.sendSubscription(name, request);
    else if (name === "multi") this.txn.multi(request);
    else if (name === "watch") this.txn.watch(request);
    else if (this.txn.owns(name, request.argv)) this.txn.send(name, request);
    else if (isBlocking(name, argv)) this.sendBlocking(name, request);
    else if (this.scriptsOwnConnection(name)) this.sendScript(name, request);
    else if (this.goesPaused(name, request.argv)) this.sendPaused(name, request);
    else if (this.enterLane("shared", request)) this.forward(name, request);
  }

  /** An ordinary command from an authenticated client outside MULTI and pub/sub. */
  private executeOrdinary(name: string, request: Request): void {
    const gears = this.ctx.gears;
    const argv = request.argv;
    if (gears.hookFor(name, argv)) {
      this.runs.flush();
      this.answerLater(gears.runHook(name, argv), true);
    } else if (this.txn.owns(name, argv)) {
      this.runs.flush();
      this.txn.send(name, request);
    } else if (isBlocking(name, argv)) {
      this.runs.flush();
      this.sendBlocking(name, request);
    } else if (this.scriptsOwnConnection(name)) {
      this.runs.flush();
      this.sendScript(name, request);
    } else if (this.goesPaused(name, request.argv)) this.sendPaused(name, request);
    else if (this.enterLane("shared", request)) this.forward(name, request);
  }

  /** Switches to `lane`, unless replies on another lane are still due: then the request waits. */
  private enterLane(lane: Lane, request: Request): boolean {
    if (lane !== this.lane && this.replies.inFlight > 0) {
      this.deferred = request;
      return false;
    }
    if (lane !== "paused" && this.paused !== null) {
      // Every reply on it is in: the connection goes back once the client leaves the lane.
      this.paused.release();
      this.paused = null;
    }
    this.lane = lane;
    return true;
  }

  enterSharedLane(request: Request): boolean {
    return this.enterLane("shared", request);
  }

  /** Lets `request` run only once every earlier reply has arrived (RESET, lane changes). */
  waitForIdle(request: Request): boolean {
    return this.enterLane("idle", request);
  }

  // ---- lanes ---------------------------------------------------------------------------

  get router(): Router {
    return this.ctx.router;
  }

  get leases(): Leases {
    return this.ctx.leases;
  }

  enterPinnedLane(request: Request): boolean {
    return this.enterLane("pinned", request);
  }

  /** An ordinary command: the shared pipelined connection of the node that owns its keys. */
  forward(name: string, request: Request): void {
    if (this.upstreamIdentity !== null) return this.sendAsUser(name, request);
    if (this.goesPaused(name, request.argv)) return this.sendPaused(name, request);
    const slot = this.upstreamSlot();
    const gears = this.ctx.gears;
    if (gears.holdsWrites && this.ctx.router.isWrite(name, request.argv)) {
      // A `sync` registration: the client sees its write done only once the handlers ran,
      // and its next command runs after them too, as if they ran inside the write.
      this.holds++;
      slot.gate = () =>
        gears.afterWrite().finally(() => {
          this.holds--;
          this.stalled = true;
        });
    }
    const router = this.ctx.router;
    // Control commands and key listings take the router's path, never a run.
    if (this.processing && request.end > request.start && !router.needsRouting(name, request.argv, this.db)) {
      const conn = router.sharedConnection(this.id, this.proto);
      if (conn !== null) {
        // The write journal (router.tap) sees the writes of a run as well as forward()'s.
        this.runs.add(
          conn,
          request,
          router.tap === null ? slot : router.tap(name, request.argv, slot, this.db),
          this.db,
        );
        return;
      }
    }
    this.runs.flush();
    router.forward(name, request.argv, request.raw, slot, {
      db: this.db,
      affinity: this.id,
      proto: this.proto,
      primary: this.tracking !== null,
    });
  }

  /** Whether the servers are paused; control commands and key listings still take the router. */
  private goesPaused(name: string, argv: readonly Buffer[]): boolean {
    return this.ctx.leases.pause.active && !this.ctx.router.needsRouting(name, argv, this.db);
  }

  /**
   * An ordinary command while the servers are paused: on a connection of this client's own,
   * so the server holds it as one paused client of its own, and other clients' reads on
   * the shared connections never wait behind it.
   */
  private sendPaused(name: string, request: Request): void {
    this.runs.flush();
    const target = this.ctx.leases.nodeIdFor(name, request.argv, this.id);
    if (typeof target === "string") {
      // Keys across slots: the router splits the command over the shared connections.
      this.ctx.router.forward(name, request.argv, request.raw, this.upstreamSlot(), {
        db: this.db,
        affinity: this.id,
        proto: this.proto,
      });
      return;
    }
    if (this.paused !== null && this.paused.nodeId !== target.id && !this.waitForIdle(request)) return;
    if (this.lane !== "paused" && !this.enterLane("paused", request)) return;
    if (this.paused === null || this.paused.closed || this.paused.nodeId !== target.id) {
      this.paused?.release();
      this.paused = this.borrow(name, request.argv);
      if (this.paused === null) return;
    }
    this.lane = "paused";
    this.paused.send(request.raw ?? encodeCommand(request.argv), this.upstreamSlot(), this.db);
  }

  /** Sends on the connection this client's commands currently use, in another database. */
  forwardInDb(argv: Buffer[], db: number, slot: ReplySlot): void {
    // The database changes only when the server accepts it (SELECT): commands pipelined
    // behind must wait for that answer, or they would run in the old database.
    this.holds++;
    const onReply = slot.onReply;
    slot.onReply = (data) => {
      this.holds--;
      this.stalled = true;
      return onReply === null ? undefined : onReply(data);
    };
    const pinned = this.txn.pinnedConnection;
    if (pinned !== null) pinned.send(encodeCommand(argv), slot, db);
    else this.ctx.router.forward("select", argv, null, slot, { db, affinity: this.id, proto: this.proto });
  }

  /** An RG.* command: answered by the gears engine; blocking ones hold this client's next commands. */
  private runGears(name: string, request: Request): void {
    const args = request.argv.slice(1);
    const hold = holdsClient(name, args);
    const joinKey = hold ? holdJoinKey(name, args) : null;
    if (
      joinKey !== null &&
      (this.joinHolds === 0 || this.joinKey === joinKey) &&
      this.holds === this.joinHolds
    ) {
      this.joinKey = joinKey;
      this.joinHolds++;
      const reply = runGearsCommand(this.ctx.gears, name, args, this.gearsContext());
      const release = (): void => {
        if (--this.joinHolds === 0) this.joinKey = null;
      };
      // Released before the slot is filled: the reply's slotFilled runs the input again.
      this.answerLater(reply.finally(release), true);
      return;
    }
    this.answerLater(runGearsCommand(this.ctx.gears, name, args, this.gearsContext()), hold);
  }

  replyLater(reply: Promise<Buffer>, hold: boolean): void {
    this.answerLater(reply, hold);
  }

  /**
   * A reply computed by the proxy (in RESP2 or the client's protocol); with `hold`, the
   * client's next commands wait for it.
   */
  /** Who runs an RG or T&F command: the client's protocol, database, id and user. */
  private gearsContext(): Parameters<typeof runGearsCommand>[3] {
    return {
      proto: this.proto,
      db: this.db,
      clientId: this.id,
      user: this.ctx.acl === null ? null : this.userName,
      admin: this.aclUser === null || this.aclUser.admin,
    };
  }

  /** TransactionHost: a TFCALL queued in MULTI, run at EXEC (gears/tf/tf-multi.ts). */
  tfCallInMulti(argv: Buffer[]): Promise<Buffer> {
    return runTfCallInMulti(this.ctx.gears.tf, argv, this.proto, this.db);
  }

  /** TransactionHost: holds the next commands until the release is called. */
  hold(): () => void {
    this.holds++;
    return () => {
      this.holds--;
      this.stalled = true;
    };
  }

  private answerLater(reply: Promise<Buffer | Buffer[]>, hold: boolean): void {
    const slot = this.laterSlot();
    if (hold) this.holds++;
    const settle = (data: Buffer | Buffer[]): void => {
      if (hold) {
        this.holds--;
        this.stalled = true;
      }
      if (Array.isArray(data)) slot.replyParts(partsInProtocol(data, this.proto));
      else slot.reply(inProtocol(data, this.proto));
    };
    reply.then(settle, (err: Error) => settle(encodeError(`ERR ${err.message}`)));
  }

  /** Borrows a connection to the node for argv, or answers the error and returns null. */
  private borrow(name: string, argv: readonly Buffer[]): Lease | null {
    const lease = this.ctx.leases.forCommand(name, argv, this.id, this.proto);
    if (typeof lease === "string") {
      this.replyError(lease);
      return null;
    }
    return lease;
  }

  private sendBlocking(name: string, request: Request): void {
    if (!this.enterLane("blocking", request)) return;
    const blocking = this.borrow(name, request.argv);
    if (blocking === null) return;
    this.blocking = blocking;
    const slot = this.upstreamSlot();
    slot.onReply = () => {
      this.blocking = null;
      blocking.release();
    };
    blocking.send(request.raw ?? encodeCommand(request.argv), slot, this.db);
  }

  /** One connection per master streaming MONITOR output to this client; empty when not monitoring. */
  private monitors: Lease[] = [];

  /**
   * MONITOR: each master's stream, relayed as it comes (commands the proxy sends on its
   * clients' behalf, this client's own included). The first master's OK answers the client.
   */
  startMonitor(): void {
    const slot = this.upstreamSlot();
    if (this.monitors.length > 0) return slot.reply(OK);
    const ignore = { reply() {}, fail() {} };
    this.ctx.leases.onEveryMaster(this.proto).forEach((lease, i) => {
      if (typeof lease === "string") {
        if (i === 0) slot.fail(lease);
        return;
      }
      lease.onMonitorLine((line) => this.onPushedFrame(line));
      lease.onLost(() => this.kill("monitor connection lost"));
      this.monitors.push(lease);
      lease.send(MONITOR, i === 0 ? slot : ignore);
    });
  }

  /** The connection this client's scripts run on, and how many of them are still running. */
  private script: Lease | null = null;
  private scriptsRunning = 0;

  /**
   * Whether a script goes on a connection of its own. In front of one server, yes; in a
   * cluster scripts stay on the shared connections, where redirects and NOSCRIPT reloads
   * are handled.
   */
  private scriptsOwnConnection(name: string): boolean {
    return isScript(name) && this.ctx.router.topology.mode !== "cluster";
  }

  /**
   * A script on a dedicated connection, so that a busy one holds up nobody else. Scripts
   * pipelined back to back share it; it goes back to the pool once all have answered.
   */
  private sendScript(name: string, request: Request): void {
    if (this.script === null) {
      if (!this.enterLane("script", request)) return;
      this.script = this.borrow(name, request.argv);
      if (this.script === null) return;
    }
    const script = this.script;
    const slot = this.upstreamSlot();
    this.scriptsRunning++;
    slot.onReply = () => {
      if (--this.scriptsRunning > 0 || this.script !== script) return;
      this.script = null;
      script.release();
    };
    script.send(request.raw ?? encodeCommand(request.argv), slot, this.db);
  }

  private sendSubscription(name: string, request: Request): void {
    if (this.proto === 3 && !this.enterLane("subscribed", request)) return;
    if (this.pubsub.needsLease(this.proto)) {
      if (!this.enterLane("subscribed", request)) return;
      const lease = this.borrow(name, request.argv);
      if (lease === null) return;
      this.pubsub.attach(lease);
    }
    this.lane = "subscribed";
    this.pubsub.send(name, request);
  }

  subscriptionFrame(frame: Buffer): void {
    this.onPushedFrame(frame);
  }

  subscriptionLost(): void {
    this.kill("subscription connection lost");
  }

  /**
   * An invalidation of `keys` (null: every key). It goes right after the last queued reply
   * whose command touches them, as Redis writes a command's own invalidations after its
   * reply and others' at once: a reply that may carry a key's old value is never
   * written after the invalidation of that key.
   */
  deliver(frame: Buffer, keys: readonly Buffer[] | null): void {
    if (this.closed) return;
    const tracking = this.ctx.tracking;
    this.replies.insertPushed(
      frame,
      (s) => !s.pushed && (s.cause === null || tracking.touches(s.cause.name, s.cause.argv, keys)),
    );
  }

  /** A frame the server sent unasked (a message, a MONITOR line): written after what is queued. */
  private onPushedFrame(frame: Buffer): void {
    this.replies.appendNow(frame, this.newSlot(true));
  }

  // ---- replies -------------------------------------------------------------------------

  /** A place in the reply order; a `pushed` frame (pub/sub) is written whatever CLIENT REPLY says. */
  private newSlot(pushed = false, awaited = false): ReplySlot {
    const slot = awaited ? this.replies.appendAwaited() : this.replies.append();
    if (pushed) slot.pushed = true;
    else if (this.tracking !== null) slot.cause = this.lastRequest;
    if (this.metered !== null) {
      // The command's first reply is the one the client waits for; later ones are pushes.
      slot.request = this.metered;
      slot.startedAt = this.meteredAt;
      this.metered = null;
    }
    if (this.replyMode !== "on" && !pushed) {
      slot.silent = true;
      if (this.replyMode === "skip") this.replyMode = "on";
    }
    return slot;
  }

  /** A slot that an upstream will fill; counted until it does. */
  upstreamSlot(): ReplySlot {
    return this.newSlot(false, true);
  }

  /** A slot for a reply the proxy will compute itself later (INFO, fan-outs). */
  laterSlot(): ReplySlot {
    return this.upstreamSlot();
  }

  replyNow(data: Buffer): ReplySlot {
    return this.replies.appendNow(data, this.newSlot());
  }

  replyError(message: string): void {
    this.replyNow(encodeError(message));
  }

  /** Text the proxy built (INFO, CLIENT LIST): a verbatim string in RESP3, as Redis sends it. */
  replyText(text: string): void {
    this.replyValue(new RespVerbatim("txt", Buffer.from(text)));
  }

  /** A reply the proxy built, encoded in the client's protocol. */
  replyValue(value: RespValue): void {
    this.replyNow(encodeValue(value, this.proto));
  }

  // ---- QueueOwner: what the reply queue reports ----------------------------------------

  replyArrived(): void {
    if (this.stalled) {
      this.stalled = false;
      this.processInput();
    }
  }

  flushed(): void {
    this.applyBackpressure();
    this.endIfDrained();
  }

  countOut(bytes: number): void {
    this.ctx.metrics?.clientBytesOut(bytes);
  }

  /** The one seam where a command's reply goes out: counted with the latency its client saw. */
  meter(request: Request, startedAt: number, data: Buffer): void {
    const us = (Metrics.now() - startedAt) * 1000;
    this.ctx.metrics?.commandDone(request.name, us / 1e6, data);
    // Redis logs the commands EXEC runs, never EXEC itself.
    if (request.name !== "exec") this.ctx.slowlog.record(us, request.argv, this.addr, this.name);
  }

  private applyBackpressure(): void {
    const pending = this.out.pending;
    if (pending > this.memoryMark) {
      this.ctx.memoryGuard?.grew();
      if (this.closed) return;
    }
    if (pending > this.ctx.config.clientOutputBufferLimit) {
      this.ctx.stats.outputLimitDisconnections++;
      this.ctx.log.warn({ client: this.id, addr: this.addr, pending }, "client output buffer limit reached");
      this.close();
    } else if (pending > PAUSE_READING_BYTES && !this.readingPaused) {
      this.readingPaused = true;
      this.socket.pause();
    }
  }

  private resumeReading(): void {
    if (!this.readingPaused || this.closed || this.draining) return;
    this.readingPaused = false;
    this.socket.resume();
    this.processInput();
  }

  endAfterWrite(): void {
    this.ending = true;
    this.replies.clear();
    this.out.flush();
    // Closed for good once the reply is out, as Redis closes it: a client still writing
    // (after a protocol error) gets a reset instead of a half-open connection that never fails.
    this.socket.end(() => this.socket.destroy());
    this.release();
  }

  // ---- lifetime ------------------------------------------------------------------------

  /**
   * Graceful end: runs no further command, waits for every reply owed (the commands already
   * forwarded), writes them, then closes. Resolves once the connection is closed.
   */
  shutdown(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const closed = new Promise<void>((resolve) => this.socket.once("close", () => resolve()));
    this.draining = true;
    this.socket.pause();
    // Subscribers and monitors have no reply owed; they end now, as Redis ends them.
    if (this.isPubSub || this.monitors.length > 0) this.close();
    // A blocked command might never be answered: Redis answers it as timed out, and that
    // reply ends the client at a command boundary like any other.
    else if (this.blocking !== null) void this.unblock(false);
    this.endIfDrained();
    return closed;
  }

  private endIfDrained(): void {
    if (!this.draining || this.closed || this.ending || !this.replies.empty || this.replies.inFlight > 0)
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
    this.resetUser();
  }

  /**
   * A command of a client logged in as a server user: on its own connection to the node,
   * authenticated as that user. The first command for a node waits while it is opened.
   */
  private sendAsUser(name: string, request: Request): void {
    const identity = this.upstreamIdentity!;
    if (this.ctx.router.topology.mode === "cluster" && TRANSACTION_COMMANDS.has(name)) {
      return this.replyError(
        `ERR ${name.toUpperCase()} as a user of the cluster's own ACL is not supported by gears-proxy`,
      );
    }
    const target = this.ctx.leases.nodeIdFor(name, request.argv, this.id);
    if (typeof target === "string") return this.replyError(target);
    const conn = identity.connection(target.id, this.proto);
    if (conn !== null) {
      conn.send(request.raw ?? encodeCommand(request.argv), this.upstreamSlot(), this.db);
      return;
    }
    this.runs.flush();
    this.holds++;
    void identity.open(this.ctx.leases.forCommand(name, request.argv, this.id, this.proto)).then((error) => {
      this.holds--;
      if (this.closed) return;
      if (error !== null) this.replyError(error);
      // Runs again, now that the connection is there.
      else this.deferred = request;
      this.processInput();
    });
  }

  /** AUTH user pass for a user of the server's own ACL: null once logged in, else the server's error. */
  loginUpstream(user: string, password: string): Promise<string | null> {
    const identity = new UpstreamIdentity(user, password);
    this.holds++;
    return identity.open(this.ctx.leases.forSlot(NO_KEYS, this.id, this.proto)).then((error) => {
      this.holds--;
      this.stalled = true;
      if (error !== null || this.closed) {
        identity.end();
        return error ?? "ERR the client has gone";
      }
      this.markAuthenticated();
      this.upstreamIdentity = identity;
      this.userName = user;
      this.plain = false;
      return null;
    });
  }

  private dropIdentity(): void {
    this.upstreamIdentity?.end();
    this.upstreamIdentity = null;
  }

  resetSlowlog(): void {
    this.ctx.slowlog.reset();
  }

  /** Back to the default user: authenticated when it needs no password (or no --requirepass). */
  private resetUser(): void {
    const acl = this.ctx.acl;
    this.userName = "default";
    this.aclUser = null;
    this.dropIdentity();
    if (acl === null) this.authenticated = this.ctx.config.requirepass === undefined;
    else {
      const user = acl.user("default")!;
      this.aclUser = user.unrestricted ? null : user;
      this.authenticated = acl.opensWithoutPassword(user);
    }
    this.parser.authenticated = this.authenticated;
    this.plain = this.aclUser === null;
  }

  login(user: AclUser): void {
    this.markAuthenticated();
    this.userName = user.name;
    this.aclUser = user.unrestricted ? null : user;
    this.plain = this.aclUser === null;
  }

  /** The proxy's ACL check (aclUser set): false once the refusal is answered. */
  private permitted(name: string, argv: readonly Buffer[]): boolean {
    const denial = this.ctx.acl!.check(this.aclUser!, name, argv);
    if (denial === null) return true;
    const error = noPermission(denial);
    if (this.txn.inMulti) this.txn.refuse(error);
    // Redis words a refused EXEC as the transaction's end.
    else this.replyError(name === "exec" ? `EXECABORT Transaction discarded because of: ${error}` : error);
    return false;
  }

  /** EXEC and DISCARD inside MULTI always run: the transaction must be able to end. */
  private endsTransaction(name: string): boolean {
    return this.txn.inMulti && (name === "exec" || name === "discard");
  }

  private stopTracking(): void {
    if (this.tracking === null) return;
    this.ctx.tracking.disable(this.id, this.tracking);
    this.tracking = null;
  }

  markAuthenticated(): void {
    this.authenticated = true;
    this.parser.authenticated = true;
    if (this.upstreamIdentity !== null) {
      // Logged in as a proxy user now: the server user's connections go.
      this.dropIdentity();
      this.userName = "default";
      this.plain = this.aclUser === null;
    }
  }

  /** Queues a last reply; the connection closes once it and every earlier one are written. */
  replyAndClose(data: Buffer): void {
    const slot = this.newSlot();
    slot.closeAfter = true;
    this.ending = true;
    this.replies.appendNow(data, slot);
  }

  private release(): void {
    this.txn.abandon();
    this.upstreamIdentity?.end();
    this.blocking?.destroy();
    this.blocking = null;
    this.paused?.destroy();
    this.paused = null;
    for (const monitor of this.monitors.splice(0)) monitor.destroy();
    this.script?.destroy();
    this.script = null;
    this.scriptsRunning = 0;
    this.pubsub.drop();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ctx.clients.remove(this);
    this.stopTracking();
    this.release();
    this.out.discard();
    this.replies.close();
    this.socket.destroy();
  }
}
