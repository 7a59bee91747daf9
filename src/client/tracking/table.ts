import { isBlocking, isScript } from "../../routing/command-kinds.js";
import { InvalidationStreams } from "../../routing/invalidation-streams.js";
import type { Router } from "../../routing/router.js";
import type { Protocol } from "../../resp/values.js";
import type { ReplySlot } from "../reply-slot.js";
import { flushValue, invalidateMessage, invalidatePush, keysValue, redirBrokenPush } from "./messages.js";
import type { TrackingState } from "./state.js";

/** What the table needs of a client to send it invalidations. */
export interface TrackedClient {
  readonly id: number;
  readonly proto: Protocol;
  readonly isPubSub: boolean;
  /** Its tracking settings; null while tracking is off. */
  readonly tracking: TrackingState | null;
  /**
   * Writes an invalidation of `keys` (null: all) the client did not ask for, after the last
   * of its queued replies for which the table's follows() holds.
   */
  deliver(frame: Buffer, keys: readonly Buffer[] | null): void;
}

/**
 * The clients of the other threads of a --threads proxy (threads/peers.ts), for a REDIRECT
 * to one of them: a client's two connections (the tracking one, the `__redis__:invalidate`
 * subscriber) may be dealt to different threads.
 */
export interface RemoteClients {
  /** Whether client `id` is another thread's (each thread deals ids of its own). */
  elsewhere(id: number): boolean;
  /** Hands `values` (invalidated key lists, or the flush's null) due to tracking client `from` to its REDIRECT client `to`. */
  invalidate(to: number, from: number, values: readonly Buffer[]): void;
}

/** Redis' default tracking-table-max-keys. */
const DEFAULT_MAX_KEYS = 1_000_000;
/** Writes remembered whose invalidation never came (nothing changed) are dropped past this many. */
const MAX_WRITES = 100_000;
/**
 * A remembered write older than this no longer claims an invalidation: it changed nothing
 * (SET NX that lost, a refused write), and must not hide someone else's change from a
 * NOLOOP client.
 */
const WRITE_MATCH_MS = 1000;

/** A write through the proxy whose invalidation has not come back yet. */
interface RecentWrite {
  /** Order among the proxy's writes: a batch of keys is invalidated in the order written. */
  seq: number;
  /** The client that wrote it, for NOLOOP. */
  writer: number;
  at: number;
  /**
   * The arguments of the command whose reply the writer's own invalidation follows (the
   * write, or the EXEC that ran it); null while that EXEC has not come or once it was discarded.
   */
  anchor: readonly Buffer[] | null;
  /** The writer's last read of the key before it (a Reads seq; 0: none remembered). */
  lastRead: number;
  /** A FLUSHALL/FLUSHDB whose writer was told its null already (tellFlusher). */
  told?: boolean;
  /** A FLUSHALL/FLUSHDB: the streams' nulls still to come for it, one per master it ran on. */
  nulls?: number;
  /** A FLUSHALL/FLUSHDB whose null every tracking client has had: later masters' nulls say nothing new. */
  allTold?: boolean;
  /** A FLUSHALL/FLUSHDB whose writer is told its null before the command's reply (TrackingTable.flushNullFirst). */
  nullFirst?: boolean;
}

/**
 * A client's reads of a key since its last change, in the order of the proxy's writes
 * (RecentWrite.seq): the client's own write between two of them is ordered with them.
 */
interface Reads {
  first: number;
  last: number;
}

/** Where the invalidation being delivered goes in its client's replies (see follows). */
interface Placing {
  /** The command of the client's own whose reply they follow; null for another's change. */
  anchor: readonly Buffer[] | null;
  /** follows() has passed a blocked command: replies queued behind it may come after it runs. */
  blocked: boolean;
  /**
   * After every reply queued (up to `anchor`'s, when set): a BCAST client's own writes, told
   * at the end of Redis' event loop, after the replies to what it sent with them.
   */
  all: boolean;
  /** follows() has passed the anchor's slot. */
  passed: boolean;
  /** With `all`: before the anchor's reply, not after it. */
  beforeAnchor: boolean;
}

