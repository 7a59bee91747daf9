import { randomBytes } from "node:crypto";
import type { Logger } from "../observability/log.js";
import type { Router } from "../routing/router.js";
import { Shards } from "../routing/shards.js";
import { encodeBulk, encodeError, encodeValue, OK } from "../resp/encode.js";
import { gearsPreload } from "./guest-bundles.js";
import { GearsGuest } from "./gears-guest.js";
import { GearsConfig } from "./config.js";
import { topLevelError } from "./errors.js";
import { Execution, type ExecutionObserver } from "./execution.js";
import type { GearsReply } from "./result-chunks.js";
import type { Action, GuestIsolate, IsolateFactory, PythonIsolateFactory } from "./guest-isolate.js";
import { loadPythonScript } from "./python-guest.js";
import { KeyspaceEventSource, type KeyEvent, type KeyspaceStatus } from "./events/keyspace-source.js";
import { EventBacklog } from "./events/event-backlog.js";
import { WriteJournal } from "./events/write-journal.js";
import { ShardLeases } from "./events/shard-leases.js";
import { isSyncMarker, SYNC_MARKER, SYNCED_CHANNEL } from "./events/sync-markers.js";
import { Registration } from "./registration.js";
import {
  countersOf,
  NO_OTHER_THREADS,
  type RegistrationCounters,
  type RegistrationsElsewhere,
} from "./registration-counters.js";
import { RegistrationRegistry, type GearsSession } from "./registry.js";
import { keySlot } from "../routing/key-slot.js";
import { SessionStore, type StoredSession } from "./session-store.js";
import { replyValueToResp } from "./json-values.js";
import { GearsBridge, type CommandGuard } from "./host-bridge.js";
import { Partitions } from "./partitions.js";
import { executeManyOutcomes, PrefetchingBridge } from "./read-ahead.js";
import { TfEngine } from "./tf/tf-engine.js";

/** RG.PYEXECUTE's answer while Python is off. */
export const PYTHON_OFF =
  "RG.PYEXECUTE needs Python, which is off: start the proxy with --python (Python scripts are trusted code), or send the script as JavaScript with RG.EXECUTE";

/** Events from this long before a dead lease owner's last mark are replayed too (clock skew, at least once). */
const REPLAY_MARGIN_MS = 1000;

/** How often writes through the proxy still waiting for their notification are checked. */
const JOURNAL_SETTLE_MS = 200;
/** A settle round whose barrier takes longer than this is given up (a shard hangs): the next one tries again. */
const JOURNAL_BARRIER_MS = 2000;
/** Writes waiting this long are handled even when the barrier does not come back. */
const JOURNAL_GIVE_UP_MS = 10_000;

/** How often the session store's version is checked for other proxies' changes. */
const STORE_POLL_MS = 1000;

export interface ExecuteRequest {
  script: string;
  unblocking: boolean;
  sessionId?: string;
  description?: string;
  /** Replace the session of the same id. */
  upgrade: boolean;
  /** Replace this other session. */
  replaceWith?: string;
  /** The database the script runs in (the client's), and its session's registrations listen to. */
  db?: number;
  /** A stored session coming back: its registrations keep these ids (by register() index). */
  restoredIds?: Record<string, string>;
  /**
   * The session runs again in a new isolate after its own ended (revive): its registrations
   * keep their counters, last error and executions, as if nothing had been re-run.
   */
  carryOver?: boolean;
  /** RG.PYEXECUTE: the script is Python (RedisGears 1.x's API); default JavaScript. */
  python?: boolean;
  /** The ACL user running it: owns what it creates, and its scripts run with its rights. */
  owner?: string;
}

/**
 * RG.EXECUTE and the executions it creates: runs scripts in isolates, keeps the list of
 * executions (bounded by MaxExecutions), and runs at most ExecutionThreads of them at once;
 * the others wait in status "created".
 */
