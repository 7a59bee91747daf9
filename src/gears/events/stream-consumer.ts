import { randomBytes } from "node:crypto";
import type { Logger } from "../../observability/log.js";
import type { Router } from "../../routing/router.js";
import type { Shards } from "../../routing/shards.js";
import type { Arg } from "../../resp/encode.js";
import { RespError, type RespValue } from "../../resp/values.js";
import type { JsonValue } from "../../sandbox/types.js";
import { noteProxyKey, PROXY_HASHTAG } from "../../routing/hidden-keys.js";
import { keySlot } from "../../routing/key-slot.js";
import { nodeScriptsOf, type NodeScripts } from "./node-scripts.js";
import { idTime, parseEntries, text, type StreamEntry } from "./stream-entries.js";
import {
  ALIVE_SCRIPT,
  LEASE_SCRIPT,
  NODE_PENDING_SCRIPT,
  NODE_READ_SCRIPT,
  PENDING_SCRIPT,
  REFRESH_SCRIPT,
  RELEASE_SCRIPT,
  TRIM_SCRIPT,
} from "./stream-scripts.js";

/** What a StreamReader registration was given (spec section 3). */
export interface StreamOptions {
  /** Key prefix: ending in `*` matches keys starting with the rest, otherwise the exact key. */
  prefix: string;
  batch: number;
  durationMs: number;
  onFailedPolicy: "continue" | "abort" | "retry";
  retryIntervalSec: number;
  trimStream: boolean;
  /**
   * Records also carry `fields`: every field and value in order, as latin1 text (one char a
   * byte), so repeated fields and binary ones survive (T&F's `record_raw`).
   */
  rawFields?: boolean;
}

export type StreamStatus = "OK" | "WAITING_FOR_RETRY_ON_FAILURE" | "ABORTED" | "PAUSED";

/** One run of the registration's pipeline on entries of one stream. */
export type StreamBatchRunner = (stream: Buffer, records: JsonValue[]) => Promise<{ failed: boolean }>;

/** Read and claim this many entries at most per command: a batch of one execution. */
const READ_COUNT = 512;
/**
 * How often the known streams are swept: one XREADGROUP per slot (one script per cluster
 * node) for every idle stream this proxy holds (entries whose notification was missed), owners of other proxies' streams
 * checked alive, and a share of the streams checked for a dead consumer's pending entries.
 */
const POLL_MS = 1000;
/** Streams in one command of a sweep (XREADGROUP's STREAMS, a script's KEYS). */
const SWEEP_CHUNK = 1000;
/** A long drain trims the stream at least this often (in batches). */
const TRIM_EVERY = 64;
/** How often the shards are scanned for streams created while notifications were off. */
const RESCAN_MS = 10_000;
/**
 * How long a stream's lease key lives unless refreshed. Whether the lease holds is its
 * holder's liveness key (renewed every third of EventLeaseMS, one key per registration and
 * proxy, not per stream); the lease key's own expiry only lets a stream nobody reads again
 * lose it. The holder refreshes all of its lease keys in a few commands every quarter of it.
 */
const LEASE_KEY_MS = 600_000;
/** The stream key does not exist (deleted): its group cannot be created. */
class StreamGone extends Error {}

/** One stream the registration consumes: its entries in hand and whether a run is going on. */
class StreamState {
  groupReady = false;
  running = false;
  /** In an XREADGROUP of a sweep: a run asked for meanwhile waits for it (`again`), keeping the order. */
  sweeping = false;
  /** Set when a run was asked for while one was going on. */
  again = false;
  /** Entries read (pending to this consumer) but not yet run: waiting for `batch`. */
  held: StreamEntry[] = [];
  heldSince = 0;
  durationTimer: NodeJS.Timeout | null = null;
  retryTimer: NodeJS.Timeout | null = null;
  /** The last read error logged, so a lasting one is logged once. */
  lastError = "";
  /** Batches acknowledged since the stream was last trimmed. */
  untrimmed = 0;
  /** XAUTOCLAIM's cursor, walked one page per claim. */
  claimCursor = "0-0";
  /** When a sweep next looks for a dead consumer's pending entries (every StreamClaimIdleMS/2). */
  nextClaimAt = 0;
  /** Whether this proxy holds the stream's lease (it alone reads the stream for the group). */
  leased = false;
  /** The live proxy holding the lease: not tried again until a sweep finds it dead. */
  holder: string | null = null;
  /** The sequence number of the last `xadd` notification on this stream. */
  noticed = 0;
  /** The first notification not yet known handled (0: none); `sync` writers wait for it. */
  waitFrom = 0;

  constructor(
    readonly key: Buffer,
    /** `{gears-proxy}:stream-lease:<group>:<stream>`. */
    readonly leaseKey: string,
  ) {}
}

