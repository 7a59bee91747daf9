import { keySlot as calculateSlot, keySlotIn } from "./key-slot.js";
import { encodeCommand, encodeError, type Arg } from "../resp/encode.js";
import { DISCARD, PromiseSink, type ReplySink } from "../upstream/reply-sink.js";
import type { Protocol, RespValue } from "../resp/values.js";
import type { Request } from "../resp/request-parser.js";
import type { ClusterTopology } from "../upstream/cluster-topology.js";
import type { UpstreamConnection } from "../upstream/connection.js";
import type { UpstreamNode } from "../upstream/node.js";
import type { Topology } from "../upstream/topology.js";
import type { CommandTable } from "./command-table.js";
import { FAN_OUT, fanOutBeside, isChannelsQuery, spansMasters, type ClusterSender } from "./fan-out.js";
import { channelsWithoutProxy, KEY_LISTING_COMMANDS, scanPageWithoutProxyKeys } from "./hidden-keys.js";
import { isSplittable, split, splitStride, SPLIT_DONE } from "./split.js";
import { ClusterRuns, SPLIT_RUN } from "./cluster-runs.js";
import { RedirectingSink, type RedirectContext, type RedirectEvent } from "./redirect.js";
import { ScriptCache } from "./script-cache.js";
import { OwnPatterns } from "./own-patterns.js";
import { isControl, mayBeControl, sendControl } from "./control.js";
import { dbFor, isBlocking, isClassicPubSub, isScript, PUBSUB_HOME_SLOT } from "./command-kinds.js";
import { readKeys, writtenKeys } from "./tracked-keys.js";
/** What the upstream says it is: client/ (HELLO) reads it through here, as it reaches Redis only through routing/. */
export type { ServerIdentity } from "../upstream/connect.js";

/**
 * The write journal's view of a forwarded command (Router.tap): the sink its reply goes to
 * instead of `sink`, which may watch it. `byFunction`: RouteContext.byFunction.
 */
export type WriteTap = (
  name: string,
  argv: Buffer[],
  sink: ReplySink,
  db: number,
  byFunction?: boolean,
) => ReplySink;

/**
 * Who is asking: the database to run in, which shared connection keeps their order, and
 * the protocol their replies come in (RESP2 when not given).
 */
export interface RouteContext {
  db: number;
  affinity: number;
  proto?: Protocol;
  /**
   * Reads must go to the master even with --read-from-replicas: a client tracking keys
   * learns of changes from the masters, and a lagging replica could hand it a value older
   * than an invalidation it already had (replicas send no invalidation for replicated writes).
   */
  primary?: boolean;
  /**
   * A T&F function's or trigger's `client.call`: the write journal marks the events of its
   * writes, which fire no keyspace trigger (T&F ran them with its triggers muted).
   */
  byFunction?: boolean;
}

/** slotOf() for a command without keys. */
export const NO_KEYS = -1;
/** slotOf() for a command whose keys hash to different slots. */
export const CROSS_SLOT = -2;

export const CROSSSLOT_ERROR = "CROSSSLOT Keys in request don't hash to the same slot";

/**
 * Decides where each command goes and sends it there. Client sessions and the gears
 * engine both reach Redis only through here.
 */
/**
 * In front of one server, a key listing of database 0 (where the proxy keeps its own keys)
 * that its fan-out handler answers without them. Not SCAN, whose cursors the fan-out rewrites
 * (its pages are filtered instead, scanPageWithoutProxyKeys).
 */
function listsProxyKeys(name: string, db: number): boolean {
  return db === 0 && name !== "scan" && KEY_LISTING_COMMANDS.has(name);
}

export class Router implements ClusterSender {
  readonly scripts = new ScriptCache();
  /** The patterns the proxy's own subscriptions hold, by node (PUBSUB NUMPAT leaves them out). */
  readonly ownPatterns = new OwnPatterns();
  private readonly cluster: ClusterTopology | null;
  private readonly redirect: RedirectContext | null;

  constructor(
    readonly topology: Topology,
    private readonly commands: CommandTable | null,
    retryTimeoutMs: number,
    /** Send read-only commands to replicas (--read-from-replicas). */
    private readonly readFromReplicas = false,
  ) {
    this.cluster = topology.mode === "cluster" ? (topology as ClusterTopology) : null;
    this.redirect =
      this.cluster === null
        ? null
        : { topology: this.cluster, scripts: this.scripts, retryTimeoutMs, onRedirect: null };
  }

