import { decodeReply, isErrorReply } from "../resp/decode.js";
import { encodeCommand, encodeError, encodeValue, NULL_ARRAY, OK, RESP3_NULL } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import {
  dbFor,
  isBlocking,
  isClassicPubSub,
  isScript,
  PUBSUB_HOME_SLOT,
  SUBSCRIBE_FAMILY,
} from "../routing/command-kinds.js";
import { CROSS_SLOT, CROSSSLOT_ERROR, NO_KEYS } from "../routing/router.js";
import { ANY_DB, CONNECTION_LOST, DISCARD, selectCommand, UNKNOWN_DB, type Lease } from "../routing/lease.js";
import { RawSink } from "../routing/shards.js";
import type { ProxyContext } from "./context.js";
import type { Holds } from "./holds.js";
import { isGearsCommandAlone } from "../gears/commands.js";
import { isTfCall, QUEUED, TfMultiTail } from "../gears/tf/tf-multi.js";
import type { ReplySlot } from "./reply-slot.js";
import { RespError, type Protocol } from "../resp/values.js";
import { randomBytes } from "node:crypto";
import { countAfter } from "./subscription-frames.js";
import type { ClientUser } from "./client-user.js";
import { ReplyScanner } from "../resp/reply-scanner.js";
import { answeredAtExec, standIn, type LocalInMulti } from "./local-in-multi.js";

/** What a transaction needs from the client session that owns it. */
export interface TransactionHost {
  readonly id: number;
  db: number;
  readonly proto: Protocol;
  readonly ctx: ProxyContext;
  /** Replies the client's next commands wait for (EXEC with a TFCALL). */
  readonly holds: Holds;
  upstreamSlot(): ReplySlot;
  replyError(message: string): void;
  /** False when the request must wait for replies in flight (it will be run again). */
  enterPinnedLane(request: Request): boolean;
  /** A TFCALL queued in MULTI, run at EXEC: its reply. */
  tfCallInMulti(argv: Buffer[]): Promise<Buffer>;
  /** The client has subscriptions (its own connection for them). */
  readonly isPubSub: boolean;
  /** Its user's rules as they are now, for EXEC's second look at what was queued. */
  readonly user: Pick<ClientUser, "rulesVersion" | "execDenial">;
  /** EXEC left `lease` subscribed to `count` channels and patterns, confirmed in `frames`: the client's subscriptions now. */
  subscribedBy(lease: Lease, count: number, frames: readonly Buffer[]): void;
  /** A CLIENT, AUTH or HELLO queued in MULTI, run as EXEC runs it (local-in-multi.ts): its reply. */
  runAtExec(request: Request): Promise<{ reply: Buffer; close: boolean }>;
}

/** A command of a transaction that the other masters were to complete, its master gone by then. */
const BESIDE_LOST = "ERR the transaction's master changed before the other masters ran this command";

/** Commands Redis answers at once inside MULTI, with an error, without queuing them. */
const NOT_QUEUED = new Set(["multi", "watch"]);

/**
 * Commands a queued transaction cannot carry: MONITOR, and the CLIENT subcommands that are
 * neither the server's (PAUSE, UNPAUSE) nor answered at EXEC (answeredAtExec: CLIENT REPLY).
 */
const NOT_IN_MULTI = new Set(["client", "monitor"]);

/** A PING only the proxy sends behind an EXEC that (un)subscribes: where its frames end. */
const EXEC_END_TEXT = `gears-proxy:exec-end:${randomBytes(8).toString("hex")}`;
const EXEC_END_PING = encodeCommand(["PING", EXEC_END_TEXT]);
/** Its pong on a connection left subscribed (RESP2), or on any other. */
const EXEC_END_PONGS = [
  encodeValue([Buffer.from("pong"), Buffer.from(EXEC_END_TEXT)]),
  encodeValue(Buffer.from(EXEC_END_TEXT)),
];

/**
 * CLIENT PAUSE and UNPAUSE act on the server, not on the client's state: queued with the
 * transaction, the pause starts when EXEC ends, as in Redis (on the transaction's node).
 */
function pausesServer(name: string, argv: readonly Buffer[]): boolean {
  if (name !== "client" || argv.length < 2) return false;
  const sub = argv[1].toString().toLowerCase();
  return sub === "pause" || sub === "unpause";
}

/**
 * MULTI/EXEC and WATCH for one client, on an upstream connection lent to it alone. In a
 * cluster, every key of the transaction must hash to one slot. MULTI starts on any master;
 * if the first key lives elsewhere, the transaction moves there: the first node's MULTI is
 * discarded, and MULTI with the keyless commands queued so far is replayed on the key's
 * node (the client already has their replies).
 */
export class Transaction {
  private conn: Lease | null = null;
  inMulti = false;
  private watching = false;
  /** A command was refused while queuing: EXEC must abort, as Redis does. */
  private dirty = false;
  /** The slot the transaction's keys hash to (cluster), or NO_KEYS. */
  private slot = NO_KEYS;
  /** MULTI and the keyless commands after it, to replay if the transaction moves to another node. */
  private replay: Buffer[] = [];
  /** A blocking command runs on the pinned connection (WATCH then BLPOP). */
  blocked = false;
  /** The connection died inside MULTI: refuse everything until EXEC or DISCARD ends it. */
  private broken = false;
  /** The connection died while WATCHing: nobody can tell whether the keys changed, so EXEC fails. */
  private watchLost = false;
  /** The keys WATCHed ("db:key"), counted once each as Redis does; meaningful while watching. */
  private readonly watchedKeys = new Set<string>();
  /** Counts MULTIs, so that a late reply to one cannot end a later transaction. */
  private multis = 0;
  /** Commands the client sent inside the transaction since MULTI. */
  private sinceMulti = 0;