export class GearsEngine {
  readonly config = new GearsConfig();
  /** This proxy's id in execution ids: `<40 hex>-<n>`. */
  readonly proxyId = randomBytes(20).toString("hex");
  private counter = 0;
  /**
   * Told of each new execution id (executions-across-proxies.ts: other proxies may then ask
   * for it); resolves once they can.
   */
  onExecutionId: (() => Promise<unknown>) | null = null;
  private readonly executions = new Map<string, Execution>();
  /** Told of each finished execution (metrics on); null otherwise. */
  observer: ExecutionObserver | null = null;
  private running = 0;
  private readonly waiting: Execution[] = [];
  private registrationCounter = 0;
  /** Told when an execution's results grow large, with its isolate (the warm pool holds spares back). */
  onLargeExecution: ((isolate: GuestIsolate) => void) | null = null;
  /** The ACL check of a user's commands (set with --aclfile): scripts run with their owner's rights. */
  guardFor: ((user: string) => CommandGuard | null) | null = null;
  readonly registry: RegistrationRegistry;
  private keyspace: KeyspaceEventSource | null = null;
  /**
   * Writes through the proxy: those whose event the reply tells become events at once (their
   * notification is swallowed); the others wait for their notification, or a settle.
   */
  private readonly journal = new WriteJournal(
    // In front of one server every key is on its one master: no slot to work out.
    (key) => this.shards.idForSlot(this.shards.clustered ? keySlot(key) : 0),
    (events) => this.handleEvents(events),
  );
  private stopJournal: (() => void) | null = null;
  private leases: ShardLeases | null = null;
  /** Other proxies' shards' recent events, replayed when this proxy takes a shard over. */
  private readonly backlog = new EventBacklog(
    () => 2 * this.config.number("EventLeaseMS") + 2000,
    (shard) => this.leases?.ownerMark(shard) ?? null,
    REPLAY_MARGIN_MS,
  );
  /** Commands waiting for the keyspace events they cause (`commands` registrations). */
  private readonly captures = new Set<{ keys: Set<string>; events: KeyEvent[] }>();
  /** Sync markers written to other proxies' shards, waiting for their answer. */
  private syncSeq = 0;
  private readonly syncWaiters = new Map<number, () => void>();
  private readonly store: SessionStore;
  /** Routing's door to the shards: masters, one shard's commands, subscriptions, topology changes. */
  readonly shards: Shards;

  constructor(
    readonly router: Router,
    private readonly log: Logger,
    private readonly newIsolate: IsolateFactory,
    /** Pyodide isolates, when the operator switched Python on (--python). */
    readonly newPythonIsolate: PythonIsolateFactory | null = null,
  ) {
    this.shards = new Shards(router);
    this.registry = new RegistrationRegistry(router, this.shards, log, () => this.newExecutionId(), {
      consumerName: this.proxyId,
      claimIdleMs: () => this.config.number("StreamClaimIdleMS"),
      streamLeaseMs: () => this.config.number("EventLeaseMS"),
      maxExecutionsPerRegistration: () => this.config.number("MaxExecutionsPerRegistration"),
      observer: () => this.observer,
      maxQueuedEvents: () => this.config.number("MaxQueuedEvents"),
      onIsolateGone: (session) => this.revive(session),
    });
    this.registry.ownsShard = (shard) => this.leases?.owns(shard) ?? true;
    this.registry.onForeignEvents = (events) => this.backlog.add(events);
    this.store = new SessionStore(router, log);
    this.tf = new TfEngine(router, this.shards, log.child({ component: "tf" }), newIsolate, this.config.tf, {
      barrier: () => this.eventsArrived(),
      settled: (ids) => this.journal.answered(ids).then(() => this.eventsArrived()),
      start: () => this.startKeyspaceEvents(),
      ownsShard: (shard) => this.registry.ownsShard(shard),
      consumerName: this.proxyId,
      claimIdleMs: () => this.config.number("StreamClaimIdleMS"),
      streamLeaseMs: () => this.config.number("EventLeaseMS"),
      maxQueuedEvents: () => this.config.number("MaxQueuedEvents"),
    });
  }

  /** Triggers and Functions (TFUNCTION/TFCALL): same isolates and store, its own libraries. */
  readonly tf: TfEngine;

  /**
   * Set by a --threads proxy (threads/peers.ts): the other threads follow the store now, and
   * this resolves once they have. A session registered or a library loaded through one thread
   * is then in place on every thread when its client is answered, as on one proxy, rather
   * than at the other threads' next poll of the store (up to a second later: a TFCALL through
   * another connection answered "Unknown library"). Separate proxies still follow by polling.
   */
  set peersFollow(follow: () => Promise<void>) {
    this.othersFollow = follow;
    this.tf.libraries.peersFollow = follow;
  }
  private othersFollow: () => Promise<void> = () => Promise.resolve();

  /** RG.DUMPREGISTRATIONS' counters and the per-registration commands on a --threads proxy's other threads. */
  registrationsElsewhere: RegistrationsElsewhere = NO_OTHER_THREADS;

  /** This thread's counters of each registration (another thread's RG.DUMPREGISTRATIONS sums them). */
  registrationCounters(): Record<string, RegistrationCounters> {
    const counters: Record<string, RegistrationCounters> = {};
    for (const r of this.registry.all()) counters[r.id] = countersOf(r, this.registry.queuedOf(r));
    return counters;
  }

  /** Another thread of this proxy wrote the store: sessions and libraries followed now. */
  async followStoreNow(): Promise<void> {
    await this.tf.libraries.followNow();
    await this.serialized(() => this.syncFromStore());
  }