/** Splits `items` into runs of at most SWEEP_CHUNK that can share one command: by slot in a cluster. */
function chunksBySlot<T>(items: T[], slotOf: ((item: T) => number) | null): T[][] {
  const groups = new Map<number, T[]>();
  for (const item of items) {
    const slot = slotOf === null ? 0 : slotOf(item);
    let group = groups.get(slot);
    if (group === undefined) groups.set(slot, (group = []));
    group.push(item);
  }
  const chunks: T[][] = [];
  for (const group of groups.values())
    for (let i = 0; i < group.length; i += SWEEP_CHUNK) chunks.push(group.slice(i, i + SWEEP_CHUNK));
  return chunks;
}

function errorOf(reply: RespValue): string | null {
  return reply instanceof RespError ? reply.message : null;
}

/**
 * A StreamReader registration's reading side: a consumer group of its own on every stream
 * matching its prefix, and this proxy as one consumer in it. Entries are read when an
 * `xadd` notification says so (and by a sweep, for missed ones), run in batches, acknowledged
 * after the pipeline succeeds (at least once), and deleted when `trimStream` says so.
 * Entries left pending by a consumer that died (another proxy, or this one before a
 * restart) are claimed once idle for `claimIdleMs`. Several proxies share one group, so
 * each entry is handled by one of them.
 *
 * Idle streams cost per sweep, not per stream: one XREADGROUP of many streams per slot (in a
 * cluster of Redis >= 7.0, one script per node, whatever the slots: node-scripts.ts), one
 * liveness key per registration and proxy instead of a lease renewal per stream, and each
 * stream looked at for a dead consumer's entries once per StreamClaimIdleMS/2 (in scripts of
 * many streams, spread over the sweeps).
 */
export class StreamConsumer {
  status: StreamStatus = "OK";
  lastLagMs = 0;
  private lagTotal = 0;
  private lagRuns = 0;
  private readonly streams = new Map<string, StreamState>();
  private pollTimer: NodeJS.Timeout | null = null;
  private aliveTimer: NodeJS.Timeout | null = null;
  private lastScan = 0;
  private lastRefresh = 0;
  private sweepGoing = false;
  private stopped = false;
  /** Streams with runs going on or entries held. */
  private active = 0;
  /** `{gears-proxy}:stream-alive:<group>:`, then a consumer's name: its liveness key. */
  private readonly alivePrefix: string;
  /** Until when this proxy's liveness is known good (leases held may be used without asking). */
  private aliveUntil = 0;
  /** Whether this proxy's liveness was set at all (a lapse after it drops every lease). */
  private aliveOnce = false;
  private aliving: Promise<void> | null = null;
  /**
   * The liveness key's value: this object's own, so that the stop of the object a REPLACE or
   * UPGRADE replaces (same group, same proxy) does not delete its successor's liveness.
   */
  private readonly aliveToken = randomBytes(8).toString("hex");
  /** The last sweep failure logged, so a lasting one is logged once. */
  private lastSweepError = "";
  /** Counts `xadd` notifications: a `sync` writer waits for those before its mark (syncMark). */
  private seq = 0;
  /** Streams with notifications not yet known handled. */
  private readonly undrained = new Set<StreamState>();
  /** The sweep's scripts of many slots on one cluster node. */
  private readonly nodeScripts: NodeScripts;

  constructor(
    private readonly router: Router,
    private readonly shards: Shards,
    private readonly log: Logger,
    readonly group: string,
    private readonly consumer: string,
    readonly options: StreamOptions,
    private readonly claimIdleMs: () => number,
    /** How long a stream's lease lasts unless renewed (EventLeaseMS). */
    private readonly leaseMs: () => number,
    private readonly runBatch: StreamBatchRunner,
    /** Called when the consumer stops being busy, or handled notifications (`sync` writers wait for that). */
    private readonly onIdle: () => void,
    /** The database its streams are in. */
    private readonly db = 0,
  ) {
    this.alivePrefix = `${PROXY_HASHTAG}:stream-alive:${group}:`;
    this.nodeScripts = nodeScriptsOf(shards, log);
    noteProxyKey(this.alivePrefix + consumer, true);
  }

  /** A command in the database the registration was made from. */
  private call(argv: readonly Arg[]): Promise<RespValue> {
    return this.router.call(argv, this.db);
  }

  get avgLagMs(): number {
    return this.lagRuns === 0 ? 0 : Math.round(this.lagTotal / this.lagRuns);
  }

  clearStats(): void {
    this.lastLagMs = 0;
    this.lagTotal = 0;
    this.lagRuns = 0;
  }

  /** Whether entries are being run or wait in hand. */
  get busy(): boolean {
    return !this.stopped && this.active > 0;
  }

  /**
   * A mark for a `sync` write: passed(mark) is true once every `xadd` notification received
   * before it was handled (its stream read through it and the entries run), whatever came after.
   */
  syncMark(): number {
    return this.seq;
  }