  constructor(private readonly host: TransactionHost) {}

  /** How many keys the client WATCHes (CLIENT LIST's `watch`): until EXEC, DISCARD or UNWATCH. */
  get watchCount(): number {
    return this.watching || this.watchLost ? this.watchedKeys.size : 0;
  }

  /** The database a command queued now runs in: the last SELECT queued before it, or the client's. */
  private get queuingDb(): number {
    return this.selects.length > 0 ? this.selects[this.selects.length - 1][1] : this.host.db;
  }

  /**
   * Whether a command queued now is to be completed after EXEC (Router.completedAfterExec) in
   * any database it may run in: a SELECT queued before it may fail at EXEC (an index out of
   * range, known to the server only), leaving it in the database before. runBeside decides
   * once EXEC's reply tells which SELECTs ran.
   */
  private completedInSomeDb(name: string, argv: readonly Buffer[]): boolean {
    const router = this.host.ctx.router;
    if (router.completedAfterExec(name, argv, this.host.db)) return true;
    return this.selects.some(([, db]) => router.completedAfterExec(name, argv, db));
  }

  /**
   * CLIENT LIST's `multi`: the commands queued since MULTI, as Redis counts them
   * (countQueued); while EXEC's CLIENT commands run (runLocals), those EXEC ran, as Redis
   * shows them during EXEC; -1 outside a transaction.
   */
  get queuedCommands(): number {
    return this.inMulti ? this.shownQueued : this.execRunning;
  }

  /** CLIENT LIST's `x` flag: inside MULTI, or while EXEC runs the transaction's CLIENT commands. */
  get flaggedMulti(): boolean {
    return this.inMulti || this.execRunning >= 0;
  }

  /** How many commands the EXEC whose CLIENT, AUTH and HELLO are running queued; -1 otherwise. */
  private execRunning = -1;

  private shownQueued = 0;
  /** The server refused a command queued since MULTI: Redis counts none after it. */
  private serverRefused = false;

  /** True while the client holds a dedicated connection or is inside MULTI. */
  get active(): boolean {
    return this.conn !== null || this.inMulti;
  }

  get pinnedConnection(): Lease | null {
    return this.conn;
  }

  /** The slot of argv's keys, NO_KEYS, or CROSS_SLOT (always NO_KEYS in front of one server). */
  private slotOf(name: string, argv: readonly Buffer[]): number {
    const router = this.host.ctx.router;
    return router.topology.mode === "cluster" ? router.slotOf(name, argv) : NO_KEYS;
  }

  /** Whether a command outside MULTI belongs on the pinned connection (same node's slot). */
  owns(name: string, request: Request): boolean {
    if (this.conn === null) return this.watchLost && name === "unwatch";
    // DBSIZE, KEYS, SCAN, FLUSHALL... go to every master, not just the watched slot's.
    if (this.host.ctx.router.fansOut(name)) return false;
    const slot = this.slotOf(name, request.argv);
    return slot === NO_KEYS || slot === this.slot || this.slot === NO_KEYS;
  }

  multi(request: Request): void {
    if (this.conn === null && !this.host.enterPinnedLane(request)) return;
    const slot = this.host.upstreamSlot();
    if (this.conn === null && !this.pin(NO_KEYS)) {
      slot.fail(this.pinFailure);
      return;
    }
    this.followProto();
    this.inMulti = true;
    this.clearQueue();
    this.rulesAt = this.host.user.rulesVersion;
    const multi = ++this.multis;
    slot.onReply = (data) => {
      if (isErrorReply(data) && multi === this.multis && this.inMulti) this.multiRefused();
    };
    const payload = request.raw ?? encodeCommand(request.argv);
    const cluster = this.host.ctx.router.topology.mode === "cluster";
    this.replay = cluster ? [payload] : [];
    const conn = this.conn!;
    const db = this.host.db;
    if (cluster || conn.db === db) return conn.send(payload, slot, db);
    // A SELECT in front of MULTI is refused while a script keeps the server busy, which
    // still accepts MULTI: the SELECT goes inside the transaction instead, where its QUEUED
    // and its element of EXEC's reply are the proxy's own (end strips it).
    conn.send(payload, slot, ANY_DB);
    conn.send(
      selectCommand(db),
      { reply: (data) => this.hiddenSelectAnswered(conn, data), fail() {} },
      ANY_DB,
    );
    conn.noteDb(db);
    this.hiddenSelect = true;
  }

  /** MULTI's own SELECT: QUEUED; or, MULTI refused, run (OK) or refused (the database is in doubt). */
  private hiddenSelectAnswered(conn: Lease, data: Buffer): void {
    if (isErrorReply(data)) conn.noteDb(UNKNOWN_DB);
  }