  /** Checks RG.EXECUTE's session options against the live sessions; an error text or null. */
  private sessionConflict(request: ExecuteRequest): string | null {
    if (request.replaceWith !== undefined) {
      if (this.registry.session(request.replaceWith) === undefined) {
        return `Can not replace with ${request.replaceWith}, session does not exists.`;
      }
      if (request.sessionId !== undefined && this.registry.session(request.sessionId) !== undefined) {
        return `Can not replace an existing session ${request.sessionId} with ${request.replaceWith}`;
      }
      return null;
    }
    if (request.sessionId !== undefined && !request.upgrade && this.registry.session(request.sessionId)) {
      return `Session ${request.sessionId} already exists`;
    }
    return null;
  }

  private newExecutionId(): string {
    void this.onExecutionId?.();
    return `${this.proxyId}-${++this.counter}`;
  }

  /** An execution of RG.EXECUTE, or one a registration ran. */
  get(id: string): Execution | undefined {
    return this.executions.get(id) ?? this.registry.findExecution(id);
  }

  /** RG.DUMPEXECUTIONS: RG.EXECUTE's executions, then the registrations' (registered). */
  dump(): { execution: Execution; registered: boolean }[] {
    return [
      ...this.list().map((execution) => ({ execution, registered: false })),
      ...this.registry.registeredExecutions().map((execution) => ({ execution, registered: true })),
    ];
  }

  list(): Execution[] {
    return [...this.executions.values()];
  }

  drop(id: string): void {
    if (!this.executions.delete(id)) this.registry.dropExecution(id);
  }

  /** RG.EXECUTE: the reply to send (OK, an execution id, [results, errors], or an error). */
  async execute(request: ExecuteRequest): Promise<GearsReply> {
    const conflict = this.sessionConflict(request);
    if (conflict !== null) return encodeError(`ERR ${conflict}`);
    const db = request.db ?? 0;
    let partitions: Partitions | null = null;
    const partitionsOf = (): Partitions => (partitions ??= new Partitions(this.shards, db));
    const registered = new Map<number, string>();
    const timerRequests: { id: number; seconds: number; keyName: string | null }[] = [];
    const bridge = new GearsBridge(this.router, partitionsOf, this.config, this.log, {
      register: (index) => {
        const id = request.restoredIds?.[index] ?? `${this.proxyId}-${++this.registrationCounter}`;
        registered.set(index, id);
        return id;
      },
      registerTimeEvent: (id, seconds, keyName) => void timerRequests.push({ id, seconds, keyName }),
    });
    const limits = {
      memoryLimitMb: this.config.number("ScriptMemoryLimitMB"),
      timeoutMs: this.config.number("ScriptTimeoutMS"),
    };
    bridge.db = db;
    if (request.owner !== undefined) bridge.guard = this.guardFor?.(request.owner) ?? null;
    if (request.python === true && this.newPythonIsolate === null) return encodeError(`ERR ${PYTHON_OFF}`);
    const python =
      request.python === true && this.newPythonIsolate !== null
        ? await this.newPythonIsolate(limits, bridge)
        : null;
    // Its run() may read a step's executeMany replies a batch early (read-ahead.ts).
    const prefetching = new PrefetchingBridge(bridge, (args) =>
      executeManyOutcomes(this.router, partitionsOf, args, bridge.db, bridge.guard),
    );
    const isolate = python ?? (await this.newIsolate(limits, prefetching, gearsPreload()));
    let actions: Action[];
    try {
      if (python !== null) {
        await loadPythonScript(python, request.script);
      } else {
        await isolate.evalScript(request.script, "script");
      }
      actions = await new GearsGuest(isolate).actions();
    } catch (err) {
      await isolate.dispose().catch(() => {});
      return encodeError(`ERR ${topLevelError(err)}`);
    }
    if (registered.size > 0 || timerRequests.length > 0) {
      return this.installSession(request, isolate, bridge, actions, registered, timerRequests);
    }
    const runIndex = actions.findIndex((a) => a.kind === "run");
    if (runIndex === -1) {
      await isolate.dispose();
      return OK;
    }
    partitions ??= new Partitions(this.shards, db);
    const execution = new Execution(
      this.newExecutionId(),
      isolate,
      actions[runIndex],
      runIndex,
      partitions,
      null,
      true,
      this.config.number("MaxResultsMB"),
    );
    execution.owner = request.owner ?? null;
    if (python === null) execution.prefetch = prefetching;
    execution.onLarge = () => this.onLargeExecution?.(isolate);
    this.add(execution);
    this.schedule(execution);
    if (request.unblocking) {
      // The client may ask another proxy for it next: that one must find this one listening.
      await this.onExecutionId?.();
      return encodeBulk(execution.id);
    }
    await execution.waitFinished();
    this.executions.delete(execution.id);
    return execution.reply();
  }

