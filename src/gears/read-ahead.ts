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
import { RawJson, type HostBridge, type JsonValue } from "../sandbox/types.js";
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

/** executeMany's outcomes before they are written as one JSON text. */
export interface ManyOutcomes {
  /** Per key, its reply as JSON text ("null" where it failed). */
  texts: string[];
  /** The failed keys' indexes, with their messages as JSON text. */
  errors: [number, string][];
}

/** Outcomes `from` to `to` (key indexes) as executeMany's answer, indexed from `from`. */
function manyJson(o: ManyOutcomes, from: number, to: number): RawJson {
  const texts = from === 0 && to === o.texts.length ? o.texts : o.texts.slice(from, to);
  const errors: string[] = [];
  for (const [i, message] of o.errors) if (i >= from && i < to) errors.push(`[${i - from},${message}]`);
  return new RawJson(`[[${texts.join(",")}],[${errors.join(",")}]]`);
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
  const o = await executeManyOutcomes(router, partitions, args, db, guard);
  return manyJson(o, 0, o.texts.length);
}

/** executeMany's outcomes, before they are written as its answer. */
export async function executeManyOutcomes(
  router: Router,
  partitions: () => Partitions,
  args: JsonValue[],
  db: number,
  guard: ((name: string, argv: readonly Buffer[]) => string | null) | null,
): Promise<ManyOutcomes> {
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
  const errors: [number, string][] = [];
  const valueAt = (i: number, reply: Buffer): string => {
    try {
      return new RespCursor(reply).value();
    } catch (e) {
      if (!(e instanceof ReplyErrorText)) throw e;
      errors.push([i, JSON.stringify(e.message)]);
      return "null";
    }
  };
  const failedAt = (i: number, e: Error): string => {
    errors.push([i, JSON.stringify(e.message)]);
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
  return { texts: await Promise.all(outcomes), errors };
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

/** A batch of a partition's keys read and not yet fed to its end, and its replies read early. */
export interface AheadBatch {
  partition: number;
  /** The key names, made when first needed. */
  names: () => string[];
  keys: string[] | null;
  /** The template's outcomes for every key; null until asked, or when it cannot be used. */
  outcomes: Promise<ManyOutcomes | null> | null;
  used: boolean;
}

/** After this many batches whose replies were read early and never asked for, no more are read. */
const PREFETCH_MISSES = 3;

/**
 * A script's bridge that reads the replies of its steps' read-ahead (executeMany) one batch
 * early. Once a step asked for a command over a batch's keys, the same command is sent for
 * each batch as soon as the reader has it, while the guest still works on the batches before
 * it, and the step's executeMany for that batch is answered with those replies: the guest
 * no longer waits a round trip per batch. The replies are the same as the step's own call
 * would get, read a little earlier, as if the guest were that much further on; the script's
 * own writes are what could tell the difference, so any host call that may write (or that is
 * not a plain read) stops the early reads for the rest of the execution and drops those not
 * yet used. At most the batches the execution holds (one being fed and one read ahead per
 * partition) have replies read early.
 */
export class PrefetchingBridge implements HostBridge {
  /** The command read ahead, as the guest's first executeMany gave it; null until then. */
  private template: { argv: string[]; positions: number[] } | null = null;
  private active = false;
  private stopped = false;
  private misses = 0;
  private readonly batches = new Set<AheadBatch>();

  constructor(
    private readonly inner: HostBridge,
    /** executeMany as the inner bridge runs it: same routing, database and rights. */
    private readonly many: (args: JsonValue[]) => Promise<ManyOutcomes>,
  ) {}

  /** Early reads start: an execution over a reader whose records are keys runs. */
  start(): void {
    this.active = !this.stopped;
  }

  /** A batch of `partition`'s keys the reader has: its replies are read now if the command is known. */
  read(partition: number, count: number, names: () => string[]): AheadBatch | null {
    if (!this.active || count === 0 || count > MAX_READ_AHEAD) return null;
    const batch: AheadBatch = { partition, names, keys: null, outcomes: null, used: false };
    this.batches.add(batch);
    if (this.template !== null) this.fetch(batch);
    return batch;
  }

  /** The batch was fed to its end: its early replies go. */
  done(batch: AheadBatch | null): void {
    if (batch === null || !this.batches.delete(batch)) return;
    if (batch.outcomes !== null && !batch.used && ++this.misses >= PREFETCH_MISSES) this.stop();
  }

  /** No more early reads in this execution; those not used are dropped. */
  stop(): void {
    this.active = false;
    this.stopped = true;
    this.batches.clear();
  }

  private fetch(batch: AheadBatch): void {
    const t = this.template!;
    batch.outcomes = this.many([batch.partition, t.argv, t.positions, keysOf(batch)]).catch(() => null);
  }

  callSync(name: string, args: JsonValue[]): Promise<JsonValue | RawJson> {
    if (this.active) {
      if (name === "executeMany") {
        const early = this.early(args);
        if (early !== null) return early;
        const reply = this.inner.callSync(name, args);
        // The step's own call goes out first: the batches' early reads queue behind it.
        if (this.template === null) this.learn(args);
        return reply;
      }
      if (!readOnly(name, args)) this.stop();
    }
    return this.inner.callSync(name, args);
  }

  callAsync(
    calls: { name: string; args: JsonValue[] }[],
  ): Promise<({ ok: JsonValue | RawJson } | { error: string })[]> {
    if (this.active && calls.some((c) => !readOnly(c.name, c.args))) this.stop();
    return this.inner.callAsync(calls);
  }

  notify(name: string, args: JsonValue[]): void {
    this.inner.notify(name, args);
  }

  /** The step's first read-ahead: from now on, each batch's replies are read when it comes. */
  private learn(args: JsonValue[]): void {
    const call = manyCall(args);
    if (call === null) return;
    this.template = { argv: call.argv, positions: call.positions };
    for (const b of this.batches) {
      if (b.outcomes === null && covers(b, call.partition, call.keys) === false) this.fetch(b);
    }
  }

  /** The answer to a step's executeMany from replies read early; null: ask Redis now. */
  private early(args: JsonValue[]): Promise<RawJson> | null {
    const call = manyCall(args);
    if (call === null || this.template === null) return null;
    const wanted = call.keys;
    if (!sameNumbers(this.template.positions, call.positions)) return null;
    if (!sameTemplate(this.template.argv, call.argv, call.positions)) return null;
    for (const b of this.batches) {
      if (b.outcomes === null) continue;
      const from = covers(b, call.partition, wanted);
      if (from === false) continue;
      b.used = true;
      const to = from + wanted.length;
      return b.outcomes.then((o) =>
        o === null ? (this.inner.callSync("executeMany", args) as Promise<RawJson>) : manyJson(o, from, to),
      );
    }
    return null;
  }
}

/** executeMany's arguments when they have its shape (partition, argv, positions, keys); null otherwise. */
function manyCall(
  args: JsonValue[],
): { partition: number; argv: string[]; positions: number[]; keys: string[] } | null {
  const [partition, argv, positions, keys] = args;
  const argvStrings = strings(argv);
  const keyStrings = strings(keys);
  if (typeof partition !== "number" || argvStrings === null || keyStrings === null) return null;
  if (!Array.isArray(positions) || positions.some((p) => typeof p !== "number")) return null;
  return { partition, argv: argvStrings, positions: positions as number[], keys: keyStrings };
}

function keysOf(b: AheadBatch): string[] {
  return (b.keys ??= b.names());
}

/** Where `keys` start in the batch, when they are a run of its keys; false otherwise. */
function covers(b: AheadBatch, partition: number, keys: string[]): number | false {
  if (b.partition !== partition || keys.length === 0) return false;
  const own = keysOf(b);
  const from = own.indexOf(keys[0]);
  if (from < 0 || from + keys.length > own.length) return false;
  for (let i = 1; i < keys.length; i++) if (own[from + i] !== keys[i]) return false;
  return from;
}

/** The same command but for the keys (at `positions`, which each call fills with its own). */
function sameTemplate(a: string[], b: string[], positions: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i] && !positions.includes(i)) return false;
  return true;
}

function sameNumbers(a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Host calls that cannot change a key: a read-ahead command's execute(), and lookups. */
function readOnly(name: string, args: JsonValue[]): boolean {
  if (name === "executeMany" || name === "configGet" || name === "hashtag") return true;
  if (name !== "execute") return false;
  const command = args[1];
  return typeof command === "string" && ALLOWED.has(command.toLowerCase());
}
