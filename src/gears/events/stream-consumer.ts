import type { Logger } from "../../observability/log.js";
import type { Router } from "../../routing/router.js";
import type { Shards } from "../../routing/shards.js";
import type { Arg } from "../../resp/encode.js";
import { RespError, type RespValue } from "../../resp/values.js";
import type { JsonValue } from "../../sandbox/types.js";
import { noteProxyKey, PROXY_HASHTAG } from "../../routing/hidden-keys.js";

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
/** How often each known stream is polled (missed notifications, entries of dead consumers). */
const POLL_MS = 1000;
/** A long drain trims the stream at least this often (in batches). */
const TRIM_EVERY = 64;
/** How often the shards are scanned for streams created while notifications were off. */
const RESCAN_MS = 10_000;

/**
 * Deletes what every consumer group of the stream has processed: entries older than the
 * oldest pending entry of any group, or than the last delivered one of a group with none
 * pending. Other registrations' groups (and foreign ones) keep everything they still need.
 */
const TRIM_SCRIPT = `
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a1, a2, b1, b2)
  return a1 < b1 or (a1 == b1 and a2 < b2)
end
local min1, min2 = nil, nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local m1, m2
  if tonumber(info['pending']) > 0 then
    m1, m2 = parse(redis.call('XPENDING', KEYS[1], info['name'])[2])
  else
    m1, m2 = parse(info['last-delivered-id'])
    m2 = m2 + 1
  end
  if min1 == nil or less(m1, m2, min1, min2) then min1, min2 = m1, m2 end
end
if min1 == nil then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', min1, min2))`;

/**
 * Takes or renews the lease of one stream for one consumer group: -1 renewed, -2 taken
 * (it was free), else the milliseconds left of another proxy's lease.
 */