  /** RedisGears' refusal of a hook on a command the server does not have. */
  private unknownHook(registrations: Registration[]): string | undefined {
    const hook = registrations.find((r) => r.hook !== null && !this.router.knowsCommand(r.hook));
    return hook === undefined ? undefined : "Can not override an unexisting command";
  }

  /**
   * A script that registered: its isolate becomes the session's, replacing the session of
   * the same id (UPGRADE) or the one named by REPLACE_WITH at once. A run() in the same
   * script is ignored, as RedisGears did.
   */
  private async installSession(
    request: ExecuteRequest,
    isolate: GuestIsolate,
    bridge: GearsBridge,
    actions: Action[],
    registered: Map<number, string>,
    timerRequests: { id: number; seconds: number; keyName: string | null }[],
  ): Promise<Buffer> {
    const id = request.sessionId ?? randomBytes(20).toString("hex");
    const registrations = [...registered].map(
      ([index, regId]) => new Registration(regId, actions[index], index, id),
    );
    const restored = request.restoredIds !== undefined;
    const invalid =
      registrations.map((r) => r.invalid(restored)).find((e) => e !== null) ??
      (restored ? undefined : this.unknownHook(registrations));
    if (invalid !== undefined) {
      await isolate.dispose().catch(() => {});
      return encodeError(`ERR ${invalid}`);
    }
    const replaces = [id, ...(request.replaceWith !== undefined ? [request.replaceWith] : [])];
    const taken = this.triggerTaken(registrations, replaces);
    if (taken !== null) {
      await isolate.dispose().catch(() => {});
      return encodeError(taken);
    }
    const session: GearsSession = {
      id,
      description: request.description ?? null,
      db: request.db ?? 0,
      isolate,
      bridge,
      registrations,
      timers: [],
      owner: request.owner ?? null,
    };
    if (request.carryOver === true) {
      const old = this.registry.session(id);
      for (const r of registrations) {
        const before = old?.registrations.find((o) => o.id === r.id);
        if (before !== undefined) r.carryOver(before);
      }
    }
    session.timers = timerRequests.map((t) => this.startTimer(session, t.id, t.seconds, t.keyName));
    this.registry.install(session, replaces);
    if (request.replaceWith !== undefined) await this.forget(request.replaceWith);
    // A session brought in from the store is stored already.
    if (request.restoredIds === undefined) {
      await this.persist(session, request.script);
      await this.othersFollow();
    }
    for (const index of registered.keys()) {
      await new GearsGuest(isolate).onRegistered(index).catch((err: Error) => {
        this.log.warn({ session: id, err: err.message }, "onRegistered failed");
      });
    }
    if (this.registry.hasKeyRegistrations || timerRequests.length > 0) await this.startKeyspaceEvents();
    if (registrations.some((r) => r.commands !== null || (r.eventTypes?.includes("keymiss") ?? false))) {
      await this.keyspace?.requireFlags("m");
    }
    return OK;
  }

  /** RedisGears' error when a registration's trigger name is in use (sessions being replaced aside). */
  private triggerTaken(registrations: Registration[], replaces: string[]): string | null {
    const names = new Set<string>();
    for (const r of registrations) {
      if (r.reader !== "CommandReader" || r.trigger === null) continue;
      if (names.has(r.trigger)) return "trigger already registered in this session";
      names.add(r.trigger);
      const found = this.registry.byTrigger(r.trigger);
      if (found !== undefined && !replaces.includes(found.session.id)) return "trigger already registered";
    }
    return null;
  }

  /** A registerTimeEvent(): calls the guest every `seconds`; with a key name, only while it exists. */
  private startTimer(
    session: GearsSession,
    id: number,
    seconds: number,
    keyName: string | null,
  ): NodeJS.Timeout {
    let busy = false;
    const timer = setInterval(async () => {
      if (busy || !this.ownsTimer(keyName)) return;
      busy = true;
      try {
        if (keyName !== null && (await this.router.call(["EXISTS", keyName])) === 0) {
          clearInterval(timer);
          return;
        }
        await new GearsGuest(session.isolate).timer(id);
      } catch (err) {
        this.log.warn(
          { session: session.id, err: err instanceof Error ? err.message : String(err) },
          "time event failed",
        );
        // The watchdog ended the isolate (a tick past ScriptTimeoutMS): the session runs again.
        if (!session.isolate.alive) this.revive(session);
      } finally {
        busy = false;
      }
    }, seconds * 1000);
    timer.unref();
    return timer;
  }

