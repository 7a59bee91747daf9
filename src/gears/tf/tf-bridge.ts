import type { Logger } from "../../observability/log.js";
import { NO_KEYS, type Router } from "../../routing/router.js";
import type { Partitions } from "../partitions.js";
import { RespError, type RespValue } from "../../resp/values.js";
import { decodeReply } from "../../resp/decode.js";
import { encodeCommand } from "../../resp/encode.js";
import { PromiseSink, type ReplySink } from "../../upstream/reply-sink.js";
import {
  allAnswered,
  type AsyncPart,
  type AsyncResult,
  type HostBridge,
  type JsonValue,
  type RawJson,
} from "../../sandbox/types.js";
import {
  ASYNC_JOIN,
  ASYNC_SETTLED,
  CALL_IN,
  CALLS_MORE,
  CALLS_REPLIES,
  FLAT_ERROR,
  FLAT_INTEGER,
  FLAT_OK,
  TRIGGERS_STARTED,
  type Tagged,
  type TfOutcome,
  type TriggerOutcomes,
} from "../guest/entry.js";
import { scriptCommandRefusal, type CommandGuard } from "../host-bridge.js";
import { isBlocking } from "../../routing/command-kinds.js";
import type { BlockingCalls } from "./blocking-calls.js";
import type { MutedKeys } from "./muted-keys.js";
import { outcomeOfPair, pushBatchCalls } from "./tf-guest.js";
import { replyToTagged } from "./values.js";

/**
 * The script a sync call's blocking command runs in, so that Redis runs it as inside any script
 * (without blocking) and the script answers its reply or error as they are.
 */
const EVAL = Buffer.from("EVAL");
const NON_BLOCKING = Buffer.from("return redis.pcall(unpack(ARGV))");
const NO_ARGS: Buffer[] = [];

/** Commands whose RESP3 reply (what T&F's calls saw) is a map; the shared connections speak RESP2. */
const MAP_REPLIES = new Set(["hgetall", "hello"]);

function toBuffer(arg: JsonValue): Buffer {
  if (typeof arg === "string") return Buffer.from(arg);
  if (arg !== null && typeof arg === "object" && !Array.isArray(arg) && typeof arg.b === "string") {
    return Buffer.from(arg.b, "latin1");
  }
  throw new Error("Can not convert value into bytes buffer");
}

/** An argument as TFUNCTION LIST shows it in a pending call. */
function commandText(arg: JsonValue): string {
  try {
    return toBuffer(arg).toString();
  } catch {
    return String(arg);
  }
}

/** What a library's calls need besides the router. */
export interface TfHooks {
  runOnKey(library: string, key: Buffer, name: string, argsJson: string): Promise<string>;
  runOnShards(library: string, name: string, argsJson: string): Promise<[string[], string[]]>;
  /** Keys written by functions and triggers, which must not fire keyspace triggers. */
  muted: MutedKeys;
  /** Whether writes must be muted now (some library has keyspace triggers). */
  muting(): boolean;
  /** Resolves once the keyspace events of writes answered so far have arrived. */
  barrier(): Promise<void>;
  /** Where `callAsync`s of blocking commands wait, each on a connection of its own. */
  blocking: BlockingCalls;
}

/** The TFCALLs waiting for a library while a batch of its runs, which may join that batch (call-batcher.ts). */
export interface BatchJoiners {
  /** Takes those that may join now, in order ([] when none): [name, args, slots of its keys] each. */
  take(): [string, Tagged[], number[]][];
  /** Settles when a TFCALL arrives for the library. */
  arrival(): Promise<void>;
}

/** A batch of TFCALLASYNCs under way, running concurrently (call-batcher.ts, guest/tf/async-batch.ts). */
export interface AsyncBatch {
  /** Call `index` of the batch settled (its note arrived). */
  settled(index: number, outcome: TfOutcome): void;
  /**
   * The TFCALLASYNCs that may join now, in order ([name, args, slots] each): [] when none
   * did, null when the batch takes no more (or none came and `lone`: nothing else is under way).
   */
  take(lone: boolean): [string, Tagged[], number[]][] | null;
  /**
   * A coroutine of the batch waits for a blocking command (perhaps for ever, and nothing may ask
   * for joiners meanwhile): the batch takes no more TFCALLASYNCs, and the library's line goes
   * on without it.
   */
  stopTaking(): void;
}

/**
 * The proxy's side of a T&F library's host calls: `client.call(...)` goes through the
 * router like a client's command, in the database of the TFCALL that runs.
 */
