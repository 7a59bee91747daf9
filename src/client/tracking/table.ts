import { isScript } from "../../routing/command-kinds.js";
import { InvalidationStreams } from "../../routing/invalidation-streams.js";
import type { Router } from "../../routing/router.js";
import type { Protocol } from "../../resp/values.js";
import { flushValue, invalidateMessage, invalidatePush, keysValue, redirBrokenPush } from "./messages.js";
import type { TrackingState } from "./state.js";

/** What the table needs of a client to send it invalidations. */
export interface TrackedClient {
  readonly id: number;
  readonly proto: Protocol;
  readonly isPubSub: boolean;
  /** Its tracking settings; null while tracking is off. */
  readonly tracking: TrackingState | null;
  /** Writes an invalidation of `keys` (null: all) the client did not ask for. */
  deliver(frame: Buffer, keys: readonly Buffer[] | null): void;
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
  /** Key -> ids of the clients that read it since its last change. */
  private readonly keys = new Map<string, Set<number>>();
  private items = 0;
  /** BCAST prefix -> ids of the clients that registered it. */
  private readonly prefixes = new Map<string, Set<number>>();
  /** Ids of the clients with tracking on, in the order they turned it on. */
  private readonly trackers = new Set<number>();
  /** Key -> the last write through the proxy while anyone tracks, until its invalidation comes. */
  private readonly writes = new Map<string, RecentWrite>();
  private writeSeq = 0;
  /** Some client tracks: every client's writes are noted (order, NOLOOP). */
  watching = false;
  private maxKeys = DEFAULT_MAX_KEYS;
  private flushPending = false;
  private readonly streams: InvalidationStreams;

  constructor(
    private readonly router: Router,
    private readonly lookup: (id: number) => TrackedClient | undefined,
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
    const written = this.router.writtenKeys(name, argv);
    if (written.length > 0) {
      if (this.writes.size > MAX_WRITES) this.writes.clear();
      const at = Date.now();
      for (const key of written) this.writes.set(keyOf(key), { seq: ++this.writeSeq, writer: id, at });
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

  /** CONFIG SET as it leaves for the server: follows tracking-table-max-keys. */
  noteConfigSet(argv: readonly Buffer[]): void {
    if (argv.length < 4 || argv[1].toString().toLowerCase() !== "set") return;
    for (let i = 2; i + 1 < argv.length; i += 2) {
      if (argv[i].toString().toLowerCase() !== "tracking-table-max-keys") continue;
      const text = argv[i + 1].toString();
      if (!/^\d+$/.test(text)) return;
      this.maxKeys = Number(text);
      this.evict();
    }
  }

  close(): void {
    this.streams.close();
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
    for (const key of keys) {
      const k = keyOf(key);
      let ids = this.keys.get(k);
      if (ids === undefined) this.keys.set(k, (ids = new Set()));
      if (!ids.has(id)) {
        ids.add(id);
        this.items++;
      }
    }
    this.evict();
  }

  /** Over tracking-table-max-keys (0: no limit): the oldest keys are invalidated, as Redis does. */
  private evict(): void {
    if (this.maxKeys === 0) return;
    while (this.keys.size > this.maxKeys) {
      const oldest = this.keys.keys().next().value!;
      this.invalidateKey(Buffer.from(oldest, "latin1"), oldest, 0);
    }
  }

  /** Keys changed on a node (one event loop of its, as the stream batches them). */
  private invalidate(keys: readonly Buffer[]): void {
    // The stream lists a batch in byte order; Redis tells normal-mode clients in the order
    // the keys were written, which the proxy knows for the writes it forwarded.
    const now = Date.now();
    const seqs: number[] = [];
    const writers = keys.map((key, i) => {
      const k = keyOf(key);
      const write = this.writes.get(k);
      seqs[i] = 0;
      if (write === undefined) return 0;
      this.writes.delete(k);
      if (now - write.at > WRITE_MATCH_MS) return 0;
      seqs[i] = write.seq;
      return write.writer;
    });
    const order = keys.map((_, i) => i).sort((a, b) => seqs[a] - seqs[b]);
    for (const i of order) this.invalidateKey(keys[i], keyOf(keys[i]), writers[i]);
    if (this.prefixes.size > 0) this.broadcast(keys, writers);
  }

  /** Normal mode: every client that read the key hears of it once, then forgets it. */
  private invalidateKey(key: Buffer, k: string, writer: number): void {
    const ids = this.keys.get(k);
    if (ids === undefined) return;
    this.keys.delete(k);
    this.items -= ids.size;
    let value: Buffer | null = null;
    for (const id of ids) {
      const client = this.lookup(id);
      const state = client?.tracking;
      if (client === undefined || state == null || state.bcast) continue;
      if (state.noloop && writer === id) continue;
      this.send(client, state, (value ??= keysValue([key])), [key]);
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
          this.send(client, state, common, matchingKeys);
          continue;
        }
        const theirs = matching.filter((i) => writers[i] !== id);
        const theirKeys = theirs.map((i) => keys[i]);
        if (theirs.length > 0) this.send(client, state, keysValue(theirKeys), theirKeys);
      }
    }
  }

  /**
   * Every key is gone (FLUSHALL/FLUSHDB, or a stream lost): the table empties and each
   * tracking client gets one null, even when several nodes flushed at once.
   */
  private flush(): void {
    this.keys.clear();
    this.items = 0;
    this.writes.clear();
    if (this.flushPending || this.trackers.size === 0) return;
    this.flushPending = true;
    setImmediate(() => {
      this.flushPending = false;
      for (const id of this.trackers) {
        const client = this.lookup(id);
        const state = client?.tracking;
        if (client !== undefined && state != null) this.send(client, state, flushValue(client.proto), null);
      }
    });
  }

  /** To the client itself or its REDIRECT client, as Redis' sendTrackingMessage. */
  private send(
    client: TrackedClient,
    state: TrackingState,
    value: Buffer,
    keys: readonly Buffer[] | null,
  ): void {
    let target = client;
    const redirecting = state.redirect !== 0;
    if (redirecting) {
      const redirected = this.lookup(state.redirect);
      if (redirected === undefined) {
        state.brokenRedirect = true;
        if (client.proto === 3) client.deliver(redirBrokenPush(state.redirect), []);
        return;
      }
      target = redirected;
    }
    if (target.proto === 3) target.deliver(invalidatePush(value), keys);
    // RESP2 has no pushes: only a REDIRECT client in Pub/Sub mode can be told.
    else if (redirecting && target.isPubSub) target.deliver(invalidateMessage(value), keys);
  }
}
