import type { Logger } from "../observability/log.js";
import { keySlot } from "../routing/key-slot.js";
import type { Router } from "../routing/router.js";
import { UpstreamError, type Shards } from "../routing/shards.js";
import type { JsonValue } from "../sandbox/types.js";
import { DEFAULT_MAX_QUEUED_EVENTS, EventQueue } from "./events/event-queue.js";
import { MarkWaiters } from "./events/mark-waiters.js";
import { StreamConsumer } from "./events/stream-consumer.js";
import { Execution, type ExecutionObserver, type PackedRecords } from "./execution.js";
import type { GuestIsolate } from "./guest-isolate.js";
import { RESULTS_JSON, RESULTS_NONE, RESULTS_VALUES } from "./guest/entry.js";
import type { GearsBridge } from "./host-bridge.js";
import { Partitions } from "./partitions.js";
import { isProxyKey } from "../routing/hidden-keys.js";
import { eventKeyRecords, keyRecords } from "./readers.js";
import type { LocalQueue, QueuedKeyEvent, Registration } from "./registration.js";

/** recordsOf()'s mark for a key whose last event carries its value: not read, no record of its own. */
const CARRIED: Record<string, JsonValue> = Object.freeze({});

/** Errors of a shard that answers again soon (failing over, a slot moving, starting). */
const TRANSIENT_READ_ERROR = /^(ERR upstream|CLUSTERDOWN|MOVED|ASK|TRYAGAIN|LOADING|MASTERDOWN|READONLY)/;
/** How long a batch whose keys cannot be read for such a reason is tried again. */
const READ_RETRY_FOR_MS = 60_000;
const FIRST_READ_RETRY_MS = 50;
const MAX_READ_RETRY_MS = 1000;
/**
 * Events one batch of a registration takes at most. A batch takes what queued while the one
 * before it ran: under writes faster than the handler, that grew without end, and a batch of
 * a few hundred thousand records went over the isolate's memory limit and failed whole (its
 * events lost). Ten thousand small records are a few MB in the guest; a bound of 1,000 cost
 * bench:events about 12 % of its rate (a batch's fixed costs paid ten times as often).
 */
const MAX_EVENTS_PER_BATCH = 10_000;

/** A script sent with RG.EXECUTE that registered something: its isolate lives on for its handlers. */
export interface GearsSession {
  id: string;
  description: string | null;
  /** The database it was registered from: its registrations see that database's events, its handlers run there. */
  db: number;
  isolate: GuestIsolate;
  /** The isolate's host side: hooks and triggers tell it which command they run for. */
  bridge: GearsBridge;
  registrations: Registration[];
  /** registerTimeEvent() timers, stopped with the session. */
  timers: NodeJS.Timeout[];
  /** The ACL user who registered it: its scripts run with that user's rights. Null without ACLs. */
  owner: string | null;
}

/**
 * Ends a session's isolate, timers and stream consumers. The consumer groups stay: a
 * session upgraded in place reads on from them, and a restart finds them.
 */
function endSession(session: GearsSession): void {
  for (const timer of session.timers) clearInterval(timer);
  for (const r of session.registrations) void r.consumer?.stop(false);
  void session.isolate.dispose().catch(() => {});
}

/** What the registry needs to know about this proxy. */
export interface RegistryOptions {
  /** This proxy's name as a stream consumer. */
  consumerName: string;
  /** How long a stream entry stays with a consumer that does not acknowledge it before another claims it. */
  claimIdleMs: () => number;
  /** How long a stream's lease lasts unless renewed: one proxy at a time consumes a stream. */
  streamLeaseMs: () => number;
  /** Finished executions kept per registration (MaxExecutionsPerRegistration). */
  maxExecutionsPerRegistration: () => number;
  /** Told of each finished execution (metrics on). */
  observer?: () => ExecutionObserver | null;
  /** MaxQueuedEvents: past it a registration's queue holds writes through the proxy back. */
  maxQueuedEvents?: () => number;
  /** Told when a session's isolate is found gone after one of its executions (its worker ended). */
  onIsolateGone?: (session: GearsSession) => void;
}

