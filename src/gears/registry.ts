import type { Logger } from "../observability/log.js";
import type { Router } from "../routing/router.js";
import type { JsonValue } from "../sandbox/types.js";
import { Execution, type PackedRecords } from "./execution.js";
import type { GuestIsolate } from "./guest-isolate.js";
import type { GearsBridge } from "./host-bridge.js";
import { Partitions } from "./partitions.js";
import { keyRecords } from "./readers.js";
import type { QueuedKeyEvent, Registration } from "./registration.js";

/** A script sent with RG.EXECUTE that registered something: its isolate lives on for its handlers. */
export interface GearsSession {
  id: string;
  description: string | null;
  isolate: GuestIsolate;
  /** The isolate's host side: hooks and triggers tell it which command they run for. */
  bridge: GearsBridge;
  registrations: Registration[];
  /** registerTimeEvent() timers, stopped with the session. */
  timers: NodeJS.Timeout[];
}

/** Ends a session's isolate and timers. */
function endSession(session: GearsSession): void {
  for (const timer of session.timers) clearInterval(timer);
  void session.isolate.dispose().catch(() => {});
}

/**
 * Every live session and registration: dispatches keyspace events to the KeysReader
 * registrations they match (each registration handles its events in order, a batch at a
 * time, in its session's isolate) and answers RG.TRIGGER for CommandReader ones.
 */
export class RegistrationRegistry {
  private readonly sessions = new Map<string, GearsSession>();
  private executionCounter = 0;

