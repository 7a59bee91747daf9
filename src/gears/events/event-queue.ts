import type { KeyEvent } from "./keyspace-source.js";

/**
 * Strings a queue stores as numbers: event names and shard ids, a few dozen in all. Shared by
 * every queue (append-only: a name keeps its number), so one lookup serves them all.
 */
class Names {
  private readonly ids = new Map<string, number>();
  readonly names: string[] = [];
  /** The name last asked about: events come in runs of one name and one shard. */
  private last: string | null = null;
  private lastId = 0;

  id(name: string): number {
    if (name === this.last) return this.lastId;
    let id = this.ids.get(name);
    if (id === undefined) {
      id = this.names.length;
      this.names.push(name);
      this.ids.set(name, id);
    }
    this.last = name;
    this.lastId = id;
    return id;
  }
}

/**
 * MaxQueuedEvents' default: events a registration's queue (or a library's keyspace trigger
 * queue) holds before writes through the proxy wait for it. About 3-5 MB of queue with short keys.
 */
export const DEFAULT_MAX_QUEUED_EVENTS = 100_000;

const EVENT_NAMES = new Names();
const SHARD_NAMES = new Names();

/** Events a queue's first chunk holds; each next chunk twice its predecessor's, up to the most. */
const FIRST_CHUNK_EVENTS = 64;
const MOST_CHUNK_EVENTS = 4096;
/**
 * The longest carried value (the string a write through the proxy set) a queued event keeps.
 * Longer ones (up to 1 MB are carried) are dropped from the event, and its batch reads the
 * key instead, as for any event of a write the proxy did not see: a queue of MaxQueuedEvents
 * events then holds at most about 2 KB of value each, not 1 MB.
 */
const CARRIED_VALUE_KEPT = 1024;
/** Keys up to this long are copied byte by byte. */
const SHORT_KEY = 48;
/** Key bytes a chunk starts with per event it holds: keys are mostly short. */
const KEY_BYTES_PER_EVENT = 24;

/**
 * A run of queued events, a column per field: no object per event. A key's bytes are copied
 * into `bytes`, one after the other. Taken events are made back into KeyEvent objects whose
 * keys are views of `bytes`: so a chunk emptied and written again gets new `bytes`.
 */
class Chunk {
  readonly keyEnds: Uint32Array;
  readonly events: Uint32Array;
  readonly shards: Uint32Array;
  readonly dbs: Uint32Array;
  readonly tags: Uint32Array;
  readonly ats: Float64Array;
  /** Carried values (a write the proxy saw), made only when one comes. */
  values: (string | undefined)[] | null = null;
  bytes: Buffer;
  /** Bytes of `bytes` in use. */
  used = 0;
  /** Events written, and the first not taken yet. */
  length = 0;
  head = 0;
  next: Chunk | null = null;

  constructor(readonly capacity: number) {
    this.keyEnds = new Uint32Array(capacity);
    this.events = new Uint32Array(capacity);
    this.shards = new Uint32Array(capacity);
    this.dbs = new Uint32Array(capacity);
    this.tags = new Uint32Array(capacity);
    this.ats = new Float64Array(capacity);
    this.bytes = Buffer.allocUnsafe(capacity * KEY_BYTES_PER_EVENT);
  }

  keyStart(i: number): number {
    return i === 0 ? 0 : this.keyEnds[i - 1];
  }

  /** Emptied: written again from the start, into new key bytes (taken keys are views of the old). */
  reset(): void {
    this.bytes = Buffer.allocUnsafe(this.capacity * KEY_BYTES_PER_EVENT);
    this.used = 0;
    this.length = 0;
    this.head = 0;
    this.values = null;
    this.next = null;
  }
}

/**
 * Events stored compactly: about 28 bytes an event plus its key's bytes, against about 250
 * for a KeyEvent object with its key Buffer (bench/event-queue-memory.ts measures both).
 * Each event may carry a `tag` (a keyspace trigger's number in its library).
 */