  passed(mark: number): boolean {
    // Paused or aborted: nothing runs until asked, so nothing is waited for (as before).
    if (this.stopped || this.status === "PAUSED" || this.status === "ABORTED") return true;
    for (const state of this.undrained) if (state.waitFrom <= mark) return false;
    return true;
  }

  /** Finds the existing streams (their entries are processed now) and starts sweeping. */
  start(): void {
    this.pollTimer = setInterval(() => void this.sweep(), POLL_MS);
    this.pollTimer.unref();
    this.scheduleAlive();
    void this.scan();
  }

  matches(key: string): boolean {
    const prefix = this.options.prefix;
    return prefix.endsWith("*") ? key.startsWith(prefix.slice(0, -1)) : key === prefix;
  }

  /** An `xadd` notification on a stream matching the prefix. */
  onAppended(key: Buffer): void {
    if (this.stopped) return;
    const state = this.stateOf(key);
    state.noticed = ++this.seq;
    if (state.waitFrom === 0) {
      state.waitFrom = state.noticed;
      this.undrained.add(state);
    }
    this.kick(state);
  }

  pause(): void {
    if (this.status !== "ABORTED") this.status = "PAUSED";
  }

  /** Back to reading; a registration aborted by a failure starts again too. */
  unpause(): void {
    if (this.status !== "PAUSED" && this.status !== "ABORTED") return;
    this.status = "OK";
    for (const state of this.streams.values()) this.kick(state);
  }

  /**
   * Stops reading. With `destroyGroups` (the registration is gone for good) its consumer
   * groups are removed; otherwise they stay, with this consumer's pending entries, for the
   * next start or another proxy to pick up.
   */
  async stop(destroyGroups: boolean): Promise<void> {
    this.stopped = true;
    if (this.pollTimer !== null) clearInterval(this.pollTimer);
    if (this.aliveTimer !== null) clearTimeout(this.aliveTimer);
    for (const state of this.streams.values()) {
      if (state.durationTimer !== null) clearTimeout(state.durationTimer);
      if (state.retryTimer !== null) clearTimeout(state.retryTimer);
    }
    const held = [...this.streams.values()].filter((s) => s.leased);
    await Promise.all(
      chunksBySlot(held, null).map((chunk) =>
        this.call([
          "EVAL",
          RELEASE_SCRIPT,
          chunk.length,
          ...chunk.map((s) => s.leaseKey),
          this.consumer,
        ]).catch(() => null),
      ),
    );
    // Gone at once: the other proxies take the streams at their next sweep.
    await this.call(["EVAL", RELEASE_SCRIPT, "1", this.alivePrefix + this.consumer, this.aliveToken]).catch(
      () => null,
    );
    if (destroyGroups) {
      await Promise.all(
        [...this.streams.values()].map((s) =>
          this.call(["XGROUP", "DESTROY", s.key, this.group]).catch(() => null),
        ),
      );
    }
    this.undrained.clear();
    this.onIdle();
  }

  private wake(): void {
    if (!this.busy) this.onIdle();
  }

  /**
   * The stream was read, at a moment after notification `through`, to its end, and what
   * came was run: `sync` writers waiting for notifications up to it go on.
   */
  private handled(state: StreamState, through: number): void {
    if (state.waitFrom === 0 || state.waitFrom > through) return;
    if (state.noticed <= through) {
      state.waitFrom = 0;
      this.undrained.delete(state);
    } else {
      // Notified again since: a later read goes through those.
      state.waitFrom = through + 1;
    }
    this.onIdle();
  }

  private stateOf(key: Buffer): StreamState {
    const name = key.toString("latin1");
    let state = this.streams.get(name);
    if (state === undefined) {
      const leaseKey = `${PROXY_HASHTAG}:stream-lease:${this.group}:${name}`;
      noteProxyKey(leaseKey, true);
      state = new StreamState(key, leaseKey);
      // Spread over the sweeps: the streams found together are not all looked at together.
      state.nextClaimAt = Date.now() + Math.random() * (this.claimIdleMs() / 2);
      this.streams.set(name, state);
    }
    return state;
  }

  /** A stream a scan found: a new one is read now; a known one is the sweeps' to look at. */
  private found(key: Buffer): void {
    if (!this.streams.has(key.toString("latin1"))) this.kick(this.stateOf(key));
  }

