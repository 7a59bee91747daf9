/**
 * The `redis` object of a T&F library (reference section 2.2): registrations during the
 * load, then the functions the host calls by name.
 */
import { g, host } from "../core/host.js";
import { safeString } from "../core/errors.js";
import type { Tagged, TfRegistrations } from "../entry.js";
import { isAsyncFunction } from "./client.js";
import { bufferToBytes } from "./convert.js";
import { nameError } from "./names.js";

export type Fn = (...args: unknown[]) => unknown;

export interface FunctionDef {
  fn: Fn;
  flags: string[];
  isAsync: boolean;
  description: string | null;
  /** Fixed at registration, so that a call reads them instead of working them out. */
  coroutine: boolean;
  mode: { noWrites: boolean; blockAllowed: boolean };
  modeBlocking: { noWrites: boolean; blockAllowed: boolean };
  raw: boolean;
}

export interface KeyspaceTriggerDef {
  fn: Fn;
  prefix: Tagged;
  onTriggerFired: Fn | null;
  description: string | null;
}

export interface StreamTriggerDef {
  fn: Fn;
  prefix: Tagged;
  window: number;
  trim: boolean;
  description: string | null;
}

export const functions = new Map<string, FunctionDef>();
export const clusterFunctions = new Map<string, Fn>();
export const keyspaceTriggers = new Map<string, KeyspaceTriggerDef>();
export const streamTriggers = new Map<string, StreamTriggerDef>();

const FLAGS = { NO_WRITES: "no-writes", ALLOW_OOM: "allow-oom", RAW_ARGUMENTS: "raw-arguments" };
const KNOWN_FLAGS = [FLAGS.NO_WRITES, FLAGS.ALLOW_OOM, FLAGS.RAW_ARGUMENTS];

let loading = true;

function outOfContext(what: string): void {
  if (!loading) throw new Error(`Called '${what}' out of context`);
}

function checkName(kind: string, name: unknown): string {
  if (typeof name !== "string" && !(name instanceof String)) throw new Error("Value is not string");
  const n = String(name);
  const error = nameError(kind, n);
  if (error !== null) throw new Error(error);
  return n;
}

/** opts: an object with only the given keys. */
function options(opts: unknown, known: string[]): Record<string, unknown> {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== "object") throw new Error("Unknown properties given: " + safeString(opts));
  const o = opts as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !known.includes(k));
  if (unknown.length > 0 || Array.isArray(o))
    throw new Error(`Unknown properties given: ${unknown.join(", ")}`);
  return o;
}

function description(o: Record<string, unknown>): string | null {
  if (o.description === undefined || o.description === null) return null;
  if (typeof o.description !== "string") throw new Error("Value is not string");
  return o.description;
}

function flags(o: Record<string, unknown>): string[] {
  if (o.flags === undefined) return [];
  if (!Array.isArray(o.flags)) throw new Error("Failed parsing function flags, wrong type of string value");
  return o.flags.map((f) => {
    if (typeof f !== "string") throw new Error("Failed parsing function flags, wrong type of string value");
    if (!KNOWN_FLAGS.includes(f))
      throw new Error(`Failed parsing function flags, Unknow flag '${f}' was given`);
    return f;
  });
}

function prefixOf(p: unknown, message: string): Tagged {
  if (typeof p === "string") return p;
  if (p instanceof ArrayBuffer) return { b: bufferToBytes(p) };
  throw new Error(message);
}

function registerFunction(isAsync: boolean, args: unknown[]): void {
  const what = isAsync ? "registerAsyncFunction" : "registerFunction";
  outOfContext(what);
  if (args.length < 2 || args.length > 3) throw new Error("Wrong number of arguments given");
  const name = checkName("function", args[0]);
  const fn = args[1];
  if (typeof fn !== "function") throw new Error(`Second argument to '${what}' must be a function`);
  if (!isAsync && isAsyncFunction(fn)) {
    throw new Error(
      "'registerFunction' can not be used with async function, use 'registerAsyncFunction' instead.",
    );
  }
  const o = options(args[2], ["description", "flags"]);
  const fl = flags(o);
  const noWrites = fl.includes(FLAGS.NO_WRITES);
  const def: FunctionDef = {
    fn: fn as Fn,
    flags: fl,
    isAsync,
    description: description(o),
    coroutine: isAsyncFunction(fn),
    mode: Object.freeze({ noWrites, blockAllowed: false }),
    modeBlocking: Object.freeze({ noWrites, blockAllowed: true }),
    raw: fl.includes(FLAGS.RAW_ARGUMENTS),
  };
  if (functions.has(name)) throw new Error(`Function ${name} already exists`);
  functions.set(name, def);
}