/** A group of invalidations for one client that share their place: one frame. */
interface Delivery {
  client: TrackedClient;
  state: TrackingState;
  keys: Buffer[];
  anchor: readonly Buffer[] | null;
}

/** One message due to a client of the keys table: sorted by `seq` (the write's), then grouped. */
interface Told {
  client: TrackedClient;
  state: TrackingState;
  key: Buffer;
  anchor: readonly Buffer[] | null;
  seq: number;
}

/** Whether FLUSHALL/FLUSHDB with these arguments runs (no syntax error): it sends a null. */
function flushRuns(argv: readonly Buffer[]): boolean {
  return argv.length === 1 || (argv.length === 2 && /^(a?sync)$/i.test(argv[1].toString("latin1")));
}

/** Keys are compared as bytes: latin1 maps each byte to one character. */
function keyOf(key: Buffer): string {
  return key.toString("latin1");
}

/**
 * Redis' tracking table, kept by the proxy for its own clients: the keys each client
 * read (normal mode), the prefixes of BCAST clients, and who wrote a key last (NOLOOP).
 * It sees every read its clients make; the invalidation streams (one per master) tell it
 * every key that changed, whoever changed it. Messages follow Redis' tracking.c: one per
 * key in normal mode, one per prefix in BCAST mode, a null on flush, RESP3 pushes or
 * `__redis__:invalidate` messages to a RESP2 REDIRECT client in Pub/Sub mode.
 */
export class TrackingTable {
  /** Key -> the clients that read it since its last change, with when (see Reads). */
  private readonly keys = new Map<string, Map<number, Reads>>();
  private items = 0;
  /** BCAST prefix -> ids of the clients that registered it. */
  private readonly prefixes = new Map<string, Set<number>>();
  /** Ids of the clients with tracking on, in the order they turned it on. */
  private readonly trackers = new Set<number>();
  /**
   * Key -> the writes through the proxy while anyone tracks, in order, until their
   * invalidation comes: one message of the stream may stand for several of them.
   */
  private readonly writes = new Map<string, RecentWrite[]>();
  private writeSeq = 0;
  /** Per client, its writes queued in MULTI, which its EXEC will anchor. */
  private readonly queuedWrites = new Map<number, RecentWrite[]>();
  /** The FLUSHALL/FLUSHDB commands through the proxy, in order, until their nulls come. */
  private readonly flushes: RecentWrite[] = [];
  /** While invalidations are handed to clients: where they go (follows). */
  private placing: Placing | null = null;
  /** With --threads: REDIRECT clients served by another thread. */
  remote: RemoteClients | null = null;
  /** Invalidation frames handed to clients: a later one never overtakes them. */
  private readonly delivered = new WeakSet<Buffer>();
  /** Some client tracks: every client's writes are noted (order, NOLOOP). */
  watching = false;
  private maxKeys = DEFAULT_MAX_KEYS;
  /** Flushes whose nulls are to be told at the end of this turn: the proxy's own, or null for any other. */
  private readonly flushBatch: (RecentWrite | null)[] = [];
  private readonly streams: InvalidationStreams;

  constructor(
    private readonly router: Router,
    private readonly lookup: (id: number) => TrackedClient | undefined,
    /**
     * The upstream runs FLUSHALL/FLUSHDB SYNC in the background while their client waits
     * (Redis 7.4 and later): the flushing client gets its null before the command's reply,
     * while the server still answered it after (7.0, Valkey; ASYNC flushes on 7.4+ too).
     */
    private readonly flushNullFirst = false,
  ) {
    this.streams = new InvalidationStreams(router, {
      onKeys: (keys) => this.invalidate(keys),
      onFlush: () => this.flush(),
    });
  }

