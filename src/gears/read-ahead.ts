/**
 * Read-ahead of a script's execute() calls. When a step calls execute() with a read-only
 * command whose arguments include the key of the record being processed, the guest library
 * asks, in one host call, for the same command with the keys of the rest of the fed batch,
 * and answers the step's later calls from those replies (src/gears/guest/gears/read-ahead.ts,
 * `readAheadIn`). One pipelined round trip per batch instead of one per record.
 */
import { encodeCommand, encodeMany } from "../resp/encode.js";
import { ReplyErrorText, RespCursor } from "../resp/json-text.js";
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
 * and the outcomes as JSON text `[[value, ...], [[index, "error message"], ...]]`: the
 * values in key order (null where the reply was an error), then the errors by key index.
 * One flat list is quicker for the guest to parse than a pair per key.
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
  const parts = safePartitions(partitions, db);
  const outcomes = new Array<string | Promise<string>>(keys.length);
  const errors: string[] = [];
  const valueAt = (i: number, reply: Buffer): string => {
    try {
      return new RespCursor(reply).value();
    } catch (e) {
      if (!(e instanceof ReplyErrorText)) throw e;
      errors.push(`[${i},${JSON.stringify(e.message)}]`);
      return "null";
    }
  };
  const failedAt = (i: number, e: Error): string => {
    errors.push(`[${i},${JSON.stringify(e.message)}]`);
    return "null";
  };
  /** Per partition: the indexes of the keys read there and their commands, sent as one write. */
  const groups = new Map<number, { index: number[]; argvs: Buffer[][] }>();
  const forward = (i: number, argv: Buffer[]): Promise<string> => {
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
    return sink.promise.then(
      (r) => valueAt(i, r),
      (e: Error) => failedAt(i, e),
    );
  };
  for (let i = 0; i < keys.length; i++) {
    const argv = base.slice();
    const k = Buffer.from(keys[i]);
    for (const p of at) argv[p] = k;
    const denied = guard?.(name, argv) ?? null;
    if (denied !== null) {
      outcomes[i] = failedAt(i, new Error(denied));
      continue;
    }
    const slot = parts !== null ? router.slotOf(name, argv) : NO_KEYS;
    if (slot < 0) {
      outcomes[i] = forward(i, argv);
      continue;
    }
    const owner = parts!.partitionOfSlot(slot);
    let group = groups.get(owner);
    if (group === undefined) groups.set(owner, (group = { index: [], argvs: [] }));
    group.index.push(i);
    group.argvs.push(argv);
  }
  // A keyed command per key through the router costs an encode, a sink and a write each: the
  // keys of one partition go instead as one write to its master, with one sink for them all.
  // A redirect (a slot moving) or a failed connection sends those keys the router's way.
  const sent: Promise<void>[] = [];
  for (const [owner, { index, argvs }] of groups) {
    sent.push(
      parts!.shard(owner).callMany!(encodeMany(argvs), argvs.length).then(
        (replies) => {
          for (let j = 0; j < index.length; j++) {
            const r = replies[j];
            const i = index[j];
            outcomes[i] = redirected(r) ? forward(i, argvs[j]) : valueAt(i, r);
          }
        },
        () => {
          for (let j = 0; j < index.length; j++) outcomes[index[j]] = forward(index[j], argvs[j]);
        },
      ),
    );
  }
  await Promise.all(sent);
  const texts = await Promise.all(outcomes);
  return new RawJson(`[[${texts.join(",")}],[${errors.join(",")}]]`);
}

/** The execution's partitions when read-ahead may use them: same database, and they exist. */
function safePartitions(partitions: () => Partitions, db: number): Partitions | null {
  try {
    const p = partitions();
    return p.db === db && p.count > 0 ? p : null;
  } catch {
    return null;
  }
}

const MOVED = Buffer.from("-MOVED ");
const ASK = Buffer.from("-ASK ");
const TRYAGAIN = Buffer.from("-TRYAGAIN");

/** A reply that says the key is served elsewhere, or not now: the router knows what to do. */
function redirected(reply: Buffer): boolean {
  return (
    reply[0] === 0x2d &&
    (reply.subarray(0, MOVED.length).equals(MOVED) ||
      reply.subarray(0, ASK.length).equals(ASK) ||
      reply.subarray(0, TRYAGAIN.length).equals(TRYAGAIN))
  );
}