export function installRedis(configJson: string | null, apiVersion: string): void {
  const redis: Record<string, unknown> = {
    functionFlags: Object.freeze({ ...FLAGS }),
    config: configJson === null ? {} : (JSON.parse(configJson) as unknown),
    registerFunction(...args: unknown[]): void {
      registerFunction(false, args);
    },
    registerAsyncFunction(...args: unknown[]): void {
      registerFunction(true, args);
    },
    registerClusterFunction(...args: unknown[]): void {
      outOfContext("registerClusterFunction");
      if (args.length !== 2) throw new Error("Wrong number of arguments given");
      const name = checkName("cluster function", args[0]);
      if (typeof args[1] !== "function") {
        throw new Error("Second argument to 'registerClusterFunction' must be a function");
      }
      if (!isAsyncFunction(args[1])) throw new Error("Remote function must be async");
      if (clusterFunctions.has(name)) throw new Error(`Remote function ${name} already exists`);
      clusterFunctions.set(name, args[1] as Fn);
    },
    registerKeySpaceTrigger(...args: unknown[]): void {
      outOfContext("registerKeySpaceTrigger");
      if (args.length < 3 || args.length > 4) throw new Error("Wrong number of arguments given");
      const name = checkName("key space trigger", args[0]);
      const prefix = prefixOf(args[1], "Value is not string");
      if (typeof args[2] !== "function")
        throw new Error("Third argument to 'registerKeySpaceTrigger' must be a function");
      const o = options(args[3], ["description", "onTriggerFired"]);
      if (
        o.onTriggerFired !== undefined &&
        (typeof o.onTriggerFired !== "function" || isAsyncFunction(o.onTriggerFired))
      ) {
        throw new Error("'onTriggerFired' argument to 'registerKeySpaceTrigger' must be a function");
      }
      if (keyspaceTriggers.has(name)) throw new Error("Notification consumer already exists");
      keyspaceTriggers.set(name, {
        fn: args[2] as Fn,
        prefix,
        onTriggerFired: (o.onTriggerFired as Fn | undefined) ?? null,
        description: description(o),
      });
    },
    registerStreamTrigger(...args: unknown[]): void {
      outOfContext("registerStreamTrigger");
      if (args.length < 3 || args.length > 4) throw new Error("Wrong number of arguments given");
      const name = checkName("stream trigger", args[0]);
      const prefix = prefixOf(
        args[1],
        "Second argument to 'registerStreamTrigger' must be a String or ArrayBuffer representing the prefix",
      );
      if (typeof args[2] !== "function")
        throw new Error("The fifth argument to 'registerStreamTrigger' must be a function");
      const o = options(args[3], ["description", "window", "isStreamTrimmed"]);
      const window = o.window === undefined ? 1 : o.window;
      if (typeof window !== "number" || !Number.isInteger(window) || window < 1) {
        throw new Error("window argument must be a positive number");
      }
      if (streamTriggers.has(name)) throw new Error("Stream registration already exists");
      streamTriggers.set(name, {
        fn: args[2] as Fn,
        prefix,
        window,
        trim: o.isStreamTrimmed === true,
        description: description(o),
      });
    },
    log(message: unknown): void {
      host.notify("log", safeString(message));
    },
    v8Version(): string {
      return "quickjs";
    },
  };
  if (apiVersion === "1.1") redis.apiVersion = (): string => "1.1";
  Object.defineProperty(g, "redis", { value: Object.freeze(redis), writable: false, configurable: false });
}

/** The load ended: registering is over; what the library registered. */
export function endLoad(): TfRegistrations {
  loading = false;
  return {
    functions: [...functions].map(([name, d]) => ({
      name,
      flags: d.flags,
      isAsync: d.isAsync,
      description: d.description,
    })),
    clusterFunctions: [...clusterFunctions.keys()],
    keyspaceTriggers: [...keyspaceTriggers].map(([name, d]) => ({
      name,
      prefix: d.prefix,
      description: d.description,
    })),
    streamTriggers: [...streamTriggers].map(([name, d]) => ({
      name,
      prefix: d.prefix,
      window: d.window,
      trim: d.trim,
      description: d.description,
    })),
  };
}
