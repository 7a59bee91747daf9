import type { Logger } from "../../observability/log.js";
import { DEFAULT_MAX_QUEUED_EVENTS, EventQueue } from "../events/event-queue.js";
import type { KeyEvent } from "../events/keyspace-source.js";
import { AttributionGate, type PeerWrite, type WritePeers } from "../events/peer-writes.js";
import { MarkWaiters } from "../events/mark-waiters.js";
import { isProxyKey } from "../../routing/hidden-keys.js";
import type { Tagged, TriggerOutcomes } from "../guest/entry.js";
import { sandboxText, type TfLibraries, type TfLibrary } from "./libraries.js";
import type { MutedKeys } from "./muted-keys.js";
import { entryBudgetMs } from "../guest-isolate.js";

/**
 * Events T&F's keyspace triggers never saw: the module subscribed to Redis' "all" class,
 * which leaves out keymiss ("m") and new ("n"). The proxy turns keymiss on for gears
 * registrations that ask for it; a trigger that reads its missing key (TYPE...) would
 * otherwise run again on the keymiss of its own read, for ever.
 */
const NOT_FOR_TRIGGERS = new Set(["keymiss", "new"]);

/** A keyspace trigger's counters (TFUNCTION LIST v): kept across REPLACE, as T&F kept them. */
export interface TriggerStats {
  numTrigger: number;
  numSuccess: number;
  numFailed: number;
  numFinished: number;
  lastError: string | null;
  lastExecutionTime: number;
  totalExecutionTime: number;
  /**
   * Its events queued while its library's queue held MaxQueuedEvents or more (writes
   * straight to the shards: writes through the proxy wait for the triggers): none dropped.
   */
  numQueuedOverBound: number;
  /**
   * When its last run and its last failure ended (Date.now(), 0 before any): with --threads
   * each thread counts the runs of its shards, and the merged listing (list-stats.ts) takes
   * last_execution_time of the newest run and last_error of the newest failure.
   */
  lastRunAt: number;
  lastErrorAt: number;
}

function prefixBytes(prefix: Tagged): Buffer {
  if (typeof prefix === "string") return Buffer.from(prefix);
  if (prefix !== null && "b" in prefix) return Buffer.from(prefix.b, "latin1");
  return Buffer.alloc(0);
}

/** One trigger to run for one event. */
interface TriggerItem {
  trigger: string;
  event: KeyEvent;
}

/** A library's queue of items: each event tagged with its trigger's number (`names`). */
interface LibraryQueue {
  events: EventQueue;
  names: string[];
  /** Its first events, being run by an entry now (they stay in `events` until it ends). */
  running: number;
  /** At MaxQueuedEvents or more since the warning: it is not logged again until back under. */
  overBound: boolean;
}

/**
 * Items one guest entry takes at most: as many as a batch of TFCALLs (guest/tf/batch.ts), whose
 * machinery runs them, pipelining the calls of events of distinct slots.
 */
const MAX_ITEMS_PER_ENTRY = 256;

/**
 * Runs the libraries' keyspace triggers for the keyspace events of the shards this proxy
 * handles, in order per library (so in order per key), and says when all have run: writes
 * through the proxy wait for that before their reply, as if the triggers ran inside them.
 * Events queued meanwhile (writes straight to the shards come in bursts) run many to an
 * entry: one to an entry, each trigger's `client.call` a round trip of its own, they were
 * handled about 2,500 a second.
 */
export class KeyspaceTriggers {
  private readonly stats = new Map<string, TriggerStats>();
  private readonly queues = new Map<string, LibraryQueue>();
  private readonly running = new Set<string>();
  /**
   * Per library, items queued and items done (run or dropped) since the start: a library's
   * items are done in the order they queued, so "done >= a count of queued" means "all of
   * those have run".
   */
  private readonly queued = new Map<string, number>();
  private readonly done = new Map<string, number>();
  /** Writes through the proxy waiting for the triggers queued before them, by library. */
  private readonly waiters = new MarkWaiters<string>();

  constructor(
    private readonly libraries: TfLibraries,
    private readonly muted: MutedKeys,
    private readonly log: Logger,
    /** MaxQueuedEvents: a library's queue at it is logged, and its items counted, once per overload. */
    private readonly maxQueued: () => number = () => DEFAULT_MAX_QUEUED_EVENTS,
    /** Resolves once the events of every write of those keys sent so far are made (TfEvents.settled). */
    private readonly settled: (ids: readonly string[]) => Promise<void>,
  ) {}

