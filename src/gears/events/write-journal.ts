import { isProxyKey } from "../../routing/hidden-keys.js";
import type { KeyEvent, WriteSource } from "./keyspace-source.js";
import { keyId } from "./peer-writes.js";

/**
 * The keyevent a write usually emits, where it is not the command's own name. A write
 * whose notification was lost is announced under this name.
 */
const EVENT_OF: Record<string, string> = {
  setex: "set",
  psetex: "set",
  setnx: "set",
  getset: "set",
  mset: "set",
  msetnx: "set",
  incr: "incrby",
  decr: "incrby",
  decrby: "incrby",
  unlink: "del",
  getdel: "del",
  hmset: "hset",
  hsetnx: "hset",
  lpushx: "lpush",
  rpushx: "rpush",
  zincrby: "zincr",
  // GEOADD is ZADD underneath, and notifies as it.
  geoadd: "zadd",
  pexpire: "expire",
  expireat: "expire",
  pexpireat: "expire",
  // Redis 7.4 and 8.0's hash-field expiry: events of the hash class, named after HSET, HDEL
  // and HEXPIRE whichever command made them.
  hpexpire: "hexpire",
  hexpireat: "hexpire",
  hpexpireat: "hexpire",
  hsetex: "hset",
  hgetex: "hexpire",
  hgetdel: "hdel",
  // BITOP stores a string; GETEX is followed only with EX or PX.
  bitop: "set",
  getex: "expire",
  georadius: "georadiusstore",
  georadiusbymember: "georadiusstore",
};

/**
 * Writes that, when they succeed and change something, emit exactly one notification per
 * key written, under the name EVENT_OF (or their own) gives: their event is known from the
 * reply, before the notification comes. The others (SET with an expiry also emits
 * "expire", EXPIRE in the past emits "del", ZADD of an unchanged score emits nothing while
 * answering 0 like a changed one...) wait for their notification, as before.
 */
const EXACT = new Set([
  "set",
  "setnx",
  "getset",
  "mset",
  "msetnx",
  "incr",
  "decr",
  "incrby",
  "decrby",
  "incrbyfloat",
  "append",
  "hset",
  "hmset",
  "hsetnx",
  "hincrby",
  "hincrbyfloat",
  "sadd",
  "lpush",
  "rpush",
  "lpushx",
  "rpushx",
  "del",
  "unlink",
  "getdel",
  "xadd",
]);

/** Writes that change nothing when they answer 0 (DEL of a missing key, SADD of a member there...). */
const ZERO_IS_NOTHING = new Set([
  "del",
  "unlink",
  "hdel",
  "srem",
  "zrem",
  "sadd",
  "expire",
  "pexpire",
  "expireat",
  "pexpireat",
  "persist",
  "setnx",
  "hsetnx",
  "msetnx",
  "lrem",
  "xdel",
  "lpushx",
  "rpushx",
  // HSETEX FNX/FXX whose condition failed.
  "hsetex",
  "pfadd",
  "xtrim",
  "zremrangebyscore",
  "zremrangebyrank",
  "zremrangebylex",
  "smove",
  "copy",
  "move",
  "renamenx",
  // ZADD (GEOADD) answers 0 both when it changed nothing (no notification) and when it only
  // changed scores ("zadd"): not followed then, so an unchanged one gives no event at the
  // settle; a changed one's notification comes as from any writer (lost only while a
  // subscription is down).
  "zadd",
  "geoadd",
  // LINSERT of a missing key (0); -1, its pivot not found, below.
  "linsert",
  // Stores of an empty result: Redis deletes the destination, and notifies "del", only when it
  // was there; that notification comes as from any writer.
  "sinterstore",
  "sunionstore",
  "sdiffstore",
  "zinterstore",
  "zunionstore",
  "zdiffstore",
  "zrangestore",
  "bitop",
  "georadius",
  "georadiusbymember",
  "geosearchstore",
]);

/**
 * Writes that emit no notification of their own whatever they do (XACK, XCLAIM, XAUTOCLAIM),
 * or one only for a side effect their reply does not tell (XREADGROUP: "xgroup-createconsumer"
 * for a new consumer): not followed. A notification such a write causes is handled when it
 * comes, as one from a writer that bypasses the proxy; waiting for one that never comes would
 * announce, at the settle, an event Redis never emitted.
 */
