import type { KeyEvent, WriteSource } from "./keyspace-source.js";

/**
 * Who wrote what, across the threads of a --threads proxy. Each thread is a proxy of its own:
 * the shard's keyspace triggers run on the thread holding its lease, and a write made through
 * another thread reaches that one only as a keyspace notification, which says nothing of its
 * writer. The writing thread's journal knows (KeyEvent.by): it passes the events it made for
 * shards it does not handle to the other threads, and the owner attributes the notification
 * as its own journal would have.
 */

/** One event a thread's journal made of its own write, for the thread handling the key's shard. */
export interface PeerWrite {
  /** The master the key is on (KeyEvent.shard): only the thread handling it keeps the write. */
  shard: string;
  db: number;
  /** The key's bytes as a latin1 string. */
  key: string;
  event: string;
  by: WriteSource;
}

/** How a thread reaches the others (threads/peers.ts). */
export interface WritePeers {
  /** Hands this thread's writes of other threads' shards to the other threads. */
  tell(writes: PeerWrite[]): void;
  /**
   * Asks every other thread to tell the writes it made up to now (their tells reach this
   * thread before their answers), and which of `keys` (db:key) a function of theirs is writing
   * now or wrote a moment ago (their MutedKeys): resolves with those.
   */
  settle(keys: string[]): Promise<string[]>;
}

/**
 * A peer's writes not matched to a notification by then are dropped (their notification was
 * lost). Not sooner: while a function of this thread writes a key, its journal may take a
 * peer's notification of the key for the function's, and let the function's own go on
 * unattributed when the key's writes stop, at the function's end (lock-redis-timeout, 500 ms
 * by default, bounds it): that one then takes the peer's word.
 */
const KEPT_MS = 10_000;

/** A key of a database, as the threads name it to each other: `db:key` (the key's latin1 string). */
export const keyId = (db: number, key: string): string => `${db}:${key}`;

/**
 * The other threads' writes, told before their notification reached this thread: each one
 * names the writer of one notification of its key and event, once.
 */
export class PeerWriteTable {
  private readonly byKey = new Map<string, { event: string; by: WriteSource; at: number }[]>();
  /** Keys in the order their writes came, for dropping the old ones. */
  private readonly order: { id: string; at: number }[] = [];

  get size(): number {
    return this.byKey.size;
  }

  add(writes: readonly PeerWrite[]): void {
    const at = Date.now();
    this.expire(at);
    for (const w of writes) {
      const id = keyId(w.db, w.key);
      let list = this.byKey.get(id);
      if (list === undefined) {
        list = [];
        this.byKey.set(id, list);
      }
      list.push({ event: w.event, by: w.by, at });
      this.order.push({ id, at });
    }
  }

  /** The writer of a notification of `event` on `key` a peer told of (taken: it names one notification), if any. */
  take(db: number, key: Buffer, event: string): WriteSource | undefined {
    if (this.byKey.size === 0) return undefined;
    const id = keyId(db, key.toString("latin1"));
    const list = this.byKey.get(id);
    const i = list?.findIndex((w) => w.event === event) ?? -1;
    if (i === -1) return undefined;
    const by = list![i].by;
    list!.splice(i, 1);
    if (list!.length === 0) this.byKey.delete(id);
    return by;
  }

  private expire(now: number): void {
    let n = 0;
    while (n < this.order.length && this.order[n].at < now - KEPT_MS) {
      const { id, at } = this.order[n++];
      const list = this.byKey.get(id);
      if (list === undefined) continue;
      while (list.length > 0 && list[0].at <= at) list.shift();
      if (list.length === 0) this.byKey.delete(id);
    }
    if (n > 0) this.order.splice(0, n);
  }
}

/** How long held events wait for their writers' words before a round of questions. */
const WORD_WAIT_MS = 1;

/** A notification waiting for its writer's word. */
interface Held {
  event: KeyEvent;
  /** The round of questions that answers for it (one begun after it came); 0: none yet. */
  round: number;
  /** Decided: its writer is known, or no thread wrote it. */
  decided: boolean;
}

/**
 * Keyspace events on their way to the triggers, in order. One nobody attributed (KeyEvent.by
 * unset) that a trigger would see may be another thread's write: it waits for that thread's
 * word (PeerWriteTable), and when none came yet, for a round of questions to every other
 * thread, which answer once their writes so far have been told. Events behind one waiting
 * wait too: triggers see a key's events in order.
 */