class CompactEvents {
  private first: Chunk | null = null;
  private last: Chunk | null = null;
  /** The emptied first chunk, kept for the next event: a queue that fills and empties allocates nothing. */
  private spare: Chunk | null = null;
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(e: KeyEvent, tag = 0): void {
    let chunk = this.last;
    if (chunk === null || chunk.length === chunk.capacity) chunk = this.grow();
    const i = chunk.length;
    const key = e.key;
    const n = key.length;
    if (chunk.used + n > chunk.bytes.length) {
      const bigger = Buffer.allocUnsafe(Math.max(2 * chunk.bytes.length, chunk.used + n));
      chunk.bytes.copy(bigger, 0, 0, chunk.used);
      chunk.bytes = bigger;
    }
    const bytes = chunk.bytes;
    const at = chunk.used;
    // Byte by byte for a short key: cheaper than copy()'s call into C++.
    if (n <= SHORT_KEY) for (let b = 0; b < n; b++) bytes[at + b] = key[b];
    else key.copy(bytes, at);
    chunk.used = at + n;
    chunk.keyEnds[i] = chunk.used;
    chunk.events[i] = EVENT_NAMES.id(e.event);
    chunk.shards[i] = SHARD_NAMES.id(e.shard);
    chunk.dbs[i] = e.db;
    chunk.tags[i] = tag;
    chunk.ats[i] = e.at;
    const value = e.value;
    if (value !== undefined && value.length <= CARRIED_VALUE_KEPT) (chunk.values ??= [])[i] = value;
    chunk.length = i + 1;
    this.count++;
  }

  private grow(): Chunk {
    const before = this.last;
    let chunk: Chunk;
    if (before === null && this.spare !== null) {
      chunk = this.spare;
      this.spare = null;
    } else {
      const capacity =
        before === null ? FIRST_CHUNK_EVENTS : Math.min(MOST_CHUNK_EVENTS, 2 * before.capacity);
      chunk = new Chunk(capacity);
    }
    if (before === null) this.first = chunk;
    else before.next = chunk;
    this.last = chunk;
    return chunk;
  }

  /**
   * The first `max` events (fewer when fewer wait), as KeyEvent objects, left in the queue
   * (drop() takes them out); `tags`, when given, gets their tags.
   */
  peek(max: number, tags?: number[]): KeyEvent[] {
    const out: KeyEvent[] = [];
    for (let chunk = this.first; chunk !== null && out.length < max; chunk = chunk.next) {
      const end = Math.min(chunk.length, chunk.head + (max - out.length));
      const values = chunk.values;
      for (let i = chunk.head; i < end; i++) {
        out.push({
          key: chunk.bytes.subarray(chunk.keyStart(i), chunk.keyEnds[i]),
          event: EVENT_NAMES.names[chunk.events[i]],
          shard: SHARD_NAMES.names[chunk.shards[i]],
          at: chunk.ats[i],
          db: chunk.dbs[i],
          value: values === null ? undefined : values[i],
        });
        tags?.push(chunk.tags[i]);
      }
    }
    return out;
  }

  /** Takes the first `n` events out. */
  drop(n: number): void {
    n = Math.min(n, this.count);
    this.count -= n;
    while (n > 0) {
      const chunk = this.first!;
      const step = Math.min(n, chunk.length - chunk.head);
      if (chunk.values !== null)
        for (let i = chunk.head; i < chunk.head + step; i++) chunk.values[i] = undefined;
      chunk.head += step;
      n -= step;
      if (chunk.head === chunk.length && (chunk.length === chunk.capacity || chunk.next !== null)) {
        this.first = chunk.next;
        if (this.first === null) this.last = null;
        this.keepSpare(chunk);
      }
    }
    // An emptied last chunk is written again from its start.
    const only = this.first;
    if (this.count === 0 && only !== null) {
      this.first = this.last = null;
      this.keepSpare(only);
    }
  }

  private keepSpare(chunk: Chunk): void {
    // Only a first-sized chunk is kept: a big one is given back once its burst is over.
    if (chunk.capacity === FIRST_CHUNK_EVENTS) {
      chunk.reset();
      this.spare = chunk;
    }
  }

  /** The tags of the last `n` events, oldest first, into `out`. */
  peekTail(n: number, out: number[]): void {
    let skip = this.count - Math.min(n, this.count);
    for (let chunk = this.first; chunk !== null; chunk = chunk.next) {
      const held = chunk.length - chunk.head;
      if (skip >= held) {
        skip -= held;
        continue;
      }
      for (let i = chunk.head + skip; i < chunk.length; i++) out.push(chunk.tags[i]);
      skip = 0;
    }
  }

  /** Takes the first `max` events out, as KeyEvent objects. */
  take(max: number): KeyEvent[] {
    const out = this.peek(max);
    this.drop(out.length);
    return out;
  }