const NO_OWN_NOTIFICATION = new Set(["xack", "xclaim", "xautoclaim", "xreadgroup", "pfcount"]);

/** Writes that change nothing when they answer an empty array (ZPOPMIN of a missing key...). */
const EMPTY_IS_NOTHING = new Set(["zpopmin", "zpopmax", "spop", "lpop", "rpop"]);

/** Writes that change nothing, and notify nothing, when source and destination are one key. */
const SAME_KEY_NOTHING = new Set(["smove", "rename"]);

/**
 * Writes answered with one code per field, where none above 0 means no field changed (-2 no
 * such field, -1 no expiry to remove, 0 a condition not met): then they emit nothing.
 */
const PER_FIELD_CODES = new Set(["hexpire", "hpexpire", "hexpireat", "hpexpireat", "hpersist"]);
/** Writes answered with the values of the fields they name: all null when none was there. */
const FIELD_VALUES = new Set(["hgetdel", "hgetex"]);

/** Multi-key writes that write every key they name (each emits its own notification). */
const EVERY_KEY_WRITTEN = new Set(["mset", "msetnx", "rename", "renamenx", "smove", "lmove", "rpoplpush"]);
/** Multi-key writes counted in their reply: every key was written only when the count says so. */
const COUNTED = new Set(["del", "unlink"]);
/** Multi-key writes that write one key the proxy cannot tell beforehand: not followed. */
const UNKNOWN_TARGET = new Set([
  "lmpop",
  "zmpop",
  "sort",
  "blpop",
  "brpop",
  "bzpopmin",
  "bzpopmax",
  "blmpop",
  "bzmpop",
]);
/** SET options after which the write also emits "expire", or may not write. */
const SET_EXPIRY = /^(ex|px|exat|pxat)$/i;
const SET_CONDITION = /^(nx|xx)$/i;

/** Writes whose destination is the last key they name (GEORADIUS ... STORE dst). */
const STORE_LAST = new Set(["copy", "georadius", "georadiusbymember"]);

/**
 * The keys a write changes, among those it names: every one, its destination (the first
 * key of the ...STORE family, BITOP, PFMERGE; the last of COPY), or none that can be told.
 */
function writtenKeys(name: string, keys: string[]): string[] {
  if (COUNTED.has(name)) return [...new Set(keys)];
  if (keys.length <= 1 || EVERY_KEY_WRITTEN.has(name)) return keys;
  if (UNKNOWN_TARGET.has(name)) return [];
  return STORE_LAST.has(name) ? keys.slice(-1) : keys.slice(0, 1);
}

/**
 * Writes whose reply, when they are followed, means each key now holds a given string
 * argument: where the first key's value is, and the step to the next key's.
 */
const STRING_VALUE: Record<string, [number, number]> = {
  set: [2, 0],
  setnx: [2, 0],
  getset: [2, 0],
  mset: [2, 2],
  msetnx: [2, 2],
};
/** Writes whose integer reply is the string the key now holds. */
const COUNTERS = new Set(["incr", "decr", "incrby", "decrby"]);

/**
 * Values above this many bytes are not carried: the handler reads them lazily, as it does
 * a big value read from Redis (readers.ts, LAZY_VALUE_ELEMENTS KB).
 */
const CARRIED_VALUE_MAX = 1000 * 1024;

/** What the journal needs to know of one write command, looked up once per name. */
interface WriteKind {
  /** The keyevent it emits. */
  event: string;
  /** EXACT: its event is known from its reply. */
  exact: boolean;
  /** STRING_VALUE: where the value of its first key is, and the step to the next's. */
  valueAt: [number, number] | undefined;
  /** COUNTERS: its integer reply is the value. */
  counter: boolean;
  /** COUNTED: a multi-key write counted in its reply. */
  counted: boolean;
}

const KINDS = new Map<string, WriteKind>();