/**
 * The consumer group of a StreamReader registration: named after its session and its place
 * in the script, so an upgraded session and a restarted proxy read on from the same group.
 */
export function streamGroupName(sessionId: string, actionIndex: number): string {
  return `gears-proxy:${sessionId}:${actionIndex}`;
}

/**
 * Every live session and registration: dispatches keyspace events to the KeysReader
 * registrations they match (each registration handles its events in order, a batch at a
 * time, in its session's isolate) and answers RG.TRIGGER for CommandReader ones.
 */
/** Executions failing in a row before the registration is reported as failing repeatedly. */
const FAILURE_STREAK_WARN = 3;

export class RegistrationRegistry {
  private readonly sessions = new Map<string, GearsSession>();
  private executionCounter = 0;

  /**
   * Whether this proxy handles the keyspace events of a shard (its lease, when several
   * proxies share the shards); events of other shards are given to `onForeignEvents`.
   */
  ownsShard: (shard: string) => boolean = () => true;
  onForeignEvents: (events: QueuedKeyEvent[]) => void = () => {};

  constructor(
    private readonly router: Router,
    private readonly shards: Shards,
    private readonly log: Logger,
    private readonly executionId: () => string,
    private readonly options: RegistryOptions,
  ) {}

  session(id: string): GearsSession | undefined {
    return this.sessions.get(id);
  }

  allSessions(): GearsSession[] {
    return [...this.sessions.values()];
  }

  all(): Registration[] {
    return this.allSessions().flatMap((s) => s.registrations);
  }

  /** Whether some registration needs keyspace notifications (KeysReader, and StreamReader for xadd). */
  get hasKeyRegistrations(): boolean {
    return this.all().some((r) => r.reader === "KeysReader" || r.reader === "StreamReader");
  }

  /**
   * Whether writes through the proxy wait for this registry after their reply: for `sync`
   * registrations, and while some registration's queue is at MaxQueuedEvents (backpressure).
   */
  get holdsWrites(): boolean {
    return this.syncCount > 0 || this.overBound.size > 0;
  }

  /** Registrations whose queue holds MaxQueuedEvents events or more. */
  private readonly overBound = new Set<Registration>();

  private maxQueued(): number {
    return this.options.maxQueuedEvents?.() ?? DEFAULT_MAX_QUEUED_EVENTS;
  }

  /** Events of a registration waiting or in its batches running now (RG.DUMPREGISTRATIONS). */
  queuedOf(registration: Registration): number {
    let n = this.waitingOf(registration) + registration.inFlight.length;
    for (const local of registration.localQueues.values()) n += local.inFlight.length;
    return n;
  }

  /** Events waiting for a registration, not counting its batches running now. */
  private waitingOf(registration: Registration): number {
    let n = registration.queue.length;
    for (const local of registration.localQueues.values()) n += local.queue.length;
    return n;
  }

  /**
   * After `added` events queued on a registration: at its bound, writes through the proxy
   * start waiting for it (syncIdle), and the warning says so once per overload.
   *
   * Events from writers that bypass the proxy cannot be slowed, and they keep queuing past
   * the bound: every event stays, in order, at about 28 bytes plus its key (EventQueue).
   * Dropping some would break what handlers maintain (indexes, counters, copies) with no
   * way to find out which keys to repair; spilling them to a shard or a file moves the same
   * growth elsewhere and adds a failure mode. A queue past its bound under permanent
   * overload means the handler cannot keep up with the writers at all, which only the
   * operator can fix (a lighter handler, writers through the proxy): they are told by a
   * warning, numQueuedOverBound in RG.DUMPREGISTRATIONS and the queue-length metric.
   */
  private noteQueued(registration: Registration, added: number): void {
    const bound = this.maxQueued();
    const waiting = this.waitingOf(registration);
    if (waiting < bound) return;
    registration.stats.numQueuedOverBound += Math.min(added, waiting - bound);
    if (this.overBound.has(registration)) return;
    this.overBound.add(registration);
    this.log.warn(
      { registration: registration.id, queued: waiting, maxQueuedEvents: bound },
      "event queue at its bound (MaxQueuedEvents): writes through the proxy wait for the handler; " +
        "writes straight to the shards still queue (nothing is dropped)",
    );
  }