  /** Forgets what the transaction queued so far (MULTI starts one, or was refused). */
  private clearQueue(): void {
    this.dirty = false;
    this.hiddenSelect = false;
    this.sinceMulti = 0;
    this.queued = 0;
    this.shownQueued = 0;
    this.serverRefused = false;
    this.selects = [];
    settleWrites(null, this.writes, this.host.proto);
    this.writes = [];
    this.pauses = [];
    this.slowlogReset = null;
    this.tfTail = null;
    this.subscribing = false;
    this.replay = [];
    this.queuedArgv = [];
    this.scripts = [];
    this.spanning = [];
    this.locals = [];
  }

  /**
   * MULTI was answered with an error: as in Redis, the client is outside any transaction
   * (a WATCH stays). Lost with its connection after the client went on inside the
   * transaction, though, it breaks instead (connectionLost): the client has not seen the
   * error yet, and the commands it sends next are meant for the transaction, not to run alone.
   */
  private multiRefused(): void {
    if (this.sinceMulti > 0 && this.conn?.closed === true) return;
    // MULTI's own SELECT then runs alone, answered after this: whether the connection
    // changed database is not known in time for another client, so it is not lent again.
    const doubt = this.hiddenSelect;
    this.inMulti = false;
    this.clearQueue();
    this.finish(doubt);
  }

  watch(request: Request): void {
    const slot = this.slotOf("watch", request.argv);
    if (slot === CROSS_SLOT || (slot >= 0 && this.slot >= 0 && slot !== this.slot)) {
      this.host.replyError(CROSSSLOT_ERROR);
      return;
    }
    if (this.conn === null) {
      if (!this.host.enterPinnedLane(request)) return;
      if (!this.pin(slot)) {
        this.host.replyError(this.pinFailure);
        return;
      }
    }
    if (slot >= 0) this.slot = slot;
    if (!this.watching && !this.watchLost) this.watchedKeys.clear();
    const db = this.host.db;
    for (let i = 1; i < request.argv.length; i++)
      this.watchedKeys.add(`${db}:${request.argv[i].toString("latin1")}`);
    this.watching = true;
    this.followProto();
    this.conn!.send(request.raw ?? encodeCommand(request.argv), this.host.upstreamSlot(), this.host.db);
  }

  /**
   * The protocol the pinned connection speaks when it differs from the lease's own: the
   * client sent HELLO while WATCHing, or EXEC ran a HELLO (runLocals). Null when unchanged.
   */
  private switchedProto: Protocol | null = null;

  /**
   * Before a command goes down the pinned connection: a client that switched protocol since
   * the pin gets its replies in the new one, as from Redis, so the connection switches too
   * (a hidden HELLO, its reply dropped), and back when it is given back (restoreProto).
   */
  private followProto(): void {
    const conn = this.conn;
    if (conn === null) return;
    const speaks = this.switchedProto ?? conn.proto;
    if (speaks === this.host.proto) return;
    this.switchedProto = this.host.proto;
    conn.send(encodeCommand(["HELLO", String(this.host.proto)]), DISCARD, ANY_DB);
  }

  /** A command while WATCHing (not in MULTI): on the pinned connection. */
  send(name: string, request: Request): void {
    const slot = this.host.upstreamSlot();
    this.followProto();
    if (name === "unwatch") this.watchLost = false;
    if (this.conn === null) {
      // UNWATCH of a watch lost with its connection (owns): nothing is left to undo upstream.
      slot.reply(OK);
      return;
    }
    // EXEC or DISCARD without MULTI is an error that leaves the watch in place, as in Redis.
    if (name === "unwatch") {
      this.watching = false;
      slot.onReply = () => this.finish(false);
    } else if (isBlocking(name, request.argv)) {
      this.blocked = true;
      slot.onReply = () => {
        this.blocked = false;
      };
    }
    // A write while WATCHing reaches the write journal (router.tap) as a shared one does.
    const tap = this.host.ctx.router.tap;
    const sink = tap === null ? slot : tap(name, request.argv, slot, this.host.db);
    this.conn!.send(
      request.raw ?? encodeCommand(request.argv),
      sink,
      dbFor(name, this.host.db, this.host.ctx.router.monitors > 0),
    );
  }

  /** A command refused before it was queued (NOPERM): EXEC then aborts, as Redis flags the transaction. */
  refuse(message: string): void {
    this.sinceMulti++;
    this.dirty = true;
    this.host.replyError(message);
  }

  /** EXEC itself refused (its arity, the user's rules): the transaction is discarded, with `reason`. */
  abortExec(reason: string, request: Request): void {
    this.sinceMulti++;
    this.dirty = true;
    this.abortReason = reason;
    this.end("exec", request);
  }

  /** Why EXEC was refused, for EXECABORT's text (abortExec). */
  private abortReason: string | null = null;