export class TfBridge implements HostBridge {
  /** The database of the call being served. */
  db = 0;
  /** A cluster function's master: its keyless commands go there. */
  target: { partitions: Partitions; index: number } | null = null;
  /** The rights of the user who loaded the library; null when there are no ACLs. */
  guard: CommandGuard | null = null;

  constructor(
    private readonly library: string,
    private readonly router: Router,
    private readonly log: Logger,
    private readonly hooks: TfHooks,
  ) {}

  async callSync(name: string, args: JsonValue[]): Promise<JsonValue | RawJson> {
    switch (name) {
      case "call":
        return (await this.call(args[0] === true, args[1] === true, args.slice(2), this.db)) as JsonValue;
      case CALL_IN:
        return (await this.call(
          args[1] === true,
          args[2] === true,
          args.slice(3),
          Number(args[0]),
        )) as JsonValue;
      case "calls":
        return this.calls(args[0], args[1] === true);
      case "runOnKey":
        return this.hooks.runOnKey(this.library, toBuffer(args[0]), String(args[1]), String(args[2]));
      case "runOnShards":
        return this.hooks.runOnShards(this.library, String(args[0]), String(args[1]));
      default:
        throw new Error(`unknown host call '${name}'`);
    }
  }

  /** Set while a batch of TFCALLs runs: the TFCALLs that may join it. */
  joiners: BatchJoiners | null = null;
  /** The replies of the running batch's calls sent without waiting (more TFCALLs came instead). */
  private inFlight = new ReplyGather();

  /** A batch ended: it no longer takes TFCALLs, and the replies it did not wait for are dropped. */
  endBatch(): void {
    this.joiners = null;
    this.inFlight = new ReplyGather();
  }

  /** The library's callAsync commands under way, as "cmd arg ..." (TFUNCTION LIST's pending_async_calls). */
  readonly pendingAsyncCalls = new Set<{ text: string }>();
  /** Work of the library under way in the background: TFCALLASYNCs and stream records (pending_jobs). */
  pendingJobs = 0;

  /** Told the outcomes so far of the keyspace trigger entry under way once its async callbacks await (TRIGGERS_STARTED). */
  triggersStarted: ((outcomes: TriggerOutcomes) => void) | null = null;

  /** The batches of TFCALLASYNCs under way, by id: where their outcomes go, and those that may join. */
  readonly asyncBatches = new Map<number, AsyncBatch>();
  private lastAsyncBatch = 0;

  /** Puts a batch of TFCALLASYNCs under way: its id (until endAsync). */
  startAsync(batch: AsyncBatch): number {
    const id = ++this.lastAsyncBatch;
    this.asyncBatches.set(id, batch);
    return id;
  }

  endAsync(id: number): void {
    this.asyncBatches.delete(id);
  }

  callAsync(calls: { name: string; args: JsonValue[] }[]): Promise<AsyncResult[]> {
    return allAnswered(this.callAsyncParts(calls, true));
  }

  /**
   * A round of host calls: a `callAsync` of a blocking command (BLPOP, XREAD BLOCK...) is
   * answered later, on its own (`later`), so that the round's other calls (sent in the same
   * pass, by this coroutine or others) reach the guest as soon as their replies are in. When
   * it is the round's only call (a coroutine that pops one job after another) and the guest
   * `mayWait`, it is answered with the round, in one hop, as any other call.
   */
  callAsyncParts(calls: { name: string; args: JsonValue[] }[], mayWait: boolean): Promise<AsyncPart[]> {
    // A batch of TFCALLASYNCs asks (once, anywhere in it) for those that arrived meanwhile
    // (guest/tf/async-batch.ts).
    let join = calls.length - 1;
    while (join >= 0 && calls[join].name !== ASYNC_JOIN) join--;
    if (join >= 0) {
      const batch = Number(calls[join].args[0]);
      // The coroutines that wait for a blocking command may wait for ever, and nothing would
      // ask for joiners meanwhile: TFCALLASYNCs that arrive now go in a batch of their own.
      if (calls.some((c) => this.isBlockingCall(c.name, c.args))) this.asyncBatches.get(batch)?.stopTaking();
      if (calls.length === 1) return Promise.resolve([this.joining(batch, true)]);
      const others = calls.slice(0, join).concat(calls.slice(join + 1));
      // Once the round's own calls are answered: those that arrived while they were in Redis join.
      return this.callEachTracked(others, mayWait).then((results) => {
        results.splice(join, 0, this.joining(batch, false));
        return results;
      });
    }
    return this.callEachTracked(calls, mayWait);
  }