  /** After a batch: a queue back under its bound lets writes through the proxy go again. */
  private noteHandled(registration: Registration): void {
    if (!this.overBound.has(registration)) return;
    if (this.waitingOf(registration) >= this.maxQueued()) return;
    this.overBound.delete(registration);
    this.log.info(
      { registration: registration.id, queuedOverBound: registration.stats.numQueuedOverBound },
      "event queue back under its bound (MaxQueuedEvents)",
    );
  }

  private syncCount = 0;
  /**
   * Writes through the proxy waiting for the events queued before them (a registration's
   * queuedCount), and for the `xadd`s notified before them to sync StreamReader consumers.
   */
  private readonly writeWaiters = new MarkWaiters<Registration | StreamConsumer>();

  private hookCount = 0;
  /** Commands named in some KeysReader registration's `commands` (lower case). */
  commandsWatched = new Set<string>();

  /** Recounts what the hot path asks about (sync registrations, hooks) after a change. */
  private recount(): void {
    const all = this.all();
    this.syncCount = all.filter(
      (r) => (r.reader === "KeysReader" || r.reader === "StreamReader") && r.mode === "sync",
    ).length;
    this.hookCount = all.filter((r) => r.hook !== null).length;
    this.commandsWatched = new Set(all.flatMap((r) => r.commands ?? []));
    // A registration gone (unregistered, its session replaced) holds no write back any more.
    if (this.overBound.size > 0) {
      const live = new Set(all);
      for (const r of this.overBound) if (!live.has(r)) this.overBound.delete(r);
    }
    this.wakeIdleWaiters();
  }

  /**
   * Resolves once every event queued so far for a `sync` registration has run, and every
   * `xadd` notified so far to a sync StreamReader consumer has been read and run. Not "once
   * none is queued" nor "once no consumer is busy": writes straight to the shards may keep a
   * queue from ever emptying, or a stream's consumer from ever resting, and a write through
   * the proxy would wait for ever.
   */
  syncIdle(): Promise<void> {
    const marks = new Map<Registration | StreamConsumer, number>();
    if (this.syncCount > 0)
      for (const r of this.all()) {
        if (r.mode !== "sync") continue;
        if (r.handledCount < r.queuedCount) marks.set(r, r.queuedCount);
        const mark = r.consumer?.syncMark();
        if (mark !== undefined && !r.consumer!.passed(mark)) marks.set(r.consumer!, mark);
      }
    // A queue at its bound: until as many events as it holds past the bound have run. Not
    // "until it is under the bound": writes straight to the shards may keep it over.
    if (this.overBound.size > 0) {
      const bound = this.maxQueued();
      for (const r of this.overBound) {
        const mark = r.queuedCount - bound;
        const had = marks.get(r);
        if (r.handledCount < mark && (had === undefined || had < mark)) marks.set(r, mark);
      }
    }
    return this.writeWaiters.wait(marks);
  }

  private wakeIdleWaiters(): void {
    if (this.writeWaiters.size === 0) return;
    let live: Set<Registration> | null = null;
    this.writeWaiters.check((waited, mark) => {
      // A stopped consumer has passed every mark.
      if (waited instanceof StreamConsumer) return waited.passed(mark);
      // A registration gone (unregistered, its session replaced) holds nothing back.
      live ??= new Set(this.all());
      return !live.has(waited) || waited.handledCount >= mark;
    });
  }

  /** Installs a session, replacing `replaces` (UPGRADE / REPLACE_WITH) in one step. */
  install(session: GearsSession, replaces: string[]): void {
    for (const id of replaces) {
      const old = this.sessions.get(id);
      if (old === undefined) continue;
      this.sessions.delete(id);
      endSession(old);
    }
    this.sessions.set(session.id, session);
    for (const r of session.registrations) if (r.stream !== null) this.startConsumer(session, r);
    this.recount();
  }