  /** A command inside MULTI: queued on the server (or here, until a key picks the node). */
  queueCommand(name: string, request: Request): void {
    this.sinceMulti++;
    if (this.broken) {
      this.refuseBroken(name);
      return;
    }
    const local = answeredAtExec(name, request.argv);
    if (
      (NOT_IN_MULTI.has(name) && !pausesServer(name, request.argv) && !local) ||
      // Answered at EXEC in EXEC's reply: not among TFCALLs run after it, nor subscriptions' frames.
      (local && (this.tfTail !== null || this.subscribing)) ||
      // A CONFIG that names the server's settings too is queued there (without T&F's).
      (isGearsCommandAlone(name, request.argv.slice(1)) && !isTfCall(name)) ||
      // Subscriptions EXEC makes become the client's own (execSubscribing), unless it has a
      // connection for them already, or TFCALLs run after EXEC.
      (SUBSCRIBE_FAMILY.has(name) &&
        (this.host.isPubSub || this.tfTail !== null || this.locals.length > 0)) ||
      (this.subscribing && isTfCall(name))
    ) {
      this.dirty = true;
      this.host.replyError(`ERR '${name}' is not allowed inside a transaction by gears-proxy`);
      return;
    }
    if (name === "exec" || name === "discard") {
      this.end(name, request);
      return;
    }
    const keySlot = this.slotOf(name, request.argv);
    if (keySlot === CROSS_SLOT || (keySlot >= 0 && this.slot >= 0 && keySlot !== this.slot)) {
      this.dirty = true;
      this.host.replyError(CROSSSLOT_ERROR);
      return;
    }
    const tf = this.tfTail !== null || isTfCall(name);
    const standin = local ? standIn(request) : null;
    const payload = standin !== null ? standin.payload : (request.raw ?? encodeCommand(request.argv));
    if (standin !== null) this.locals.push([this.queued, standin.entry]);
    // Its position is the one noteQueued gives it next.
    if (!tf && this.completedInSomeDb(name, request.argv)) this.spanning.push([this.queued, request.argv]);
    // From the first TFCALL on, commands run by the proxy after EXEC (tf-multi.ts): Redis's
    // transaction, and what the proxy follows of it, ends before them.
    if (!tf && !NOT_QUEUED.has(name)) this.noteQueued(name, request.argv);
    if (name.startsWith("eval") || name === "script") this.scripts.push([name, request.argv]);
    if (SUBSCRIBE_FAMILY.has(name)) this.subscribing = true;
    if (keySlot >= 0 && this.slot === NO_KEYS) {
      this.slot = keySlot;
      if (!this.moveTo(keySlot)) {
        this.host.upstreamSlot().fail(this.pinFailure);
        return;
      }
    }
    if (tf) {
      (this.tfTail ??= new TfMultiTail()).push(request.argv);
      if (!this.dirty) this.shownQueued++;
      this.host.upstreamSlot().reply(QUEUED);
      return;
    }
    const cluster = this.host.ctx.router.topology.mode === "cluster";
    // Channel pub/sub, or a script without keys (which may PUBLISH), in a transaction without
    // keys (yet): on the master every client's goes to (router.ts routingSlot), which a later
    // key may still move it from.
    if (
      cluster &&
      keySlot === NO_KEYS &&
      this.slot === NO_KEYS &&
      (isClassicPubSub(name) || isScript(name))
    ) {
      if (!this.moveTo(PUBSUB_HOME_SLOT)) {
        this.host.upstreamSlot().fail(this.pinFailure);
        return;
      }
    }
    if (cluster && keySlot === NO_KEYS && this.slot === NO_KEYS) this.replay.push(payload);
    const slot = this.host.upstreamSlot();
    const multi = this.multis;
    slot.onReply = (data) => this.countQueued(data, multi);
    this.conn!.send(payload, slot, dbFor(name, this.host.db, this.host.ctx.router.monitors > 0));
  }

  /**
   * CLIENT LIST's `multi`: the commands the server queued, as Redis counts them (multi.c
   * queueMultiCommand): none more once one was refused, by the server or here (`dirty`).
   */
  private countQueued(reply: Buffer, multi: number): void {
    if (multi !== this.multis || !this.inMulti) return;
    if (isErrorReply(reply)) this.serverRefused = true;
    else if (!this.dirty && !this.serverRefused && QUEUED.equals(reply)) this.shownQueued++;
  }

  /** Moves an open transaction to the node of `slot`, replaying what it queued so far. */
  private moveTo(slot: number): boolean {
    const old = this.conn!;
    if (this.host.ctx.leases.nodeIdForSlot(slot, this.host.id) === old.nodeId) return true;
    old.onLost(null);
    old.send(encodeCommand(["DISCARD"]), DISCARD);
    this.restoreProto(old);
    old.release();
    this.conn = null;
    if (!this.pin(slot)) {
      this.finish(true);
      return false;
    }
    for (const payload of this.replay) this.conn!.send(payload, DISCARD, this.host.db);
    return true;
  }

  /** What EXEC's reply will settle for the command queued now: SELECT, CLIENT PAUSE, SLOWLOG RESET, journaled writes. */
  private noteQueued(name: string, argv: Buffer[]): void {
    if (name === "select") {
      const db = Number(argv[1]?.toString() ?? "x");
      if (Number.isSafeInteger(db)) this.selects.push([this.queued, db]);
    } else if (pausesServer(name, argv)) this.pauses.push([this.queued, argv]);
    else if (name === "slowlog" && argv[1]?.toString().toLowerCase() === "reset")
      this.slowlogReset = this.queued;
    const outcome = this.host.ctx.router.queuedTap?.(name, argv, this.queuingDb) ?? null;
    if (outcome !== null) this.writes.push([this.queued, outcome]);
    // Kept for EXEC's second look, needed only where the proxy checks ACL rules itself.
    if (this.host.ctx.acl !== null) this.queuedArgv.push(argv);
    this.queued++;
  }

