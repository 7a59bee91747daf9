import type { Logger } from "../../observability/log.js";
import type { KeyEvent } from "../events/keyspace-source.js";
import { isProxyKey } from "../../routing/hidden-keys.js";
import type { Tagged } from "../guest/entry.js";
import { sandboxText, type TfLibraries, type TfLibrary } from "./libraries.js";
import type { MutedKeys } from "./muted-keys.js";

/** A keyspace trigger's counters (TFUNCTION LIST v): kept across REPLACE, as T&F kept them. */
export interface TriggerStats {
  numTrigger: number;
  numSuccess: number;
  numFailed: number;
  numFinished: number;
  lastError: string | null;
  lastExecutionTime: number;
  totalExecutionTime: number;
}

function prefixBytes(prefix: Tagged): Buffer {
  if (typeof prefix === "string") return Buffer.from(prefix);
  if (prefix !== null && "b" in prefix) return Buffer.from(prefix.b, "latin1");
  return Buffer.alloc(0);
}

/**
 * Runs the libraries' keyspace triggers for the keyspace events of the shards this proxy
 * handles, in order per library (so in order per key), and says when all have run: writes
 * through the proxy wait for that before their reply, as if the triggers ran inside them.
 */
export class KeyspaceTriggers {
  private readonly stats = new Map<string, TriggerStats>();
  private readonly queues = new Map<string, KeyEvent[]>();
  private readonly running = new Set<string>();
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly libraries: TfLibraries,
    private readonly muted: MutedKeys,
    private readonly log: Logger,
  ) {}

  /**
   * Whether some library has a keyspace trigger (writes wait for triggers then). Asked for
   * every write a client sends: kept as a flag, recounted when a library comes or goes.
   */
  active = false;

  recount(): void {
    this.active = this.libraries.all().some((l) => l.registrations.keyspaceTriggers.length > 0);
  }

  statsOf(library: string, trigger: string): TriggerStats {
    const id = `${library}\0${trigger}`;
    let s = this.stats.get(id);
    if (s === undefined) {
      s = {
        numTrigger: 0,
        numSuccess: 0,
        numFailed: 0,
        numFinished: 0,
        lastError: null,
        lastExecutionTime: 0,
        totalExecutionTime: 0,
      };
      this.stats.set(id, s);
    }
    return s;
  }

  /** Forgets a deleted library's counters. */
  forget(library: string): void {
    for (const id of this.stats.keys()) if (id.startsWith(`${library}\0`)) this.stats.delete(id);
  }

  onEvents(events: KeyEvent[]): void {
    for (const library of this.libraries.all()) {
      const triggers = library.registrations.keyspaceTriggers;
      if (triggers.length === 0) continue;
      const prefixes = triggers.map((t) => prefixBytes(t.prefix));
      const mine = events.filter(
        (e) =>
          !isProxyKey(e.key) &&
          !this.muted.has(e.key) &&
          prefixes.some((p) => e.key.length >= p.length && e.key.subarray(0, p.length).equals(p)),
      );
      if (mine.length === 0) continue;
      const queue = this.queues.get(library.name) ?? [];
      queue.push(...mine);
      this.queues.set(library.name, queue);
      void this.drain(library.name);
    }
  }

  /** Resolves when no trigger has events queued or running. */
  idle(): Promise<void> {
    if (this.queues.size === 0 && this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(name: string): Promise<void> {
    if (this.running.has(name)) return;
    this.running.add(name);
    try {
      for (;;) {
        const queue = this.queues.get(name);
        const event = queue?.shift();
        if (event === undefined) break;
        if (queue!.length === 0) this.queues.delete(name);
        const library = this.libraries.get(name);
        if (library !== undefined) await this.fire(library, event);
      }
    } finally {
      this.queues.delete(name);
      this.running.delete(name);
      if (this.queues.size === 0 && this.running.size === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const wake of waiters) wake();
      }
    }
  }

  private async fire(library: TfLibrary, event: KeyEvent): Promise<void> {
    for (const trigger of library.registrations.keyspaceTriggers) {
      const p = prefixBytes(trigger.prefix);
      if (event.key.length < p.length || !event.key.subarray(0, p.length).equals(p)) continue;
      const stats = this.statsOf(library.name, trigger.name);
      stats.numTrigger++;
      const started = Date.now();
      let error: string | null = null;
      try {
        const live = await this.libraries.revive(library);
        const out = await live.guest.fireKeyspaceTrigger(trigger.name, event.event, event.key);
        if ("err" in out) error = out.err;
      } catch (err) {
        error = sandboxText(err);
      }
      const took = Date.now() - started;
      stats.numFinished++;
      stats.lastExecutionTime = took;
      stats.totalExecutionTime += took;
      if (error === null) stats.numSuccess++;
      else {
        stats.numFailed++;
        stats.lastError = error;
        this.log.debug(
          { library: library.name, trigger: trigger.name, err: error },
          "keyspace trigger failed",
        );
      }
    }
  }
}