  private startConsumer(session: GearsSession, registration: Registration): void {
    const consumer = new StreamConsumer(
      this.router,
      this.shards,
      this.log,
      streamGroupName(session.id, registration.actionIndex),
      this.options.consumerName,
      registration.stream!,
      this.options.claimIdleMs,
      this.options.streamLeaseMs,
      (stream, records) => this.runStreamBatch(session, registration, stream, records),
      () => this.wakeIdleWaiters(),
      session.db,
    );
    registration.consumer = consumer;
    consumer.start();
  }

  /** One batch of stream entries through the registration's pipeline, on the stream's shard. */
  private async runStreamBatch(
    session: GearsSession,
    registration: Registration,
    stream: Buffer,
    records: JsonValue[],
  ): Promise<{ failed: boolean }> {
    if (this.sessions.get(session.id) !== session) return { failed: true };
    const partitions = Partitions.of(this.shards, session.db);
    const partition = partitions.partitionOfSlot(keySlot(stream));
    const input = new Map<number, PackedRecords>([[partition, { records, values: null }]]);
    const execution = await this.runExecution(session, registration, partitions, input, records.length);
    return { failed: execution.errors.length > 0 || execution.status === "aborted" };
  }

  /** Why RG.(UN)PAUSEREGISTRATIONS cannot take this id; null when it can. */
  checkPausable(id: string, paused: boolean): string | null {
    const registration = this.all().find((r) => r.id === id);
    if (registration === undefined) return `Execution ${id} does not exists`;
    if (registration.consumer === null) {
      return `Reader ${registration.reader} does not support ${paused ? "pause" : "unpause"}`;
    }
    return null;
  }

  /** Pauses or resumes a StreamReader registration (checked with checkPausable first). */
  setPaused(id: string, paused: boolean): void {
    const consumer = this.all().find((r) => r.id === id)?.consumer;
    if (paused) consumer?.pause();
    else consumer?.unpause();
  }

  /** RG.UNREGISTER: false when no such registration. A session left empty goes away. */
  unregister(id: string): boolean {
    for (const session of this.sessions.values()) {
      const index = session.registrations.findIndex((r) => r.id === id);
      if (index === -1) continue;
      const [removed] = session.registrations.splice(index, 1);
      // Gone for good: its consumer groups go too.
      void removed.consumer?.stop(true);
      this.recount();
      if (session.registrations.length === 0) {
        this.sessions.delete(session.id);
        endSession(session);
      }
      return true;
    }
    return false;
  }

  /** The CommandReader registration hooking this command (name lower case), if any. */
  hookFor(
    name: string,
    argv: readonly Buffer[],
  ): { registration: Registration; session: GearsSession } | undefined {
    for (const session of this.sessions.values()) {
      for (const registration of session.registrations) {
        if (registration.hook !== name) continue;
        const prefix = registration.keyPrefix;
        if (prefix !== null && !(argv[1]?.toString().startsWith(prefix) ?? false)) continue;
        return { registration, session };
      }
    }
    return undefined;
  }

  /** Asked for every command a client sends: kept as a flag, not recomputed. */
  get hasHooks(): boolean {
    return this.hookCount > 0;
  }

  byTrigger(name: string): { registration: Registration; session: GearsSession } | undefined {
    for (const session of this.sessions.values()) {
      const registration = session.registrations.find(
        (r) => r.reader === "CommandReader" && r.trigger === name,
      );
      if (registration !== undefined) return { registration, session };
    }
    return undefined;
  }

