import type { Logger } from "../../observability/log.js";
import type { Router } from "../../routing/router.js";
import type { Shards } from "../../routing/shards.js";
import { RespError, type RespValue } from "../../resp/values.js";
import type { Tagged, TfOutcome } from "../guest/entry.js";
import { CallBatcher, type SettleTfCall } from "./call-batcher.js";
import type { IsolateFactory } from "../guest-isolate.js";
import type { TfConfig } from "./config.js";
import { sandboxText, TfLibraries } from "./libraries.js";
import { KeyspaceTriggers } from "./keyspace-triggers.js";
import { MutedKeys } from "./muted-keys.js";
import { StreamTriggers } from "./stream-triggers.js";
import { Partitions } from "../partitions.js";
import { keySlot } from "../../routing/key-slot.js";
import type { KeyEvent } from "../events/keyspace-source.js";
import { argToTagged, taggedToResp } from "./values.js";
import { Leases } from "../../routing/lease.js";
import { BlockingCalls } from "./blocking-calls.js";
import { NO_OTHER_THREADS, type ListStatsElsewhere } from "./list-stats.js";

/** The most arguments (after numkeys) a TFCALL may pass to its function (see start()). */
const MAX_FUNCTION_ARGS = 65_533;

const ASYNC_REFUSED =
  "The function is declared as async and was called while blocking was not allowed; note that you cannot invoke async functions from within Lua or MULTI, and you must use TFCALLASYNC instead.";

/** What T&F uses of the gears room's keyspace event machinery. */
export interface TfEvents {
  /** Resolves once the keyspace events of writes answered so far have arrived. */
  barrier(): Promise<void>;
  /**
   * barrier(), once every write of `ids` (keyId) sent so far is answered: another thread of a
   * --threads proxy asks it before deciding who wrote a notification (events/peer-writes.ts).
   */
  settled(ids: readonly string[]): Promise<void>;
  /** Keyspace notifications are needed (a library has keyspace triggers); resolves once they flow. */
  start(): Promise<void>;
  /** Whether this proxy handles that shard's events now (several proxies share them). */
  ownsShard(shard: string): boolean;
  /** This proxy's name as a consumer of stream triggers' groups. */
  consumerName: string;
  /** Entries a dead consumer left pending this long are claimed (StreamClaimIdleMS). */
  claimIdleMs(): number;
  /** How long a stream's lease lasts unless renewed (EventLeaseMS). */
  streamLeaseMs(): number;
  /** MaxQueuedEvents: a library's keyspace trigger queue at it is logged and counted. */
  maxQueuedEvents?(): number;
}

/** Triggers and Functions: the libraries, the calls into them and their triggers. */
export class TfEngine {
  readonly libraries: TfLibraries;
  readonly keyspaceTriggers: KeyspaceTriggers;
  readonly streamTriggers: StreamTriggers;
  /** The `callAsync`s of blocking commands waiting, on connections of their own. */
  readonly blocking: BlockingCalls;
  /** TFUNCTION LIST's figures on a --threads proxy's other threads (threads/peers.ts sets it). */
  listStatsElsewhere: ListStatsElsewhere = NO_OTHER_THREADS;

  constructor(
    router: Router,
    shards: Shards,
    log: Logger,
    newIsolate: IsolateFactory,
    readonly config: TfConfig,
    private readonly events: TfEvents,
  ) {
    const muted = new MutedKeys();
    // Leases of the router's nodes, as clients' blocking commands take (the CLIENT PAUSE state
    // they also hold is the client lane's business).
    this.blocking = new BlockingCalls(new Leases(router));
    this.libraries = new TfLibraries(router, log, newIsolate, config, {
      runOnKey: async (library, key, fn, argsJson) => {
        const partitions = new Partitions(shards);
        const index = partitions.partitionOfSlot(keySlot(key));
        return this.withTimeout(
          this.runRemote(library, fn, argsJson, partitions, index),
          "Remote task timeout",
        );
      },
      runOnShards: async (library, fn, argsJson) => {
        const partitions = new Partitions(shards);
        const results: string[] = [];
        const errors: string[] = [];
        // One master after the other: the library's remote isolate runs one call at a time.
        for (let index = 0; index < partitions.count; index++) {
          try {
            results.push(
              await this.withTimeout(this.runRemote(library, fn, argsJson, partitions, index), "Timeout"),
            );
          } catch (err) {
            errors.push(err instanceof Error ? err.message : String(err));
          }
        }
        return [results, errors];
      },
      muted,
      muting: () => this.keyspaceTriggers.active,
      barrier: () => events.barrier(),
      blocking: this.blocking,
    });
    this.keyspaceTriggers = new KeyspaceTriggers(this.libraries, muted, log, events.maxQueuedEvents, (ids) =>
      events.settled(ids),
    );
    this.streamTriggers = new StreamTriggers(router, shards, log, this.libraries, events);
    this.libraries.onChange = async (name, deleted) => {
      this.keyspaceTriggers.recount();
      if (deleted) this.keyspaceTriggers.forget(name);
      if (this.needsKeyspaceEvents) await events.start();
      await this.streamTriggers.update(deleted ? name : null);
    };
  }