function kindOf(name: string): WriteKind {
  let kind = KINDS.get(name);
  if (kind === undefined) {
    kind = {
      event: EVENT_OF[name] ?? name,
      exact: EXACT.has(name),
      valueAt: STRING_VALUE[name],
      counter: COUNTERS.has(name),
      counted: COUNTED.has(name),
    };
    // Names come from the command table's write commands: a few hundred at most.
    if (KINDS.size < 4096) KINDS.set(name, kind);
  }
  return kind;
}

/** The key as a UTF-8 string when its bytes are ASCII (then its latin1 string is that too). */
function asciiText(key: Buffer, latin1: string): string | undefined {
  for (let i = 0; i < key.length; i++) if (key[i] > 127) return undefined;
  return latin1;
}

/** Keys up to this long are copied into the journal's slab; its size. */
const SLAB_KEY_MAX = 128;
const SLAB_BYTES = 16 * 1024;

/** Forgotten key states kept for reuse, at most. */
const SPARE_STATES = 1024;

/** Removes a key's `i`-th expected event. */
function dropExpected(state: KeyState, i: number): void {
  if (i === 0) {
    state.expectedEvents.shift();
    state.expectedAts.shift();
  } else {
    state.expectedEvents.splice(i, 1);
    state.expectedAts.splice(i, 1);
  }
}

/** answered() waits this long at most. */
const ANSWERED_WAIT_MS = 1000;

/** A notification held while a write of its key is in flight is released after this long at most. */
const HOLD_MS = 2000;
/**
 * A key whose writes have been in flight this long without a word (a blocked BLMOVE, an
 * outcome that never came) stops holding its notifications back.
 */
const IN_FLIGHT_GIVE_UP_MS = 30_000;

/**
 * The lists of a key with nothing in them: shared, and frozen so that a push onto it throws
 * rather than reaching every key. Most keys never need a list (a write answered, its
 * notification swallowed): none is made for them.
 */
const NONE: never[] = Object.freeze([]) as unknown as never[];

/** What the journal knows of one key of one database. */
interface KeyState {
  /** Writes of the key sent and not answered yet: its notifications wait for their replies. */
  inFlight: number;
  /** When inFlight last went up from 0. */
  since: number;
  /**
   * Events already handled from a write's reply: the notification each will cause is
   * swallowed. Two lists, one entry per write (its event, when its reply came): no object
   * per write.
   */
  expectedEvents: string[];
  expectedAts: number[];
  /** Successful writes whose event is not known exactly: handled from their notification, or at settle. */
  waiting: { event: string; at: number; by: WriteSource }[];
  /** Notifications that came while a write of the key was in flight. */
  held: KeyEvent[];
}

/** A forwarded write being followed: `done` with its reply, or null when it failed or was lost. */
export type WriteOutcome = (reply: Buffer | null) => void;

/**
 * What this proxy knows of the writes it forwards, in every database. A write whose event
 * is known exactly from its reply (EXACT) becomes that event as soon as the reply comes,
 * without waiting for the keyspace notification's round trip; its notification, when it
 * comes, is swallowed, so nothing is seen twice. Other writes wait for their notification;
 * those whose notification was lost (a subscription down, a failover, a replica promoted
 * before the proxy subscribed to it) become events when a barrier on the subscriptions
 * says it can no longer come. Notifications of a key with a write in flight are held until
 * its reply, since the two travel on different connections and either may come first.
 */
export class WriteJournal {
  private readonly dbs = new Map<number, Map<string, KeyState>>();
  private size = 0;
  /** Notifications held, across keys. */
  private heldCount = 0;
  private known: KeyEvent[] = [];
  /** States of keys forgotten, for the next keys written. */
  private readonly spare: KeyState[] = [];
  /** A flush is queued (a microtask): the events known by the end of the current callback go together. */
  private flushQueued = false;
  private readonly queuedFlush = (): void => {
    if (this.flushQueued) this.flush();
  };
  /** Writes watched: each write's number is its place in this count. */
  private sent = 0;
  private readonly answerWaits: { last: number; left: number; ids: Set<string>; wake: () => void }[] = [];