  /** INFO's tracking_* figures. */
  get stats(): { clients: number; keys: number; items: number; prefixes: number } {
    return {
      clients: this.trackers.size,
      keys: this.keys.size,
      items: this.items,
      prefixes: this.prefixes.size,
    };
  }

  /** Tracking turned on for a client; resolves once every master's stream is up. */
  enable(id: number, state: TrackingState): Promise<void> {
    this.trackers.add(id);
    this.watching = true;
    for (const prefix of state.prefixes) {
      const p = keyOf(prefix);
      let ids = this.prefixes.get(p);
      if (ids === undefined) this.prefixes.set(p, (ids = new Set()));
      ids.add(id);
    }
    return this.streams.ensure();
  }

  /** Tracking turned off (or the client left). Its keys stay in the table, as in Redis. */
  disable(id: number, state: TrackingState): void {
    this.trackers.delete(id);
    for (const prefix of state.prefixes) {
      const p = keyOf(prefix);
      const ids = this.prefixes.get(p);
      ids?.delete(id);
      if (ids?.size === 0) this.prefixes.delete(p);
    }
    if (this.trackers.size === 0) {
      this.watching = false;
      this.writes.clear();
      this.queuedWrites.clear();
      this.flushes.length = 0;
      this.streams.idle();
    }
  }

  /**
   * A command about to run while some client tracks (`state`: the sender's settings, null
   * when it does not track): notes the keys it writes, remembers the keys it reads, and
   * uses up a CLIENT CACHING given for it. `inMulti`: the sender was in MULTI.
   */
  beforeCommand(
    id: number,
    state: TrackingState | null,
    name: string,
    argv: readonly Buffer[],
    inMulti: boolean,
  ): void {
    // Redis writes a client's own invalidations after the reply of the command that made
    // them, EXEC for a queued write: the write's arguments find that reply among the client's.
    const queued = inMulti && name !== "exec" && name !== "discard" && name !== "multi";
    if (name === "exec" || name === "discard") this.settleQueued(id, name === "exec" ? argv : null);
    const written = this.router.writtenKeys(name, argv);
    if (written.length > 0) {
      if (this.writes.size > MAX_WRITES) this.writes.clear();
      const at = Date.now();
      const anchor = queued ? null : argv;
      for (const key of written) {
        const k = keyOf(key);
        // Only a client that tracks has reads to order with its writes.
        const lastRead = state === null ? 0 : (this.keys.get(k)?.get(id)?.last ?? 0);
        const write: RecentWrite = { seq: ++this.writeSeq, writer: id, at, anchor, lastRead };
        const list = this.writes.get(k);
        if (list === undefined) this.writes.set(k, [write]);
        else {
          // Those that changed nothing (their invalidation never came) go first.
          while (list.length > 0 && at - list[0].at > WRITE_MATCH_MS) list.shift();
          if (list.length < MAX_WRITES) list.push(write);
        }
        if (queued) this.queueWrite(id, write);
      }
    } else if ((name === "flushall" || name === "flushdb") && flushRuns(argv)) {
      const flush: RecentWrite = {
        seq: ++this.writeSeq,
        writer: id,
        at: Date.now(),
        anchor: queued ? null : argv,
        lastRead: 0,
        // Outside MULTI it runs on every master (a fan-out); queued, on the transaction's node.
        nulls: queued ? 1 : this.router.masters().length,
        nullFirst: this.flushNullFirst && !queued && argv[1]?.toString().toLowerCase() !== "async",
      };
      if (this.flushes.length < MAX_WRITES) this.flushes.push(flush);
      if (queued) this.queueWrite(id, flush);
      // Once the command has its place among the replies (dispatch is synchronous).
      else if (state !== null) queueMicrotask(() => this.tellFlusher(flush));
    }
    if (state === null) return;
    if (state.remembers) {
      const keys = this.router.readKeys(name, argv);
      if (keys.length > 0) this.remember(id, keys);
    }
    // Redis clears the flag after every command but CLIENT itself and those of a MULTI block.
    const keep = name === "client" || name === "multi" || (inMulti && name !== "exec" && name !== "discard");
    if (!keep) state.caching = false;
  }