  /** The other threads of a --threads proxy: who wrote a key passes between them (peer-writes.ts). */
  private peers: WritePeers | null = null;
  /** Unattributed events wait here for another thread's word (null without other threads). */
  private gate: AttributionGate | null = null;
  /** This thread's writes of other threads' shards, told to them at the end of the turn. */
  private outbox: PeerWrite[] = [];
  /** Every trigger's prefix, of every library: what concerns() matches (recount() renews it). */
  private prefixes: Buffer[] = [];

  /** Joins the other threads of a --threads proxy (threads/peers.ts). */
  joinPeers(peers: WritePeers): void {
    this.peers = peers;
    this.gate = new AttributionGate(
      peers,
      (e) => this.concerns(e),
      (events) => this.queueEvents(events),
    );
  }

  /** Writes another thread told of (it made them, of keys of shards this thread handles). */
  peerWrites(writes: readonly PeerWrite[]): void {
    this.gate?.told(writes);
  }

  /**
   * Events of shards another thread handles, as this thread's journal made them: those of its
   * own writes that a trigger would see are told to the other threads, so the owner knows who
   * wrote (a function's write fires nothing, a client's always fires). One message a turn.
   */
  onOthersEvents(events: readonly KeyEvent[]): void {
    if (this.peers === null) return;
    const before = this.outbox.length;
    for (const e of events)
      if (e.by !== undefined && this.concerns(e))
        this.outbox.push({
          shard: e.shard,
          db: e.db,
          key: e.key.toString("latin1"),
          event: e.event,
          by: e.by,
        });
    if (before === 0 && this.outbox.length > 0) queueMicrotask(() => this.tellPeers());
  }

  private tellPeers(): void {
    if (this.outbox.length === 0 || this.peers === null) return;
    const writes = this.outbox;
    this.outbox = [];
    this.peers.tell(writes);
  }

  /**
   * Another thread holds notifications of `keys` (db:key) and asks who wrote them: once the
   * events of every write this thread sent so far are made and told (the tell goes before
   * the answer), the keys among them a function of this thread is writing or just wrote.
   */
  async settleForPeer(keys: readonly string[]): Promise<string[]> {
    await this.settled(keys);
    this.tellPeers();
    return keys.filter((id) => this.muted.hasText(id.slice(id.indexOf(":") + 1)));
  }

  /** Whether a trigger would see the event: a user key, an event triggers see, a prefix of one. */
  private concerns(e: KeyEvent): boolean {
    if (NOT_FOR_TRIGGERS.has(e.event) || isProxyKey(e.key)) return false;
    for (const prefix of this.prefixes) if (startsWith(e.key, prefix)) return true;
    return false;
  }

  /**
   * Whether some library has a keyspace trigger (writes wait for triggers then). Asked for
   * every write a client sends: kept as a flag, recounted when a library comes or goes.
   */
  active = false;