  constructor(
    /** The shard (master id) a key lives on now. */
    private readonly shardOf: (key: Buffer) => string,
    /** Events that need handling: writes known from their replies, and notifications held for a while. */
    private readonly emit: (events: KeyEvent[]) => void,
  ) {}

  /** Writes answered whose notification or settle is still to come, and notifications held. */
  get waiting(): number {
    return this.size + this.heldCount;
  }

  /**
   * Resolves once every write of `ids` (keyId: db and key) watched so far has its outcome (its
   * reply came: its event is made, or awaits its notification), or after `timeoutMs`: another
   * thread asks this before it decides who wrote a notification of those keys it holds
   * (peer-writes.ts). A write that blocks (a BLMOVE) is not waited for past the timeout.
   */
  answered(ids: readonly string[], timeoutMs = ANSWERED_WAIT_MS): Promise<void> {
    let left = 0;
    for (const id of ids) {
      const colon = id.indexOf(":");
      left += this.dbs.get(Number(id.slice(0, colon)))?.get(id.slice(colon + 1))?.inFlight ?? 0;
    }
    if (left === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const wait = { last: this.sent, left, ids: new Set(ids), wake };
      const timer = setTimeout(() => {
        // Timed out: a reply that never comes (or a write given up) must not keep it listed.
        const at = this.answerWaits.indexOf(wait);
        if (at !== -1) this.answerWaits.splice(at, 1);
        wake();
      }, timeoutMs);
      function wake(): void {
        clearTimeout(timer);
        resolve();
      }
      this.answerWaits.push(wait);
    });
  }

  /** Write number `seq`, of `key` in `db`, has its outcome. */
  private answer(seq: number, db: number, key: string): void {
    if (this.answerWaits.length === 0) return;
    const id = keyId(db, key);
    let kept = 0;
    for (const w of this.answerWaits) {
      if (seq <= w.last && w.ids.has(id) && --w.left === 0) w.wake();
      else this.answerWaits[kept++] = w;
    }
    this.answerWaits.length = kept;
  }

  /**
   * A write leaving the proxy in `db`: what to call with its outcome, or null when it
   * concerns no user key. `byFunction`: a T&F function's or trigger's write, whose events
   * say so (KeyEvent.by).
   */
  watch(
    name: string,
    argv: readonly Buffer[],
    keys: Buffer[],
    db: number,
    byFunction = false,
  ): WriteOutcome | null {
    const by: WriteSource = byFunction ? "function" : "client";
    if (NO_OWN_NOTIFICATION.has(name)) return null;
    if (keys.length === 2 && SAME_KEY_NOTHING.has(name) && keys[0].equals(keys[1])) return null;
    // COPY ... DB n writes in another database, whose notification tells of it.
    if (
      name === "copy" &&
      argv.some((a, i) => i > 2 && a.length === 2 && a.toString().toLowerCase() === "db")
    )
      return null;
    if (keys.length === 1) return this.watchOne(name, argv, keys[0], db, by);
    // GEORADIUS ... STORE a STOREDIST b writes the last named; the key specs list STORE's first.
    if ((name === "georadius" || name === "georadiusbymember") && keys.length > 2) return null;
    const names = writtenKeys(
      name,
      keys.filter((k) => !isProxyKey(k)).map((k) => k.toString("latin1")),
    );
    if (names.length === 0) return null;
    const kind = kindOf(name);
    const event = kind.event;
    const exact = kind.exact;
    const counted = kind.counted && names.length > 1 ? names.length : 0;
    // The string each key now holds, when the write says so: its event carries it, and a
    // handler needs no read of it. Copied now: argv may be a view of a reused buffer.
    let values: (string | undefined)[] | null = null;
    const valueAt = exact ? kind.valueAt : undefined;
    if (valueAt !== undefined && names.length === keys.length) {
      values = new Array<string | undefined>(names.length);
      for (let k = 0; k < names.length; k++) {
        const v = argv[valueAt[0] + k * valueAt[1]];
        values[k] = v !== undefined && v.length <= CARRIED_VALUE_MAX ? v.toString() : undefined;
      }
    }
    const table = this.table(db);
    for (const key of names) {
      const state = this.stateOf(table, key);
      if (state.inFlight++ === 0) state.since = Date.now();
    }
    const seq = ++this.sent;
    return (reply) => {
      for (const key of names) this.answer(seq, db, key);
      // DEL of several keys: which were there is unknown unless all were.
      const followed =
        reply !== null &&
        !changedNothing(name, reply, false) &&
        (counted === 0 || reply.toString("latin1", 1, reply.length - 2) === String(counted));
      const at = Date.now();
      for (let k = 0; k < names.length; k++) {
        const key = names[k];
        const state = table.get(key);
        if (state === undefined) continue;
        if (state.inFlight > 0) state.inFlight--;
        if (followed) this.written(db, key, undefined, state, event, exact, at, values?.[k], by);
        this.releaseHeld(state);
        this.forget(table, key, state);
      }
      this.schedule();
    };
  }

  /** watch() of a write naming one key, the usual case: no lists. */
  private watchOne(
    name: string,
    argv: readonly Buffer[],
    buffer: Buffer,
    db: number,
    by: WriteSource,
  ): WriteOutcome | null {
    if (isProxyKey(buffer)) return null;
    const key = buffer.toString("latin1");
    const text = asciiText(buffer, key);
    if (notFollowed(name, argv)) return null;
    const kind = kindOf(name);
    const event = kind.event;
    let exact = kind.exact;
    let conditional = false;
    if (name === "set") {
      for (let i = 3; i < argv.length; i++) {
        const a = argv[i];
        if (a.length === 2 && SET_CONDITION.test(a.toString("latin1"))) conditional = true;
        else if (a.length <= 4 && SET_EXPIRY.test(a.toString("latin1"))) exact = false;
      }
    }
    // The string the key now holds, when the write says so: its event carries it, and a
    // handler needs no read of it. Copied now: argv may be a view of a reused buffer.
    let value: string | undefined;
    const valueAt = exact ? kind.valueAt : undefined;
    if (valueAt !== undefined) {
      const v = argv[valueAt[0]];
      if (v !== undefined && v.length <= CARRIED_VALUE_MAX) value = v.toString();
    }
    const table = this.table(db);
    const state = this.stateOf(table, key);
    if (state.inFlight++ === 0) state.since = Date.now();
    const seq = ++this.sent;
    return (reply) => {
      this.answer(seq, db, key);
      const followed = reply !== null && !changedNothing(name, reply, conditional);
      if (followed && value === undefined && kind.counter && reply[0] === 58 /* : */)
        value = reply.toString("latin1", 1, reply.length - 2);
      const now = table.get(key);
      if (now === undefined) {
        this.schedule();
        return;
      }
      if (now.inFlight > 0) now.inFlight--;
      if (followed) this.written(db, key, text, now, event, exact, Date.now(), value, by);
      this.releaseHeld(now);
      this.forget(table, key, now);
      this.schedule();
    };
  }

  private written(
    db: number,
    key: string,
    text: string | undefined,
    state: KeyState,
    event: string,
    exact: boolean,
    at: number,
    value: string | undefined,
    by: WriteSource,
  ): void {
    // A held notification no other write took yet (two writes of the key may both be held).
    const heldAt =
      state.held.length === 0 ? -1 : state.held.findIndex((e) => e.event === event && e.by === undefined);
    if (exact) {
      if (heldAt !== -1) {
        // Its notification came first: that is the event.
        const held = heldAt === 0 ? state.held.shift()! : state.held.splice(heldAt, 1)[0];
        this.heldCount--;
        // The journal's own object since it was held: it takes the value in place.
        if (value !== undefined) held.value = value;
        held.by = by;
        this.known.push(held);
        return;
      }
      const buffer = this.keyBuffer(key);
      this.known.push({ key: buffer, event, shard: this.shardOf(buffer), at, db, value, text, by });
      if (state.expectedEvents === NONE) {
        state.expectedEvents = [];
        state.expectedAts = [];
      }
      state.expectedEvents.push(event);
      state.expectedAts.push(at);
      this.size++;
      return;
    }
    // Not known exactly: a notification already there stands for it, else wait for one.
    if (state.held.length > 0) {
      const free = heldAt === -1 ? state.held.findIndex((e) => e.by === undefined) : heldAt;
      if (free !== -1) state.held[free].by = by;
      return;
    }
    (state.waiting === NONE ? (state.waiting = []) : state.waiting).push({ event, at, by });
    this.size++;
  }

  /** Notifications held for a key with no write in flight any more (or held too long: `now`) go on. */
  private releaseHeld(state: KeyState, now = false): void {
    if ((state.inFlight > 0 && !now) || state.held.length === 0) return;
    for (const e of state.held) this.known.push(e);
    this.heldCount -= state.held.length;
    state.held = NONE;
  }

  /**
   * Whether a notification, read in place (`frame[keyStart, keyEnd)` its key,
   * `frame[eventStart, eventEnd)` its event), is one a write already produced: then it is
   * swallowed now, as confirm() would, and nothing is made of it. With `shard` and `quiet`
   * (no notification before it waits for confirm()), one of a key with a write in flight
   * is held here for that write, as confirm() would hold it, without its trip through the
   * source's list. Others go on to confirm().
   */
  handled(
    db: number,
    frame: Buffer,
    keyStart: number,
    keyEnd: number,
    eventStart: number,
    eventEnd: number,
    shard?: string,
    quiet = false,
  ): boolean {
    const table = this.dbs.get(db);
    if (table === undefined || table.size === 0) return false;
    const key = frame.toString("latin1", keyStart, keyEnd);
    const state = table.get(key);
    if (state === undefined) return false;
    const events = state.expectedEvents;
    const length = eventEnd - eventStart;
    for (let i = 0; i < events.length; i++) {
      const event = events[i];
      if (event.length !== length || !sameLatin1(frame, eventStart, event)) continue;
      dropExpected(state, i);
      this.size--;
      this.forget(table, key, state);
      return true;
    }
    if (shard === undefined || !quiet || state.inFlight === 0) return false;
    (state.held === NONE ? (state.held = []) : state.held).push({
      // Copied: the frame is a view of the socket's buffer.
      key: Buffer.from(frame.subarray(keyStart, keyEnd)),
      event: frame.toString("latin1", eventStart, eventEnd),
      shard,
      at: Date.now(),
      db,
    });
    this.heldCount++;
    return true;
  }

  /**
   * Notifications that arrived: the ones to handle now. A notification a write already
   * produced is swallowed; one for a key with a write in flight is held until its reply.
   */
  confirm(events: readonly KeyEvent[]): KeyEvent[] {
    if (this.dbs.size === 0) return events as KeyEvent[];
    const out: KeyEvent[] = [];
    for (const e of events) {
      const table = this.dbs.get(e.db);
      const key = table === undefined ? "" : e.key.toString("latin1");
      const state = table?.get(key);
      if (state === undefined) {
        out.push(e);
        continue;
      }
      const expected = state.expectedEvents.indexOf(e.event);
      if (expected !== -1) {
        dropExpected(state, expected);
        this.size--;
      } else if (state.inFlight > 0) {
        (state.held === NONE ? (state.held = []) : state.held).push(e);
        this.heldCount++;
      } else {
        if (state.waiting.length > 0) {
          // The notification a write awaited: it tells who wrote. The first waiting write of
          // its event (replies of writes sent on different connections may come in any order).
          const w = state.waiting.findIndex((x) => x.event === e.event);
          e.by = state.waiting.splice(w === -1 ? 0 : w, 1)[0].by;
          this.size--;
        }
        out.push(e);
      }
      this.forget(table!, key, state);
    }
    return out;
  }

  /**
   * Settles what was answered at or before `cut`: call after a barrier begun after `cut`
   * resolved, when the notifications of those writes can no longer come. Writes still
   * waiting become events of their own (returned); expected notifications are no longer
   * awaited; notifications held too long go on.
   */
  takeUnconfirmed(cut: number): KeyEvent[] {
    const out: KeyEvent[] = [];
    const stale = Date.now() - HOLD_MS;
    for (const [db, table] of this.dbs) {
      for (const [key, state] of table) {
        let n = 0;
        while (n < state.expectedAts.length && state.expectedAts[n] <= cut) n++;
        if (n > 0) {
          state.expectedEvents.splice(0, n);
          state.expectedAts.splice(0, n);
          this.size -= n;
        }
        n = 0;
        while (n < state.waiting.length && state.waiting[n].at <= cut) n++;
        if (n > 0) {
          const buffer = Buffer.from(key, "latin1");
          const shard = this.shardOf(buffer);
          for (const w of state.waiting.splice(0, n))
            out.push({ key: buffer, event: w.event, shard, at: w.at, db, by: w.by });
          this.size -= n;
        }
        if (state.inFlight > 0 && state.since < Date.now() - IN_FLIGHT_GIVE_UP_MS) state.inFlight = 0;
        if (state.held.length > 0 && state.held[0].at < stale) {
          this.releaseHeld(state, true);
        }
        this.forget(table, key, state);
      }
    }
    this.schedule();
    return out;
  }

  /** Hands the events known so far over now (before a barrier's answer, say). */
  flush(): void {
    this.flushQueued = false;
    if (this.known.length === 0) return;
    const events = this.known;
    this.known = [];
    this.emit(events);
  }

  clear(): void {
    for (const w of this.answerWaits.splice(0)) w.wake();
    this.flushQueued = false;
    this.known = [];
    this.dbs.clear();
    this.size = 0;
    this.heldCount = 0;
  }

  /**
   * Hands the events over once the callback that made them is done: a socket read's replies
   * go together, and the first event after a quiet spell waits for nothing else (a
   * setImmediate waited for the rest of the loop's I/O phase, ~0.08 ms at 200 writes/s).
   */
  private schedule(): void {
    if (this.known.length === 0 || this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(this.queuedFlush);
  }

  /**
   * A key's bytes (`key` is its latin1 string) for its event: short ones are views of a
   * shared slab, written character by character (cheaper than a Buffer of their own).
   */
  private keyBuffer(key: string): Buffer {
    const n = key.length;
    if (n > SLAB_KEY_MAX) return Buffer.from(key, "latin1");
    if (this.slabAt + n > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.slabAt = 0;
    }
    const slab = this.slab;
    const at = this.slabAt;
    for (let i = 0; i < n; i++) slab[at + i] = key.charCodeAt(i);
    this.slabAt = at + n;
    return slab.subarray(at, at + n);
  }

  private slab = Buffer.alloc(0);
  private slabAt = 0;

  private table(db: number): Map<string, KeyState> {
    let table = this.dbs.get(db);
    if (table === undefined) {
      table = new Map();
      this.dbs.set(db, table);
    }
    return table;
  }

  private stateOf(table: Map<string, KeyState>, key: string): KeyState {
    let state = table.get(key);
    if (state === undefined) {
      state = this.spare.pop() ?? {
        inFlight: 0,
        since: 0,
        expectedEvents: NONE,
        expectedAts: NONE,
        waiting: NONE,
        held: NONE,
      };
      table.set(key, state);
    }
    return state;
  }

  private forget(table: Map<string, KeyState>, key: string, state: KeyState): void {
    if (
      state.inFlight > 0 ||
      state.expectedEvents.length > 0 ||
      state.waiting.length > 0 ||
      state.held.length > 0
    )
      return;
    table.delete(key);
    // Nothing refers to a state once out of its table (each use looks its key up first):
    // kept for the next key, its emptied lists with it.
    if (this.spare.length < SPARE_STATES) this.spare.push(state);
  }
}