  /** Counts the MOVED and ASK replies followed for clients (cluster mode only). */
  set onRedirect(count: (event: RedirectEvent) => void) {
    if (this.redirect !== null) this.redirect.onRedirect = count;
  }

  /**
   * Sees the commands forwarded and can watch their replies (shards.ts onWrite); null when unused.
   * It watches writes only: a command that is no write (mayBeServerWrite false) may skip it.
   */
  tap: WriteTap | null = null;
  /** The same for a command queued in MULTI: what to call with its element of EXEC's reply. */
  queuedTap: ((name: string, argv: Buffer[], db: number) => ((reply: Buffer | null) => void) | null) | null =
    null;

  /** Clients of the proxy in MONITOR: commands are then sent in their client's database (dbFor). */
  monitors = 0;

  /** Forwards a client's command (`name` in lower case); the raw reply goes to `sink`. */
  forward(name: string, argv: Buffer[], raw: Buffer | null, sink: ReplySink, ctx: RouteContext): void {
    const proto = ctx.proto ?? 2;
    if (isControl(name, argv)) return sendControl(this.masters(), argv, sink);
    if (this.tap !== null) sink = this.tap(name, argv, sink, ctx.db, ctx.byFunction);
    if (this.cluster === null) {
      // The proxy's own keys (db 0) are left out of key listings there too; not SCAN, whose
      // cursors the fan-out rewrites, so a cursor of the server's own would be refused.
      const hiding = listsProxyKeys(name, ctx.db) ? FAN_OUT.get(name) : undefined;
      if (hiding !== undefined) return hiding(this, argv, sink, ctx.affinity, proto);
      if (ctx.db === 0 && name === "scan") sink = scanPageWithoutProxyKeys(sink, proto);
      if (name === "pubsub" && isChannelsQuery(argv)) sink = channelsWithoutProxy(sink, proto);
      const node = this.topology.nodeForSlot(0);
      node.send(
        ctx.affinity,
        raw ?? encodeCommand(argv),
        sink,
        dbFor(name, ctx.db, this.monitors > 0),
        proto,
      );
      return;
    }
    this.noteScript(name, argv);
    const fanOut = FAN_OUT.get(name);
    if (fanOut !== undefined) return fanOut(this, argv, sink, ctx.affinity, proto);
    let slot: number;
    if (isSplittable(name)) {
      slot = split(this.redirect!, this.cluster, name, argv, sink, ctx.affinity, proto);
      if (slot === SPLIT_DONE) return;
    } else {
      slot = this.routingSlot(name, argv);
      if (slot === CROSS_SLOT) return sink.reply(encodeError(CROSSSLOT_ERROR));
    }
    // Reloaded on NOSCRIPT only when the proxy knew the script as the EVALSHA left: an
    // EVALSHA pipelined ahead of its EVAL meets NOSCRIPT, as on one server.
    const evalsha =
      (name === "evalsha" || name === "evalsha_ro") &&
      argv[1] !== undefined &&
      this.knowsScript(argv[1].toString())
        ? argv[1]
        : null;
    const node =
      this.readFromReplicas && slot >= 0 && ctx.primary !== true && this.isReadOnly(name, argv)
        ? this.cluster.replicaFor(slot, ctx.affinity)
        : this.cluster.route(slot, ctx.affinity);
    if (evalsha !== null && this.scripts.loadOnce(evalsha.toString(), node.id)) {
      const load = encodeCommand(["SCRIPT", "LOAD", this.scripts.body(evalsha.toString())!]);
      node.send(ctx.affinity, load, DISCARD, 0, proto);
    }
    new RedirectingSink(
      this.redirect!,
      raw ?? encodeCommand(argv),
      evalsha,
      sink,
      ctx.affinity,
      slot,
      proto,
    ).send(node);
  }

  /**
   * Whether a command must take forward() even in front of one server, instead of going down a
   * shared connection as raw bytes: control commands, and key listings that hide the proxy's keys.
   */
  needsRouting(name: string, request: { readonly argv: readonly Buffer[] }, db: number): boolean {
    // The name first: a client's request splits its arguments only when they are looked at.
    if (db === 0 && KEY_LISTING_COMMANDS.has(name)) return true;
    if (name === "pubsub") return true;
    return mayBeControl(name) && isControl(name, request.argv);
  }