  recount(): void {
    this.active = this.libraries.all().some((l) => l.registrations.keyspaceTriggers.length > 0);
    this.prefixes = this.libraries
      .all()
      .flatMap((l) => l.registrations.keyspaceTriggers.map((t) => prefixBytes(t.prefix)));
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
        numQueuedOverBound: 0,
        lastRunAt: 0,
        lastErrorAt: 0,
      };
      this.stats.set(id, s);
    }
    return s;
  }

  /** Forgets a deleted library's counters. */
  forget(library: string): void {
    for (const id of this.stats.keys()) if (id.startsWith(`${library}\0`)) this.stats.delete(id);
  }

  /** Keyspace events of the shards this thread handles. */
  onEvents(events: KeyEvent[]): void {
    if (this.gate === null) this.queueEvents(events);
    else this.gate.onEvents(events);
  }

  private queueEvents(events: KeyEvent[]): void {
    for (const library of this.libraries.all()) {
      const triggers = library.registrations.keyspaceTriggers;
      if (triggers.length === 0) continue;
      const prefixes = triggers.map((t) => prefixBytes(t.prefix));
      let queue: LibraryQueue | undefined;
      let tags: number[] | undefined;
      let added = 0;
      for (const event of events) {
        if (isProxyKey(event.key) || NOT_FOR_TRIGGERS.has(event.event) || this.mutes(event)) continue;
        for (let t = 0; t < triggers.length; t++) {
          if (!startsWith(event.key, prefixes[t])) continue;
          if (queue === undefined) {
            queue = this.queueOf(library.name);
            tags = triggers.map((trigger) => tagOf(queue!, trigger.name));
          }
          queue.events.push(event, tags![t]);
          added++;
        }
      }
      if (queue === undefined) continue;
      this.queued.set(library.name, (this.queued.get(library.name) ?? 0) + added);
      this.noteQueued(library.name, queue, added);
      void this.drain(library.name);
    }
  }

  /**
   * Whether an event is a function's or trigger's own write, which fires no keyspace trigger.
   * The write journal says who wrote when it knows (KeyEvent.by): a client's write always
   * fires, even on a key a function wrote a moment ago. A notification it cannot attribute
   * (a writer past the proxy, or a second event of a function's write such as SET EX's
   * "expire") is muted while a function's write of its key is recent (MutedKeys).
   */
  private mutes(event: KeyEvent): boolean {
    return event.by === undefined ? this.muted.has(event.key) : event.by === "function";
  }

  /**
   * Writes through the proxy wait for every trigger queued before them (idle()): they cannot
   * overrun a queue. Writes straight to the shards cannot be slowed: at MaxQueuedEvents their
   * events still queue (none is dropped: a trigger's work lost could not be told or redone),
   * and the warning, the counter and TFUNCTION LIST say the triggers cannot keep up with
   * them (registry.ts, noteQueued(), says why more fully).
   */
  private noteQueued(library: string, queue: LibraryQueue, added: number): void {
    const bound = this.maxQueued();
    const waiting = queue.events.length - queue.running;
    if (waiting < bound) return;
    const over = Math.min(added, waiting - bound);
    // Counted against the triggers of the last events queued.
    const tags: number[] = [];
    queue.events.peekTail(over, tags);
    for (const tag of tags) this.statsOf(library, queue.names[tag]).numQueuedOverBound++;
    if (queue.overBound) return;
    queue.overBound = true;
    this.log.warn(
      { library, queued: waiting, maxQueuedEvents: bound },
      "keyspace trigger queue at its bound (MaxQueuedEvents): writes straight to the shards " +
        "outrun the triggers; their events still queue (nothing is dropped)",
    );
  }

  private queueOf(name: string): LibraryQueue {
    let queue = this.queues.get(name);
    if (queue === undefined) {
      queue = { events: new EventQueue(), names: [], running: 0, overBound: false };
      this.queues.set(name, queue);
    }
    return queue;
  }

  /**
   * Resolves once every trigger queued so far has run. Not "once none is queued": writes
   * straight to Redis may keep the queues from ever emptying, and a write through the proxy
   * would wait for ever.
   */
  idle(): Promise<void> {
    // Events waiting in the gate for their writer's word count as queued: marks are taken once they left it.
    if (this.gate?.holding === true) return this.gate.drained().then(() => this.marks());
    return this.marks();
  }

  private marks(): Promise<void> {
    const marks = new Map<string, number>();
    for (const [name, n] of this.queued) if ((this.done.get(name) ?? 0) < n) marks.set(name, n);
    return this.waiters.wait(marks);
  }

  private finished(name: string, count: number): void {
    this.done.set(name, (this.done.get(name) ?? 0) + count);
    this.waiters.check((lib, mark) => (this.done.get(lib) ?? 0) >= mark);
  }

  private async drain(name: string): Promise<void> {
    if (this.running.has(name)) return;
    this.running.add(name);
    try {
      for (;;) {
        const queue = this.queues.get(name);
        if (queue === undefined || queue.events.length === 0) break;
        const tags: number[] = [];
        const events = queue.events.peek(MAX_ITEMS_PER_ENTRY, tags);
        const items = events.map((event, i): TriggerItem => ({ trigger: queue.names[tags[i]], event }));
        const library = this.libraries.get(name);
        let ran = items.length;
        queue.running = items.length;
        if (library !== undefined) ran = await this.fire(library, items);
        queue.running = 0;
        // Not started (the entry's time budget was spent): left first in line for the next entry.
        queue.events.drop(ran);
        if (queue.overBound && queue.events.length < this.maxQueued()) {
          queue.overBound = false;
          this.log.info({ library: name }, "keyspace trigger queue back under its bound (MaxQueuedEvents)");
        }
        this.finished(name, ran);
      }
    } finally {
      // Whatever is left (an entry that threw) counts as done, and as failed: nothing waits
      // on it for ever, and nothing is dropped unseen.
      const queue = this.queues.get(name);
      const left = queue?.events.length ?? 0;
      if (left > 0) {
        const tags: number[] = [];
        queue!.events.peekTail(left, tags);
        for (const tag of tags) this.count(name, queue!.names[tag], "dropped: the trigger entry failed", 0);
        this.log.warn({ library: name, events: left }, "keyspace trigger items dropped: their entry failed");
      }
      this.queues.delete(name);
      this.running.delete(name);
      this.finished(name, left);
    }
  }

  /** Runs `items` in one entry of the library's isolate; how many of them it started. */
  private async fire(library: TfLibrary, items: TriggerItem[]): Promise<number> {
    // The library may have been replaced since the events queued: its triggers now decide.
    const current = new Map(
      library.registrations.keyspaceTriggers.map((t) => [t.name, prefixBytes(t.prefix)]),
    );
    // One database per entry: its triggers' calls run where their keys are (T&F runs a trigger
    // in the database of its event); the items of another database go in the next entry.
    const db = items[0].event.db;
    let sameDb = 1;
    while (sameDb < items.length && items[sameDb].event.db === db) sameDb++;
    const runnable = items.slice(0, sameDb).filter((x) => {
      const prefix = current.get(x.trigger);
      return prefix !== undefined && startsWith(x.event.key, prefix);
    });
    if (runnable.length === 0) return sameDb;
    const started = Date.now();
    let outcomes: TriggerOutcomes;
    let whole: Promise<TriggerOutcomes> | undefined;
    let live = library;
    try {
      live = await this.libraries.revive(library);
      const budget = entryBudgetMs(live.guest.isolate);
      // The entry's outcomes, or, with async callbacks, those it had when every callback
      // reached its first await (TRIGGERS_STARTED): the writes are answered then, and the
      // async ones are counted when the entry ends.
      const early = new Promise<TriggerOutcomes>((resolve) => (live.bridge.triggersStarted = resolve));
      whole = live.guest.fireKeyspaceTriggers(
        runnable.map((x) => [x.trigger, x.event.event, x.event.key]),
        db,
        budget,
        () => (live.bridge.db = db),
      );
      try {
        outcomes = await Promise.race([whole, early]);
      } finally {
        live.bridge.triggersStarted = null;
      }
    } catch (err) {
      // The entry failed as a whole (its isolate ended: the time or memory limit): each counts.
      const error = sandboxText(err);
      const took = Date.now() - started;
      for (const x of runnable) this.count(library.name, x.trigger, error, took);
      return sameDb;
    }
    const ran = Math.min(runnable.length, outcomes.length / 2);
    const pending: number[] = [];
    for (let i = 0; i < ran; i++) {
      if (outcomes[2 * i + 1] === -1) pending.push(i);
      else this.countRun(library.name, runnable[i], outcomes, i);
    }
    if (pending.length > 0 && whole !== undefined) this.countLater(live, runnable, pending, whole, started);
    // Items dropped above ran nowhere; the rest of `runnable` goes again, in order.
    return ran === runnable.length ? sameDb : items.indexOf(runnable[ran]);
  }

  /** Counts the async callbacks of an entry when it ends (as long as their library is still the one loaded). */
  private countLater(
    library: TfLibrary,
    runnable: TriggerItem[],
    pending: number[],
    whole: Promise<TriggerOutcomes>,
    started: number,
  ): void {
    const current = (): boolean => this.libraries.get(library.name) === library;
    whole.then(
      (outcomes) => {
        if (!current()) return;
        for (const i of pending) this.countRun(library.name, runnable[i], outcomes, i);
      },
      (err: unknown) => {
        if (!current()) return;
        const error = sandboxText(err);
        for (const i of pending) this.count(library.name, runnable[i].trigger, error, Date.now() - started);
      },
    );
  }

  /** Counts item `i` of an entry by its outcome: its error text or null, then its ms. */
  private countRun(library: string, item: TriggerItem, outcomes: TriggerOutcomes, i: number): void {
    this.count(library, item.trigger, outcomes[2 * i] as string | null, outcomes[2 * i + 1] as number);
  }

  private count(library: string, trigger: string, error: string | null, took: number): void {
    const stats = this.statsOf(library, trigger);
    stats.numTrigger++;
    stats.numFinished++;
    stats.lastExecutionTime = took;
    stats.totalExecutionTime += took;
    stats.lastRunAt = Date.now();
    if (error === null) stats.numSuccess++;
    else {
      stats.numFailed++;
      stats.lastError = error;
      stats.lastErrorAt = stats.lastRunAt;
      this.log.debug({ library, trigger, err: error }, "keyspace trigger failed");
    }
  }
}

/** A trigger's number in its library's queue (names stay: events queued under them keep theirs). */
function tagOf(queue: LibraryQueue, trigger: string): number {
  let tag = queue.names.indexOf(trigger);
  if (tag === -1) tag = queue.names.push(trigger) - 1;
  return tag;
}

function startsWith(key: Buffer, prefix: Buffer): boolean {
  return key.length >= prefix.length && key.subarray(0, prefix.length).equals(prefix);
}