  /**
   * Whether this proxy runs a timer now: when several proxies share the shards, the one
   * holding the lease of the key's shard (of the first shard, for a timer without a key).
   */
  private ownsTimer(keyName: string | null): boolean {
    if (this.leases === null) return true;
    const slot = keyName === null ? 0 : keySlot(Buffer.from(keyName));
    return this.leases.owns(this.shards.idForSlot(slot));
  }

  /**
   * Whether a command takes the gears path instead of going straight through: a hook is
   * registered for it, or a KeysReader registration names it in `commands`.
   */
  hookFor(name: string, argv: readonly Buffer[]): boolean {
    if (this.registry.hasHooks) {
      const found = this.registry.hookFor(name, argv);
      if (found !== undefined) {
        // runHook comes right after for the same argv: it takes this instead of looking again.
        this.foundHook = { argv, found };
        return true;
      }
    }
    return this.registry.commandsWatched.size > 0 && this.registry.commandsWatched.has(name);
  }

  private foundHook: {
    argv: readonly Buffer[];
    found: ReturnType<RegistrationRegistry["hookFor"]>;
  } | null = null;

  /**
   * Runs the hook of a command passing through the proxy: its pipeline gets the argv as
   * its one record and must produce exactly one result, which becomes the reply;
   * callNext() inside runs the command itself.
   */
  async runHook(name: string, argv: Buffer[]): Promise<Buffer> {
    const found = this.foundHook?.argv === argv ? this.foundHook.found : this.registry.hookFor(name, argv);
    this.foundHook = null;
    if (found === undefined) return this.runWithEvents(name, argv);
    const record = argv.map((a) => a.toString());
    const partitions = new Partitions(this.shards);
    const partition = argv.length > 1 ? partitions.partitionOfSlot(keySlot(argv[1])) : 0;
    const execution = await this.registry.runCommand(found, partitions, partition, record);
    if (execution.errors.length > 0) return encodeError(`ERR ${execution.errors[0]}`);
    const results = execution.results ?? [];
    if (results.length !== 1) return encodeError("ERR Command hook must return exactly one result");
    return encodeValue(replyValueToResp(results[0]));
  }

  /**
   * A command named by a registration's `commands`: it runs, the notifications it caused
   * are awaited (a barrier on the notification connections) and handled by those
   * registrations in its path; one of them may override its reply with overrideReply().
   */
  private async runWithEvents(name: string, argv: Buffer[]): Promise<Buffer> {
    const capture = {
      keys: new Set(argv.slice(1).map((a) => a.toString("latin1"))),
      events: [] as KeyEvent[],
    };
    this.captures.add(capture);
    let reply;
    try {
      reply = await this.router.call(argv);
      await this.eventsArrived();
    } finally {
      this.captures.delete(capture);
    }
    if (capture.events.length === 0) return encodeValue(reply);
    const override = await this.registry.runCommandEvents(
      name,
      argv.map((a) => a.toString()),
      capture.events,
    );
    return encodeValue(override === null ? reply : replyValueToResp(override.value));
  }

  private onKeyspaceEvents(events: KeyEvent[]): void {
    this.handleEvents(this.journal.confirm(events));
    // After the dispatch: a marker's earlier events are queued by now.
    for (const e of events) if (isSyncMarker(e.key)) this.answerSyncMarker(e);
  }

  /** Events from notifications and from the proxy's own writes, once each. */
  private handleEvents(events: KeyEvent[]): void {
    if (events.length === 0) return;
    for (const capture of this.captures) {
      for (const e of events) if (capture.keys.has(e.key.toString("latin1"))) capture.events.push(e);
    }
    this.registry.dispatch(events);
    this.tf.onKeyspaceEvents(events);
  }

  /**
   * Another proxy wrote a sync marker on a shard this proxy handles: once the `sync`
   * registrations have run every event queued before it, say so on that proxy's channel.
   */
  private answerSyncMarker(e: KeyEvent): void {
    if (!(this.leases?.owns(e.shard) ?? false)) return;
    const [proxyId, seq] = e.key
      .toString()
      .slice(e.key.indexOf(SYNC_MARKER) + SYNC_MARKER.length)
      .split(":");
    if (proxyId === this.proxyId || seq === undefined) return;
    void Promise.all([this.registry.syncIdle(), this.tf.triggersIdle()])
      .then(() => this.router.call(["PUBLISH", SYNCED_CHANNEL + proxyId, seq]))
      .catch(() => {});
  }