  /**
   * The connection a client's ordinary commands take in front of one server (null in a
   * cluster, where commands need redirect handling, or while the server is unreachable).
   */
  sharedConnection(affinity: number, proto: Protocol = 2): UpstreamConnection | null {
    return this.cluster === null ? this.topology.nodeForSlot(0).sharedConnection(affinity, proto) : null;
  }

  /** Whether the upstream knows the command `name` (lower case); true while its table is unknown. */
  knowsCommand(name: string): boolean {
    return this.commands === null || this.commands.size === 0 || this.commands.lookup(name, []) !== undefined;
  }

  /**
   * In a cluster, the slot of a client's request that may join its ClusterRuns, or -1 when it
   * takes forward(): its keys (one at a fixed place, or a splittable command's, MSET's or
   * MGET's) are read in place. A splittable command whose keys span slots answers SPLIT_RUN
   * (the runs split it). Fanned-out commands, scripts the cache must see and reads that may
   * go to a replica take forward().
   */
  runSlotOf(name: string, request: Request): number {
    let key = this.runKeys.get(name);
    if (key === undefined) {
      // Names the table does not know are not remembered: clients choose them.
      if (this.commands?.lookup(name, []) === undefined) return -1;
      key = this.runKeyFor(name);
      this.runKeys.set(name, key);
    }
    if (key === null) return -1;
    const argc = request.argc;
    if (key.stride === 0) return key.first < argc ? request.argHash(key.first, keySlotIn) : -1;
    const count = (argc - 1) / key.stride;
    // A wrong count is answered by split() or by the server.
    if (count < 1 || count !== Math.floor(count)) return -1;
    const slot = request.commonHash(1, key.stride, keySlotIn);
    // Keys of several slots: the runs split it, one part per slot from the request's bytes.
    return slot === -1 ? SPLIT_RUN : slot;
  }

  /**
   * Scripts a client sends (EVAL, SCRIPT LOAD; queued in MULTI too), kept to load them on a
   * master that meets their EVALSHA with NOSCRIPT (cluster mode). A client's SCRIPT FLUSH
   * forgets them: an EVALSHA then meets NOSCRIPT, as in Redis.
   */
  noteScript(name: string, argv: readonly Buffer[]): void {
    if (this.cluster === null) return;
    if (name === "eval" || name === "eval_ro") {
      // An EVAL refused for its key count never reaches the script cache: Redis checks the
      // count first (a script that does not compile is refused on a reload as well).
      const numkeys = argv[2]?.toString() ?? "";
      if (/^(0|[1-9]\d*)$/.test(numkeys) && Number(numkeys) <= argv.length - 3)
        this.scripts.remember(argv[1]);
      return;
    }
    if (name !== "script" || argv.length < 2) return;
    const sub = argv[1].toString().toLowerCase();
    if (sub === "load" && argv.length === 3) this.scripts.remember(argv[2]);
    else if (sub === "flush") this.scripts.clear();
  }

  /** Whether a command goes to every master (or any one) by the fan-out table, not by its keys. */
  fansOut(name: string): boolean {
    return this.cluster !== null && FAN_OUT.has(name);
  }

  /**
   * Whether a command queued in a transaction (in database `db`) answers otherwise outside
   * one, where EXEC's reply is the server's: in a cluster the commands that act on, or answer
   * for, every master (FLUSHALL, DBSIZE, SCRIPT LOAD...), which EXEC ran on one; in front of one
   * server the key listings of database 0 (SCAN too), which leave the proxy's own keys out.
   * runBeside completes their element.
   */
  completedAfterExec(name: string, argv: readonly Buffer[], db: number): boolean {
    // A blocking command (WAIT) in a transaction answers at once where it ran; run alone on
    // the other masters' shared connections it would block them.
    if (this.cluster !== null) return !isBlocking(name, argv) && spansMasters(name, argv);
    return db === 0 && KEY_LISTING_COMMANDS.has(name);
  }