  private end(name: string, request: Request): void {
    // Redis tells a queuing error first, then a touched watched key (here: a lost watch).
    const unwatched = name === "exec" && !this.dirty && this.watchLost;
    const refused = name === "exec" && !this.dirty && !unwatched ? this.refusedAtExec() : null;
    // Without the watch, the TFCALLs or the subscriptions, the commands still allowed run
    // again in a new MULTI; with them, nothing runs (see refusedAtExec).
    const partial =
      refused !== null &&
      !this.watching &&
      this.tfTail === null &&
      !this.subscribing &&
      this.locals.length === 0;
    let abortText: string | null = null;
    if (name === "exec" && this.dirty)
      abortText = `EXECABORT Transaction discarded because of${this.abortReason === null ? " previous errors." : `: ${this.abortReason}`}`;
    else if (refused !== null && !partial)
      abortText = `EXECABORT Transaction discarded because of: ${refused.values().next().value as string}`;
    this.abortReason = null;
    const abort = abortText !== null;
    const runs = name === "exec" && !abort && !unwatched;
    const queuedCount = this.queuedArgv.length;
    const slot = this.host.upstreamSlot();
    this.inMulti = false;
    this.watching = false;
    this.watchLost = false;
    this.dirty = false;
    const selects = runs ? this.selects : [];
    const pauses = runs ? this.pauses : [];
    const writes = this.writes;
    this.writes = [];
    const conn = this.conn!;
    const proto = this.host.proto;
    const tail = runs ? this.tfTail : null;
    const scripts = runs ? this.scripts : [];
    this.scripts = [];
    const spanning = runs && !partial && !this.subscribing ? this.spanning : [];
    const queuedSelects = this.selects;
    this.spanning = [];
    const locals = runs ? this.locals : [];
    this.locals = [];
    const later = tail !== null || spanning.length > 0 || locals.length > 0;
    const hidden = this.hiddenSelect;
    this.hiddenSelect = false;
    const db = this.host.db;
    /** EXEC's reply without the element of MULTI's own SELECT; after it ran, the connection is in `db`. */
    const unhide = (data: Buffer): Buffer => {
      const shown = withoutFirstOk(data);
      if (shown !== data && conn.db === UNKNOWN_DB) conn.noteDb(db);
      return shown;
    };
    slot.onReply = (data) => {
      if (partial) data = withRefusals(data, refused!, hidden, queuedCount);
      if (hidden && !later) data = unhide(data);
      if (selects.length > 0 || pauses.length > 0) this.applyEffects(data, selects, pauses, conn);
      if (writes.length > 0) settleWrites(runs ? data : null, writes, proto);
      if (scripts.length > 0 && !unwatched && data[0] === 42 /* * */ && data[1] !== 45 /* -1 */)
        for (const [name, argv] of scripts) this.host.ctx.router.noteScript(name, argv);
      this.finish(false);
      if (abortText !== null) return encodeError(abortText);
      // As Redis answers an EXEC whose watched key changed; an error (connection lost) as it is.
      if (unwatched && !isErrorReply(data)) return proto === 3 ? RESP3_NULL : NULL_ARRAY;
      return data;
    };
    // Reset as EXEC leaves, not when it is answered: a command it unblocks (BLPOP) may be
    // answered, and logged, first.
    // Not when EXEC's second look refuses it (the others run).
    if (runs && this.slowlogReset !== null && refused?.has(this.slowlogReset) !== true)
      this.host.ctx.slowlog.reset();
    this.slowlogReset = null;
    const sent = name === "exec" && !runs ? "discard" : name;
    // Whether EXEC runs MULTI's own SELECT is known from its reply only: until then (and
    // for good after a DISCARD) a command pipelined behind it selects its database again.
    // Not behind the client's own SELECT in the transaction, which it is to run after.
    if (hidden && (sent !== "exec" || this.selects.length === 0)) conn.noteDb(UNKNOWN_DB);
    const payload = sent === name ? (request.raw ?? encodeCommand(request.argv)) : encodeCommand(["DISCARD"]);
    this.tfTail = null;
    const subscribing = this.subscribing;
    this.subscribing = false;
    if (runs && subscribing) return this.execSubscribing(conn, payload, slot, hidden ? ANY_DB : this.host.db);
    if (later) {
      // The other masters' part of FLUSHALL, DBSIZE... (runBeside), the TFCALLs and what
      // followed them (tf-multi.ts) run once Redis ran the transaction; the client's next
      // commands wait for all of it, on the same connection after it.
      const release = this.host.holds.take();
      const head = new RawSink(true);
      conn.send(payload, head, hidden ? ANY_DB : this.host.db);
      const send = (p: Buffer): Promise<Buffer> => {
        const r = new RawSink(true);
        conn.send(p, r, this.host.db);
        return r.promise;
      };
      const nodeId = conn.nodeId;
      void head.promise
        .then((h) => this.runBeside(hidden ? unhide(h) : h, spanning, nodeId, db, queuedSelects))
        .then((h) => (locals.length === 0 ? h : this.runLocals(h, locals, slot)))
        .then((h) =>
          tail === null
            ? h
            : tail.run(h, {
                tfCall: (argv) => this.host.tfCallInMulti(argv),
                send,
                complete: (argv, reply) =>
                  this.host.ctx.router.completedAfterExec(
                    argv[0].toString().toLowerCase(),
                    argv,
                    this.host.db,
                  )
                    ? this.completed(reply, argv, nodeId)
                    : reply,
                // The write journal follows these writes as it follows forwarded ones (router.tap).
                watch: (name, argv) => this.host.ctx.router.queuedTap?.(name, argv, this.host.db) ?? null,
              }),
        )
        .catch((e: unknown) => encodeError(`ERR ${e instanceof Error ? e.message : String(e)}`))
        .then((data) => {
          release();
          slot.reply(data);
        });
      return;
    }
    if (partial) return this.execAllowed(conn, refused!, hidden, slot);
    conn.send(payload, slot, hidden ? ANY_DB : dbFor(sent, this.host.db, this.host.ctx.router.monitors > 0));
  }