  /** One setting of a CONFIG SET as it leaves for the server (`name` lower case): follows tracking-table-max-keys. */
  followSetting(name: string, text: string): void {
    if (name !== "tracking-table-max-keys" || !/^\d+$/.test(text)) return;
    this.maxKeys = Number(text);
    this.evict();
  }

  close(): void {
    this.streams.close();
  }

  private queueWrite(id: number, write: RecentWrite): void {
    let list = this.queuedWrites.get(id);
    if (list === undefined) this.queuedWrites.set(id, (list = []));
    if (list.length < MAX_WRITES) list.push(write);
  }

  /** EXEC (its arguments) or DISCARD (null): the writes queued since MULTI follow its reply, or nothing. */
  private settleQueued(id: number, exec: readonly Buffer[] | null): void {
    const list = this.queuedWrites.get(id);
    if (list === undefined) return;
    this.queuedWrites.delete(id);
    for (const write of list) {
      write.anchor = exec;
      // A discarded FLUSHALL sends no null.
      if (exec === null && write.nulls !== undefined) write.nulls = 0;
    }
  }

  /**
   * Whether an invalidation being delivered goes after `slot`, one of its client's queued
   * replies (it goes after the last one that holds). Pushed frames came first and stay
   * first. A client's own change follows the reply of the command that made it and precedes
   * its later ones, as in Redis. Another's change, at a moment the client's commands in
   * flight may run before or after, follows every reply already made and every command that
   * may read the keys: a reply that may carry a key's old value is never written after its
   * invalidation.
   */
  follows(slot: ReplySlot, keys: readonly Buffer[] | null): boolean {
    const placing = this.placing;
    if (slot.pushed) return slot.data !== null && this.delivered.has(slot.data);
    const cause = slot.cause;
    if (placing?.all === true) {
      if (placing.passed) return false;
      if (placing.anchor !== null && cause?.argv === placing.anchor) placing.passed = true;
      // Redis tells a blocked client at once, not after the command it is blocked in.
      else if (slot.data === null && cause !== null && isBlocking(cause.name, cause.argv))
        placing.passed = true;
      return !placing.passed || (cause?.argv === placing.anchor && !placing.beforeAnchor);
    }
    if (placing !== null && placing.anchor !== null) return cause?.argv === placing.anchor;
    if (cause === null) return true;
    if (this.touches(cause.name, cause.argv, keys)) return true;
    // A reply made already, before the change came (a PING pipelined behind a write), as
    // Redis answers a batch of commands before it sends BCAST's messages. Not behind a
    // command still blocked: Redis tells a blocked client at once. (Slots come in order.)
    if (placing !== null && slot.data === null && isBlocking(cause.name, cause.argv)) placing.blocked = true;
    return slot.data !== null && placing?.blocked === false;
  }

  /**
   * Whether a command may read or write one of `keys` (null: any key), so that an
   * invalidation of them must not overtake its reply. EXEC and scripts may touch any.
   */
  touches(name: string, argv: readonly Buffer[], keys: readonly Buffer[] | null): boolean {
    if (name === "exec" || isScript(name)) return true;
    const own = this.router.keysOf(name, argv);
    if (keys === null) return own.length > 0;
    return own.some((k) => keys.some((key) => key.equals(k)));
  }

  private remember(id: number, keys: readonly Buffer[]): void {
    const seq = ++this.writeSeq;
    for (const key of keys) {
      const k = keyOf(key);
      let ids = this.keys.get(k);
      if (ids === undefined) this.keys.set(k, (ids = new Map()));
      const reads = ids.get(id);
      if (reads !== undefined) reads.last = seq;
      else {
        ids.set(id, { first: seq, last: seq });
        this.items++;
      }
    }
    this.evict();
  }