/** Whether `frame` holds `text` (latin1) from `start`: an event name, compared without a string. */
function sameLatin1(frame: Buffer, start: number, text: string): boolean {
  for (let i = 0; i < text.length; i++) if (frame[start + i] !== text.charCodeAt(i)) return false;
  return true;
}

/** Writes that notify only when a value actually changed, which their reply does not tell. */
const VALUE_CHANGES_ONLY = new Set(["setbit", "bitfield", "zincrby"]);
const ZADD_INCR = /^incr$/i;
/** GETEX options that may change nothing (PERSIST of a key without a TTL) or delete (a time past). */
const GETEX_UNTOLD = /^(persist|exat|pxat)$/i;

/**
 * Writes naming one key that the journal does not follow: those that only read as sent, and
 * those whose reply cannot tell whether, or what, they notified (the notification, if any,
 * comes as from any writer). HGETEX without EX, PX, EXAT, PXAT or PERSIST, GETEX without an
 * option and GEORADIUS naming one key read; SETRANGE of an empty string writes nothing.
 * SETBIT, BITFIELD and ZINCRBY (ZADD INCR) notify only when a bit or a score really changed
 * (a BITFIELD of GETs reads; an increment too small for a large score changes nothing);
 * GETEX PERSIST notifies only when the key had a TTL, and EXAT/PXAT in the past deletes ("del").
 */