  /**
   * EXEC's reply with each CLIENT, AUTH and HELLO's stand-in (local-in-multi.ts) replaced by
   * the command's reply, run now, in order. After a HELLO that switched the client's
   * protocol: the server wrote the replies after it in the new one when its stand-in was that
   * HELLO; when it was a PING (HELLO with AUTH), they are re-encoded here (a RESP2 reply
   * re-encoded in RESP3 keeps RESP2's types: an array where Redis would send a map).
   */
  private async runLocals(exec: Buffer, locals: [number, LocalInMulti][], slot: ReplySlot): Promise<Buffer> {
    if (exec[0] !== 42 /* * */) return exec;
    const eol = exec.indexOf(10);
    const count = Number(exec.toString("latin1", 1, eol - 1));
    if (!(count > 0)) return exec;
    const scanner = new ReplyScanner();
    scanner.push(exec.subarray(eol + 1));
    const elements: Buffer[] = [];
    for (let i = 0; i < count; i++) elements.push(scanner.next()!);
    const byPosition = new Map(locals);
    let convertTo: Protocol | null = null;
    this.execRunning = count;
    try {
      for (let at = 0; at < count; at++) {
        const local = byPosition.get(at);
        if (local === undefined) {
          if (convertTo !== null) elements[at] = encodeValue(decodeReply(elements[at]), convertTo);
          continue;
        }
        const before = this.host.proto;
        const ran = await this.host.runAtExec(local.request);
        if (ran.close) slot.closeAfter = true;
        if (local.switchesTo !== null && !isErrorReply(elements[at])) {
          // The server switched with it: the transaction's connection speaks that protocol now.
          this.switchedProto = local.switchesTo;
          convertTo = this.host.proto === local.switchesTo ? null : this.host.proto;
        } else if (this.host.proto !== before) convertTo = this.host.proto;
        elements[at] = ran.reply;
      }
    } finally {
      this.execRunning = -1;
    }
    return Buffer.concat([exec.subarray(0, eol + 1), ...elements]);
  }

  /**
   * EXEC's reply with each `spanning` command's element merged with the same command's
   * replies from the masters other than `nodeId` (run there now, one command after the other,
   * in the transaction's order). A reply that is not an array (EXECABORT, a WATCH that failed)
   * as it is, and an element that is an error too.
   */
  private async runBeside(
    exec: Buffer,
    spanning: [number, Buffer[]][],
    nodeId: string,
    db: number,
    selects: readonly [number, number][],
  ): Promise<Buffer> {
    if (spanning.length === 0 || exec[0] !== 42 /* * */) return exec;
    const eol = exec.indexOf(10);
    const count = Number(exec.subarray(1, eol - 1).toString());
    const scanner = new ReplyScanner();
    scanner.push(exec.subarray(eol + 1));
    const elements: Buffer[] = [];
    for (let i = 0; i < count; i++) elements.push(scanner.next()!);
    const router = this.host.ctx.router;
    for (const [at, argv] of spanning) {
      // The database it ran in: that of the last SELECT before it that EXEC ran (OK).
      let ranIn = db;
      for (const [pos, selected] of selects)
        if (pos < at && elements[pos]?.equals(OK) === true) ranIn = selected;
      if (!router.completedAfterExec(argv[0].toString().toLowerCase(), argv, ranIn)) continue;
      const part = elements[at];
      if (part !== undefined) elements[at] = await this.completed(part, argv, nodeId);
    }
    return Buffer.concat([exec.subarray(0, eol + 1), ...elements]);
  }

  /** One command's reply `part` from the master `nodeId`, completed as runBeside says. */
  private completed(part: Buffer, argv: Buffer[], nodeId: string): Promise<Buffer> | Buffer {
    if (isErrorReply(part)) return part;
    const merged = new RawSink(true);
    // The master is no longer one (a failover since): the others' part cannot be told apart
    // from a repeat on the new master, so the command says it did not complete.
    if (!this.host.ctx.router.runBeside(nodeId, part, argv, merged, this.host.id, this.host.proto))
      return encodeError(BESIDE_LOST);
    return merged.promise;
  }