  /** Streams whose names match the prefix, on every master (`SCAN ... TYPE stream`). */
  private async scan(): Promise<void> {
    this.lastScan = Date.now();
    const prefix = this.options.prefix;
    const pattern = prefix.endsWith("*") ? prefix.slice(0, -1).replace(/[*?[\]\\]/g, "\\$&") + "*" : null;
    if (pattern === null) {
      const type = await this.call(["TYPE", prefix]).catch(() => null);
      if (type === "stream") this.found(Buffer.from(prefix));
      return;
    }
    for (const node of this.shards.masters()) {
      let cursor = "0";
      do {
        const reply = await this.shards
          .call(node.id, ["SCAN", cursor, "MATCH", pattern, "COUNT", "1000", "TYPE", "stream"], 0, this.db)
          .catch(() => null);
        if (!Array.isArray(reply) || this.stopped) break;
        cursor = text(reply[0]);
        const keys = reply[1];
        if (Array.isArray(keys)) for (const k of keys) if (Buffer.isBuffer(k)) this.found(k);
      } while (cursor !== "0");
    }
  }

  /** Renews this proxy's liveness every third of EventLeaseMS. */
  private scheduleAlive(): void {
    if (this.stopped) return;
    this.aliveTimer = setTimeout(
      () => {
        void this.renewAlive()
          .catch(() => {})
          .finally(() => this.scheduleAlive());
      },
      Math.max(100, this.leaseMs()) / 3,
    );
    this.aliveTimer.unref();
  }

  /**
   * Renews (or sets) this proxy's liveness key. Found run out (this proxy stalled past
   * EventLeaseMS), every lease it held may have been taken: they are taken again (or not)
   * one by one, and what was in hand is left for the claim that follows a take.
   */
  private renewAlive(): Promise<void> {
    if (this.aliving !== null) return this.aliving;
    const ttl = Math.max(100, this.leaseMs());
    const sent = Date.now();
    this.aliving = this.call([
      "EVAL",
      ALIVE_SCRIPT,
      "1",
      this.alivePrefix + this.consumer,
      this.aliveToken,
      ttl,
    ])
      .then((reply) => {
        const error = errorOf(reply);
        if (error !== null) throw new Error(`stream liveness: ${error}`);
        if (Number(reply) === 0 && this.aliveOnce) {
          let lost = 0;
          for (const state of this.streams.values()) {
            if (!state.leased) continue;
            state.leased = false;
            state.held = [];
            lost++;
          }
          if (lost > 0) {
            this.log.warn(
              { group: this.group, streams: lost },
              "this proxy's stream leases ran out (a stall): taking them again",
            );
          }
        }
        this.aliveOnce = true;
        // The key lives `ttl` from when the server set it, later than `sent`: half of it is a safe margin.
        this.aliveUntil = sent + ttl / 2;
      })
      .finally(() => {
        this.aliving = null;
      });
    return this.aliving;
  }

  /**
   * Every POLL_MS, for all known streams at once: the idle ones this proxy holds read in one
   * XREADGROUP per slot, the holders of the others checked alive, a share looked at for a
   * dead consumer's pending entries, and now and then the lease keys refreshed and the
   * shards scanned for new streams.
   */
  private async sweep(): Promise<void> {
    if (this.stopped || this.sweepGoing) return;
    this.sweepGoing = true;
    try {
      const now = Date.now();
      if (now - this.lastScan >= RESCAN_MS) void this.scan();
      if (now >= this.aliveUntil) await this.renewAlive();
      const idle: StreamState[] = [];
      const claims: StreamState[] = [];
      const holders = new Map<string, StreamState[]>();
      for (const state of this.streams.values()) {
        if (state.running || state.sweeping || state.retryTimer !== null) continue;
        if (state.holder !== null) {
          let list = holders.get(state.holder);
          if (list === undefined) holders.set(state.holder, (list = []));
          list.push(state);
        } else if (!state.leased || !state.groupReady) {
          // Not tried yet, or a try failed (a shard down): one by one.
          this.kick(state);
        } else if (this.status === "OK" && state.held.length === 0) {
          idle.push(state);
          if (now >= state.nextClaimAt) claims.push(state);
        }
      }
      await Promise.all([this.readIdle(idle), this.checkHolders(holders), this.findPending(claims)]);
      if (now - this.lastRefresh >= LEASE_KEY_MS / 4) await this.refreshLeases();
      this.lastSweepError = "";
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      // A shard that stays down would otherwise log this every sweep.
      if (message !== this.lastSweepError)
        this.log.warn({ group: this.group, err: message }, "stream sweep failed");
      this.lastSweepError = message;
    } finally {
      this.sweepGoing = false;
    }
  }

  /**
   * A sweep's work on `states` in as few commands as the servers allow: on one server, chunks
   * of many streams (`inSlot`); in a cluster, one script per node (`onNode`, Redis >= 7.0:
   * false when it could not run there), else chunks of one slot each.
   */
  private async inFewCommands(
    states: StreamState[],
    onNode: (node: string, chunk: StreamState[]) => Promise<boolean>,
    inSlot: (chunk: StreamState[]) => Promise<void>,
  ): Promise<void> {
    if (states.length === 0) return;
    if (!this.shards.clustered) {
      await Promise.all(chunksBySlot(states, null).map(inSlot));
      return;
    }
    await Promise.all(
      [...this.byNode(states)].flatMap(([node, onIt]) =>
        chunksBySlot(onIt, null).map(async (chunk) => {
          if (!(await onNode(node, chunk)))
            await Promise.all(chunksBySlot(chunk, (state) => keySlot(state.key)).map(inSlot));
        }),
      ),
    );
  }