const LEASE_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return -1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return -2
end
return redis.call('PTTL', KEYS[1])`;

/** Gives the lease back if it is this proxy's (a clean stop hands the stream over at once). */
const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** The stream key does not exist (deleted): its group cannot be created. */
class StreamGone extends Error {}

interface StreamEntry {
  id: string;
  value: Record<string, string>;
  /** Fields and values in order, latin1 (see StreamOptions.rawFields). */
  fields: string[];
}

/** One stream the registration consumes: its entries in hand and whether a run is going on. */
class StreamState {
  groupReady = false;
  running = false;
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
  /** XAUTOCLAIM's cursor, walked one page per poll. */
  claimCursor = "0-0";
  /** Whether this proxy holds the stream's lease (it alone reads the stream for the group). */
  leased = false;
  /** When the lease is renewed next. */
  renewAt = 0;
  /** Tries the lease again when another proxy's runs out. */
  leaseTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly key: Buffer,
    /** `{gears-proxy}:stream-lease:<group>:<stream>`. */
    readonly leaseKey: string,
  ) {}
}

function text(v: RespValue | undefined): string {
  return Buffer.isBuffer(v) || typeof v === "string" ? v.toString() : "";
}

/** Entries of an XREADGROUP/XAUTOCLAIM reply: `[[id, [f, v, ...]], ...]`; deleted ones have no fields. */
function parseEntries(list: RespValue | undefined): StreamEntry[] {
  if (!Array.isArray(list)) return [];
  const entries: StreamEntry[] = [];
  for (const item of list) {
    if (!Array.isArray(item)) continue;
    const fields = item[1];
    const value: Record<string, string> = {};
    const raw: string[] = [];
    if (Array.isArray(fields)) {
      for (let i = 0; i + 1 < fields.length; i += 2) value[text(fields[i])] = text(fields[i + 1]);
      for (const f of fields) raw.push(Buffer.isBuffer(f) ? f.toString("latin1") : text(f));
    }
    entries.push({ id: text(item[0]), value, fields: raw });
  }
  return entries;
}

function errorOf(reply: RespValue): string | null {
  return reply instanceof RespError ? reply.message : null;
}

/** The time part of a stream id, for the lag the registration shows. */
function idTime(id: string): number {
  return Number(id.slice(0, id.indexOf("-")));
}

/**
 * A StreamReader registration's reading side: a consumer group of its own on every stream
 * matching its prefix, and this proxy as one consumer in it. Entries are read when an
 * `xadd` notification says so (and by a poll, for missed ones), run in batches, acknowledged
 * after the pipeline succeeds (at least once), and deleted when `trimStream` says so.
 * Entries left pending by a consumer that died (another proxy, or this one before a
 * restart) are claimed once idle for `claimIdleMs`. Several proxies share one group, so
 * each entry is handled by one of them.
 */
export class StreamConsumer {
  status: StreamStatus = "OK";
  lastLagMs = 0;
  private lagTotal = 0;
  private lagRuns = 0;
  private readonly streams = new Map<string, StreamState>();
  private pollTimer: NodeJS.Timeout | null = null;
  private lastScan = 0;
  private stopped = false;
  /** Streams with runs going on or entries held: a `sync` registration waits for this to be 0. */
  private active = 0;

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
    /** Called when the consumer stops being busy (`sync` writers wait for that). */
    private readonly onIdle: () => void,
    /** The database its streams are in. */
    private readonly db = 0,
  ) {}

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

  /** Whether entries are being run or wait in hand (for `sync` registrations). */
  get busy(): boolean {
    return !this.stopped && this.active > 0;
  }

  /** Finds the existing streams (their entries are processed now) and starts polling. */
  start(): void {
    this.pollTimer = setInterval(() => void this.poll(), POLL_MS);
    this.pollTimer.unref();
    void this.scan();
  }

  matches(key: string): boolean {
    const prefix = this.options.prefix;
    return prefix.endsWith("*") ? key.startsWith(prefix.slice(0, -1)) : key === prefix;
  }

  /** An `xadd` notification on a stream matching the prefix. */
  onAppended(key: Buffer): void {
    if (this.stopped) return;
    this.kick(this.stateOf(key));
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
    for (const state of this.streams.values()) {
      if (state.durationTimer !== null) clearTimeout(state.durationTimer);
      if (state.retryTimer !== null) clearTimeout(state.retryTimer);
      if (state.leaseTimer !== null) clearTimeout(state.leaseTimer);
    }
    const held = [...this.streams.values()].filter((s) => s.leased);
    await Promise.all(
      held.map((s) => this.call(["EVAL", RELEASE_SCRIPT, "1", s.leaseKey, this.consumer]).catch(() => null)),
    );
    if (destroyGroups) {
      await Promise.all(
        [...this.streams.values()].map((s) =>
          this.call(["XGROUP", "DESTROY", s.key, this.group]).catch(() => null),
        ),
      );
    }
    this.onIdle();
  }

  private wake(): void {
    if (!this.busy) this.onIdle();
  }

  private stateOf(key: Buffer): StreamState {
    const name = key.toString("latin1");
    let state = this.streams.get(name);
    if (state === undefined) {
      const leaseKey = `${PROXY_HASHTAG}:stream-lease:${this.group}:${name}`;
      noteProxyKey(leaseKey, true);
      state = new StreamState(key, leaseKey);
      this.streams.set(name, state);
    }
    return state;
  }

  /** Streams whose names match the prefix, on every master (`SCAN ... TYPE stream`). */
  private async scan(): Promise<void> {
    this.lastScan = Date.now();
    const prefix = this.options.prefix;
    const pattern = prefix.endsWith("*") ? prefix.slice(0, -1).replace(/[*?[\]\\]/g, "\\$&") + "*" : null;
    if (pattern === null) {
      const type = await this.call(["TYPE", prefix]).catch(() => null);
      if (type === "stream") this.kick(this.stateOf(Buffer.from(prefix)));
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
        if (Array.isArray(keys)) for (const k of keys) if (Buffer.isBuffer(k)) this.kick(this.stateOf(k));
      } while (cursor !== "0");
    }
  }

  /** Every known stream, once a second: entries whose notification was missed, and dead consumers' ones. */
  private async poll(): Promise<void> {
    if (this.stopped) return;
    if (Date.now() - this.lastScan >= RESCAN_MS) void this.scan();
    for (const state of this.streams.values()) {
      if (!state.running && state.retryTimer === null) this.kick(state, true);
    }
  }

  /** Starts a run of the stream's loop unless one is going on (then it goes round again). */
  private kick(state: StreamState, claim = false): void {
    if (this.stopped || this.status !== "OK" || state.retryTimer !== null) return;
    if (state.running) {
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
        const got = full ? READ_COUNT : await this.read(state);
        // As in RedisGears, an execution takes `batch` entries: the failure policy applies to exactly those.
        while (!this.stopped && this.status === "OK" && this.ready(state)) {
          if (!(await this.holdLease(state))) return;
          const batch = state.held.splice(0, this.options.batch);
          if (state.held.length > 0) state.heldSince = Date.now();
          if (!(await this.run(state, batch))) return;
        }
        if (got < READ_COUNT && !state.again) return;
      } while (!this.stopped && this.status === "OK");
    } catch (err) {
      if (err instanceof StreamGone) {
        // Deleted (and not written again): nothing to read until an xadd brings it back.
        if (state.held.length === 0) this.streams.delete(state.key.toString("latin1"));
        return;
      }
      const message = err instanceof Error ? err.message : String(err);
      // A shard that stays down would otherwise log this every poll.
      if (message === state.lastError) return;
      state.lastError = message;
      this.log.warn({ group: this.group, stream: state.key.toString(), err: message }, "stream read failed");
    } finally {
      if (state.untrimmed > 0) await this.trim(state);
    }
  }

  /**
   * Whether this proxy is the one consuming the stream now. One proxy at a time reads a
   * stream for a group, so its entries are applied in stream order; the lease is renewed
   * every third of EventLeaseMS while it works. Taking it over (its owner died or gave it
   * back), the new owner first claims every entry pending in the group, at once, not after
   * StreamClaimIdleMS. Not holding it, the proxy tries again when the other's lease runs out.
   */
  private async holdLease(state: StreamState): Promise<boolean> {
    if (state.leased && Date.now() < state.renewAt) return true;
    // Another proxy's: a try is due when its lease runs out (or a second from now at most).
    if (!state.leased && state.leaseTimer !== null) return false;
    const ttl = Math.max(100, this.leaseMs());
    const reply = await this.call(["EVAL", LEASE_SCRIPT, "1", state.leaseKey, this.consumer, String(ttl)]);
    const error = errorOf(reply);
    if (error !== null) throw new Error(`stream lease: ${error}`);
    const outcome = Number(reply);
    if (this.stopped) return false;
    if (outcome === -1 || outcome === -2) {
      state.renewAt = Date.now() + ttl / 3;
      if (outcome === -2 || !state.leased) {
        state.leased = true;
        await this.takeOver(state);
      }
      return true;
    }
    if (state.leased) {
      // Another proxy holds it now (this one stalled past its lease): what is in hand is theirs to claim.
      state.leased = false;
      state.held = [];
      this.log.warn(
        { group: this.group, stream: state.key.toString() },
        "lost the lease of a stream to another proxy",
      );
    }
    if (state.leaseTimer === null) {
      state.leaseTimer = setTimeout(
        () => {
          state.leaseTimer = null;
          this.kick(state);
        },
        Math.min(Math.max(10, outcome) + 10, POLL_MS),
      );
      state.leaseTimer.unref();
    }
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
      await this.router
        .call(["XCLAIM", state.key, this.group, this.consumer, "0", ...ids, "JUSTID"])
        .catch(() => null);
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
