import { keySlot as calculateSlot } from "../routing/key-slot.js";
import { encodeCommand, type Arg } from "../resp/encode.js";
import { NotHandled, ReplyErrorText, RespCursor } from "../resp/json-text.js";
import { RespError, type RespValue } from "../resp/values.js";
import { BinaryWriter, TAG_ARRAY, TAG_NULL, TAG_OBJECT } from "../sandbox/bjson.js";
import { isProxyKey } from "../routing/hidden-keys.js";
import type { JsonValue } from "../sandbox/types.js";

/** One shard as a reader sees it: somewhere to send commands. */
export interface ShardAccess {
  call(argv: readonly Arg[]): Promise<RespValue>;
  /** An encoded command; resolves with the reply's bytes (error replies too). */
  callRaw?(payload: Buffer): Promise<Buffer>;
  /** `count` encoded commands back to back; resolves with their replies' bytes, in order. */
  callMany?(payload: Buffer, count: number): Promise<Buffer[]>;
}

/**
 * A batch of records in QuickJS's binary object format (src/sandbox/bjson.ts), written
 * straight from the reply bytes: no JS objects are built for them on the way into the
 * isolate, and the guest decodes them far quicker than their JSON.
 */
export class RecordBinary {
  constructor(
    private readonly writer: BinaryWriter,
    /** Where each record starts in the writer's body. */
    private readonly offsets: number[],
    /** The records' key names, in order (made only when asked: execution.ts's early reads). */
    readonly keyNames: (() => string[]) | null = null,
  ) {}

  get length(): number {
    return this.offsets.length;
  }

  /** The records from index `from` on, as one array value. */
  bytes(from: number): Buffer {
    const count = new BinaryWriter(8);
    count.u8(TAG_ARRAY);
    count.leb(this.offsets.length - from);
    return Buffer.concat([this.writer.header(), count.body(), this.writer.body(this.offsets[from])]);
  }
}

export type RecordBatch = JsonValue[] | RecordBinary;

/** Records of one partition, a batch at a time. */
export type RecordBatches = AsyncGenerator<RecordBatch, void, void>;

export interface ReadContext {
  /** The partition being read (index into the masters), and the shard behind it. */
  partition: number;
  shard: ShardAccess;
  /** The partition owning a slot. */
  partitionOfSlot(slot: number): number;
  /** The id reported for this shard (ShardsIDReader). */
  shardId: string;
  /** The isolate reads the binary format: readers may yield RecordBinary batches. */
  binary?: boolean;
}

const SCAN_COUNT = 1000;

/**
 * The KeysReader's first SCAN of a partition asks for fewer keys: the guest, which works
 * through every partition's records in turn, starts that much sooner. Larger batches than
 * SCAN_COUNT were tried (up to 4000 keys): the guest took longer per record and the main
 * thread answered its entries later (bench/RESULTS.md, "Map/reduce: the job's start").
 */
const FIRST_SCAN_COUNT = 250;

function text(v: RespValue): string {
  if (v instanceof RespError) throw new Error(v.message);
  return Buffer.isBuffer(v) ? v.toString() : String(v);
}

async function ask(shard: ShardAccess, argv: readonly Arg[]): Promise<RespValue> {
  const reply = await shard.call(argv);
  if (reply instanceof RespError) throw new Error(reply.message);
  return reply;
}

function pairsToObject(flat: RespValue): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  if (!Array.isArray(flat)) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[text(flat[i])] = text(flat[i + 1]);
  return out;
}

function strings(v: RespValue): JsonValue[] {
  return Array.isArray(v) ? v.map(text) : [];
}

function streamEntries(v: RespValue): JsonValue[] {
  if (!Array.isArray(v)) return [];
  return v.map((entry) => {
    const [id, fields] = entry as RespValue[];
    return { id: text(id), value: pairsToObject(fields) };
  });
}

/** The command that reads a key's whole value, by TYPE, and how its reply becomes JSON. */
const VALUE_READERS: Record<string, [(key: Buffer) => Arg[], (reply: RespValue) => JsonValue]> = {
  string: [(k) => ["GET", k], (r) => (r === null ? null : text(r))],
  hash: [(k) => ["HGETALL", k], pairsToObject],
  list: [(k) => ["LRANGE", k, 0, -1], strings],
  set: [(k) => ["SMEMBERS", k], strings],
  zset: [
    (k) => ["ZRANGE", k, 0, -1, "WITHSCORES"],
    (r) => {
      const flat = strings(r);
      const out: JsonValue[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], Number(flat[i + 1])]);
      return out;
    },
  ],
  stream: [(k) => ["XRANGE", k, "-", "+"], streamEntries],
};