function notFollowed(name: string, argv: readonly Buffer[]): boolean {
  if (VALUE_CHANGES_ONLY.has(name)) return true;
  switch (name) {
    case "georadius":
    case "georadiusbymember":
      // Without STORE or STOREDIST (its one key is the source).
      return true;
    case "hgetex":
      return argv.length > 2 && argv[2].length === 6 && /^fields$/i.test(argv[2].toString("latin1"));
    case "getex":
      return argv.length === 2 || argv.some((a, i) => i > 1 && GETEX_UNTOLD.test(a.toString("latin1")));
    case "setrange":
      return argv[3]?.length === 0;
    case "zadd":
      return argv.some((a, i) => i > 1 && a.length === 4 && ZADD_INCR.test(a.toString("latin1")));
    default:
      return false;
  }
}

/** Whether a write's reply says it changed nothing, so it emitted no notification. */
function changedNothing(name: string, reply: Buffer, conditional: boolean): boolean {
  const nil = (reply[0] === 36 || reply[0] === 42) && reply[1] === 45; /* $-1, *-1 */
  // SET ... GET and GETSET answer nil for a key that was missing, and wrote it.
  if (nil || reply[0] === 95 /* _ (RESP3 null) */)
    return (name !== "set" && name !== "getset") || conditional;
  // An empty array, or set (RESP3: SPOP with a count answers `~0`).
  if ((reply[0] === 42 /* * */ || reply[0] === 126) /* ~ */ && reply[1] === 48 /* 0 */ && reply[2] === 13)
    return EMPTY_IS_NOTHING.has(name);
  if (reply[0] === 42 /* * */) {
    if (PER_FIELD_CODES.has(name)) return everyElement(reply, noFieldChanged);
    if (FIELD_VALUES.has(name)) return everyElement(reply, isNull);
    return false;
  }
  if (name === "linsert" && reply[0] === 58 && reply[1] === 45 /* :-1 */) return true;
  return reply[0] === 58 /* : */ && reply[1] === 48 /* 0 */ && reply[2] === 13 && ZERO_IS_NOTHING.has(name);
}

