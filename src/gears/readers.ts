import { keySlot as calculateSlot } from "../routing/key-slot.js";
import type { Arg } from "../resp/encode.js";
import { RespError, type RespValue } from "../resp/values.js";
import type { JsonValue } from "../sandbox/types.js";

/** One shard as a reader sees it: somewhere to send commands. */
export interface ShardAccess {
  call(argv: readonly Arg[]): Promise<RespValue>;
}

/** Records of one partition, a batch at a time. */
export type RecordBatches = AsyncGenerator<JsonValue[], void, void>;

export interface ReadContext {
  /** The partition being read (index into the masters), and the shard behind it. */
  partition: number;
  shard: ShardAccess;
  /** The partition owning a slot. */
  partitionOfSlot(slot: number): number;
  /** The id reported for this shard (ShardsIDReader). */
  shardId: string;
}

const SCAN_COUNT = 1000;

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
 * Reads the type and whole value of every key given as ARGV, in one round trip and one
 * reply. The keys come from SCAN on this very node, so they are local, but they span
 * slots: hence the flags (no-writes also lets it run on a replica).
 */
const READ_KEYS_SCRIPT = `#!lua flags=no-writes,allow-cross-slot-keys
local out = {}
for i, k in ipairs(ARGV) do
  local t = redis.call('TYPE', k)['ok']
  local v = false
  if t == 'string' then v = redis.call('GET', k)
  elseif t == 'hash' then v = redis.call('HGETALL', k)
  elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
  elseif t == 'set' then v = redis.call('SMEMBERS', k)
  elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'stream' then v = redis.call('XRANGE', k, '-', '+')
  end
  out[i] = {t, v}
end
return out`;

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
  const scripted = await shard.call(["EVAL", READ_KEYS_SCRIPT, 0, ...keys]).catch(() => null);
  if (Array.isArray(scripted) && scripted.length === keys.length) {
    return keys.map((k, i) => {
      const [type, value] = scripted[i] as [RespValue, RespValue];
      return record(k, text(type), value);
    });
  }
  const types = await Promise.all(keys.map((k) => shard.call(["TYPE", k]).then(text)));
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
    const [next, keys] = reply as [Buffer, Buffer[]];
    cursor = next.toString();
    if (keys.length > 0) yield keys;
  } while (cursor !== "0");
}

export async function* keysReader(
  ctx: ReadContext,
  pattern: string,
  options: Record<string, JsonValue>,
): RecordBatches {
  const readValue = options.readValue !== false;
  for await (const keys of scanKeys(ctx, pattern, { noScan: options.noScan === true })) {
    yield await keyRecords(ctx.shard, keys, readValue);
  }
}

export async function* keysOnlyReader(
  ctx: ReadContext,
  pattern: string,
  options: Record<string, JsonValue>,
): RecordBatches {
  const count = typeof options.count === "number" && options.count > 0 ? options.count : SCAN_COUNT;
  for await (const keys of scanKeys(ctx, pattern, { count, noScan: options.noScan === true })) {
    yield keys.map((k) => k.toString());
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