  constructor(
    private readonly router: Router,
    private readonly log: Logger,
    private readonly executionId: () => string,
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

  get hasKeyRegistrations(): boolean {
    return this.all().some((r) => r.reader === "KeysReader");
  }

  get hasSyncRegistrations(): boolean {
    return this.syncCount > 0;
  }

  private syncCount = 0;
  private idleWaiters: (() => void)[] = [];

  private hookCount = 0;

  /** Recounts what the hot path asks about (sync registrations, hooks) after a change. */
  private recount(): void {
    const all = this.all();
    this.syncCount = all.filter((r) => r.reader === "KeysReader" && r.mode === "sync").length;
    this.hookCount = all.filter((r) => r.hook !== null).length;
    this.wakeIdleWaiters();
  }

  private syncBusy(): boolean {
    return this.all().some((r) => r.mode === "sync" && (r.running || r.queue.length > 0));
  }

  /** Resolves when no `sync` registration has events queued or running. */
  syncIdle(): Promise<void> {
    if (!this.syncBusy()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdleWaiters(): void {
    if (this.idleWaiters.length === 0 || this.syncBusy()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
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
    this.recount();
  }

  /** RG.UNREGISTER: false when no such registration. A session left empty goes away. */
  unregister(id: string): boolean {
    for (const session of this.sessions.values()) {
      const index = session.registrations.findIndex((r) => r.id === id);
      if (index === -1) continue;
      session.registrations.splice(index, 1);
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

  /** Keyspace events from the shards: queue them on the registrations they match. */
  dispatch(events: QueuedKeyEvent[]): void {
    // The proxy's own keys ({gears-proxy}:...) are not the users' data.
    events = events.filter(
      (e) => !(e.key[0] === 123 && e.key.subarray(0, 13).toString() === "{gears-proxy}"),
    );
    if (events.length === 0) return;
    for (const session of this.sessions.values()) {
      for (const registration of session.registrations) {
        let queued = false;
        for (const e of events) {
          if (!registration.matchesKeyEvent(e.key.toString(), e.event)) continue;
          registration.queue.push(e);
          queued = true;
        }
        if (queued) void this.drain(session, registration);
      }
    }
  }

  /** Runs a registration's queued events, a batch at a time, in order. */
  private async drain(session: GearsSession, registration: Registration): Promise<void> {
    if (registration.running) return;
    registration.running = true;
    try {
      while (registration.queue.length > 0 && this.sessions.get(session.id) === session) {
        const batch = registration.queue.splice(0, registration.queue.length);
        await this.runBatch(session, registration, batch);
      }
    } finally {
      registration.running = false;
      this.wakeIdleWaiters();
    }
  }

  private async runBatch(
    session: GearsSession,
    registration: Registration,
    events: QueuedKeyEvent[],
  ): Promise<void> {
    const started = Date.now();
    try {
      const partitions = new Partitions(this.router);
      const input = await this.recordsOf(registration, partitions, events);
      if (input.size > 0) await this.runExecution(session, registration, partitions, input, events.length);
    } catch (err) {
      // Reading the keys failed (NOPERM, a lost shard...): the batch counts as one failure.
      const message = err instanceof Error ? err.message : String(err);
      registration.stats.record(Date.now() - started, [message], false, events.length);
      this.log.warn(
        { registration: registration.id, err: message },
        "could not read the keys of an event batch",
      );
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
    const masters = this.router.topology.masters();
    const byShard = new Map<string, QueuedKeyEvent[]>();
    for (const e of events) {
      const list = byShard.get(e.shard) ?? [];
      list.push(e);
      byShard.set(e.shard, list);
    }
    const input = new Map<number, PackedRecords>();
    for (const [shard, list] of byShard) {
      const partition = Math.max(
        0,
        masters.findIndex((m) => m.id === shard),
      );
      const distinct = new Map<string, Buffer>();
      for (const e of list) distinct.set(e.key.toString("latin1"), e.key);
      const keys = [...distinct.values()];
      const records = await keyRecords(partitions.shard(partition), keys, registration.readValue);
      // Each distinct key's value is sent once; its events' records point at it.
      const values: JsonValue[] = [];
      const byKey = new Map<string, Record<string, JsonValue>>();
      keys.forEach((k, i) => {
        const record = { ...(records[i] as Record<string, JsonValue>) };
        if ("value" in record) {
          values.push(record.value);
          delete record.value;
          record.valueRef = values.length - 1;
        }
        byKey.set(k.toString("latin1"), record);
      });
      const kept: JsonValue[] = [];
      for (const e of list) {
        const record = byKey.get(e.key.toString("latin1"))!;
        if (registration.readValue && !registration.matchesKeyType(String(record.type))) continue;
        kept.push({ ...record, event: e.event });
      }
      if (kept.length > 0) input.set(partition, { records: kept, values });
    }
    return input;
  }

  /** One execution of a registration's steps on given records; updates its counters. */
  async runExecution(
    session: GearsSession,
    registration: Registration,
    partitions: Partitions,
    input: Map<number, PackedRecords>,
    events = 1,
  ): Promise<Execution> {
    const execution = new Execution(
      this.executionId(),
      session.isolate,
      registration.action,
      registration.actionIndex,
      partitions,
      input,
      false,
    );
    this.executionCounter++;
    const started = Date.now();
    await execution.run();
    registration.stats.record(Date.now() - started, execution.errors, execution.status === "aborted", events);
    if (execution.errors.length > 0) {
      this.log.debug(
        { registration: registration.id, errors: execution.errors },
        "registration execution failed",
      );
    }
    return execution;
  }

  /** A hook or trigger run: getCommand()/callNext() see `argv` while it runs. */
  async runCommand(
    found: { registration: Registration; session: GearsSession },
    partitions: Partitions,
    partition: number,
    argv: string[],
  ): Promise<Execution> {
    const bridge = found.session.bridge;
    const previous = bridge.command;
    bridge.command = argv;
    try {
      const input = new Map<number, PackedRecords>([[partition, { records: [argv], values: null }]]);
      return await this.runExecution(found.session, found.registration, partitions, input);
    } finally {
      bridge.command = previous;
    }
  }

  clearStats(): void {
    for (const registration of this.all()) registration.stats.clear();
  }

  close(): void {
    for (const session of this.sessions.values()) endSession(session);
    this.sessions.clear();
    this.recount();
  }
}