export class AttributionGate {
  private readonly table = new PeerWriteTable();
  private readonly held: Held[] = [];
  private round = 0;
  private asking = false;
  /** Events that entered the gate and that left it, since the start: drained() compares them. */
  private entered = 0;
  private left = 0;
  private readonly drains: { mark: number; wake: () => void }[] = [];
  /** A round of questions about to start, unless the words come first. */
  private askTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly peers: WritePeers,
    /** Whether a trigger would see the event (its key matches a prefix...). */
    private readonly concerns: (event: KeyEvent) => boolean,
    /** Where events go once attributed, in order. */
    private readonly pass: (events: KeyEvent[]) => void,
  ) {}

  /** Writes another thread told of. */
  told(writes: readonly PeerWrite[]): void {
    this.table.add(writes);
    if (this.held.length === 0) return;
    for (const h of this.held) if (!h.decided) this.attribute(h);
    this.release();
  }

  onEvents(events: KeyEvent[]): void {
    let at = 0;
    if (this.held.length === 0) {
      // Nothing waits: events go on at once up to the first that must wait.
      while (at < events.length && !this.mustWait(events[at])) at++;
      if (at === events.length) return this.pass(events);
      if (at > 0) this.pass(events.slice(0, at));
      this.hold(events[at++], false);
    }
    for (; at < events.length; at++) this.hold(events[at], !this.mustWait(events[at]));
    this.release();
  }

  /** Whether events wait in the gate. */
  get holding(): boolean {
    return this.held.length > 0;
  }

  /** Resolves once every event in the gate now has left it. */
  drained(): Promise<void> {
    if (this.left >= this.entered) return Promise.resolve();
    const mark = this.entered;
    return new Promise((wake) => this.drains.push({ mark, wake }));
  }

  private hold(event: KeyEvent, decided: boolean): void {
    this.entered++;
    this.held.push({ event, round: 0, decided });
  }

  /** Whether an event waits for its writer's word: unattributed, one a trigger sees, none told of it yet. */
  private mustWait(event: KeyEvent): boolean {
    if (event.by !== undefined || !this.concerns(event)) return false;
    event.by = this.table.take(event.db, event.key, event.event);
    return event.by === undefined;
  }

  private attribute(h: Held): void {
    h.event.by = this.table.take(h.event.db, h.event.key, h.event.event);
    if (h.event.by !== undefined) h.decided = true;
  }

  /** Events decided at the head go on; a round of questions starts for the rest. */
  private release(): void {
    let n = 0;
    while (n < this.held.length && this.held[n].decided) n++;
    if (n > 0) {
      this.pass(this.held.splice(0, n).map((h) => h.event));
      this.left += n;
      this.wakeDrains();
    }
    if (this.held.length > 0 && !this.asking && this.askTimer === null)
      // The writer's word is usually a moment behind the notification (one hop through the
      // supervisor, against a question round's two and a barrier): a round starts only if it
      // has not come by then.
      this.askTimer = setTimeout(() => {
        this.askTimer = null;
        if (this.held.length > 0 && !this.asking) void this.ask();
      }, WORD_WAIT_MS);
  }

  /** One round of questions for the events undecided now. */
  private async ask(): Promise<void> {
    const round = ++this.round;
    const keys = new Set<string>();
    for (const h of this.held) {
      if (h.decided || h.round !== 0) continue;
      h.round = round;
      keys.add(keyId(h.event.db, h.event.key.toString("latin1")));
    }
    if (keys.size === 0) return;
    this.asking = true;
    let muted: string[] = [];
    try {
      muted = await this.peers.settle([...keys]);
    } catch {
      // No answer: the events go on as nobody's, as they did before threads told each other.
    } finally {
      this.asking = false;
    }
    const mutedIds = new Set(muted);
    for (const h of this.held) {
      if (h.decided || h.round !== round) continue;
      this.attribute(h);
      if (h.decided) continue;
      // Another thread's function writes the key: as this thread's MutedKeys would say of its own.
      if (mutedIds.has(keyId(h.event.db, h.event.key.toString("latin1")))) h.event.by = "function";
      h.decided = true;
    }
    this.release();
  }

  private wakeDrains(): void {
    if (this.drains.length === 0) return;
    let kept = 0;
    for (const d of this.drains) {
      if (this.left >= d.mark) d.wake();
      else this.drains[kept++] = d;
    }
    this.drains.length = kept;
  }
}