  /**
   * Keyspace events from the shards: `xadd`s wake the stream consumers they concern; the
   * others queue on the KeysReader registrations they match, for the shards this proxy
   * owns (the rest go to `onForeignEvents`, kept in case this proxy takes those shards over).
   */
  dispatch(events: QueuedKeyEvent[], owned = false): void {
    events = events.filter((e) => !isProxyKey(e.key));
    if (events.length === 0) return;
    const consumers = this.all().filter((r) => r.consumer !== null);
    if (consumers.length > 0) {
      for (const e of events) {
        if (e.event !== "xadd") continue;
        const key = e.key.toString();
        for (const r of consumers) if (r.consumer!.matches(key)) r.consumer!.onAppended(e.key);
      }
    }
    if (!owned) {
      const mine: QueuedKeyEvent[] = [];
      const foreign: QueuedKeyEvent[] = [];
      // Events come in runs of one shard: its lease is asked once per run.
      let shard = "";
      let owns = false;
      for (const e of events) {
        if (e.shard !== shard || shard === "") {
          shard = e.shard;
          owns = this.ownsShard(shard);
        }
        (owns ? mine : foreign).push(e);
      }
      if (foreign.length > 0) this.onForeignEvents(foreign);
      events = mine;
    }
    for (const session of this.sessions.values()) {
      for (const registration of session.registrations) {
        if (registration.mode === "async_local") {
          const touched = new Set<string>();
          let added = 0;
          for (const e of events) {
            if (e.db !== session.db || !registration.matchesEvent(e)) continue;
            this.localQueue(registration, e.shard).queue.push(e);
            touched.add(e.shard);
            added++;
          }
          if (added === 0) continue;
          registration.queuedCount += added;
          this.noteQueued(registration, added);
          for (const shard of touched) void this.drainLocal(session, registration, shard);
          continue;
        }
        const queue = registration.queue;
        const before = queue.length;
        for (const e of events) if (e.db === session.db && registration.matchesEvent(e)) queue.push(e);
        if (queue.length > before) {
          registration.queuedCount += queue.length - before;
          this.noteQueued(registration, queue.length - before);
          void this.drain(session, registration);
        }
      }
    }
  }

  /**
   * The arrival time of the oldest event of `shard` not yet handled by any registration
   * (now, when there is none): a lease's "handled through" time.
   */
  handledThrough(shard: string): number {
    let oldest = Date.now();
    for (const r of this.all()) {
      const queues = [r.inFlight, ...[...r.localQueues.values()].map((q) => q.inFlight)];
      for (const queue of queues) {
        const first = queue.find((e) => e.shard === shard);
        if (first !== undefined && first.at < oldest) oldest = first.at;
      }
      for (const queue of [r.queue, ...[...r.localQueues.values()].map((q) => q.queue)]) {
        const at = queue.oldestAtOf(shard);
        if (at !== undefined && at < oldest) oldest = at;
      }
    }
    return oldest;
  }

  private localQueue(registration: Registration, shard: string): LocalQueue {
    let local = registration.localQueues.get(shard);
    if (local === undefined) {
      local = { queue: new EventQueue(), inFlight: [], running: false };
      registration.localQueues.set(shard, local);
    }
    return local;
  }

  /** async_local: one shard's events of a registration, in order, beside the other shards'. */
  private async drainLocal(session: GearsSession, registration: Registration, shard: string): Promise<void> {
    const local = this.localQueue(registration, shard);
    if (local.running) return;
    local.running = true;
    try {
      while (local.queue.length > 0 && this.sessions.get(session.id) === session) {
        local.inFlight = local.queue.take(MAX_EVENTS_PER_BATCH);
        await this.runBatch(session, registration, local.inFlight);
        registration.handledCount += local.inFlight.length;
        local.inFlight = [];
        this.noteHandled(registration);
        this.wakeIdleWaiters();
      }
    } finally {
      local.running = false;
      local.inFlight = [];
    }
  }

  /** Runs a registration's queued events, a batch at a time, in order. */
  private async drain(session: GearsSession, registration: Registration): Promise<void> {
    if (registration.running) return;
    registration.running = true;
    try {
      while (registration.queue.length > 0 && this.sessions.get(session.id) === session) {
        registration.inFlight = registration.queue.take(MAX_EVENTS_PER_BATCH);
        await this.runBatch(session, registration, registration.inFlight);
        registration.handledCount += registration.inFlight.length;
        registration.inFlight = [];
        this.noteHandled(registration);
        this.wakeIdleWaiters();
      }
      // Its session was unregistered or replaced (UPGRADE) meanwhile: what it had queued is
      // not run, as RedisGears drops it too; the log says how much.
      if (registration.queue.length > 0)
        this.log.info(
          { registration: registration.id, events: registration.queue.length },
          "registration ended with events not yet handled; they are dropped",
        );
    } finally {
      registration.running = false;
      registration.inFlight = [];
      this.wakeIdleWaiters();
    }
  }

