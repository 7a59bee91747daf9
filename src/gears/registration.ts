import type { JsonValue } from "../sandbox/types.js";
import { EventQueue } from "./events/event-queue.js";
import type { KeyEvent } from "./events/keyspace-source.js";
import type { StreamConsumer, StreamOptions } from "./events/stream-consumer.js";
import type { Execution } from "./execution.js";
import type { Action } from "./guest-isolate.js";
import { commandsRefusal, hookRefusal } from "./host-bridge.js";

/** A keyspace event of a registration's batch (waiting ones are stored compactly, in an EventQueue). */
export type QueuedKeyEvent = KeyEvent;

/** async_local: the events of one shard for one registration. */
export interface LocalQueue {
  queue: EventQueue;
  inFlight: QueuedKeyEvent[];
  running: boolean;
}

/** The counters RG.DUMPREGISTRATIONS shows for each registration. */
export class RegistrationStats {
  numTriggered = 0;
  numSuccess = 0;
  numFailures = 0;
  numAborted = 0;
  lastRunDurationMS = 0;
  totalRunDurationMS = 0;
  lastError: string | null = null;
  /** When the last run ended (Date.now()): several threads' counters give the newest run's figures. */
  lastRunAt = 0;
  /** Executions in a row that failed (not the events in them), for the "failing repeatedly" log line. */
  failureStreak = 0;
  /**
   * Events queued while the registration's queue held MaxQueuedEvents or more (writes straight
   * to the shards, which nothing can slow): none is dropped, but the operator should know.
   */
  numQueuedOverBound = 0;

  /**
   * One execution over `events` events (a batch): as in RedisGears, where each event ran on
   * its own, every event of the batch counts as triggered and shares the batch's outcome.
   */
  record(durationMs: number, errors: string[], aborted: boolean, events = 1): void {
    this.numTriggered += events;
    this.lastRunDurationMS = durationMs;
    this.lastRunAt = Date.now();
    this.totalRunDurationMS += durationMs;
    if (aborted) this.numAborted += events;
    else if (errors.length > 0) {
      this.numFailures += events;
      this.lastError = errors[0];
      this.failureStreak++;
    } else {
      this.numSuccess += events;
      this.lastError = null;
      this.failureStreak = 0;
    }
  }

  clear(): void {
    Object.assign(this, new RegistrationStats());
  }
}

function optionString(options: Record<string, JsonValue>, name: string): string | null {
  const v = options[name];
  return typeof v === "string" ? v : null;
}

function optionNumber(options: Record<string, JsonValue>, name: string, fallback: number): number {
  const v = options[name];
  return typeof v === "number" && Number.isFinite(v) ? v : fallback;
}

const MODES = new Set(["async", "async_local", "sync"]);
/** keyTypes a KeysReader registration may name: TYPE's names, and "empty" for a key that is gone. */
const KEY_TYPES = new Set(["string", "list", "hash", "set", "zset", "stream", "module", "empty"]);
const POLICIES = new Set(["continue", "abort", "retry"]);

function optionList(options: Record<string, JsonValue>, name: string): string[] | null {
  const v = options[name];
  if (!Array.isArray(v)) return null;
  return v.map((x) => String(x).toLowerCase());
}

/**
 * One register() of a script: what it listens to (reader, prefix, event and key types,
 * trigger name) and its counters. Its steps live in its session's isolate, as action
 * `actionIndex` of the guest library.
 */
export class Registration {
  stats = new RegistrationStats();
  readonly mode: string;
  readonly prefix: string;
  readonly eventTypes: string[] | null;
  readonly keyTypes: string[] | null;
  readonly trigger: string | null;
  /** A command hook: the command name (lower case) and the key prefix it is limited to. */
  readonly hook: string | null;
  readonly keyPrefix: string | null;
  /** Events wait here while an earlier batch of this registration runs (async: in order). */
  readonly queue = new EventQueue();
  /**
   * Events queued and events handled since the start: handled in the order they queued, so
   * "handled >= a count of queued" means all of those have run (Registry.syncIdle).
   */
  queuedCount = 0;
  handledCount = 0;
  running = false;
  /** The batch being handled now (its events count as not yet handled for the shard's lease). */
  inFlight: QueuedKeyEvent[] = [];
  /** async_local: a queue per shard, each run on its own. */
  readonly localQueues = new Map<string, LocalQueue>();
  /** KeysReader `commands`: only events caused by these commands (lower case) passing through the proxy. */
  readonly commands: string[] | null;
  /** StreamReader: what register() asked for, and the consumer reading for it once installed. */
  readonly stream: StreamOptions | null;
  consumer: StreamConsumer | null = null;
  /** Its latest executions (RG.DUMPEXECUTIONS shows them as registered), MaxExecutionsPerRegistration finished at most. */
  readonly executions: Execution[] = [];