  /** Remote calls one at a time per library: its remote isolate serves one entry at once. */
  private readonly remoteQueues = new Map<string, Promise<unknown>>();

  /** A cluster function, once, with a client bound to master `index`: its JSON result. */
  private runRemote(
    library: string,
    fn: string,
    argsJson: string,
    partitions: Partitions,
    index: number,
  ): Promise<string> {
    const job = async (): Promise<string> => {
      const remote = await this.libraries.remote(library);
      if (typeof remote === "string") throw new Error(remote);
      if (!remote.registrations.clusterFunctions.includes(fn)) {
        throw new Error(`Remote function ${fn} does not exists on library ${library}`);
      }
      remote.bridge.target = { partitions, index };
      try {
        const out = await remote.guest.callClusterFunction(fn, argsJson);
        if ("err" in out) throw new Error(out.err);
        return String(out.ok);
      } catch (err) {
        throw new Error(sandboxText(err), { cause: err });
      }
    };
    const run = (this.remoteQueues.get(library) ?? Promise.resolve()).then(job, job);
    this.remoteQueues.set(
      library,
      run.catch(() => {}),
    );
    return run;
  }

  private withTimeout<T>(work: Promise<T>, message: string): Promise<T> {
    const ms = this.config.number("remote-task-default-timeout");
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    });
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  /** Whether writes through the proxy wait for keyspace triggers before their reply. */
  get holdsWrites(): boolean {
    return this.keyspaceTriggers.active;
  }

  /** Whether keyspace notifications must keep flowing for T&F. */
  get needsKeyspaceEvents(): boolean {
    return this.keyspaceTriggers.active || this.streamTriggers.active;
  }

  /**
   * Keyspace events from the shards; those of shards another proxy handles are its own,
   * unless `owned` (the events of a shard this proxy just took over from a dead one).
   */
  onKeyspaceEvents(events: KeyEvent[], owned = false): void {
    // Stream groups are shared by every proxy: each reads on any xadd it hears of.
    if (this.streamTriggers.active)
      for (const e of events) if (e.event === "xadd") this.streamTriggers.onAppended(e.key);
    if (!this.keyspaceTriggers.active) return;
    const mine = owned ? events : events.filter((e) => this.events.ownsShard(e.shard));
    if (mine.length > 0) this.keyspaceTriggers.onEvents(mine);
    // The others' owners are other threads, perhaps: they are told who wrote.
    if (mine.length < events.length)
      this.keyspaceTriggers.onOthersEvents(events.filter((e) => !this.events.ownsShard(e.shard)));
  }

  /** Resolves once every keyspace trigger queued so far has run. */
  triggersIdle(): Promise<void> {
    return this.keyspaceTriggers.idle();
  }

  /**
   * TFCALL/TFCALLASYNC `<lib>.<fn> <numkeys> key... arg...`: the function's reply, or an
   * error with T&F's text. `blockAllowed`: the call may wait for a Promise (TFCALLASYNC outside
   * MULTI). `asyncCommand`: it came as TFCALLASYNC, which may call an async function.
   */
  call(
    target: string,
    args: Buffer[],
    blockAllowed: boolean,
    db: number,
    asyncCommand = blockAllowed,
  ): Promise<RespValue> {
    return new Promise((resolve) => this.callThen(target, args, blockAllowed, db, asyncCommand, resolve));
  }

  /**
   * call() for the client's TFCALL: `done` gets the reply, always after this returns. A queue
   * entry and one callback per call instead of a chain of promises (it is the hot path).
   */
  callThen(
    target: string,
    args: Buffer[],
    blockAllowed: boolean,
    db: number,
    asyncCommand: boolean,
    done: (reply: RespValue) => void,
  ): void {
    const settle = (out: TfOutcome | null, failure?: unknown): void => {
      let reply: RespValue;
      try {
        if (out === null) throw failure;
        this.onCall?.(target, "err" in out);
        reply = "err" in out ? new RespError(out.err) : taggedToResp(out.ok);
      } catch (err) {
        this.onCall?.(target, true);
        reply = new RespError(sandboxText(err));
      }
      done(reply);
    };
    const refused = this.start(target, args, blockAllowed, db, asyncCommand, settle);
    // A refusal is known at once; its reply still comes later, as every TFCALL's does.
    if (refused !== null) queueMicrotask(() => done(refused));
  }

  /** A TFCALL's checks, then its place in its library's line (null), or the error reply. */
  private start(
    target: string,
    args: Buffer[],
    blockAllowed: boolean,
    db: number,
    asyncCommand: boolean,
    settle: SettleTfCall,
  ): RespError | null {
    const dot = target.indexOf(".");
    if (dot === -1) return new RespError("Failed extracting function name");
    const libName = target.slice(0, dot);
    const fnName = target.slice(dot + 1);
    const numkeysText = args[0].toString();
    if (!/^\d+$/.test(numkeysText)) return new RespError("ERR value is not an integer or out of range");
    const numkeys = Number(numkeysText);
    const rest = args.slice(1);
    if (rest.length < numkeys) {
      return new RespError(
        `Not enough arguments was given, expected at least ${numkeys} arguments, got ${rest.length} arguments.`,
      );
    }
    const library = this.libraries.get(libName);
    if (library === undefined) return new RespError(`Unknown library ${libName}`);
    const fn = library.registrations.functions.find((f) => f.name === fnName);
    if (fn === undefined) return new RespError(`Unknown function ${fnName}`);
    if (fn.isAsync && !asyncCommand) return new RespError(ASYNC_REFUSED);
    // QuickJS calls a function with at most 65,534 arguments, the client included; beyond, the
    // call would fail inside the isolate with a RangeError for a reply. T&F had no such bound.
    if (rest.length > MAX_FUNCTION_ARGS)
      return new RespError(
        `ERR too many arguments for a function: at most ${MAX_FUNCTION_ARGS}, got ${rest.length}`,
      );
    const raw = fn.flags.includes("raw-arguments");
    const tagged: Tagged[] = [];
    for (const arg of rest) {
      const t = argToTagged(arg, raw);
      if (t === undefined) return new RespError("Can not convert argument to string");
      tagged.push(t);
    }
    try {
      let slots: number[] = [];
      if (numkeys <= 16) {
        for (let k = 0; k < numkeys; k++) {
          const slot = keySlot(rest[k]);
          if (!slots.includes(slot)) slots.push(slot);
        }
      } else {
        // Many keys: includes() on up to 16,384 slots for each would take seconds at 65,000 keys.
        const distinct = new Set<number>();
        for (let k = 0; k < numkeys; k++) distinct.add(keySlot(rest[k]));
        slots = [...distinct];
      }
      this.batcherOf(libName).call(fnName, tagged, slots, db, blockAllowed, settle);
      return null;
    } catch (err) {
      this.onCall?.(target, true);
      return new RespError(sandboxText(err));
    }
  }

  private readonly batchers = new Map<string, CallBatcher>();
  /** Told of each call of an existing function, "<lib>.<fn>", and whether it failed (metrics on). */
  onCall: ((target: string, failed: boolean) => void) | null = null;

  private batcherOf(name: string): CallBatcher {
    let batcher = this.batchers.get(name);
    if (batcher === undefined) {
      batcher = new CallBatcher(async () => {
        const library = this.libraries.get(name);
        if (library === undefined) throw new Error(`Unknown library ${name}`);
        return this.libraries.revive(library);
      });
      this.batchers.set(name, batcher);
    }
    return batcher;
  }

  restore(): Promise<void> {
    return this.libraries.restore();
  }

  async close(): Promise<void> {
    this.blocking.end(null, "ERR the proxy is shutting down");
    await this.streamTriggers.close();
    await this.libraries.close();
  }
}