  private async runBatch(
    session: GearsSession,
    registration: Registration,
    events: QueuedKeyEvent[],
  ): Promise<void> {
    const started = Date.now();
    for (let wait = FIRST_READ_RETRY_MS; ; wait = Math.min(wait * 2, MAX_READ_RETRY_MS)) {
      try {
        const partitions = Partitions.of(this.shards, session.db);
        const input = await this.recordsOf(registration, partitions, events);
        if (input.size > 0) await this.runExecution(session, registration, partitions, input, events.length);
        return;
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        // A shard failing over (or a slot moving) answers again soon: the batch waits for
        // it, in order, rather than losing its events. Other failures (NOPERM...) count.
        const transient = err instanceof UpstreamError || TRANSIENT_READ_ERROR.test(message);
        if (
          transient &&
          Date.now() - started < READ_RETRY_FOR_MS &&
          this.sessions.get(session.id) === session
        ) {
          await new Promise((resolve) => setTimeout(resolve, wait));
          continue;
        }
        registration.stats.record(Date.now() - started, [message], false, events.length);
        this.log.warn(
          { registration: registration.id, err: message },
          "could not read the keys of an event batch",
        );
        return;
      }
    }
  }

  /**
   * The records of a batch of events, by partition. Each distinct key is read once per
   * batch, however many events it had: a hot key (a set the handler itself grows) costs
   * one read per batch, not one per event.
   */
  private async recordsOf(
    registration: Registration,
    partitions: Partitions,
    events: QueuedKeyEvent[],
  ): Promise<Map<number, PackedRecords>> {
    // Each distinct key once: its slot (by where it lives now: the master that notified may
    // have been failed over since), its read, its record. A batch's events are mostly on a
    // few hot keys (a set the handler grows) or each on its own key.
    const keyIndex = new Map<string, number>();
    const keys: Buffer[] = [];
    const keyPartition: number[] = [];
    /** The value the key's last event of the batch carries (a write the proxy saw), if any. */
    const carried: (string | undefined)[] = [];
    const eventKey = new Array<number>(events.length);
    /** The key as UTF-8 text, when an event of it had it. */
    const texts: (string | undefined)[] = [];
    // One partition (one server): every key is in it, no slot to work out.
    const single = partitions.count <= 1;
    for (let i = 0; i < events.length; i++) {
      const key = events[i].key;
      // An event's text, when it has one, is its key's latin1 string too (ASCII).
      const name = events[i].text ?? key.toString("latin1");
      let k = keyIndex.get(name);
      if (k === undefined) {
        k = keys.length;
        keyIndex.set(name, k);
        keys.push(key);
        keyPartition.push(single ? 0 : partitions.partitionOfSlot(keySlot(key)));
      }
      carried[k] = events[i].value;
      texts[k] = events[i].text;
      eventKey[i] = k;
    }
    const keyRecord = new Array<Record<string, JsonValue> | null>(keys.length);
    const values = new Map<number, JsonValue[]>();
    const valuesOf = (partition: number): JsonValue[] => {
      let list = values.get(partition);
      if (list === undefined) values.set(partition, (list = []));
      return list;
    };
    // A key whose last event carries its value is not read: it holds that string, as of
    // that event (a later write's event follows, in this batch or the next).
    const stringKept = !registration.readValue || registration.matchesKeyType("string");
    const keysOf = new Map<number, number[]>();
    /** A carried value's index in its partition's values. */
    const carriedRef: number[] = [];
    for (let k = 0; k < keys.length; k++) {
      const value = carried[k];
      if (value !== undefined && registration.readValue) {
        if (!stringKept) {
          keyRecord[k] = null;
          continue;
        }
        // Its events' records are made below, from its text and its value's place.
        const partValues = valuesOf(keyPartition[k]);
        partValues.push(value);
        carriedRef[k] = partValues.length - 1;
        texts[k] ??= keys[k].toString();
        keyRecord[k] = CARRIED;
        continue;
      }
      const list = keysOf.get(keyPartition[k]);
      if (list === undefined) keysOf.set(keyPartition[k], [k]);
      else list.push(k);
    }
    // Every partition's keys are read at once, one round trip per shard.
    await Promise.all(
      [...keysOf].map(async ([partition, list]) => {
        const access = partitions.shard(partition);
        const mine = list.map((k) => keys[k]);
        const records = registration.readValue
          ? await eventKeyRecords(access, mine)
          : await keyRecords(access, mine, false);
        // Each distinct key's value is sent once; its events' records point at it.
        const partValues = valuesOf(partition);
        list.forEach((k, i) => {
          const record = { ...(records[i] as Record<string, JsonValue>) };
          if ("value" in record) {
            partValues.push(record.value);
            delete record.value;
            record.valueRef = partValues.length - 1;
          }
          const keep = !registration.readValue || registration.matchesKeyType(String(record.type));
          keyRecord[k] = keep ? record : null;
        });
      }),
    );
    const kept = new Map<number, JsonValue[]>();
    let lastPartition = -1;
    let lastList: JsonValue[] | undefined;
    for (let i = 0; i < events.length; i++) {
      const k = eventKey[i];
      const record = keyRecord[k];
      if (record === null) continue;
      const partition = keyPartition[k];
      // Consecutive events are mostly of one partition: its list is looked up once for them.
      if (partition !== lastPartition) {
        lastPartition = partition;
        lastList = kept.get(partition);
        if (lastList === undefined) kept.set(partition, (lastList = []));
      }
      const list = lastList!;
      // A carried value's record, the same fields in the same order as a read one's.
      if (record === CARRIED)
        list.push({ key: texts[k]!, type: "string", event: events[i].event, valueRef: carriedRef[k] });
      else list.push({ ...record, event: events[i].event });
    }
    const input = new Map<number, PackedRecords>();
    for (const [partition, records] of kept) input.set(partition, { records, values: valuesOf(partition) });
    return input;
  }