  /** The answer to batch `batch`'s ASYNC_JOIN: the TFCALLASYNCs that join it, as BatchCalls, or null. */
  private joining(batch: number, lone: boolean): { ok: JsonValue } {
    const joining = this.asyncBatches.get(batch)?.take(lone) ?? null;
    return { ok: joining === null ? null : pushBatchCalls([], joining) };
  }

  /**
   * The calls' results once those of the calls that do not block are in; the blocking ones'
   * `later` (but for a lone one the guest may wait for: callAsyncParts).
   */
  private callEachTracked(
    calls: { name: string; args: JsonValue[] }[],
    mayWait: boolean,
  ): Promise<AsyncPart[]> {
    const results: AsyncPart[] = [];
    const now: Promise<void>[] = [];
    for (let i = 0; i < calls.length; i++) {
      const { name, args } = calls[i];
      const blocking = this.isBlockingCall(name, args);
      const call = this.tracked(name, args, blocking);
      if (blocking && !(mayWait && calls.length === 1)) {
        results[i] = {
          later: call.then(
            (ok): AsyncResult => ({ ok }),
            (err: Error): AsyncResult => ({ error: err.message }),
          ),
        };
      } else {
        now.push(
          call.then(
            (ok) => void (results[i] = { ok }),
            (err: Error) => void (results[i] = { error: err.message }),
          ),
        );
      }
    }
    return Promise.all(now).then(() => results);
  }

  /** A host call of the round; a `callAsync` shows in pending_async_calls until it is answered. */
  private tracked(name: string, args: JsonValue[], blocking: boolean): Promise<JsonValue | RawJson> {
    if (name !== "call" && name !== CALL_IN) return this.callSync(name, args);
    const at = name === CALL_IN ? 3 : 2;
    const entry = {
      text: args
        .slice(at)
        .map((a) => commandText(a))
        .join(" "),
    };
    this.pendingAsyncCalls.add(entry);
    const call = blocking
      ? this.callBlocking(
          args[at - 2] === true,
          args[at - 1] === true,
          args.slice(at),
          at === 3 ? Number(args[0]) : this.db,
        )
      : this.callSync(name, args);
    return call.finally(() => this.pendingAsyncCalls.delete(entry));
  }

  /** Whether a host call is a `callAsync` of a blocking command (BLPOP, XREAD BLOCK, WAIT...). */
  private isBlockingCall(name: string, args: JsonValue[]): boolean {
    if (name !== "call" && name !== CALL_IN) return false;
    const at = name === CALL_IN ? 3 : 2;
    const cmd = args[at];
    if (typeof cmd !== "string") return false;
    const lower = cmd.toLowerCase();
    // Only XREAD and XREADGROUP need their arguments looked at (a BLOCK option).
    if (lower !== "xread" && lower !== "xreadgroup") return isBlocking(lower, NO_ARGS);
    try {
      return isBlocking(lower, args.slice(at).map(toBuffer));
    } catch {
      return false;
    }
  }

  /**
   * A `callAsync` of a blocking command: it waits on a connection of its own (BlockingCalls),
   * for as long as the command blocks, while everything else goes on.
   */
  private async callBlocking(
    noWrites: boolean,
    raw: boolean,
    args: JsonValue[],
    db: number,
  ): Promise<Tagged> {
    const argv = args.map(toBuffer);
    const name = argv[0].toString().toLowerCase();
    // A round that reached the host after the library left must not leave a command waiting.
    if (this.ended !== null) throw new Error(this.ended);
    const writes = this.admit(noWrites, name, argv);
    const promised = new PromiseSink();
    const sink = writes && this.hooks.muting() ? this.muting(argv, promised) : promised;
    this.hooks.blocking.run(this, name, argv, db, sink);
    const reply = await promised.promise;
    if (reply instanceof RespError) throw new Error(reply.message);
    return this.tagged(reply, name, argv, raw);
  }

  /** Why the library's blocking `callAsync`s end now (it was deleted or replaced); null while it serves. */
  private ended: string | null = null;

  /** Ends the library's blocking `callAsync`s that still wait, and refuses those still to come. */
  endBlocking(message: string): void {
    this.ended = message;
    this.hooks.blocking.end(this, message);
  }

  notify(name: string, args: JsonValue[]): void {
    if (name === ASYNC_SETTLED) {
      this.asyncBatches.get(Number(args[0]))?.settled(Number(args[1]), outcomeOfPair(args[2], args[3]));
      return;
    }
    if (name === TRIGGERS_STARTED) {
      this.triggersStarted?.(args as TriggerOutcomes);
      return;
    }
    if (name === "log") this.log.info({ library: this.library }, `<redisgears_2> ${String(args[0])}`);
  }

