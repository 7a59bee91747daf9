import type { Logger } from "../../observability/log.js";
import { NO_KEYS, type Router } from "../../routing/router.js";
import type { Partitions } from "../partitions.js";
import { RespError, type RespValue } from "../../resp/values.js";
import type { HostBridge, JsonValue, RawJson } from "../../sandbox/types.js";
import { CALLS_MORE, CALLS_REPLIES, FLAT_ERROR, FLAT_INTEGER, FLAT_OK, type Tagged } from "../guest/entry.js";
import { callEach, scriptCommandRefusal, type CommandGuard } from "../host-bridge.js";
import type { MutedKeys } from "./muted-keys.js";
import { pushBatchCalls } from "./tf-guest.js";
import { replyToTagged } from "./values.js";

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
}

/** The TFCALLs waiting for a library while a batch of its runs, which may join that batch (call-batcher.ts). */
export interface BatchJoiners {
  /** Takes those that may join now, in order ([] when none): [name, args, slots of its keys] each. */
  take(): [string, Tagged[], number[]][];
  /** Settles when a TFCALL arrives for the library. */
  arrival(): Promise<void>;
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
        return (await this.call(args[0] === true, args[1] === true, args.slice(2))) as JsonValue;
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
  private inFlight: Promise<[number, JsonValue]>[] = [];

  /** A batch ended: it no longer takes TFCALLs, and the replies it did not wait for are dropped. */
  endBatch(): void {
    this.joiners = null;
    this.inFlight = [];
  }

  /** The library's callAsync commands under way, as "cmd arg ..." (TFUNCTION LIST's pending_async_calls). */
  readonly pendingAsyncCalls = new Set<{ text: string }>();
  /** Work of the library under way in the background: TFCALLASYNCs and stream records (pending_jobs). */
  pendingJobs = 0;

  callAsync(
    calls: { name: string; args: JsonValue[] }[],
  ): Promise<({ ok: JsonValue | RawJson } | { error: string })[]> {
    const tracked = (name: string, args: JsonValue[]): Promise<JsonValue | RawJson> => {
      if (name !== "call") return this.callSync(name, args);
      const entry = {
        text: args
          .slice(2)
          .map((a) => commandText(a))
          .join(" "),
      };
      this.pendingAsyncCalls.add(entry);
      return this.callSync(name, args).finally(() => this.pendingAsyncCalls.delete(entry));
    };
    return callEach({ callSync: tracked }, calls);
  }

  notify(name: string, args: JsonValue[]): void {
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
      replies.push(this.pairOf(flat[i + 1] === true, flat[i + 2] === true, flat, i + 3, n));
      i += 3 + n;
    }
    const joiners = more ? this.joiners : null;
    if (joiners !== null) {
      let joining = joiners.take();
      if (joining.length === 0) {
        const all = Promise.all(replies);
        if (await Promise.race([all.then(() => false), joiners.arrival().then(() => true)])) {
          joining = joiners.take();
        }
      }
      if (joining.length > 0) return pushBatchCalls([CALLS_MORE], joining);
    }
    this.inFlight = [];
    const pairs = await Promise.all(replies);
    const answer: JsonValue[] = [CALLS_REPLIES];
    for (let i = 0; i < pairs.length; i++) answer.push(pairs[i][0], pairs[i][1]);
    return answer;
  }

  /** The reply of the call in `list` (n arguments from `at`) as its pair of FlatPairs. */
  private pairOf(
    noWrites: boolean,
    raw: boolean,
    list: JsonValue[],
    at: number,
    n: number,
  ): Promise<[number, JsonValue]> {
    const failed = (err: unknown): [number, JsonValue] => [
      FLAT_ERROR,
      err instanceof Error ? err.message : String(err),
    ];
    let sent: Sent;
    try {
      const argv: Buffer[] = [];
      for (let k = 0; k < n; k++) argv.push(toBuffer(list[at + k]));
      sent = this.send(noWrites, argv);
    } catch (err) {
      return Promise.resolve(failed(err));
    }
    return sent.reply.then((reply): [number, JsonValue] => {
      // INCR and its kind: the integer's digits without the {i} object.
      if (typeof reply === "number") return [FLAT_INTEGER, String(reply)];
      if (reply instanceof RespError) return failed(new Error(reply.message));
      return [FLAT_OK, this.tagged(reply, sent, raw) as JsonValue];
    }, failed);
  }

  private async call(noWrites: boolean, raw: boolean, args: JsonValue[]): Promise<Tagged> {
    const sent = this.send(noWrites, args.map(toBuffer));
    const reply = await sent.reply;
    if (reply instanceof RespError) throw new Error(reply.message);
    return this.tagged(reply, sent, raw);
  }

  /** A `client.call`'s command, checked as T&F checks it, on its way to Redis. */
  private send(noWrites: boolean, argv: Buffer[]): Sent {
    if (argv.length === 0) throw new Error("ERR wrong number of arguments for 'call'");
    const name = argv[0].toString().toLowerCase();
    // T&F ran calls in script mode, where Redis refuses these (blocking ones included, which the
    // shared connections could not wait for anyway), with this text.
    if (scriptCommandRefusal(name, argv) !== null)
      throw new Error(`ERR command '${name}' is not allowed on script mode`);
    // The library's loader's rights (ACL): its functions run as that user.
    const refusal = this.guard?.(name, argv) ?? null;
    if (refusal !== null) throw new Error(refusal);
    const writes = this.router.isWrite(name, argv);
    if (noWrites && writes) {
      throw new Error(`ERR Write command '${name}' was called while write is not allowed`);
    }
    const target = this.target;
    const reply =
      target !== null && this.router.slotOf(name, argv) === NO_KEYS
        ? target.partitions.shard(target.index).call(argv)
        : this.router.call(argv, this.db);
    // Only keyspace triggers look at the muted keys: without any, there is nothing to mute.
    if (writes && this.hooks.muting()) {
      // Any argument may be a key: muting a value too costs nothing but a lookup.
      const keys = argv.slice(1);
      const muted = this.hooks.muted;
      muted.add(keys);
      const release = (): void => void this.hooks.barrier().finally(() => muted.remove(keys));
      reply.then(release, release);
    }
    return { name, argv, reply };
  }

  /** A reply (not an error) as the guest's `call` or `callRaw` sees it. */
  private tagged(reply: RespValue, sent: Sent, raw: boolean): Tagged {
    const name = sent.name;
    const mapReply =
      MAP_REPLIES.has(name) || (name === "config" && sent.argv[1]?.toString().toLowerCase() === "get");
    return replyToTagged(reply, raw, mapReply);
  }
}

/** A `client.call` sent: its command's name (lower case), its arguments, Redis's reply to come. */
interface Sent {
  name: string;
  argv: Buffer[];
  reply: Promise<RespValue>;
}