  /** New entries of idle streams, many streams a command; a stream that got some runs them. */
  private readIdle(idle: StreamState[]): Promise<void> {
    return this.inFewCommands(
      idle,
      (node, chunk) => this.readOnNode(node, chunk),
      (chunk) => this.readChunk(chunk),
    );
  }

  /** Streams by the master serving their slot, as the proxy's map has it now. */
  private byNode(states: StreamState[]): Map<string, StreamState[]> {
    const byNode = new Map<string, StreamState[]>();
    for (const state of states) {
      const node = this.nodeScripts.nodeForSlot(keySlot(state.key));
      let list = byNode.get(node);
      if (list === undefined) byNode.set(node, (list = []));
      list.push(state);
    }
    return byNode;
  }

  /** One script reading `chunk` (streams of many slots on `node`); false when it cannot run there. */
  private async readOnNode(node: string, chunk: StreamState[]): Promise<boolean> {
    for (const state of chunk) state.sweeping = true;
    const through = this.seq;
    const replies = await this.nodeScripts
      .run(
        node,
        NODE_READ_SCRIPT,
        [this.group, this.consumer, READ_COUNT, ...chunk.map((s) => s.key)],
        chunk.length,
      )
      .catch(() => null);
    if (replies === null) {
      // Runs asked for meanwhile stay asked (`again`): the per-slot reads kick them after.
      for (const state of chunk) state.sweeping = false;
      return false;
    }
    const got = new Set<StreamState>();
    const failed = new Set<StreamState>();
    chunk.forEach((state, i) => {
      const reply = replies[i];
      if (Buffer.isBuffer(reply) || typeof reply === "string" || reply instanceof RespError) {
        // Its slot moved away (or its group went): read the per-slot way, which follows MOVED and ASK.
        failed.add(state);
        return;
      }
      const entries = parseEntries(reply);
      if (entries.length === 0) return;
      if (state.leased) this.hold(state, entries);
      got.add(state);
    });
    this.afterSweepRead(chunk, through, got, failed);
    return true;
  }

  private async readChunk(chunk: StreamState[]): Promise<void> {
    for (const state of chunk) state.sweeping = true;
    const through = this.seq;
    let reply: RespValue | Error;
    try {
      reply = await this.call([
        "XREADGROUP",
        "GROUP",
        this.group,
        this.consumer,
        "COUNT",
        READ_COUNT,
        "STREAMS",
        ...chunk.map((s) => s.key),
        ...chunk.map(() => ">"),
      ]);
    } catch (err) {
      reply = err instanceof Error ? err : new Error(String(err));
    }
    const got = new Set<StreamState>();
    const failed = reply instanceof Error || reply instanceof RespError;
    if (!failed && Array.isArray(reply)) {
      const byName = new Map(chunk.map((s) => [s.key.toString("latin1"), s]));
      for (const item of reply) {
        if (!Array.isArray(item) || !Buffer.isBuffer(item[0])) continue;
        const state = byName.get(item[0].toString("latin1"));
        if (state === undefined) continue;
        const entries = parseEntries(item[1]);
        if (entries.length === 0) continue;
        // Still this proxy's (a lapse found meanwhile dropped the lease): the claim after a take gets them.
        if (state.leased) this.hold(state, entries);
        got.add(state);
      }
    }
    this.afterSweepRead(chunk, through, got, failed ? new Set(chunk) : null);
  }

  /**
   * A sweep's read of `chunk` done (at a moment after notification `through`): streams that
   * got entries, whose read failed or that were asked for meanwhile run their loop; the
   * others were read to their end.
   */
  private afterSweepRead(
    chunk: StreamState[],
    through: number,
    got: Set<StreamState>,
    failed: Set<StreamState> | null,
  ): void {
    for (const state of chunk) {
      state.sweeping = false;
      if (got.has(state) || state.again || failed?.has(state) === true) {
        // A failed read (a stream deleted, its group gone, a shard down): each stream's own loop sorts it out.
        state.again = false;
        this.kick(state);
      } else {
        this.handled(state, through);
      }
    }
  }