  /**
   * A write through this proxy to a shard another proxy handles: a marker key written to
   * that shard after the write reaches the owner after the write's events (notifications
   * keep their order per shard); the owner answers once its `sync` handlers have run them.
   * An owner that does not answer (it died) holds the client for one lease time at most.
   */
  private async syncWithOwners(): Promise<void> {
    const leases = this.leases;
    if (leases === null) return;
    const masters = this.shards.masters();
    const foreign = masters.flatMap((m, index) => (leases.owns(m.id) ? [] : [index]));
    if (foreign.length === 0) return;
    const partitions = new Partitions(this.shards);
    await Promise.all(
      foreign.map(async (index) => {
        const seq = ++this.syncSeq;
        let timer: NodeJS.Timeout | undefined;
        const answered = new Promise<void>((resolve) => {
          this.syncWaiters.set(seq, resolve);
          timer = setTimeout(resolve, this.config.number("EventLeaseMS"));
        });
        const key = `{${partitions.hashtag(index)}}${SYNC_MARKER}${this.proxyId}:${seq}`;
        await this.router.call(["SET", key, "1", "PX", "10000"]).catch(() => {});
        await answered;
        clearTimeout(timer);
        this.syncWaiters.delete(seq);
      }),
    );
  }

  private onSynced(message: Buffer): void {
    const seq = Number(message.toString());
    this.syncWaiters.get(seq)?.();
  }

  /** Keyspace notifications, and the shard leases that say which shards' events are this proxy's. */
  private async startKeyspaceEvents(): Promise<void> {
    if (this.keyspace !== null) return;
    this.keyspace = new KeyspaceEventSource(
      this.shards,
      this.log,
      (events) => this.onKeyspaceEvents(events),
      { channel: SYNCED_CHANNEL + this.proxyId, onMessage: (_channel, message) => this.onSynced(message) },
      (db, frame, keyStart, keyEnd, eventStart, eventEnd, shard, quiet) =>
        this.journal.handled(db, frame, keyStart, keyEnd, eventStart, eventEnd, shard, quiet),
    );
    this.leases = new ShardLeases(
      this.router,
      this.shards,
      this.log,
      this.proxyId,
      () => this.config.number("EventLeaseMS"),
      {
        acquired: (node, previous) => {
          // At least once: events from a little before the last owner's mark are handled again.
          const since = previous === null ? 0 : previous.handledThrough - REPLAY_MARGIN_MS;
          const replay = this.backlog.takeSince(node, since);
          if (replay.length > 0)
            this.log.info({ node, events: replay.length }, "replaying events of a shard taken over");
          this.registry.dispatch(replay, true);
          this.tf.onKeyspaceEvents(replay, true);
        },
        lost: () => {},
        handledThrough: (node) => this.registry.handledThrough(node),
      },
    );
    await this.keyspace.start();
    await this.leases.start();
    this.startJournal();
  }

  /**
   * Resolves once the events of every write acknowledged so far have been handed to the
   * registrations: their notifications (a barrier on the subscriptions), and the writes
   * the journal knows from their replies.
   */
  private async eventsArrived(): Promise<void> {
    if (this.keyspace !== null) await this.keyspace.barrier();
    this.journal.flush();
  }

  /** Follows the writes forwarded through the proxy, and settles them every JOURNAL_SETTLE_MS. */
  private startJournal(): void {
    const unwatch = this.shards.onWrite((name, argv, keys, db, byFunction) =>
      this.journal.watch(name, argv, keys, db, byFunction),
    );
    let busy = false;
    const timer = setInterval(() => {
      if (busy || this.journal.waiting === 0) return;
      busy = true;
      void this.settleJournal().finally(() => (busy = false));
    }, JOURNAL_SETTLE_MS);
    timer.unref();
    this.stopJournal = () => {
      unwatch();
      clearInterval(timer);
      this.journal.clear();
    };
  }