  /** Over tracking-table-max-keys (0: no limit): the oldest keys are invalidated, as Redis does. */
  private evict(): void {
    if (this.maxKeys === 0) return;
    const told: Told[] = [];
    while (this.keys.size > this.maxKeys) {
      const oldest = this.keys.keys().next().value!;
      this.invalidateKey(Buffer.from(oldest, "latin1"), [], told);
    }
    this.deliverTold(told);
  }

  /** Keys changed on a node (one event loop of its, as the stream batches them). */
  private invalidate(keys: readonly Buffer[]): void {
    // The stream lists a batch in byte order, each key once however often it changed; Redis
    // tells normal-mode clients in the order the keys were written, which the proxy knows
    // for the writes it forwarded.
    const now = Date.now();
    const told: Told[] = [];
    const writers = keys.map((key) => {
      const k = keyOf(key);
      const list = this.writes.get(k);
      if (list !== undefined) this.writes.delete(k);
      // Older ones changed nothing (see WRITE_MATCH_MS).
      const fresh = list?.filter((write) => now - write.at <= WRITE_MATCH_MS) ?? [];
      this.invalidateKey(key, fresh, told);
      return fresh.length > 0 ? fresh[fresh.length - 1].writer : 0;
    });
    this.deliverTold(told);
    if (this.prefixes.size > 0) this.broadcast(keys, writers);
  }

  /** Each client's messages in the order of the writes, grouped while they share their place. */
  private deliverTold(told: Told[]): void {
    if (told.length === 0) return;
    told.sort((a, b) => a.seq - b.seq);
    const deliveries: Delivery[] = [];
    const lastOf = new Map<number, Delivery>();
    for (const { client, state, key, anchor } of told) {
      const last = lastOf.get(client.id);
      if (last !== undefined && last.anchor === anchor) last.keys.push(key);
      else {
        const delivery: Delivery = { client, state, keys: [key], anchor };
        deliveries.push(delivery);
        lastOf.set(client.id, delivery);
      }
    }
    this.deliverAll(deliveries);
  }

  /**
   * Normal mode: a client that read the key hears of the first write after its read, then
   * forgets it, as Redis does. `writes` are the proxy's writes of it that this change stands
   * for, in order (none: a change from elsewhere). The writer's own reads are ordered with its
   * writes: a write that only follows reads after it tells nothing, and a read after the
   * last write told keeps the key remembered (a later change is told). Another client's
   * reads are not ordered with the write (their connections differ): one message each.
   */
  private invalidateKey(key: Buffer, writes: readonly RecentWrite[], told: Told[]): void {
    const k = keyOf(key);
    const ids = this.keys.get(k);
    if (ids === undefined) return;
    this.keys.delete(k);
    this.items -= ids.size;
    for (const [id, reads] of ids) {
      const client = this.lookup(id);
      const state = client?.tracking;
      if (client === undefined || state == null || state.bcast) continue;
      if (writes.length === 0) {
        told.push({ client, state, key, anchor: null, seq: 0 });
        continue;
      }
      /** The seq of the write last told (0: none yet), and whether it was the client's own. */
      let last = 0;
      let lastOwn = false;
      for (const write of writes) {
        const own = write.writer === id;
        // Remembered when written: read since the last write told. Its own reads are ordered
        // with its writes (the last one before each is noted); another's are not.
        const remembered = own ? write.lastRead > last : last === 0 || reads.last > last;
        if (!remembered) continue;
        last = write.seq;
        lastOwn = own;
        if (own && state.noloop) continue;
        told.push({ client, state, key, anchor: own ? write.anchor : null, seq: write.seq });
      }
      // Read again after the last write told (its own), or only after its writes: still remembered.
      const keep =
        last === 0
          ? { first: reads.first, last: reads.last }
          : lastOwn && reads.last > last
            ? { first: last + 1, last: reads.last }
            : null;
      if (keep === null) continue;
      let kept = this.keys.get(k);
      if (kept === undefined) this.keys.set(k, (kept = new Map()));
      kept.set(id, keep);
      this.items++;
    }
  }