  /** Other proxies' streams: tried again only once their holder's liveness key is gone. */
  private async checkHolders(holders: Map<string, StreamState[]>): Promise<void> {
    if (holders.size === 0) return;
    const names = [...holders.keys()];
    for (let i = 0; i < names.length; i += SWEEP_CHUNK) {
      const some = names.slice(i, i + SWEEP_CHUNK);
      const reply = await this.call(["MGET", ...some.map((n) => this.alivePrefix + n)]);
      if (!Array.isArray(reply)) continue;
      some.forEach((name, j) => {
        if (reply[j] !== null) return;
        for (const state of holders.get(name)!) {
          state.holder = null;
          this.kick(state);
        }
      });
    }
  }

  /** Streams due for it looked at for a dead consumer's pending entries; those found are claimed. */
  private async findPending(due: StreamState[]): Promise<void> {
    const half = this.claimIdleMs() / 2;
    const now = Date.now();
    for (const state of due) state.nextClaimAt = now + half;
    await this.inFewCommands(
      due,
      (node, chunk) => this.findPendingOnNode(node, chunk),
      (chunk) => this.findPendingInSlot(chunk),
    );
  }

  /** NODE_PENDING_SCRIPT on `chunk` (streams of many slots on `node`); false when it cannot run there. */
  private async findPendingOnNode(node: string, chunk: StreamState[]): Promise<boolean> {
    const replies = await this.nodeScripts
      .run(node, NODE_PENDING_SCRIPT, [this.group, this.consumer, ...chunk.map((s) => s.key)], chunk.length)
      .catch(() => null);
    if (replies === null) return false;
    // Found (1), or not looked at here (an error: its slot moved): the claim looks itself.
    chunk.forEach((state, i) => {
      if (replies[i] !== 0) this.kick(state, true);
    });
    return true;
  }

  /** PENDING_SCRIPT on streams of one slot (or of the one server). */
  private async findPendingInSlot(chunk: StreamState[]): Promise<void> {
    const reply = await this.call([
      "EVAL",
      PENDING_SCRIPT,
      chunk.length,
      ...chunk.map((s) => s.key),
      this.group,
      this.consumer,
    ]);
    if (!Array.isArray(reply)) return;
    for (const index of reply) {
      const state = chunk[Number(index) - 1];
      if (state !== undefined) this.kick(state, true);
    }
  }

  /** The lease keys of the streams held, refreshed (a stream idle for long keeps its holder). */
  private async refreshLeases(): Promise<void> {
    this.lastRefresh = Date.now();
    const held = [...this.streams.values()].filter((s) => s.leased);
    for (const chunk of chunksBySlot(held, null)) {
      const reply = await this.call([
        "EVAL",
        REFRESH_SCRIPT,
        chunk.length,
        ...chunk.map((s) => s.leaseKey),
        this.consumer,
        LEASE_KEY_MS,
      ]);
      if (!Array.isArray(reply)) continue;
      for (const index of reply) {
        const state = chunk[Number(index) - 1];
        if (state === undefined || !state.leased) continue;
        state.leased = false;
        state.held = [];
        this.log.warn({ group: this.group, stream: state.key.toString() }, "lost the lease of a stream");
      }
    }
  }

  /** Starts a run of the stream's loop unless one is going on (then it goes round again). */
  private kick(state: StreamState, claim = false): void {
    if (this.stopped || this.status !== "OK" || state.retryTimer !== null) return;
    if (state.running || state.sweeping) {
      state.again = true;
      return;
    }
    state.running = true;
    this.active++;
    void this.loop(state, claim).finally(() => {
      state.running = false;
      this.active--;
      this.wake();
    });
  }

  /** Reads and runs until the stream has nothing more for this consumer. */
  private async loop(state: StreamState, claim: boolean): Promise<void> {
    // Ended otherwise than by a drained read or a batch held back (by `duration`, a retry or
    // an abort): not this proxy's stream to read, or a failure. A `sync` writer does not wait for it.
    let released = true;
    try {
      if (!state.groupReady) await this.createGroup(state);
      if (!(await this.holdLease(state))) return;
      if (claim) await this.claim(state);
      do {
        state.again = false;
        if (!(await this.holdLease(state))) return;
        // Entries already in hand (a retried or resumed batch) go first, before reading more.
        // Not when they are fewer than a batch: a batch over READ_COUNT then never filled and
        // this loop went round without an await that yields, hanging the whole proxy.
        const full = state.held.length >= Math.max(this.options.batch, READ_COUNT);
        const through = this.seq;
        const got = full ? READ_COUNT : await this.read(state);
        // As in RedisGears, an execution takes `batch` entries: the failure policy applies to exactly those.
        while (!this.stopped && this.status === "OK" && this.ready(state)) {
          if (!(await this.holdLease(state))) return;
          const batch = state.held.splice(0, this.options.batch);
          if (state.held.length > 0) state.heldSince = Date.now();
          if (!(await this.run(state, batch))) {
            released = false;
            return;
          }
        }
        // Read to the end as it was after notification `through`, and all of it run.
        if (got < READ_COUNT && state.held.length === 0) this.handled(state, through);
        if (got < READ_COUNT && !state.again) {
          released = false;
          return;
        }
      } while (!this.stopped && this.status === "OK");
    } catch (err) {
      if (err instanceof StreamGone) {
        // Deleted (and not written again): nothing to read until an xadd brings it back.
        if (state.held.length === 0) this.streams.delete(state.key.toString("latin1"));
        return;
      }
      const message = err instanceof Error ? err.message : String(err);
      // A shard that stays down would otherwise log this every sweep.
      if (message === state.lastError) return;
      state.lastError = message;
      this.log.warn({ group: this.group, stream: state.key.toString(), err: message }, "stream read failed");
    } finally {
      if (state.untrimmed > 0) await this.trim(state);
      if (released) this.handled(state, this.seq);
    }
  }