  /**
   * The waiting calls of a batch of TFCALLs (guest/tf/batch.ts), sent at once: the router
   * writes each as it comes, so they leave as one pipeline per shard, in order. Both ways
   * the calls travel as one flat list (guest/tf/batch.ts; the replies as FlatPairs). With
   * `more`, TFCALLs that arrived for the library (before the replies did) are the answer
   * instead, so the isolate starts them while the calls are in Redis; the replies of every
   * call sent so far come with the answer to a later request.
   */
  private async calls(flat: JsonValue, more: boolean): Promise<JsonValue> {
    if (!Array.isArray(flat)) throw new Error("calls: a list of calls was expected");
    const replies = this.inFlight;
    for (let i = 0; i < flat.length;) {
      const n = Number(flat[i]);
      if (!(n >= 0)) throw new Error("calls: an argument count was expected");
      this.sendInto(replies, flat[i + 1] === true, flat[i + 2] === true, flat, i + 3, n);
      i += 3 + n;
    }
    const joiners = more ? this.joiners : null;
    if (joiners !== null) {
      let joining = joiners.take();
      if (joining.length === 0) {
        const all = replies.whole();
        if (await Promise.race([all.then(() => false), joiners.arrival().then(() => true)])) {
          joining = joiners.take();
        }
      }
      if (joining.length > 0) return pushBatchCalls([CALLS_MORE], joining);
    }
    this.inFlight = new ReplyGather();
    await replies.whole();
    return replies.flat;
  }

  /** Sends the call in `list` (n arguments from `at`); its reply lands in `replies` as a FlatPairs pair. */
  private sendInto(
    replies: ReplyGather,
    noWrites: boolean,
    raw: boolean,
    list: JsonValue[],
    at: number,
    n: number,
  ): void {
    const index = replies.expect();
    let name = "";
    let argv: Buffer[];
    const sink: ReplySink = {
      reply: (data) => {
        const reply = decodeReply(data);
        // INCR and its kind: the integer's digits without the {i} object.
        if (typeof reply === "number") replies.set(index, FLAT_INTEGER, String(reply));
        else if (reply instanceof RespError) replies.set(index, FLAT_ERROR, reply.message);
        else replies.set(index, FLAT_OK, this.tagged(reply, name, argv, raw) as JsonValue);
      },
      fail: (message) => replies.set(index, FLAT_ERROR, message),
    };
    try {
      argv = [];
      for (let k = 0; k < n; k++) argv.push(toBuffer(list[at + k]));
      name = this.send(noWrites, argv, sink, this.db);
    } catch (err) {
      replies.set(index, FLAT_ERROR, err instanceof Error ? err.message : String(err));
    }
  }

  private async call(noWrites: boolean, raw: boolean, args: JsonValue[], db: number): Promise<Tagged> {
    const argv = args.map(toBuffer);
    const sink = new PromiseSink();
    const name = this.send(noWrites, argv, sink, db);
    const reply = await sink.promise;
    if (reply instanceof RespError) throw new Error(reply.message);
    return this.tagged(reply, name, argv, raw);
  }

  /** A `client.call`'s command (in database `db`), checked as T&F checks it, on its way to Redis; its name (lower case). */
  private send(noWrites: boolean, argv: Buffer[], sink: ReplySink, db: number): string {
    if (argv.length === 0) throw new Error("ERR wrong number of arguments for 'call'");
    const name = argv[0].toString().toLowerCase();
    let blocking = isBlocking(name, argv);
    if (blocking && (name === "xread" || name === "xreadgroup")) {
      // Redis runs these without blocking for T&F's calls, but refuses BLOCK in a Lua script:
      // the call goes without its BLOCK option (the same reply: what is there, or nil).
      argv = withoutBlockOption(argv);
      blocking = false;
    }
    // T&F ran calls in script mode, where Redis refuses these with this text: the commands
    // flagged "noscript" (WAIT, and BLPOP and its kind up to Redis 7.0), and those that would
    // tie up a shared connection here. Its other blocking commands run without blocking there.
    if (blocking ? name === "wait" || name === "waitaof" : scriptCommandRefusal(name, argv) !== null)
      throw new Error(scriptModeRefusal(name));
    const writes = this.admit(noWrites, name, argv);
    // Only keyspace triggers look at the muted keys: without any, there is nothing to mute.
    const muting = writes && this.hooks.muting();
    if (muting) sink = this.muting(argv, sink);
    if (blocking) {
      // Inside a script, Redis runs a blocking command as it would its non-blocking form (an
      // empty list: nil at once), as it did T&F's script-mode calls, or refuses it ("noscript",
      // which this server's own flags decide); its keys route the script.
      const keys = this.router.keysOf(name, argv);
      const script = [EVAL, NON_BLOCKING, Buffer.from(String(keys.length)), ...keys, ...argv];
      this.router.forward("eval", script, null, scriptModeErrors(name, sink), { db, affinity: 0 });
      return name;
    }
    const target = this.target;
    if (target !== null && this.router.slotOf(name, argv) === NO_KEYS) {
      // A cluster function's keyless command runs on its master.
      target.partitions
        .shard(target.index)
        .callRaw(encodeCommand(argv))
        .then(
          (reply) => sink.reply(reply),
          (err: unknown) => sink.fail(err instanceof Error ? err.message : String(err)),
        );
    } else {
      this.router.forward(name, argv, null, sink, { db, affinity: 0, byFunction: muting });
    }
    return name;
  }