  /** One execution of a registration's steps on given records; updates its counters. */
  async runExecution(
    session: GearsSession,
    registration: Registration,
    partitions: Partitions,
    input: Map<number, PackedRecords>,
    events = 1,
    /** The caller reads the results at once (a hook's reply, RG.TRIGGER's): made as values. */
    resultsRead = false,
  ): Promise<Execution> {
    // Results only RG.GETRESULTS may ask for later stay as the guest's text until then, and
    // none are made when no execution is kept.
    const form = resultsRead
      ? RESULTS_VALUES
      : this.options.maxExecutionsPerRegistration() <= 0
        ? RESULTS_NONE
        : RESULTS_JSON;
    const execution = new Execution(
      this.executionId(),
      session.isolate,
      registration.action,
      registration.actionIndex,
      partitions,
      input,
      false,
      0,
      form,
    );
    execution.owner = session.owner;
    this.executionCounter++;
    registration.executions.push(execution);
    const started = Date.now();
    await execution.run();
    this.options.observer?.()?.executionFinished(execution);
    this.trimExecutions(registration);
    const streakBefore = registration.stats.failureStreak;
    registration.stats.record(Date.now() - started, execution.errors, execution.status === "aborted", events);
    this.logFailureStreak(registration, streakBefore, execution.errors);
    // The watchdog ended its worker (a builtin call past ScriptTimeoutMS...): every later
    // event of the session would fail with "the isolate is gone". After the failure is
    // counted: the session's new registrations take the counts over (carryOver).
    if (!session.isolate.alive) this.options.onIsolateGone?.(session);
    return execution;
  }

  /**
   * One failure is debug; the third in a row (then every hundredth) is a warning, and the
   * first success after that says so, so a broken registration shows without flooding the log.
   */
  private logFailureStreak(registration: Registration, before: number, errors: string[]): void {
    const streak = registration.stats.failureStreak;
    const id = registration.id;
    if (streak === 0) {
      if (before >= FAILURE_STREAK_WARN)
        this.log.info({ registration: id, failedBefore: before }, "registration succeeds again");
    } else if (streak === FAILURE_STREAK_WARN || streak % 100 === 0) {
      this.log.warn(
        { registration: id, failures: streak, err: errors[0] },
        "registration failing repeatedly",
      );
    } else if (streak > before) {
      this.log.debug({ registration: id, errors }, "registration execution failed");
    }
  }