/** An integer element below 1 (`:-2`, `:-1`, `:0`): the field was left as it was. */
function noFieldChanged(reply: Buffer, at: number): number {
  const sign = reply[at + 1];
  if (reply[at] !== 58 /* : */ || (sign !== 45 /* - */ && sign !== 48) /* 0 */) return -1;
  const end = reply.indexOf(13 /* \r */, at);
  return end === -1 ? -1 : end + 2;
}

/** A null element (`$-1` in RESP2, `_` in RESP3). */
function isNull(reply: Buffer, at: number): number {
  if (reply[at] === 95 /* _ */) return at + 3;
  return reply[at] === 36 /* $ */ && reply[at + 1] === 45 /* - */ ? at + 5 : -1;
}

/**
 * Whether every element of an array reply passes `test`, which answers where the next
 * element starts, or -1 when the element fails (it stops there: no element after a failed
 * one is read, so elements `test` cannot skip, such as bulk strings, end the scan).
 */
function everyElement(reply: Buffer, test: (reply: Buffer, at: number) => number): boolean {
  const header = reply.indexOf(13 /* \r */);
  const count = Number(reply.toString("latin1", 1, header));
  if (!(count > 0)) return false;
  let at = header + 2;
  for (let i = 0; i < count; i++) {
    at = test(reply, at);
    if (at === -1) return false;
  }
  return true;
}