  /**
   * Writes acknowledged before the barrier whose notification did not come before it
   * never will (a subscription was down, or the shard was a replica not yet followed):
   * they are dispatched as the events they caused.
   */
  private async settleJournal(): Promise<void> {
    const keyspace = this.keyspace;
    if (keyspace === null) return;
    const cut = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      keyspace.barrier().then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), JOURNAL_BARRIER_MS))),
    ]);
    clearTimeout(timer);
    if (this.keyspace !== keyspace) return;
    // A shard that hangs holds its notifications back: after JOURNAL_GIVE_UP_MS the writes
    // waiting for them are handled anyway (at least once), so the record stays bounded.
    const upTo = timedOut ? cut - JOURNAL_GIVE_UP_MS : cut;
    const missed = this.journal.takeUnconfirmed(upTo);
    if (missed.length === 0) return;
    this.log.info(
      { events: missed.length },
      "writes through the proxy whose notifications were lost: handled from the proxy's record of them",
    );
    this.handleEvents(missed);
  }

  private async stopKeyspaceEvents(): Promise<void> {
    const keyspace = this.keyspace;
    const leases = this.leases;
    this.keyspace = null;
    this.leases = null;
    this.backlog.clear();
    this.stopJournal?.();
    this.stopJournal = null;
    await Promise.all([keyspace?.stop(), leases?.stop()]);
  }

  /** The masters whose events and timers this proxy handles now (all of them when alone). */
  get ownedShards(): string[] | null {
    return this.leases?.owned() ?? null;
  }

  /** Whether every shard sends keyspace notifications now (for RG.DUMPREGISTRATIONS). */
  get keyspaceStatus(): KeyspaceStatus | null {
    return this.keyspace?.status() ?? null;
  }

  /** True while writes through the proxy wait after their reply: sync registrations, a queue at MaxQueuedEvents, T&F triggers. */
  get holdsWrites(): boolean {
    return this.registry.holdsWrites || this.tf.holdsWrites;
  }

  /**
   * Resolves once every keyspace event caused by writes acknowledged so far has been
   * handled by the `sync` registrations: a barrier on the notification connections makes
   * sure the events have arrived, then the sync queues must drain.
   */
  async afterWrite(): Promise<void> {
    await this.eventsArrived();
    // Both marks taken now: what queues while one of them runs is not waited for.
    await Promise.all([this.registry.syncIdle(), this.tf.triggersIdle()]);
    await this.syncWithOwners();
  }

  private readonly scripts = new Map<string, string>();
  /** Each session as this proxy last stored or loaded it (JSON): what is new in the store is what differs. */
  private readonly storedJson = new Map<string, string>();
  private storePoll: NodeJS.Timeout | null = null;
  private syncing: Promise<void> = Promise.resolve();

  /**
   * Store reads and writes run one at a time: a poll that read the store just before this
   * proxy wrote a new session must not take that session for one removed elsewhere.
   */
  private serialized(task: () => Promise<void>): Promise<void> {
    const next = this.syncing.then(task, task);
    this.syncing = next.catch(() => {});
    return next;
  }

  private persist(session: GearsSession, script: string): Promise<void> {
    return this.serialized(() => this.save(session, script));
  }

  private async save(session: GearsSession, script: string): Promise<void> {
    this.scripts.set(session.id, script);
    const registrations: Record<string, string> = {};
    for (const r of session.registrations) registrations[r.actionIndex] = r.id;
    const stored: StoredSession = {
      id: session.id,
      script,
      description: session.description,
      registrations,
      ...(session.db === 0 ? {} : { db: session.db }),
      ...(session.owner === null ? {} : { owner: session.owner }),
    };
    if (session.isolate.runtime === "pyodide") stored.python = true;
    const json = JSON.stringify(stored);
    if (this.storedJson.get(session.id) === json) return;
    this.storedJson.set(session.id, json);
    await this.store.save(stored, json);
  }

  private forget(id: string): Promise<void> {
    return this.serialized(async () => {
      this.storedJson.delete(id);
      this.scripts.delete(id);
      await this.store.remove(id);
    });
  }

  /**
   * Brings back the sessions stored in Redis (at start), then keeps following the store:
   * sessions another proxy in front of the same Redis adds, upgrades or unregisters are
   * taken over here within about a second (a version token is polled), and sessions the
   * store lost (a FLUSHALL through the proxy or straight to a shard) are written back.
   */
  async restore(): Promise<void> {
    // Called once the start-time settings (--gears-config) are applied, before any client.
    this.config.markStarted();
    await this.tf.restore();
    await this.serialized(() => this.syncFromStore());
    if (this.storedJson.size > 0) {
      this.log.info(
        { sessions: this.storedJson.size },
        `restored ${this.storedJson.size} gears sessions at start`,
      );
    }
    this.storePoll = setInterval(() => void this.serialized(() => this.pollStore()), STORE_POLL_MS);
    this.storePoll.unref();
  }

  private async pollStore(): Promise<void> {
    const changed = await this.store.changed(this.storedJson.size > 0).catch(() => false);
    if (changed) await this.syncFromStore();
  }

  /**
   * Makes the local sessions what the store holds: a tombstone removes a session here, a
   * new or changed entry is brought in, and a session the store lost without a tombstone
   * is written back from memory.
   */
  private async syncFromStore(): Promise<void> {
    try {
      await this.store.follow(this.storedJson, {
        removed: (id) => {
          // Unregistered or replaced through another proxy.
          this.storedJson.delete(id);
          this.scripts.delete(id);
          const session = this.registry.session(id);
          for (const r of session?.registrations ?? []) this.registry.unregister(r.id);
          this.log.info({ session: id }, "gears session removed by another proxy");
        },
        changed: (session, json) => this.bringIn(session, json),
      });
    } catch (err) {
      this.log.warn(
        { err: err instanceof Error ? err.message : String(err) },
        "could not follow the stored gears sessions",
      );
    }
    this.stopEventsIfUnused();
  }

  /** Sessions being brought back after their isolate ended. */
  private readonly reviving = new Set<string>();

  /**
   * A session whose isolate ended (its worker was stopped by the watchdog) runs its script
   * again in a new isolate, as at a restart, with the same registration ids: otherwise each
   * of its events, hooks and triggers would fail with "the isolate is gone" until a restart.
   * Its globals start afresh.
   */
  private revive(session: GearsSession): void {
    if (this.reviving.has(session.id)) return;
    this.reviving.add(session.id);
    void this.serialized(async () => {
      const json = this.storedJson.get(session.id);
      if (json === undefined || this.registry.session(session.id) !== session) return;
      this.log.warn({ session: session.id }, "a gears session's isolate ended: running its script again");
      await this.bringIn(JSON.parse(json) as StoredSession, json, true);
    })
      .catch((err: unknown) =>
        this.log.warn(
          { session: session.id, err: err instanceof Error ? err.message : String(err) },
          "gears session not brought back",
        ),
      )
      .finally(() => this.reviving.delete(session.id));
  }

  /** Runs a stored session's script in its session, with its registrations' old ids. */
  private async bringIn(s: StoredSession, json: string, carryOver = false): Promise<void> {
    this.storedJson.set(s.id, json);
    this.scripts.set(s.id, s.script);
    const reply = await this.execute({
      script: s.script,
      unblocking: false,
      sessionId: s.id,
      description: s.description ?? undefined,
      upgrade: true,
      restoredIds: s.registrations,
      carryOver,
      db: s.db ?? 0,
      python: s.python === true,
      owner: s.owner,
    });
    const session = this.registry.session(s.id);
    if (session === undefined) {
      this.log.warn(
        { session: s.id, reply: Buffer.concat([reply].flat()).toString().trim() },
        "stored gears session did not come back",
      );
      return;
    }
    const kept = new Set(Object.values(s.registrations));
    for (const r of [...session.registrations]) if (!kept.has(r.id)) this.registry.unregister(r.id);
    this.log.info(
      { session: s.id, registrations: session.registrations.map((r) => r.id) },
      "restored gears session",
    );
  }

  private stopEventsIfUnused(): void {
    const timers = this.registry.allSessions().some((s) => s.timers.length > 0);
    if (
      !this.registry.hasKeyRegistrations &&
      !timers &&
      !this.tf.needsKeyspaceEvents &&
      this.keyspace !== null
    ) {
      void this.stopKeyspaceEvents();
    }
  }

  /** RG.UNREGISTER: resolves once the store (and the other threads) have it. */
  async unregister(id: string): Promise<boolean> {
    const owner = this.registry.all().find((r) => r.id === id)?.sessionId;
    const removed = this.registry.unregister(id);
    if (!removed) return false;
    this.stopEventsIfUnused();
    if (owner === undefined) return true;
    const session = this.registry.session(owner);
    const script = this.scripts.get(owner);
    // Not stored (Redis unreachable): unregistered here all the same, as before.
    if (session === undefined) await this.forget(owner).catch(() => {});
    else if (script !== undefined) await this.persist(session, script).catch(() => {});
    else return true;
    await this.othersFollow();
    return true;
  }

  /** Stops the event sources (giving the shard leases back to other proxies) and every session. */
  async close(): Promise<void> {
    if (this.storePoll !== null) clearInterval(this.storePoll);
    await this.tf.close();
    await this.stopKeyspaceEvents();
    this.registry.close();
    for (const execution of this.executions.values()) execution.abort();
  }

  /** Keeps at most MaxExecutions: the oldest finished go first, then the oldest at all. */
  private add(execution: Execution): void {
    const max = this.config.number("MaxExecutions");
    if (max > 0) {
      while (this.executions.size >= max) {
        const victim = this.list().find((e) => e.isFinished) ?? this.list()[0];
        this.executions.delete(victim.id);
      }
    }
    this.executions.set(execution.id, execution);
    const observer = this.observer;
    if (observer !== null) void execution.waitFinished().then(() => observer.executionFinished(execution));
  }

  private schedule(execution: Execution): void {
    this.waiting.push(execution);
    this.startWaiting();
  }

  private startWaiting(): void {
    const threads = Math.max(1, this.config.number("ExecutionThreads"));
    while (this.running < threads && this.waiting.length > 0) {
      const next = this.waiting.shift()!;
      if (next.isFinished) continue;
      this.running++;
      void next.run().finally(() => {
        this.running--;
        this.startWaiting();
      });
    }
  }
}