  /**
   * Whether this proxy is the one consuming the stream now. One proxy at a time reads a
   * stream for a group, so its entries are applied in stream order. A lease holds while its
   * holder's liveness key (renewed every third of EventLeaseMS) lives; taking one over (its
   * holder died, stalled or gave it back), the new holder first claims every entry pending in
   * the group, at once, not after StreamClaimIdleMS. Held by a live proxy, the stream is
   * tried again when a sweep finds that proxy's liveness key gone.
   */
  private async holdLease(state: StreamState): Promise<boolean> {
    if (state.leased && Date.now() < this.aliveUntil) return true;
    if (!state.leased && state.holder !== null) return false;
    if (Date.now() >= this.aliveUntil) await this.renewAlive();
    if (this.stopped) return false;
    if (state.leased) return true;
    const reply = await this.call([
      "EVAL",
      LEASE_SCRIPT,
      "1",
      state.leaseKey,
      this.consumer,
      LEASE_KEY_MS,
      this.alivePrefix,
    ]);
    const error = errorOf(reply);
    if (error !== null) throw new Error(`stream lease: ${error}`);
    if (this.stopped) return false;
    if (typeof reply === "number") {
      state.leased = true;
      state.holder = null;
      await this.takeOver(state);
      return true;
    }
    state.holder = text(reply);
    return false;
  }

  /** A stream just taken: every entry pending in the group (a dead owner's) comes first, in order. */
  private async takeOver(state: StreamState): Promise<void> {
    state.held = [];
    let cursor = "0-0";
    let claimed = 0;
    do {
      const reply = await this.call([
        "XAUTOCLAIM",
        state.key,
        this.group,
        this.consumer,
        "0",
        cursor,
        "COUNT",
        String(READ_COUNT),
      ]);
      if (!Array.isArray(reply)) break;
      cursor = text(reply[0]) || "0-0";
      const entries = parseEntries(reply[1]).filter((e) => Object.keys(e.value).length > 0);
      const deleted = Array.isArray(reply[2]) ? reply[2].map(text) : [];
      if (deleted.length > 0) await this.call(["XACK", state.key, this.group, ...deleted]);
      this.hold(state, entries);
      claimed += entries.length;
    } while (cursor !== "0-0" && !this.stopped);
    if (claimed > 0) {
      this.log.info(
        { group: this.group, stream: state.key.toString(), entries: claimed },
        "took over a stream: claimed the entries pending in its group",
      );
    }
  }

  /** Whether the entries in hand make a batch now; if not, a duration timer fires it later. */
  private ready(state: StreamState): boolean {
    if (state.held.length === 0) return false;
    if (state.held.length >= this.options.batch) return true;
    const { durationMs } = this.options;
    if (durationMs <= 0) return false;
    const waited = Date.now() - state.heldSince;
    if (waited >= durationMs) return true;
    if (state.durationTimer === null) {
      // Counted as busy while entries wait, so `sync` writers wait for the batch too.
      state.durationTimer = setTimeout(() => {
        state.durationTimer = null;
        this.active--;
        this.kick(state);
      }, durationMs - waited);
      state.durationTimer.unref();
      this.active++;
    }
    return false;
  }

  private async createGroup(state: StreamState): Promise<void> {
    const reply = await this.call(["XGROUP", "CREATE", state.key, this.group, "0"]);
    const error = errorOf(reply);
    if (error?.includes("requires the key to exist")) throw new StreamGone();
    if (error !== null && !error.startsWith("BUSYGROUP")) throw new Error(`XGROUP CREATE: ${error}`);
    state.groupReady = true;
  }