  constructor(
    readonly id: string,
    readonly action: Action,
    readonly actionIndex: number,
    readonly sessionId: string,
  ) {
    const options = action.options;
    this.mode = optionString(options, "mode") ?? "async";
    this.prefix = typeof action.arg === "string" ? action.arg : "*";
    this.wildcard = this.prefix.endsWith("*");
    this.keyStart = this.wildcard ? this.prefix.slice(0, -1) : this.prefix;
    this.eventTypes = optionList(options, "eventTypes");
    this.keyTypes = optionList(options, "keyTypes");
    this.trigger = optionString(options, "trigger");
    this.hook = optionString(options, "hook")?.toLowerCase() ?? null;
    this.keyPrefix = optionString(options, "keyprefix");
    this.commands = optionList(options, "commands");
    this.stream =
      action.reader === "StreamReader"
        ? {
            prefix: this.prefix,
            batch: Math.max(1, Math.floor(optionNumber(options, "batch", 1))),
            durationMs: Math.max(0, optionNumber(options, "duration", 0)),
            onFailedPolicy: (optionString(options, "onFailedPolicy")?.toLowerCase() ??
              "continue") as StreamOptions["onFailedPolicy"],
            retryIntervalSec: Math.max(0.001, optionNumber(options, "onFailedRetryInterval", 1)),
            trimStream: options.trimStream !== false,
          }
        : null;
  }

  /** The same registration run again in a new isolate (revive): its counters and executions go on. */
  carryOver(before: Registration): void {
    this.stats = before.stats;
    this.executions.push(...before.executions);
  }

  /**
   * What makes register()'s options unusable, as the error RG.EXECUTE answers; null when fine.
   * A session brought back from the store (`restored`) meets only the checks that keep shared
   * connections safe: the others came after it was stored by an older build, which ran it.
   */
  invalid(restored = false): string | null {
    if (restored) return this.unsafe();
    if (!MODES.has(this.mode)) return `Unknown execution mode '${this.mode}' (async, async_local, sync)`;
    if (this.stream !== null) {
      const policy = this.stream.onFailedPolicy;
      if (!POLICIES.has(policy)) return `onFailedPolicy must be continue, abort or retry, not '${policy}'`;
      if (this.mode === "sync" && policy !== "continue") {
        return "ExecutionMode sync can only be combined with OnFailedPolicy Continue";
      }
    }
    if (this.commands !== null && this.reader !== "KeysReader")
      return "commands is only for KeysReader registrations";
    const options = this.action.options;
    // A string where a list is meant ({eventTypes: 'set'}) would otherwise mean "every event".
    for (const name of ["eventTypes", "keyTypes", "commands"]) {
      const v = options[name];
      if (v !== undefined && v !== null && !Array.isArray(v)) return `${name} argument must be a list`;
    }
    if (this.keyTypes !== null && this.keyTypes.some((t) => !KEY_TYPES.has(t))) return "unknown key type";
    const unsafe = this.unsafe();
    if (unsafe !== null) return unsafe;
    if (this.reader === "CommandReader") {
      // RedisGears' texts: a CommandReader registration is either a trigger or a hook.
      const hasTrigger = options.trigger !== undefined && options.trigger !== null;
      if (hasTrigger && this.trigger === null) return "trigger argument is not string";
      if (hasTrigger && (options.hook != null || options.keyprefix != null))
        return "trigger argument can not be given with keyprefix or hook";
      if (!hasTrigger && this.hook === null) return "no trigger or hook argument was given";
    }
    return null;
  }

  /** A hook or a KeysReader's `commands` that would run, in the proxy's path, a command that ties up a shared connection. */
  private unsafe(): string | null {
    // `commands` runs each command in the proxy's path, on a shared connection, as a hook does.
    for (const command of this.commands ?? []) {
      const refusal = commandsRefusal(command);
      if (refusal !== null) return refusal;
    }
    return this.reader === "CommandReader" && this.hook !== null ? hookRefusal(this.hook) : null;
  }

  get reader(): string {
    return this.action.reader;
  }

  get readValue(): boolean {
    return this.action.options.readValue !== false;
  }

  /**
   * Whether a keyspace event concerns this KeysReader registration (key types are checked
   * once read). Registrations with `commands` see only their commands' events, in the
   * command's own path.
   */
  matchesKeyEvent(key: string, event: string): boolean {
    if (this.reader !== "KeysReader" || this.commands !== null) return false;
    if (this.eventTypes !== null && !this.eventTypes.includes(event.toLowerCase())) return false;
    if (this.prefix.endsWith("*")) return key.startsWith(this.prefix.slice(0, -1));
    return key === this.prefix;
  }

  /** matchesKeyEvent() of a queued event, its key decoded only when the prefix needs it. */
  matchesEvent(e: KeyEvent): boolean {
    if (!this.keyEvents) return false;
    if (this.eventTypes !== null && !this.eventTypes.includes(e.event.toLowerCase())) return false;
    if (this.prefix === "*") return true;
    const key = e.text ?? e.key.toString();
    return this.wildcard ? key.startsWith(this.keyStart) : key === this.prefix;
  }

  /** A KeysReader without `commands`: it takes keyspace events (checked per event). */
  private get keyEvents(): boolean {
    return this.reader === "KeysReader" && this.commands === null;
  }

  /** Whether the prefix ends with "*", and what keys start with then. */
  private readonly wildcard: boolean;
  private readonly keyStart: string;

  /** Whether an event caused by `command` passing through the proxy is this registration's (`commands`). */
  matchesCommandEvent(command: string, key: string, event: string): boolean {
    if (this.commands === null || !this.commands.includes(command)) return false;
    if (this.eventTypes !== null && !this.eventTypes.includes(event.toLowerCase())) return false;
    if (this.prefix.endsWith("*")) return key.startsWith(this.prefix.slice(0, -1));
    return key === this.prefix;
  }

  matchesKeyType(type: string): boolean {
    return this.keyTypes === null || this.keyTypes.includes(type);
  }
}