/**
 * Reads the type and whole value of every key given as ARGV (after the limit), in one
 * round trip and one reply. A missing key gives no keymiss notification (RedisGears: the
 * reader's own reads give no events). The keys come from SCAN on this very node, so they are local,
 * but they span slots: hence the flags (no-writes also lets it run on a replica).
 * With a limit (ARGV[1], 0 for none), a value larger than that many elements (a string:
 * KB) is left out, with 1 as a third element: for event handlers, which read such a value
 * only if they touch it (a handler adding to a big set must not read it on every event).
 */
const READ_KEYS_SCRIPT = `#!lua flags=no-writes,allow-cross-slot-keys
local limit = tonumber(ARGV[1])
local sizes = {string = 'STRLEN', hash = 'HLEN', list = 'LLEN', set = 'SCARD', zset = 'ZCARD', stream = 'XLEN'}
local out = {}
for i = 2, #ARGV do
  local k = ARGV[i]
  -- OBJECT looks the key up without a keymiss notification, TYPE with one: a missing key
  -- must not give an event, or a registration that sees keymiss would retrigger itself.
  local t = 'none'
  if redis.call('OBJECT', 'ENCODING', k) then t = redis.call('TYPE', k)['ok'] end
  local v = false
  if limit > 0 and sizes[t] and redis.call(sizes[t], k) > limit * (t == 'string' and 1024 or 1) then
    out[i - 1] = {t, false, 1}
  else
    if t == 'string' then v = redis.call('GET', k)
    elseif t == 'hash' then v = redis.call('HGETALL', k)
    elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
    elseif t == 'set' then v = redis.call('SMEMBERS', k)
    elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
    elseif t == 'stream' then v = redis.call('XRANGE', k, '-', '+')
    end
    out[i - 1] = {t, v}
  end
end
return out`;

/** Collections above this many elements (strings above this many KB) reach event handlers lazily. */
export const LAZY_VALUE_ELEMENTS = 1000;

/**
 * KeysReader records for keyspace events: values of big keys are left out and marked
 * `lazyValue` (the guest fetches them with a host call if the handler reads `value`).
 * Falls back to keyRecords (every value) where the script cannot run.
 */
export async function eventKeyRecords(shard: ShardAccess, keys: Buffer[]): Promise<JsonValue[]> {
  const scripted = await shard
    .call(["EVAL", READ_KEYS_SCRIPT, 0, LAZY_VALUE_ELEMENTS, ...keys])
    .catch(() => null);
  if (!Array.isArray(scripted) || scripted.length !== keys.length) return keyRecords(shard, keys, true);
  return keys.map((k, i) => {
    const [type, value, lazy] = scripted[i] as [RespValue, RespValue, RespValue?];
    if (lazy !== 1) return record(k, text(type), value);
    return { key: k.toString(), type: text(type), event: null, lazyValue: true };
  });
}

/** One key's whole value as a KeysReader record has it (null when the key is gone). */
export async function readKeyValue(
  call: (argv: readonly Arg[]) => Promise<RespValue>,
  key: Buffer,
): Promise<JsonValue> {
  const type = await typeOf(call, key);
  const reader = VALUE_READERS[type];
  if (reader === undefined) return null;
  const reply = await call(reader[0](key));
  if (reply instanceof RespError) throw new Error(reply.message);
  return reader[1](reply);
}

/**
 * A key's TYPE, asked only when OBJECT ENCODING finds the key: TYPE of a missing key
 * notifies keymiss, which a registration reading this key's value would see as a new event.
 */
async function typeOf(call: (argv: readonly Arg[]) => Promise<RespValue>, key: Buffer): Promise<string> {
  const encoding = await call(["OBJECT", "ENCODING", key]);
  if (encoding === null) return "none";
  return text(await call(["TYPE", key]));
}

function record(key: Buffer, rawType: string, value: RespValue): JsonValue {
  const type = rawType === "none" ? "empty" : rawType;
  const reader = VALUE_READERS[rawType];
  return {
    key: key.toString(),
    value: type === "empty" || reader === undefined ? null : reader[1](value),
    type,
    event: null,
  };
}

