/**
 * Read-ahead of a script's execute() calls. When a step calls execute() with a read-only
 * command whose arguments include the key of the record being processed, the guest library
 * asks, in one host call, for the same command with the keys of the rest of the fed batch,
 * and answers the step's later calls from those replies (src/gears/guest/gears/engine.ts,
 * `readAheadRound`). One pipelined round trip per batch instead of one per record.
 */
import { encodeCommand } from "../resp/encode.js";
import { replyOutcomeJson } from "../resp/json-text.js";
import { NO_KEYS, type Router } from "../routing/router.js";
import { RawJson, type JsonValue } from "../sandbox/types.js";
import { RawSink } from "../routing/shards.js";
import type { Partitions } from "./partitions.js";

/**
 * Commands that only read keys: reading them early cannot change what anyone sees. Writes
 * are never read ahead; a guest cache of replies is dropped at any other command.
 */
export const READ_AHEAD_COMMANDS: string[] = [
  "GET",
  "GETRANGE",
  "STRLEN",
  "EXISTS",
  "TYPE",
  "TTL",
  "PTTL",
  "HGET",
  "HGETALL",
  "HMGET",
  "HEXISTS",
  "HLEN",
  "HKEYS",
  "HVALS",
  "HSTRLEN",
  "LRANGE",
  "LLEN",
  "LINDEX",
  "SMEMBERS",
  "SISMEMBER",
  "SMISMEMBER",
  "SCARD",
  "ZRANGE",
  "ZREVRANGE",
  "ZRANGEBYSCORE",
  "ZREVRANGEBYSCORE",
  "ZSCORE",
  "ZMSCORE",
  "ZCARD",
  "ZCOUNT",
  "ZRANK",
  "ZREVRANK",
  "XRANGE",
  "XREVRANGE",
  "XLEN",
];

const ALLOWED = new Set(READ_AHEAD_COMMANDS.map((c) => c.toLowerCase()));

/** The most commands one read-ahead may carry. */
export const MAX_READ_AHEAD = 4096;

function strings(v: JsonValue | undefined): string[] | null {
  if (!Array.isArray(v)) return null;
  for (const x of v) if (typeof x !== "string") return null;
  return v as string[];
}

/**
 * `executeMany(partition, argv, positions, keys)`: argv with the arguments at `positions`
 * replaced by each key in turn, every command sent at once (routed as execute() routes it),
 * and the outcomes as JSON text `[[0, value] | [1, "error message"], ...]` in order.
 */
export async function executeMany(
  router: Router,
  partitions: () => Partitions,
  args: JsonValue[],
  db = 0,
  /** The ACL check of the script's user (CommandGuard): a refused key fails its own outcome. */
  guard: ((name: string, argv: readonly Buffer[]) => string | null) | null = null,
): Promise<RawJson> {
  const partition = typeof args[0] === "number" ? args[0] : null;
  const template = strings(args[1]);
  const positions = Array.isArray(args[2]) ? args[2] : null;
  const keys = strings(args[3]);
  if (template === null || positions === null || keys === null || template.length < 2) {
    throw new Error("ERR executeMany needs argv, positions and keys");
  }
  const name = template[0].toLowerCase();
  const base = template.map((a) => Buffer.from(a));
  if (!ALLOWED.has(name) || router.isWrite(name, base)) {
    throw new Error(`ERR '${name}' cannot be read ahead`);
  }
  for (const p of positions) {
    if (typeof p !== "number" || !Number.isInteger(p) || p < 1 || p >= template.length) {
      throw new Error("ERR executeMany: bad argument position");
    }
  }
  if (keys.length > MAX_READ_AHEAD) throw new Error("ERR executeMany: too many keys");
  const at = positions as number[];
  const replies = keys.map((key) => {
    const argv = base.slice();
    const k = Buffer.from(key);
    for (const p of at) argv[p] = k;
    const denied = guard?.(name, argv) ?? null;
    if (denied !== null) return Promise.resolve(`[1,${JSON.stringify(denied)}]`);
    const sink = new RawSink();
    if (partition !== null && router.slotOf(name, argv) === NO_KEYS) {
      // As execute(): a command without keys runs on the shard of the step's partition.
      partitions().shard(partition).callRaw!(encodeCommand(argv)).then(
        (r) => sink.reply(r),
        (e: Error) => sink.fail(e.message),
      );
    } else {
      router.forward(name, argv, null, sink, { db, affinity: 0 });
    }
    return sink.promise.then(replyOutcomeJson, (e: Error) => `[1,${JSON.stringify(e.message)}]`);
  });
  return new RawJson(`[${(await Promise.all(replies)).join(",")}]`);
}