  /** One message per key, as Redis sends them; a group's messages are written as one frame. */
  private deliverAll(deliveries: readonly Delivery[]): void {
    if (deliveries.length === 0) return;
    for (const { client, state, keys, anchor } of deliveries) {
      this.send(
        client,
        state,
        anchor,
        keys.map((key) => keysValue([key])),
        keys,
      );
    }
  }

  /** BCAST mode: one message per prefix, with the changed keys under it in byte order. */
  private broadcast(keys: readonly Buffer[], writers: readonly number[]): void {
    const order = keys.map((_, i) => i).sort((a, b) => Buffer.compare(keys[a], keys[b]));
    for (const prefix of [...this.prefixes.keys()].sort()) {
      const matching = order.filter((i) => keyOf(keys[i]).startsWith(prefix));
      if (matching.length === 0) continue;
      const matchingKeys = matching.map((i) => keys[i]);
      const common = keysValue(matchingKeys);
      for (const id of this.prefixes.get(prefix)!) {
        const client = this.lookup(id);
        const state = client?.tracking;
        if (client === undefined || state == null || !state.bcast) continue;
        if (!state.noloop) {
          // Its own writes alone: told at the end of Redis' event loop, after the replies
          // to the commands it sent with them.
          const own = matching.every((i) => writers[i] === id);
          this.send(client, state, null, [common], matchingKeys, own);
          continue;
        }
        const theirs = matching.filter((i) => writers[i] !== id);
        const theirKeys = theirs.map((i) => keys[i]);
        if (theirs.length > 0) this.send(client, state, null, [keysValue(theirKeys)], theirKeys);
      }
    }
  }

  /**
   * The null of a tracking client's own FLUSHALL, right after its reply as Redis writes it.
   * The stream's null comes on another connection, often after the replies to what the
   * client pipelined behind it; it is not told again (flush).
   */
  private tellFlusher(flush: RecentWrite): void {
    const client = this.lookup(flush.writer);
    const state = client?.tracking;
    if (client === undefined || state == null) return;
    flush.told = true;
    this.send(client, state, flush.anchor, [flushValue(client.proto)], null, true, flush.nullFirst === true);
  }

  /**
   * Every key is gone (FLUSHALL/FLUSHDB, or a stream lost): the table empties and each
   * tracking client gets one null, even when several nodes flushed at once. Reads and
   * writes sent after the proxy's own FLUSHALL are not forgotten: they came after it.
   */
  private flush(): void {
    // One of the nulls of the proxy's own FLUSHALLs, in order (not a flush from elsewhere, a
    // lost stream). Discarded ones and those whose nulls never came are passed over.
    const now = Date.now();
    const flushes = this.flushes;
    while (flushes.length > 0 && (flushes[0].nulls === 0 || now - flushes[0].at > WRITE_MATCH_MS))
      flushes.shift();
    const flush = flushes.length > 0 ? flushes[0] : null;
    const ours = flush !== null;
    if (ours && --flush.nulls! === 0) flushes.shift();
    const after = ours ? flush.seq : Infinity;
    this.items = 0;
    for (const [k, ids] of this.keys) {
      for (const [id, reads] of ids) {
        if (reads.last > after) reads.first = Math.max(reads.first, after + 1);
        else ids.delete(id);
      }
      if (ids.size === 0) this.keys.delete(k);
      else this.items += ids.size;
    }
    for (const [k, list] of this.writes) {
      const later = list.filter((write) => write.seq > after);
      if (later.length === 0) this.writes.delete(k);
      else this.writes.set(k, later);
    }
    // A FLUSHALL in front of a cluster: each master's null comes when it comes; one is told.
    // The nulls that come in one turn are told together: one per FLUSHALL of the proxy's,
    // and one for all the rest.
    if (this.trackers.size === 0) return;
    const cause = ours ? flush : null;
    if (cause !== null && (cause.allTold === true || this.flushBatch.includes(cause))) return;
    if (cause === null && this.flushBatch.includes(null)) return;
    this.flushBatch.push(cause);
    if (this.flushBatch.length === 1) setImmediate(() => this.tellFlushes());
  }