  /** New entries for this consumer, added to those in hand; how many came. */
  private async read(state: StreamState): Promise<number> {
    const argv = ["XREADGROUP", "GROUP", this.group, this.consumer, "COUNT", String(READ_COUNT), "STREAMS"];
    let reply = await this.call([...argv, state.key, ">"]);
    if (errorOf(reply)?.startsWith("NOGROUP")) {
      // The stream was deleted and written again: the group went with it. Unless the
      // registration went meanwhile (its groups destroyed here or by another proxy): a group
      // made again now would outlive it and take the stream's next entries.
      if (this.stopped) return 0;
      await this.createGroup(state);
      if (this.stopped) return 0;
      reply = await this.call([...argv, state.key, ">"]);
    }
    const error = errorOf(reply);
    if (error !== null) throw new Error(`XREADGROUP: ${error}`);
    state.lastError = "";
    const entries = Array.isArray(reply) && Array.isArray(reply[0]) ? parseEntries(reply[0][1]) : [];
    this.hold(state, entries);
    return entries.length;
  }

  private hold(state: StreamState, entries: StreamEntry[]): void {
    if (entries.length === 0) return;
    if (state.held.length === 0) state.heldSince = Date.now();
    state.held.push(...entries);
  }

  /** One page of entries idle too long in other consumers' hands (a proxy that died). */
  private async claim(state: StreamState): Promise<void> {
    const reply = await this.call([
      "XAUTOCLAIM",
      state.key,
      this.group,
      this.consumer,
      String(this.claimIdleMs()),
      state.claimCursor,
      "COUNT",
      String(READ_COUNT),
    ]);
    if (!Array.isArray(reply)) return;
    state.claimCursor = text(reply[0]) || "0-0";
    const entries = parseEntries(reply[1]).filter((e) => Object.keys(e.value).length > 0);
    const deleted = Array.isArray(reply[2]) ? reply[2].map(text) : [];
    if (deleted.length > 0) await this.call(["XACK", state.key, this.group, ...deleted]);
    if (entries.length > 0) {
      this.log.info(
        { group: this.group, stream: state.key.toString(), entries: entries.length },
        "claimed idle entries",
      );
    }
    this.hold(state, entries);
  }

  /** Runs a batch and settles it by the failure policy; false when reading must stop. */
  private async run(state: StreamState, batch: StreamEntry[]): Promise<boolean> {
    const key = state.key.toString();
    const raw = this.options.rawFields === true;
    const records = batch.map((e): JsonValue =>
      raw ? { key, id: e.id, value: e.value, fields: e.fields } : { key, id: e.id, value: e.value },
    );
    const lag = Date.now() - idTime(batch[0].id);
    this.lastLagMs = lag;
    this.lagTotal += lag;
    this.lagRuns++;
    const { failed } = await this.runBatch(state.key, records);
    if (!failed || this.options.onFailedPolicy === "continue") {
      await this.settle(state, batch);
      return true;
    }
    if (this.options.onFailedPolicy === "abort") {
      // The entries stay pending in the group: unpausing (or a restart) goes on from them.
      this.status = "ABORTED";
      // Not unshift(...batch): a batch of some 120,000 entries is too many arguments for one call.
      state.held = batch.concat(state.held);
      return false;
    }
    this.status = "WAITING_FOR_RETRY_ON_FAILURE";
    state.held = batch.concat(state.held);
    this.active++;
    state.retryTimer = setTimeout(() => {
      state.retryTimer = null;
      this.active--;
      if (this.stopped) return;
      if (this.status === "WAITING_FOR_RETRY_ON_FAILURE") this.status = "OK";
      void this.retry(state);
    }, this.options.retryIntervalSec * 1000);
    state.retryTimer.unref();
    return false;
  }

  /** Re-runs the held batch: the entries are claimed again first so no other proxy takes them meanwhile. */
  private async retry(state: StreamState): Promise<void> {
    if (state.held.length > 0) {
      const ids = state.held.map((e) => e.id);
      await this.call(["XCLAIM", state.key, this.group, this.consumer, "0", ...ids, "JUSTID"]).catch(
        () => null,
      );
    }
    this.kick(state);
  }

  /**
   * Acknowledges the batch. Trimming (a script that reads every group's progress) is done
   * once per drained loop, or every TRIM_EVERY batches of a long one, not once per batch.
   */
  private async settle(state: StreamState, batch: StreamEntry[]): Promise<void> {
    const ids = batch.map((e) => e.id);
    const acked = await this.call(["XACK", state.key, this.group, ...ids]);
    const error = errorOf(acked);
    if (error !== null) throw new Error(`XACK: ${error}`);
    if (this.options.trimStream && ++state.untrimmed >= TRIM_EVERY) await this.trim(state);
  }

  /** Deletes what every consumer group of the stream has processed. */
  private async trim(state: StreamState): Promise<void> {
    state.untrimmed = 0;
    const trimmed = await this.call(["EVAL", TRIM_SCRIPT, "1", state.key]).catch((err: Error) => err);
    const error = trimmed instanceof Error ? trimmed.message : errorOf(trimmed);
    if (error !== null) this.log.warn({ group: this.group, err: error }, "could not trim the stream");
  }
}