/**
 * KeysReader records for a batch of keys. One server-side script reads every type and
 * value in a single round trip; where scripts cannot run (a slot migrating, scripting
 * disabled), every TYPE then every value is pipelined: two round trips per batch.
 */
export async function keyRecords(
  shard: ShardAccess,
  keys: Buffer[],
  readValue: boolean,
): Promise<JsonValue[]> {
  if (!readValue) return keys.map((k) => ({ key: k.toString(), event: null }));
  const scripted = await shard.call(["EVAL", READ_KEYS_SCRIPT, 0, 0, ...keys]).catch(() => null);
  if (Array.isArray(scripted) && scripted.length === keys.length) {
    return keys.map((k, i) => {
      const [type, value] = scripted[i] as [RespValue, RespValue];
      return record(k, text(type), value);
    });
  }
  const types = await Promise.all(keys.map((k) => typeOf((argv) => shard.call(argv), k)));
  const values = await Promise.all(
    keys.map((k, i) => {
      const reader = VALUE_READERS[types[i]];
      return reader === undefined ? null : shard.call(reader[0](k));
    }),
  );
  return keys.map((k, i) => record(k, types[i], values[i]));
}

interface ScanOptions {
  count?: number;
  noScan?: boolean;
}

/** Key names of one partition matching a glob, a SCAN batch at a time; or the one key (noScan). */
async function* scanKeys(ctx: ReadContext, pattern: string, options: ScanOptions): AsyncGenerator<Buffer[]> {
  if (options.noScan) {
    if (ctx.partitionOfSlot(calculateSlot(pattern)) === ctx.partition) yield [Buffer.from(pattern)];
    return;
  }
  let cursor = "0";
  do {
    const reply = await ask(ctx.shard, [
      "SCAN",
      cursor,
      "MATCH",
      pattern,
      "COUNT",
      options.count ?? SCAN_COUNT,
    ]);
    const [next, found] = reply as [Buffer, Buffer[]];
    cursor = next.toString();
    const keys = found.filter((k) => !isProxyKey(k));
    if (keys.length > 0) yield keys;
  } while (cursor !== "0");
}

/** One SCAN reply, read in place: the keys are ranges of `reply`. */
interface RawKeys {
  reply: Buffer;
  /**
   * The keys' bulk strings, back to back: exactly how they are encoded as a command's
   * arguments (-1 when some were left out: the proxy's own keys).
   */
  bodyStart: number;
  bodyEnd: number;
  /** Per key: where its bulk string starts (the `$`), and where its bytes start and end. */
  heads: number[];
  starts: number[];
  ends: number[];
}

function keyBuffers(batch: RawKeys): Buffer[] {
  return batch.starts.map((s, i) => batch.reply.subarray(s, batch.ends[i]));
}

/**
 * The batch's key names as the guest decodes them (UTF-8), made when asked. The keys' bytes
 * are copied: the reply may be a view of a much larger read buffer, which the batch's
 * records would otherwise keep alive while they wait to be fed.
 */
function keyNames(batch: RawKeys): () => string[] {
  const { starts, ends } = batch;
  const n = starts.length;
  const from = n > 0 ? starts[0] : 0;
  const bytes = Buffer.from(batch.reply.subarray(from, n > 0 ? ends[n - 1] : 0));
  return () => starts.map((s, i) => bytes.toString("utf8", s - from, ends[i] - from));
}

function writeKey(w: BinaryWriter, batch: RawKeys, i: number): void {
  w.stringBytes(batch.reply, batch.starts[i], batch.ends[i]);
}