  /**
   * After the user's rules changed, Redis checks each queued command again as EXEC runs it,
   * and answers the refused ones with an error in their place. The server has them queued
   * already and cannot skip one: the error for each refused command, by position, or null
   * when all are still allowed. Only a partial transaction without WATCH can be queued
   * again (DISCARD drops the watch, and whether a watched key was touched with it); with
   * one, or with TFCALLs or subscriptions after it, the proxy runs none of it (EXECABORT).
   */
  private refusedAtExec(): Map<number, string> | null {
    if (this.host.ctx.acl === null || this.host.user.rulesVersion === this.rulesAt) return null;
    let refused: Map<number, string> | null = null;
    const queued = this.tfTail === null ? this.queuedArgv : [...this.queuedArgv, ...this.tfTail.commands];
    queued.forEach((argv, at) => {
      const error = this.host.user.execDenial(argv[0].toString().toLowerCase(), argv);
      if (error !== null) (refused ??= new Map()).set(at, error);
    });
    return refused;
  }

  /** EXEC of what is still allowed: the server's queue dropped and filled again without the refused commands. */
  private execAllowed(conn: Lease, refused: Map<number, string>, hidden: boolean, slot: ReplySlot): void {
    conn.send(encodeCommand(["DISCARD"]), DISCARD, ANY_DB);
    conn.send(encodeCommand(["MULTI"]), DISCARD, ANY_DB);
    if (hidden) conn.send(selectCommand(this.host.db), DISCARD, ANY_DB);
    this.queuedArgv.forEach((argv, at) => {
      if (!refused.has(at)) conn.send(encodeCommand(argv), DISCARD, ANY_DB);
    });
    conn.send(encodeCommand(["EXEC"]), slot, ANY_DB);
  }

  /**
   * EXEC of a transaction that (un)subscribes. Redis writes each confirmation as a frame of
   * its own, more frames than its reply counts elements, and the connection stays
   * subscribed. A PING behind EXEC marks where its frames end: they are EXEC's reply, as
   * the client would read them from Redis, and the connection becomes the client's
   * subscription connection. The client's next command waits for them, as it may be one
   * that subscriber mode refuses.
   */
  private execSubscribing(conn: Lease, payload: Buffer, slot: ReplySlot, db: number): void {
    const release = this.host.holds.take();
    const frames: Buffer[] = [];
    let settled = false;
    const settle = (failure: string | null): void => {
      if (settled) return;
      settled = true;
      conn.onPush(null);
      const count = failure === null ? countAfter(frames) : null;
      if (count !== null && count > 0) {
        conn.onLost(null);
        this.conn = null;
        this.host.subscribedBy(conn, count, frames);
      } else conn.onLost(() => this.connectionLost());
      release();
      if (frames.length > 0) slot.reply(Buffer.concat(frames));
      else slot.fail(failure ?? CONNECTION_LOST);
    };
    conn.onPush((frame) => {
      if (EXEC_END_PONGS.some((pong) => pong.equals(frame))) settle(null);
      else frames.push(frame);
    });
    conn.onLost(() => {
      settle(CONNECTION_LOST);
      this.connectionLost();
    });
    conn.send(payload, { reply: (data) => frames.push(data), fail: (message) => settle(message) }, db);
    conn.sendUnmatched(EXEC_END_PING);
  }

  /** The transaction queued a command of the SUBSCRIBE family. */
  private subscribing = false;

  /** MULTI went without a SELECT in front, with its own SELECT queued first inside (see multi). */
  private hiddenSelect = false;

  /** The transaction from its first TFCALL on, queued here (tf-multi.ts). */
  private tfTail: TfMultiTail | null = null;
  /**
   * EVAL and SCRIPT commands queued: the router notes their scripts once EXEC ran them (an
   * EXEC that a WATCH or an error stopped leaves no script behind in Redis either).
   */
  private scripts: [name: string, argv: Buffer[]][] = [];
  /**
   * Commands queued that answer otherwise outside a transaction (Router.completedAfterExec:
   * FLUSHALL or DBSIZE in front of a cluster, KEYS in database 0...), by position: EXEC runs
   * them on the transaction's master, then runBeside completes their element.
   */
  private spanning: [number, Buffer[]][] = [];
  /** CLIENT, AUTH and HELLO queued as stand-ins, by position: runLocals answers them at EXEC. */
  private locals: [number, LocalInMulti][] = [];

  /** Commands queued since MULTI, and the SELECTs among them: [position, database]. */
  private queued = 0;
  /** Every command queued on the server, when the proxy checks ACL rules (refusedAtExec). */
  private queuedArgv: (readonly Buffer[])[] = [];
  /** The user's rulesVersion when MULTI ran. */
  private rulesAt = 0;
  /** The queued writes the write journal follows: [position, what to tell of its outcome]. */
  private writes: [number, (reply: Buffer | null) => void][] = [];
  private selects: [number, number][] = [];
  /** Where a SLOWLOG RESET is queued (its position), or null. */
  private slowlogReset: number | null = null;
  /** The CLIENT PAUSE/UNPAUSE commands queued: [position, argv]. */
  private pauses: [number, readonly Buffer[]][] = [];