  /** When the first event arrived, if any waits. */
  oldestAt(): number | undefined {
    const chunk = this.first;
    return chunk === null || this.count === 0 ? undefined : chunk.ats[chunk.head];
  }

  /** When the first event of `shard` arrived, if one waits. */
  oldestAtOf(shard: string): number | undefined {
    const id = SHARD_NAMES.id(shard);
    for (let chunk = this.first; chunk !== null; chunk = chunk.next) {
      for (let i = chunk.head; i < chunk.length; i++) if (chunk.shards[i] === id) return chunk.ats[i];
    }
    return undefined;
  }

  clear(): void {
    this.first = this.last = null;
    this.count = 0;
  }
}

/**
 * Events a queue keeps as the KeyEvent objects they came as, before it stores the next ones
 * compactly. A queue that keeps up (nearly always) costs nothing more than an array; one
 * that a handler cannot keep up with costs ~28 bytes plus the key for each event past these.
 */
const OBJECT_EVENTS = 32_768;

/**
 * A FIFO of keyspace events waiting for a registration or a library's triggers. Writes
 * straight to the shards can outrun a handler for as long as they last, and every event
 * then waits here: past its first OBJECT_EVENTS, each is stored compactly (CompactEvents).
 * Each event may carry a `tag` (a keyspace trigger's number in its library).
 */
export class EventQueue {
  /** The oldest events, as objects; the newer ones in `compact` once it holds any. */
  private objects: KeyEvent[] = [];
  private objectTags: number[] = [];
  private readonly compact = new CompactEvents();

  get length(): number {
    return this.objects.length + this.compact.length;
  }

  push(e: KeyEvent, tag = 0): void {
    if (this.compact.length === 0 && this.objects.length < OBJECT_EVENTS) {
      // A long carried value is left out (a copy: the event is shared with other queues).
      const value = e.value;
      this.objects.push(
        value !== undefined && value.length > CARRIED_VALUE_KEPT ? { ...e, value: undefined } : e,
      );
      this.objectTags.push(tag);
    } else {
      this.compact.push(e, tag);
    }
  }

  /**
   * The first `max` events (fewer when fewer wait), left in the queue (drop() takes them
   * out); `tags`, when given, gets their tags.
   */
  peek(max: number, tags?: number[]): KeyEvent[] {
    const n = Math.min(max, this.objects.length);
    const out = this.objects.slice(0, n);
    if (tags !== undefined) for (let i = 0; i < n; i++) tags.push(this.objectTags[i]);
    if (n < max && this.compact.length > 0) {
      for (const e of this.compact.peek(max - n, tags)) out.push(e);
    }
    return out;
  }

  /** Takes the first `n` events out. */
  drop(n: number): void {
    const fromObjects = Math.min(n, this.objects.length);
    if (fromObjects === this.objects.length) {
      this.objects = [];
      this.objectTags = [];
    } else if (fromObjects > 0) {
      this.objects.splice(0, fromObjects);
      this.objectTags.splice(0, fromObjects);
    }
    if (n > fromObjects) this.compact.drop(n - fromObjects);
  }

  /** Takes the first `max` events out, as KeyEvent objects. */
  take(max: number): KeyEvent[] {
    // The usual case, every event an object and all taken: the array itself, no copy.
    if (this.compact.length === 0 && this.objects.length <= max) {
      const out = this.objects;
      this.objects = [];
      this.objectTags = [];
      return out;
    }
    const out = this.peek(max);
    this.drop(out.length);
    return out;
  }

  /** The tags of the last `n` events, oldest first, into `out`. */
  peekTail(n: number, out: number[]): void {
    n = Math.min(n, this.length);
    const fromCompact = Math.min(n, this.compact.length);
    const fromObjects = n - fromCompact;
    for (let i = this.objects.length - fromObjects; i < this.objects.length; i++)
      out.push(this.objectTags[i]);
    if (fromCompact > 0) this.compact.peekTail(fromCompact, out);
  }

  /** When the first event arrived, if any waits. */
  oldestAt(): number | undefined {
    return this.objects.length > 0 ? this.objects[0].at : this.compact.oldestAt();
  }

  /** When the first event of `shard` arrived, if one waits. */
  oldestAtOf(shard: string): number | undefined {
    for (const e of this.objects) if (e.shard === shard) return e.at;
    return this.compact.oldestAtOf(shard);
  }

  clear(): void {
    this.objects = [];
    this.objectTags = [];
    this.compact.clear();
  }
}