/** As scanKeys, with the replies left as bytes (callRaw); null when the shard cannot do that. */
async function* scanRawKeys(
  ctx: ReadContext,
  pattern: string,
  /** Read at each SCAN: the reader may change it between batches. */
  size: { count: number },
): AsyncGenerator<RawKeys, void, void> {
  const callRaw = ctx.shard.callRaw!;
  let cursor = "0";
  do {
    const reply = await callRaw(encodeCommand(["SCAN", cursor, "MATCH", pattern, "COUNT", size.count]));
    const c = new RespCursor(reply);
    let n: number;
    try {
      if (c.arrayLength() !== 2) throw new NotHandled("SCAN");
      const at = c.bulk();
      cursor = reply.toString("latin1", at, c.bulkEnd);
      n = c.arrayLength();
    } catch (e) {
      if (e instanceof ReplyErrorText) throw new Error(e.message, { cause: e });
      throw new Error(`unexpected SCAN reply: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    if (n <= 0) continue;
    const bodyStart = c.at;
    const heads: number[] = [];
    const starts: number[] = [];
    const ends: number[] = [];
    let contiguous = true;
    for (let i = 0; i < n; i++) {
      const head = c.at;
      const start = c.bulk();
      // Only a key starting with "{" can be the proxy's: no view is made of the others.
      if (reply[start] === 123 && isProxyKey(reply.subarray(start, c.bulkEnd))) {
        contiguous = false;
        continue;
      }
      heads.push(head);
      starts.push(start);
      ends.push(c.bulkEnd);
    }
    if (starts.length === 0) continue;
    yield { reply, bodyStart: contiguous ? bodyStart : -1, bodyEnd: c.at, heads, starts, ends };
  } while (cursor !== "0");
}

const SCRIPT_HEAD = Buffer.from(
  `$4\r\nEVAL\r\n$${Buffer.byteLength(READ_KEYS_SCRIPT)}\r\n${READ_KEYS_SCRIPT}\r\n$1\r\n0\r\n$1\r\n0\r\n`,
);

/** `EVAL script 0 0 key...` for the keys at `which`, copied as they came in the SCAN reply. */
function readKeysCommand(batch: RawKeys, which: number[] | null): Buffer {
  const n = which === null ? batch.starts.length : which.length;
  const parts: Buffer[] = [Buffer.from(`*${4 + n}\r\n`), SCRIPT_HEAD];
  if (which === null && batch.bodyStart >= 0)
    parts.push(batch.reply.subarray(batch.bodyStart, batch.bodyEnd));
  else {
    for (const i of which ?? batch.heads.keys())
      parts.push(batch.reply.subarray(batch.heads[i], batch.ends[i] + 2));
  }
  return Buffer.concat(parts);
}

/**
 * For the types whose whole value one command reads, and which cannot exist empty: the
 * command's bytes before and after the key. An empty reply then means the key is gone.
 */
const GUESSES: Record<string, [Buffer, Buffer]> = {
  hash: [Buffer.from("*2\r\n$7\r\nHGETALL\r\n"), Buffer.alloc(0)],
  string: [Buffer.from("*2\r\n$3\r\nGET\r\n"), Buffer.alloc(0)],
  list: [Buffer.from("*4\r\n$6\r\nLRANGE\r\n"), Buffer.from("$1\r\n0\r\n$2\r\n-1\r\n")],
  set: [Buffer.from("*2\r\n$8\r\nSMEMBERS\r\n"), Buffer.alloc(0)],
  zset: [Buffer.from("*5\r\n$6\r\nZRANGE\r\n"), Buffer.from("$1\r\n0\r\n$2\r\n-1\r\n$10\r\nWITHSCORES\r\n")],
};

/** The guessed type's read command for every key of the batch, back to back. */
function guessedCommands(batch: RawKeys, type: string): Buffer {
  const [prefix, suffix] = GUESSES[type];
  const n = batch.starts.length;
  let size = 0;
  for (let i = 0; i < n; i++) size += prefix.length + (batch.ends[i] + 2 - batch.heads[i]) + suffix.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < n; i++) {
    at += prefix.copy(out, at);
    at += batch.reply.copy(out, at, batch.heads[i], batch.ends[i] + 2);
    at += suffix.copy(out, at);
  }
  return out;
}

/** Where one key's value is, in which reply, and of which type (null: the key is gone). */
interface ValueAt {
  reply: Buffer;
  at: number;
  type: string | null;
}

const WRONGTYPE = Buffer.from("-WRONGTYPE");

/**
 * Where key i's value is in the reply to its guessed read command; null when the key has
 * another type. Other error replies (a slot moving) are NotHandled: the batch is read again.
 */
function guessedValue(reply: Buffer, type: string): ValueAt | null {
  if (reply[0] === 45 /* - */) {
    if (reply.subarray(0, WRONGTYPE.length).equals(WRONGTYPE)) return null;
    throw new NotHandled("error reply");
  }
  // A null GET, or "*0" for the types that do not exist empty: the key is gone.
  const gone = type === "string" ? reply[1] === 45 /* $-1 */ : reply.length === 4 && reply[1] === 48;
  return { reply, at: 0, type: gone ? null : type };
}

/** How many of a partition's first keys a TYPE is asked for, to guess the type of its values. */
const TYPE_SAMPLE = 32;
const TYPE_HEAD = Buffer.from("*2\r\n$4\r\nTYPE\r\n");

/**
 * The type to guess for a batch whose type is not known yet (a partition's first): TYPE of
 * its first keys, pipelined. Redis answers that far quicker than the script reads a whole
 * batch (the script runs TYPE and the read for every key in Lua), and on a machine with few
 * cores that script's time is taken from the guest's. Null when the sample has no common type
 * or the TYPEs fail: the batch then goes through the script as before.
 */
async function sampledType(shard: ShardAccess, batch: RawKeys): Promise<string | null> {
  const n = Math.min(TYPE_SAMPLE, batch.starts.length);
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) parts.push(TYPE_HEAD, batch.reply.subarray(batch.heads[i], batch.ends[i] + 2));
  const replies = await shard.callMany!(Buffer.concat(parts), n).catch(() => null);
  if (replies === null) return null;
  const types: string[] = [];
  for (const r of replies) {
    // "+hash\r\n"; an error reply (a slot moving) leaves the guess to the script.
    if (r[0] !== 43 /* + */) return null;
    types.push(r.toString("latin1", 1, r.length - 2));
  }
  return commonType(types);
}

/** The most common type of a batch, when at least half of it has a guessable type. */
function commonType(types: string[]): string | null {
  const counts = new Map<string, number>();
  for (const t of types) counts.set(t, (counts.get(t) ?? 0) + 1);
  for (const [t, n] of counts) if (n * 2 >= types.length && GUESSES[t] !== undefined) return t;
  return null;
}

/** A scalar as its text (the readers' `text()`), as a string value. */
function writeText(c: RespCursor, w: BinaryWriter): void {
  const type = c.peek();
  if (type === 36 /* $ */) {
    const at = c.bulk();
    if (at < 0) w.string("null");
    else w.stringBytes(c.buf, at, c.bulkEnd);
    return;
  }
  if (type === 43 /* + */ || type === 58 /* : */) {
    const line = c.line();
    w.string(type === 58 ? String(Number(line)) : line);
    return;
  }
  if (type === 45 /* - */) c.value();
  throw new NotHandled("not a scalar");
}

/** The value of a key of `type` as VALUE_READERS would make it, read from a reply. */
function writeValue(c: RespCursor, w: BinaryWriter, type: string): void {
  switch (type) {
    case "string": {
      if (c.peek() !== 36) throw new NotHandled("string value");
      const at = c.bulk();
      if (at < 0) w.u8(TAG_NULL);
      else w.stringBytes(c.buf, at, c.bulkEnd);
      return;
    }
    case "hash":
      writeObject(c, w);
      return;
    case "list":
    case "set": {
      const n = c.arrayLength();
      w.u8(TAG_ARRAY);
      w.leb(Math.max(0, n));
      for (let i = 0; i < n; i++) writeText(c, w);
      return;
    }
    case "zset": {
      const n = c.arrayLength();
      const pairs = n > 0 ? n >> 1 : 0;
      w.u8(TAG_ARRAY);
      w.leb(pairs);
      for (let i = 0; i < pairs; i++) {
        w.u8(TAG_ARRAY);
        w.leb(2);
        writeText(c, w);
        // As its JSON would have it: an infinite score is null, -0 is 0.
        w.value(scalarNumber(c));
      }
      if (n > 0 && n % 2 === 1) c.skip();
      return;
    }
    case "stream": {
      const n = c.arrayLength();
      w.u8(TAG_ARRAY);
      w.leb(Math.max(0, n));
      for (let i = 0; i < n; i++) {
        if (c.arrayLength() !== 2) throw new NotHandled("stream entry");
        w.u8(TAG_OBJECT);
        w.leb(2);
        w.atom("id");
        writeText(c, w);
        w.atom("value");
        writeObject(c, w);
      }
      return;
    }
    default:
      c.skip();
      w.u8(TAG_NULL);
  }
}

/** Number(text) of a scalar (a zset score). */
function scalarNumber(c: RespCursor): number {
  const type = c.peek();
  if (type === 36 /* $ */) {
    const at = c.bulk();
    return at < 0 ? Number("null") : Number(c.buf.toString("utf8", at, c.bulkEnd));
  }
  if (type === 43 /* + */ || type === 58 /* : */) return Number(c.line());
  if (type === 45 /* - */) c.value();
  throw new NotHandled("not a scalar");
}

/** A flat field/value list as an object, as pairsToObject makes it. */
function writeObject(c: RespCursor, w: BinaryWriter): void {
  if (c.peek() === 37 /* % */) throw new NotHandled("a RESP3 map");
  if (c.peek() !== 42) {
    c.skip();
    w.u8(TAG_OBJECT);
    w.leb(0);
    return;
  }
  const n = c.arrayLength();
  const pairs = n > 0 ? n >> 1 : 0;
  w.u8(TAG_OBJECT);
  w.leb(pairs);
  for (let i = 0; i < pairs; i++) {
    if (c.peek() !== 36) throw new NotHandled("field name");
    const at = c.bulk();
    if (at < 0) throw new NotHandled("field name");
    w.atomBytes(c.buf, at, c.bulkEnd);
    writeText(c, w);
  }
  if (n > 0 && n % 2 === 1) c.skip();
}

/** Where the values of the keys at `which` (all when null) are in the script's reply. */
function scriptValues(batch: RawKeys, which: number[] | null, reply: Buffer, out: ValueAt[]): boolean {
  const c = new RespCursor(reply);
  const n = which === null ? batch.starts.length : which.length;
  try {
    if (c.arrayLength() !== n) return false;
    for (let j = 0; j < n; j++) {
      if (c.arrayLength() !== 2) return false;
      const at = c.bulk();
      if (at < 0) return false;
      const type = reply.toString("utf8", at, c.bulkEnd);
      out[which === null ? j : which[j]] = { reply, at: c.at, type: type === "none" ? null : type };
      c.skip();
    }
  } catch (e) {
    if (e instanceof NotHandled || e instanceof ReplyErrorText) return false;
    throw e;
  }
  return true;
}

/** The batch's records, `{key, value, type, event}`, in key order. */
function writeRecords(batch: RawKeys, values: ValueAt[]): RecordBinary {
  const w = new BinaryWriter();
  const offsets = new Array<number>(values.length);
  const c = new RespCursor(values[0].reply);
  for (let i = 0; i < values.length; i++) {
    offsets[i] = w.length;
    const v = values[i];
    w.u8(TAG_OBJECT);
    w.leb(4);
    w.atom("key");
    writeKey(w, batch, i);
    w.atom("value");
    if (v.type === null) w.u8(TAG_NULL);
    else {
      c.reset(v.reply);
      c.at = v.at;
      writeValue(c, w, v.type);
    }
    w.atom("type");
    w.string(v.type ?? "empty");
    w.atom("event");
    w.u8(TAG_NULL);
  }
  return new RecordBinary(w, offsets, keyNames(batch));
}

/** The type a partition's values are guessed to have, and whether a TYPE sample was taken for it. */
interface TypeGuess {
  type: string | null;
  sampled: boolean;
}

/**
 * KeysReader records of a SCAN batch, or null when this path cannot read them. While most
 * keys have one type, each key's value is read with that type's command, pipelined (cheap
 * for Redis), and only the keys that answer WRONGTYPE go through the script that reads
 * TYPE and value; otherwise every key goes through the script.
 */
async function rawKeyRecords(
  shard: ShardAccess,
  batch: RawKeys,
  guess: TypeGuess,
): Promise<RecordBinary | null> {
  const n = batch.starts.length;
  const values = new Array<ValueAt>(n);
  let misses: number[] | null = null;
  try {
    if (guess.type === null && !guess.sampled && shard.callMany !== undefined) {
      guess.sampled = true;
      guess.type = await sampledType(shard, batch);
    }
    const type = guess.type;
    if (type !== null && shard.callMany !== undefined) {
      const replies = await shard.callMany(guessedCommands(batch, type), n).catch(() => null);
      if (replies === null) return null;
      misses = [];
      for (let i = 0; i < n; i++) {
        const v = guessedValue(replies[i], type);
        if (v === null) misses.push(i);
        else values[i] = v;
      }
    }
    if (misses === null || misses.length > 0) {
      const which = misses !== null && misses.length < n ? misses : null;
      const reply = await shard.callRaw!(readKeysCommand(batch, which)).catch(() => null);
      if (reply === null || !scriptValues(batch, which, reply, values)) return null;
    }
    guess.type = commonType(values.map((v) => v.type ?? "empty"));
    return writeRecords(batch, values);
  } catch (e) {
    if (e instanceof NotHandled || e instanceof ReplyErrorText) return null;
    throw e;
  }
}

export async function* keysReader(
  ctx: ReadContext,
  pattern: string,
  options: Record<string, JsonValue>,
): RecordBatches {
  const readValue = options.readValue !== false;
  if (options.noScan === true || ctx.shard.callRaw === undefined || ctx.binary !== true) {
    for await (const keys of scanKeys(ctx, pattern, { noScan: options.noScan === true })) {
      yield await keyRecords(ctx.shard, keys, readValue);
    }
    return;
  }
  const guess: TypeGuess = { type: null, sampled: false };
  const size = { count: FIRST_SCAN_COUNT };
  for await (const batch of scanRawKeys(ctx, pattern, size)) {
    size.count = SCAN_COUNT;
    const n = batch.starts.length;
    if (!readValue) {
      const w = new BinaryWriter();
      const offsets = new Array<number>(n);
      for (let i = 0; i < n; i++) {
        offsets[i] = w.length;
        w.u8(TAG_OBJECT);
        w.leb(2);
        w.atom("key");
        writeKey(w, batch, i);
        w.atom("event");
        w.u8(TAG_NULL);
      }
      yield new RecordBinary(w, offsets, keyNames(batch));
      continue;
    }
    // A refused script, a slot on the move, or a reply this path does not read: the
    // general path reads the batch again.
    yield (
      (await rawKeyRecords(ctx.shard, batch, guess)) ??
      (await keyRecords(ctx.shard, keyBuffers(batch), readValue))
    );
  }
}

export async function* keysOnlyReader(
  ctx: ReadContext,
  pattern: string,
  options: Record<string, JsonValue>,
): RecordBatches {
  const count = typeof options.count === "number" && options.count > 0 ? options.count : SCAN_COUNT;
  if (options.noScan === true || ctx.shard.callRaw === undefined || ctx.binary !== true) {
    for await (const keys of scanKeys(ctx, pattern, { count, noScan: options.noScan === true })) {
      yield keys.map((k) => k.toString());
    }
    return;
  }
  for await (const batch of scanRawKeys(ctx, pattern, { count })) {
    const w = new BinaryWriter();
    const offsets = new Array<number>(batch.starts.length);
    for (let i = 0; i < offsets.length; i++) {
      offsets[i] = w.length;
      writeKey(w, batch, i);
    }
    yield new RecordBinary(w, offsets, keyNames(batch));
  }
}

/** Entries of one stream after `fromId`, in order, on the partition that owns the stream. */
export async function* streamReader(
  ctx: ReadContext,
  key: string,
  options: Record<string, JsonValue>,
): RecordBatches {
  if (ctx.partitionOfSlot(calculateSlot(key)) !== ctx.partition) return;
  let after = typeof options.fromId === "string" ? options.fromId : "0-0";
  for (;;) {
    const reply = await ask(ctx.shard, ["XRANGE", key, `(${after}`, "+", "COUNT", SCAN_COUNT]);
    const entries = streamEntries(reply) as { id: string; value: JsonValue }[];
    if (entries.length === 0) return;
    yield entries.map((e) => ({ key, id: e.id, value: e.value }));
    after = entries[entries.length - 1].id;
    if (entries.length < SCAN_COUNT) return;
  }
}

export async function* shardsIdReader(ctx: ReadContext): RecordBatches {
  yield [ctx.shardId];
}

export type Reader = (ctx: ReadContext, arg: string, options: Record<string, JsonValue>) => RecordBatches;

/** The readers RG.EXECUTE can run; CommandReader only registers. */
export const READERS: Record<string, Reader> = {
  KeysReader: keysReader,
  KeysOnlyReader: keysOnlyReader,
  StreamReader: streamReader,
  ShardsIDReader: shardsIdReader,
};