  /**
   * A SELECT inside MULTI changes the client's database when EXEC runs it: the last one
   * that the server answered OK in EXEC's reply wins, on the connection and for the client.
   */
  private applyEffects(
    exec: Buffer,
    selects: [number, number][],
    pauses: [number, readonly Buffer[]][],
    conn: Lease,
  ): void {
    const replies = decodeReply(exec);
    if (!Array.isArray(replies)) return;
    // A pause queued in the transaction starts when EXEC ends, as in Redis.
    for (const [at, argv] of pauses) if (replies[at] === "OK") this.host.ctx.leases.pause.note(argv);
    for (const [at, db] of selects) {
      if (replies[at] !== "OK") continue;
      this.host.db = db;
      conn.noteDb(db);
    }
  }

  private pinFailure = "";

  /** Borrows a connection to the node of `slot` (any master for NO_KEYS). */
  private pin(slot: number): boolean {
    const lease = this.host.ctx.leases.forSlot(slot, this.host.id, this.host.proto, this.host.db);
    if (typeof lease === "string") {
      this.pinFailure = lease;
      return false;
    }
    this.conn = lease;
    lease.onLost(() => this.connectionLost());
    return true;
  }

  /**
   * The pinned connection died. Inside MULTI the transaction is gone, but the client does
   * not know yet: keep refusing its commands until its EXEC or DISCARD, so none of them
   * runs outside the transaction it meant.
   */
  private connectionLost(): void {
    const inMulti = this.inMulti;
    if (this.watching) this.watchLost = true;
    this.finish(true);
    if (inMulti) {
      this.inMulti = true;
      this.broken = true;
    }
  }

  private refuseBroken(name: string): void {
    if (name === "exec" || name === "discard") {
      this.broken = false;
      this.inMulti = false;
      this.watchLost = false;
      this.host.replyError(
        name === "exec"
          ? "EXECABORT Transaction discarded because the upstream connection was lost."
          : "ERR transaction discarded: the upstream connection was lost",
      );
      return;
    }
    this.host.replyError("ERR transaction aborted: the upstream connection was lost; send EXEC or DISCARD");
  }

  /** The client is leaving or resetting: drop everything. */
  abandon(): void {
    this.broken = false;
    this.watchLost = false;
    this.finish(true);
  }

  /** Gives the connection back once no MULTI or WATCH needs it; `lost`: it died, or the client left. */
  finish(lost: boolean): void {
    if (!lost && (this.inMulti || this.watching)) return;
    settleWrites(null, this.writes, this.host.proto);
    this.writes = [];
    this.replay = [];
    this.tfTail = null;
    this.inMulti = false;
    this.watching = false;
    this.dirty = false;
    this.blocked = false;
    this.slot = NO_KEYS;
    const conn = this.conn;
    this.conn = null;
    if (conn === null) return;
    conn.onLost(null);
    if (lost) {
      this.switchedProto = null;
      conn.destroy();
    } else {
      this.restoreProto(conn);
      conn.release();
    }
  }

  /** A connection going back to the pool speaks its own protocol again (followProto). */
  private restoreProto(conn: Lease): void {
    if (this.switchedProto !== null && this.switchedProto !== conn.proto)
      conn.send(encodeCommand(["HELLO", String(conn.proto)]), DISCARD, ANY_DB);
    this.switchedProto = null;
  }
}

/**
 * Tells the write journal how each followed write of a transaction ended: its element of
 * EXEC's reply, or null for them all when EXEC did not run them (aborted, WATCH failed,
 * connection lost).
 */
function settleWrites(
  exec: Buffer | null,
  writes: [number, (reply: Buffer | null) => void][],
  proto: Protocol,
): void {
  if (writes.length === 0) return;
  const replies = exec === null ? null : decodeReply(exec);
  for (const [at, outcome] of writes) {
    const element = Array.isArray(replies) ? replies[at] : undefined;
    outcome(element === undefined || element instanceof RespError ? null : encodeValue(element, proto));
  }
}

/**
 * EXEC's reply without its first element, the OK of the SELECT the proxy queued first; the
 * reply as it is when that did not run (EXECABORT, a failed WATCH).
 */
function withoutFirstOk(exec: Buffer): Buffer {
  if (exec[0] !== 42 /* * */) return exec;
  const eol = exec.indexOf(10);
  const count = Number(exec.toString("latin1", 1, eol - 1));
  if (!(count > 0) || !exec.subarray(eol + 1, eol + 6).equals(OK)) return exec;
  return Buffer.concat([Buffer.from(`*${count - 1}\r\n`), exec.subarray(eol + 6)]);
}

/**
 * EXEC's reply to the commands still allowed, made the reply to all that were queued: each
 * refused one's error in its place. As it is when EXEC did not run them (EXECABORT).
 */
function withRefusals(exec: Buffer, refused: Map<number, string>, hidden: boolean, queued: number): Buffer {
  if (exec[0] !== 42 /* * */) return exec;
  const eol = exec.indexOf(10);
  const scanner = new ReplyScanner();
  scanner.push(exec.subarray(eol + 1));
  const parts: Buffer[] = [Buffer.from(`*${queued + (hidden ? 1 : 0)}\r\n`)];
  if (hidden) parts.push(scanner.next()!);
  for (let at = 0; at < queued; at++) {
    const error = refused.get(at);
    parts.push(error !== undefined ? encodeError(error) : scanner.next()!);
  }
  return Buffer.concat(parts);
}
