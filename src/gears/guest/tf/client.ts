/**
 * The clients a T&F function gets: the sync client (call, callRaw, callAsync, isBlockAllowed,
 * executeAsync) and the async client of coroutines (block, callAsync, runOnKey, runOnShards).
 * Every Redis call is a host call; the host routes it like a client's command.
 */
import { host } from "../core/host.js";
import { CALL_IN, type Tagged } from "../entry.js";
import { callGoesOut, tick } from "./async-batch.js";
import { aloneOnStack, running, syncCall, syncCallIn, type CallArgs } from "./batch.js";
import { fromReply, toArg } from "./convert.js";

/** What a client may do, fixed by what it was handed to. */
export interface ClientMode {
  noWrites: boolean;
  blockAllowed: boolean;
  /**
   * The database its calls run in (CALL_IN), for a TFCALLASYNC's client: its calls may go on
   * in later entries, while the host serves another database. Absent: the one served now.
   */
  db?: number;
}

/** Whether a `block` body runs now (blocks do not nest). */
let blocked = false;

function command(cmd: unknown, args: unknown[]): Tagged[] {
  if (typeof cmd !== "string" && !(cmd instanceof String)) throw new Error("Value is not string");
  return [String(cmd), ...args.map(toArg)];
}

/** A sync call's command name, checked. */
function commandName(cmd: unknown): string {
  if (typeof cmd === "string") return cmd;
  if (!(cmd instanceof String)) throw new Error("Value is not string");
  return String(cmd);
}

/**
 * A sync call's arguments as the host takes them: the call's own rest list, each argument
 * toArg'd in place (a string, the common case, as it is). No second list: QuickJS makes each
 * list about as slowly as a dozen plain operations.
 */
function syncArgs(args: unknown[]): CallArgs {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (typeof a !== "string") args[i] = toArg(a);
  }
  return args as CallArgs;
}

/** What both clients offer: calls that may block Redis-side, and whether blocking is allowed. */
class BaseClient {
  constructor(protected readonly mode: ClientMode) {}

  callAsync(cmd: unknown, ...args: unknown[]): Promise<unknown> {
    return callAsync(this.mode, false, cmd, args);
  }

  callAsyncRaw(cmd: unknown, ...args: unknown[]): Promise<unknown> {
    return callAsync(this.mode, true, cmd, args);
  }

  isBlockAllowed(): boolean {
    return this.mode.blockAllowed;
  }
}

/**
 * The client of a sync function: one is made per call, so it has no base class (QuickJS runs a
 * derived constructor's super() as one more call, about as costly as making the object).
 */
export class SyncClient {
  private readonly mode: ClientMode;
  /** False once the invocation left the locked section (main.ts sets it: a method call costs in QuickJS). */
  valid: boolean;

  constructor(mode: ClientMode) {
    // Set here rather than as field initializers: QuickJS runs those as one more function call.
    this.mode = mode;
    this.valid = true;
  }

  callAsync(cmd: unknown, ...args: unknown[]): Promise<unknown> {
    return callAsync(this.mode, false, cmd, args);
  }

  callAsyncRaw(cmd: unknown, ...args: unknown[]): Promise<unknown> {
    return callAsync(this.mode, true, cmd, args);
  }

  isBlockAllowed(): boolean {
    return this.mode.blockAllowed;
  }

  /** The invocation left the locked section: T&F's client is dead from then on. */
  invalidate(): void {
    this.valid = false;
  }

  private check(): void {
    if (!this.valid) throw new Error("Used on invalid client");
  }

  call(cmd: unknown, ...args: unknown[]): unknown {
    if (!this.valid) this.check();
    const mode = this.mode;
    // The common case inline (strings, a batch running): each call into a function costs in QuickJS.
    const name = typeof cmd === "string" ? cmd : commandName(cmd);
    for (let i = 0; i < args.length; i++) if (typeof args[i] !== "string") args[i] = toArg(args[i]);
    const db = mode.db;
    if (db !== undefined) return syncCallIn(db, mode.noWrites, false, name, args as CallArgs);
    const batch = running;
    return batch !== null
      ? batch(mode.noWrites, false, name, args as CallArgs)
      : syncCall(mode.noWrites, false, name, args as CallArgs);
  }

  callRaw(cmd: unknown, ...args: unknown[]): unknown {
    if (!this.valid) this.check();
    const mode = this.mode;
    const name = commandName(cmd);
    const callArgs = syncArgs(args);
    const db = mode.db;
    return db === undefined
      ? syncCall(mode.noWrites, true, name, callArgs)
      : syncCallIn(db, mode.noWrites, true, name, callArgs);
  }

  executeAsync(fn: unknown): Promise<unknown> {
    this.check();
    if (!isAsyncFunction(fn)) throw new Error("Argument to 'executeAsync' must be an async function");
    const client = new AsyncClient(this.mode);
    return Promise.resolve().then(() => (fn as (c: AsyncClient) => unknown)(client));
  }
}

function callAsync(mode: ClientMode, raw: boolean, cmd: unknown, args: unknown[]): Promise<unknown> {
  let argv: Tagged[];
  try {
    argv = command(cmd, args);
  } catch (e) {
    return Promise.reject(e);
  }
  callGoesOut();
  const out =
    mode.db === undefined
      ? host.callAsync("call", mode.noWrites, raw, ...argv)
      : host.callAsync(CALL_IN, mode.db, mode.noWrites, raw, ...argv);
  return Promise.resolve(out).then((v) => {
    // The coroutine goes on after its await: a call into user code of its own (async-batch.ts).
    tick();
    return fromReply(v as Tagged, raw);
  });
}

export function isAsyncFunction(fn: unknown): boolean {
  return (
    typeof fn === "function" &&
    (fn as { constructor?: { name?: unknown } }).constructor?.name === "AsyncFunction"
  );
}

export class AsyncClient extends BaseClient {
  /** Runs fn(client) at once with a sync client (the proxy has no Redis lock to take). */
  block(fn: unknown): unknown {
    if (typeof fn !== "function") throw new Error("Argument to 'block' must be a function");
    if (blocked) throw new Error("Main thread is already blocked");
    const client = new SyncClient({ noWrites: this.mode.noWrites, blockAllowed: true, db: this.mode.db });
    blocked = true;
    try {
      return aloneOnStack(() => (fn as (c: SyncClient) => unknown)(client));
    } finally {
      blocked = false;
      client.invalidate();
    }
  }

  runOnKey(key: unknown, name: unknown, ...args: unknown[]): Promise<unknown> {
    return remote("runOnKey", [toArg(key), String(name)], args).then((out) => out);
  }

  runOnShards(name: unknown, ...args: unknown[]): Promise<unknown> {
    return remote("runOnShards", [String(name)], args);
  }
}

/** A cluster function call: arguments travel as JSON (ArrayBuffers raw), results come back parsed. */
function remote(op: string, head: Tagged[], args: unknown[]): Promise<unknown> {
  let json: string;
  try {
    json = JSON.stringify(args);
  } catch {
    return Promise.reject(new Error("Failed serializing arguments"));
  }
  callGoesOut();
  return Promise.resolve(host.callAsync(op, ...head, json)).then((out) => {
    if (op === "runOnKey") return JSON.parse(out as string) as unknown;
    const [results, errors] = out as [string[], string[]];
    return [results.map((r) => JSON.parse(r) as unknown), errors];
  });
}