  /** The nulls of a turn's flushes (see flush). */
  private tellFlushes(): void {
    for (const flush of this.flushBatch.splice(0)) {
      // The flusher's own null follows its FLUSHALL's reply (a flush that is not one of the
      // proxy's FLUSHALLs, a lost stream, is another's change for every client).
      if (flush !== null) flush.allTold = true;
      const deliveries: Delivery[] = [];
      for (const id of this.trackers) {
        const client = this.lookup(id);
        const state = client?.tracking;
        if (client === undefined || state == null) continue;
        const own = flush !== null && flush.writer === id;
        if (own && flush.told === true) continue;
        deliveries.push({ client, state, keys: [], anchor: own ? flush.anchor : null });
      }
      for (const { client, state, anchor } of deliveries)
        this.send(client, state, anchor, [flushValue(client.proto)], null);
    }
  }

  /** To the client itself or its REDIRECT client, as Redis' sendTrackingMessage. */
  private send(
    client: TrackedClient,
    state: TrackingState,
    anchor: readonly Buffer[] | null,
    values: readonly Buffer[],
    keys: readonly Buffer[] | null,
    all = false,
    beforeAnchor = false,
  ): void {
    if (state.redirect === 0)
      return this.deliverFrame(client, false, anchor, values, keys, all, beforeAnchor);
    const redirected = this.lookup(state.redirect);
    if (redirected !== undefined) return this.deliverFrame(redirected, true, null, values, keys);
    if (this.remote?.elsewhere(state.redirect) === true)
      this.remote.invalidate(state.redirect, client.id, values);
    else this.redirectBroken(client.id, state.redirect);
  }

  /**
   * From another thread: what its tracking client `from` was due, for REDIRECT client `to`
   * of this one; false when `to` is gone (then `from` is told its redirect broke).
   */
  deliverRedirected(to: number, values: readonly Buffer[]): boolean {
    const target = this.lookup(to);
    if (target === undefined) return false;
    this.deliverFrame(target, true, null, values, []);
    return true;
  }

  /** Tracking client `id`'s REDIRECT client `redirect` was gone when an invalidation was due. */
  redirectBroken(id: number, redirect: number): void {
    const client = this.lookup(id);
    const state = client?.tracking;
    if (client === undefined || state == null || state.redirect !== redirect) return;
    state.brokenRedirect = true;
    if (client.proto === 3) client.deliver(redirBrokenPush(redirect), []);
  }

  /** Writes `values` to `target` as its protocol takes invalidations (a REDIRECT client: `redirected`). */
  private deliverFrame(
    target: TrackedClient,
    redirected: boolean,
    anchor: readonly Buffer[] | null,
    values: readonly Buffer[],
    keys: readonly Buffer[] | null,
    all = false,
    beforeAnchor = false,
  ): void {
    let frame: Buffer;
    if (target.proto === 3) frame = Buffer.concat(values.map(invalidatePush));
    // RESP2 has no pushes: only a REDIRECT client in Pub/Sub mode can be told.
    else if (redirected && target.isPubSub) frame = Buffer.concat(values.map(invalidateMessage));
    else return;
    // A message to a REDIRECT client is not about its own commands.
    this.placing = {
      anchor: redirected ? null : anchor,
      blocked: false,
      all: redirected ? false : all,
      passed: false,
      beforeAnchor,
    };
    try {
      target.deliver(frame, keys);
    } finally {
      this.placing = null;
    }
    this.delivered.add(frame);
  }
}