  /** Drops the oldest finished executions beyond MaxExecutionsPerRegistration. */
  private trimExecutions(registration: Registration): void {
    const list = registration.executions;
    let excess =
      list.filter((e) => e.isFinished).length - Math.max(0, this.options.maxExecutionsPerRegistration());
    for (let i = 0; excess > 0 && i < list.length;) {
      if (list[i].isFinished) {
        list.splice(i, 1);
        excess--;
      } else i++;
    }
  }

  /** The kept executions of every registration. */
  registeredExecutions(): Execution[] {
    return this.all().flatMap((r) => r.executions);
  }

  findExecution(id: string): Execution | undefined {
    for (const r of this.all()) {
      const found = r.executions.find((e) => e.id === id);
      if (found !== undefined) return found;
    }
    return undefined;
  }

  /** RG.DROPEXECUTION of a registration's execution; false when there is none of that id. */
  dropExecution(id: string): boolean {
    for (const r of this.all()) {
      const index = r.executions.findIndex((e) => e.id === id);
      if (index === -1) continue;
      r.executions.splice(index, 1);
      return true;
    }
    return false;
  }

  /**
   * The hook and `commands` runs of each session, one after the other. getCommand() and
   * callNext() read the session bridge's `command`, set for a whole run: runs that overlapped
   * (a burst of hooked commands from many clients) saw another's command, or none, and
   * answered "callNext() can only be called from a command hook".
   */
  private readonly commandRuns = new WeakMap<GearsSession, Promise<unknown>>();

  private inCommandLine<T>(session: GearsSession, run: () => Promise<T>): Promise<T> {
    const before = this.commandRuns.get(session);
    const mine = before === undefined ? run() : before.then(run, run);
    this.commandRuns.set(
      session,
      mine.catch(() => {}),
    );
    return mine;
  }

  /** A hook or trigger run: getCommand()/callNext() see `argv` while it runs. */
  runCommand(
    found: { registration: Registration; session: GearsSession },
    partitions: Partitions,
    partition: number,
    argv: string[],
  ): Promise<Execution> {
    return this.inCommandLine(found.session, async () => {
      const bridge = found.session.bridge;
      const previous = bridge.command;
      bridge.command = argv;
      try {
        const input = new Map<number, PackedRecords>([[partition, { records: [argv], values: null }]]);
        return await this.runExecution(found.session, found.registration, partitions, input, 1, true);
      } finally {
        bridge.command = previous;
      }
    });
  }

  /**
   * The events a command that passed through the proxy caused, for the registrations whose
   * `commands` name it: each runs in the command's path, and may override its reply.
   */
  async runCommandEvents(
    command: string,
    argv: string[],
    events: QueuedKeyEvent[],
  ): Promise<{ value: JsonValue } | null> {
    let override: { value: JsonValue } | null = null;
    for (const session of [...this.sessions.values()]) {
      for (const registration of session.registrations) {
        const mine = events.filter((e) =>
          registration.matchesCommandEvent(command, e.key.toString(), e.event),
        );
        if (mine.length === 0) continue;
        const bridge = session.bridge;
        await this.inCommandLine(session, async () => {
          const previous = bridge.command;
          bridge.command = argv;
          bridge.overriddenReply = null;
          try {
            const partitions = Partitions.of(this.shards, session.db);
            const input = await this.recordsOf(registration, partitions, mine);
            if (input.size > 0)
              await this.runExecution(session, registration, partitions, input, mine.length);
            override = bridge.overriddenReply ?? override;
          } catch (err) {
            registration.stats.record(
              0,
              [err instanceof Error ? err.message : String(err)],
              false,
              mine.length,
            );
          } finally {
            bridge.command = previous;
            bridge.overriddenReply = null;
          }
        });
      }
    }
    return override;
  }

  clearStats(): void {
    for (const registration of this.all()) {
      registration.stats.clear();
      registration.consumer?.clearStats();
    }
  }

  close(): void {
    for (const session of this.sessions.values()) endSession(session);
    this.sessions.clear();
    this.recount();
  }
}