  /**
   * Whether the library's loader may run the command (ACL: its functions run as that user),
   * and a write where writes are allowed; throws T&F's error if not. Whether it writes.
   */
  private admit(noWrites: boolean, name: string, argv: Buffer[]): boolean {
    const refusal = this.guard?.(name, argv) ?? null;
    if (refusal !== null) throw new Error(refusal);
    const writes = this.router.isWrite(name, argv);
    if (noWrites && writes) {
      throw new Error(`ERR Write command '${name}' was called while write is not allowed`);
    }
    return writes;
  }

  /** `sink`, with the write's keys muted until the keyspace events of its reply have arrived. */
  private muting(argv: Buffer[], sink: ReplySink): ReplySink {
    // Any argument may be a key: muting a value too costs nothing but a lookup.
    const keys = argv.slice(1);
    const muted = this.hooks.muted;
    muted.add(keys);
    const release = (): void => void this.hooks.barrier().finally(() => muted.remove(keys));
    return {
      reply: (data) => {
        sink.reply(data);
        release();
      },
      fail: (message) => {
        sink.fail(message);
        release();
      },
    };
  }

  /** A reply (not an error) as the guest's `call` or `callRaw` sees it. */
  private tagged(reply: RespValue, name: string, argv: Buffer[], raw: boolean): Tagged {
    const mapReply =
      MAP_REPLIES.has(name) || (name === "config" && argv[1]?.toString().toLowerCase() === "get");
    return replyToTagged(reply, raw, mapReply);
  }
}

/** XREAD or XREADGROUP's arguments without the BLOCK option (which comes before STREAMS). */
function withoutBlockOption(argv: Buffer[]): Buffer[] {
  for (let i = 1; i + 1 < argv.length; i++) {
    const arg = argv[i].toString("latin1").toLowerCase();
    if (arg === "streams") break;
    if (arg === "block") return [...argv.slice(0, i), ...argv.slice(i + 2)];
  }
  return argv;
}

/** T&F's error for a command its script-mode calls may not run. */
function scriptModeRefusal(name: string): string {
  return `ERR command '${name}' is not allowed on script mode`;
}

/** Redis' refusal of a "noscript" command inside a script, as T&F's script mode words it. */
const NOT_FROM_SCRIPT = "not allowed from script";

/** `sink`, with Redis' refusal of command `name` inside a script given as T&F's. */
function scriptModeErrors(name: string, sink: ReplySink): ReplySink {
  return {
    reply: (data) => {
      if (data[0] === 0x2d && data.includes(NOT_FROM_SCRIPT)) {
        sink.reply(Buffer.from(`-${scriptModeRefusal(name)}\r\n`));
      } else sink.reply(data);
    },
    fail: (message) => sink.fail(message),
  };
}

/**
 * The replies of a batch's `client.call`s as FlatPairs, in the order the calls were sent,
 * filled as they come: one promise for the whole batch instead of one per call.
 */
class ReplyGather {
  readonly flat: JsonValue[] = [CALLS_REPLIES];
  private left = 0;
  private done: (() => void) | null = null;
  private settled: Promise<void> | null = null;

  /** A place for the next call's reply. */
  expect(): number {
    this.left++;
    this.flat.push(FLAT_ERROR, "no reply");
    return this.flat.length - 2;
  }

  set(index: number, tag: number, value: JsonValue): void {
    this.flat[index] = tag;
    this.flat[index + 1] = value;
    if (--this.left === 0 && this.done !== null) {
      // Calls sent later (joiners' requests) wait for a new promise.
      const done = this.done;
      this.done = null;
      this.settled = null;
      done();
    }
  }

  /** Settles once every expected reply is in. */
  whole(): Promise<void> {
    if (this.left === 0) return Promise.resolve();
    return (this.settled ??= new Promise((resolve) => (this.done = resolve)));
  }
}