  /**
   * A command of completedAfterExec that ran in a transaction on the master `nodeId`, `part`
   * its element of EXEC's reply: the same on the other masters, merged, the proxy's keys left
   * out, to `sink` (as the command outside a transaction). False, and nothing sent, when
   * `nodeId` is no longer a master.
   */
  runBeside(
    nodeId: string,
    part: Buffer,
    argv: Buffer[],
    sink: ReplySink,
    affinity: number,
    proto: Protocol,
  ): boolean {
    const done = this.masters().find((node) => node.id === nodeId);
    if (done === undefined) return false;
    // SCAN's page in front of one server: filtered as outside a transaction, its cursor kept.
    if (this.cluster === null && argv[0].toString().toLowerCase() === "scan") {
      scanPageWithoutProxyKeys(sink, proto).reply(part);
      return true;
    }
    fanOutBeside(this, done, part, argv, sink, affinity, proto);
    return true;
  }

  /** Whether the proxy knows the body of a script (it can load it where it is missing). */
  knowsScript(sha: string): boolean {
    return this.scripts.body(sha) !== undefined;
  }

  /** Where a command's keys are, for runSlotOf: stride 0 for one key at `first`. */
  private runKeyFor(name: string): { first: number; stride: number } | null {
    if (this.cluster === null || this.readFromReplicas || FAN_OUT.has(name)) return null;
    if (name.startsWith("eval") || name === "script") return null;
    const stride = splitStride(name);
    if (stride !== undefined) return { first: 1, stride };
    const single = this.commands?.singleKey(name) ?? null;
    return single === null || single < 1 ? null : { first: single, stride: 0 };
  }

  private readonly runKeys = new Map<string, { first: number; stride: number } | null>();

  /** A client's gatherer of single-key commands per node (cluster mode; null in front of one server). */
  clusterRuns(affinity: number): ClusterRuns | null {
    return this.cluster === null ? null : new ClusterRuns(this.redirect!, this.cluster, affinity);
  }

  /**
   * Whether the upstream has this subcommand of a container command (CLIENT NO-TOUCH came in
   * Redis 7.2): the proxy answers as that server would. True when its table is not known.
   */
  knowsSubcommand(name: string, sub: string): boolean {
    const info = this.commands?.lookup(name, []);
    return info === undefined || info.subcommands.has(sub);
  }

  /**
   * Redis' refusal of argv before the command runs, by the upstream's table: a container's
   * unknown subcommand, or the arity of the command (its subcommand's). Null when it passes,
   * or when the table does not know the command.
   */
  shapeRefusal(name: string, argv: readonly Buffer[], own?: ReadonlySet<string>): string | null {
    const info = this.commands?.lookup(name, argv);
    if (info === undefined) return null;
    if (info.subcommands.size > 0 && argv.length >= 2) {
      const sub = argv[1].toString();
      // A subcommand the caller adds to the server's (`container|sub`) is its own to check.
      if (own?.has(`${name}|${sub.toLowerCase()}`) === true) return null;
      return `ERR unknown subcommand '${sub}'. Try ${name.toUpperCase()} HELP.`;
    }
    const arity = info.arity;
    if (arity > 0 ? argv.length === arity : argv.length >= -arity) return null;
    return `ERR wrong number of arguments for '${info.name}' command`;
  }

  /** Whether the command writes (its COMMAND flags say "write"). */
  isWrite(name: string, argv: readonly Buffer[]): boolean {
    return this.commands?.lookup(name, argv)?.flags.has("write") ?? false;
  }

  /**
   * Whether the command writes and is Redis's own, not a module's (COMMAND flag "module"):
   * what a module's write notifies is the module's choice (Redis 8.0's vector sets notify
   * nothing), so its events can only be known from its notifications.
   */
  /**
   * False when `name` is no write whatever its arguments (isServerWrite would say false): a
   * client's request need not split its arguments for the write journal's tap then.
   */
  mayBeServerWrite(name: string): boolean {
    return this.commands !== null && this.commands.mayWrite(name);
  }

  isServerWrite(name: string, argv: readonly Buffer[]): boolean {
    const flags = this.commands?.lookup(name, argv)?.flags;
    return flags !== undefined && flags.has("write") && !flags.has("module");
  }

  /** The keys of a command, as the command table finds them. */
  keysOf(name: string, argv: readonly Buffer[]): Buffer[] {
    return this.commands?.keys(name, argv) ?? [];
  }

  /** The keys a command reads, as client-side caching tracks them (tracked-keys.ts). */
  readKeys(name: string, argv: readonly Buffer[]): Buffer[] {
    return this.commands === null ? [] : readKeys(this.commands, this.scripts, name, argv);
  }

  /** The keys a command (or script) may change. */
  writtenKeys(name: string, argv: readonly Buffer[]): Buffer[] {
    return this.commands === null ? [] : writtenKeys(this.commands, name, argv);
  }

  private isReadOnly(name: string, argv: readonly Buffer[]): boolean {
    return this.commands?.lookup(name, argv)?.flags.has("readonly") ?? false;
  }

  /** slotOf, but channel pub/sub in a cluster goes to PUBSUB_HOME_SLOT's master. */
  private routingSlot(name: string, argv: readonly Buffer[]): number {
    if (this.cluster === null) return this.slotOf(name, argv);
    if (isClassicPubSub(name)) return PUBSUB_HOME_SLOT;
    const slot = this.slotOf(name, argv);
    return slot === NO_KEYS && isScript(name) ? PUBSUB_HOME_SLOT : slot;
  }

  /** The slot all keys of argv hash to, NO_KEYS, or CROSS_SLOT. */
  slotOf(name: string, argv: readonly Buffer[]): number {
    if (this.commands === null) return NO_KEYS;
    const single = this.commands.singleKey(name);
    if (single !== null) return single < argv.length ? calculateSlot(argv[single]) : NO_KEYS;
    const indexes = this.commands.keyIndexes(name, argv);
    let slot = NO_KEYS;
    for (const i of indexes) {
      const s = calculateSlot(argv[i]);
      if (slot === NO_KEYS) slot = s;
      else if (s !== slot) return CROSS_SLOT;
    }
    return slot;
  }

  /**
   * The node a command needing a dedicated connection (MULTI, blocking, subscribe) goes to,
   * or the error to answer when its keys span slots.
   */
  nodeFor(name: string, argv: readonly Buffer[], affinity: number): UpstreamNode | string {
    if (this.cluster === null) return this.topology.nodeForSlot(0);
    const slot = this.routingSlot(name, argv);
    if (slot === CROSS_SLOT) return CROSSSLOT_ERROR;
    return this.cluster.route(slot, affinity);
  }

  masters(): UpstreamNode[] {
    return this.topology.masters();
  }

  /** The masters' replicas (none in front of one server). */
  replicas(): UpstreamNode[] {
    return this.cluster?.replicas() ?? [];
  }

  /** The node for a slot, or for keyless commands (NO_KEYS) a master chosen by affinity. */
  routeSlot(slot: number, affinity: number): UpstreamNode {
    return this.cluster === null ? this.topology.nodeForSlot(0) : this.cluster.route(slot, affinity);
  }

  sendTo(
    node: UpstreamNode,
    payload: Buffer,
    sink: ReplySink,
    affinity: number,
    slot: number,
    proto: Protocol = 2,
    db = 0,
  ): void {
    if (this.redirect === null) node.send(affinity, payload, sink, db, proto);
    else new RedirectingSink(this.redirect, payload, null, sink, affinity, slot, proto).send(node);
  }

  /** The proxy's own request, routed like a client's; error replies resolve as RespError. */
  call(argv: readonly Arg[], db = 0): Promise<RespValue> {
    const sink = new PromiseSink();
    const buffers = argv.map((a) => (Buffer.isBuffer(a) ? a : Buffer.from(String(a))));
    this.forward(buffers[0].toString().toLowerCase(), buffers, null, sink, { db, affinity: 0 });
    return sink.promise;
  }

  /** The same request on every master, replies in master order. */
  callAll(argv: readonly Arg[]): Promise<RespValue[]> {
    const payload = encodeCommand(argv);
    return Promise.all(
      this.masters().map((node) => {
        const sink = new PromiseSink();
        this.sendTo(node, payload, sink, 0, -1);
        return sink.promise;
      }),
    );
  }

  /**
   * The proxy's own request on every master's control connection, replies in master order:
   * for INFO, which must answer while the shared connections wait (a paused server).
   */
  callControl(argv: readonly Arg[]): Promise<RespValue[]> {
    const payload = encodeCommand(argv);
    return Promise.all(
      this.masters().map((node) => {
        const sink = new PromiseSink();
        const conn = node.control();
        if (conn === null) sink.fail(node.failure);
        else conn.send(payload, sink, 0);
        return sink.promise;
      }),
    );
  }
}
