import type { OutputBuffer } from "../io/output-buffer.js";
import type { Request } from "../resp/request-parser.js";
import { ReplySlot, type SlotOwner } from "./reply-slot.js";

/** At most this many replies are held back for a run's reply still on its way. */
const HOLD_LIMIT = 256;

/**
 * Queues that began holding replies back since the hold timer last fired, and those that
 * did before that: the timer writes the older ones out, whatever is still on its way. A
 * hold thus lasts at most about HOLD_MS twice, so a slow node delays its neighbours'
 * replies little. (A bound in event-loop turns was too short: under load another node's
 * replies come several turns later.)
 */
const HOLD_MS = 1;
let holdingNow: ReplyQueue[] = [];
let holdingBefore: ReplyQueue[] = [];
let holdTimer: NodeJS.Timeout | null = null;

function releaseHolds(): void {
  const due = holdingBefore;
  holdingBefore = holdingNow;
  holdingNow = [];
  for (let i = 0; i < due.length; i++) due[i].release();
  holdTimer = holdingBefore.length > 0 ? setTimeout(releaseHolds, HOLD_MS) : null;
}

/** What the queue tells the connection it writes for. */
export interface QueueOwner {
  /** Bytes written to the client (metrics on). */
  countOut(bytes: number): void;
  /** A command's reply went out: the one seam where its latency is taken. */
  meter(request: Request, startedAt: number, data: Buffer): void;
  /** A reply that ends the connection (QUIT, protocol error) was written. */
  endAfterWrite(): void;
  /** Everything writable so far was written. */
  flushed(): void;
  /** An upstream's reply arrived: input held back for it may run again. */
  replyArrived(): void;
}

/**
 * One client's replies, in request order. Replies (from several upstreams, or computed by
 * the proxy) fill their slots in any order; the queue writes the head as soon as it is
 * filled, and the ones behind it that are, except that replies waiting for one of their
 * cluster run still on its way are held back briefly (see holds()). The bytes are relayed as
 * they came: the session picks the protocol (RESP2/RESP3) when it sends or builds each reply.
 */
export class ReplyQueue implements SlotOwner {
  private head: ReplySlot | null = null;
  private tail: ReplySlot | null = null;
  /** Slots an upstream (or a later computation) still has to fill. */
  inFlight = 0;
  private closed = false;

  constructor(
    private readonly out: OutputBuffer,
    private readonly owner: QueueOwner,
    /** Whether bytes out are counted (metrics on). */
    private readonly counted: boolean,
  ) {}

  get empty(): boolean {
    return this.head === null;
  }

  /**
   * Whether replies are still to be written to the client: queued here, or in the output
   * buffer (Redis' clientHasPendingReplies, which SCRIPT DEBUG looks at).
   */
  get unwritten(): boolean {
    return this.head !== null || this.out.pending > 0;
  }

  /** A new slot at the end of the order. */
  append(): ReplySlot {
    const slot = new ReplySlot(this);
    if (this.tail === null) this.head = slot;
    else this.tail.next = slot;
    this.tail = slot;
    return slot;
  }

  /** A new slot that an upstream will fill; counted in inFlight until it is. */
  appendAwaited(): ReplySlot {
    const slot = this.append();
    slot.upstream = true;
    this.inFlight++;
    return slot;
  }

  /** A slot filled at once: written now when nothing is owed before it. */
  appendNow(data: Buffer, slot: ReplySlot = this.append()): ReplySlot {
    slot.data = data;
    if (slot === this.head) this.flush();
    return slot;
  }

  /**
   * A frame nobody asked for (an invalidation), written right after the last slot for
   * which `after` holds, or first when none does.
   */
  insertPushed(frame: Buffer, after: (slot: ReplySlot) => boolean): void {
    let last: ReplySlot | null = null;
    for (let s = this.head; s !== null; s = s.next) if (after(s)) last = s;
    const slot = new ReplySlot(this);
    slot.data = frame;
    slot.pushed = true;
    if (last === null) {
      slot.next = this.head;
      this.head = slot;
      if (this.tail === null) this.tail = slot;
    } else {
      slot.next = last.next;
      last.next = slot;
      if (this.tail === last) this.tail = slot;
    }
    this.flush();
  }

  /** Bytes of replies that arrived behind one still awaited (bounded by the requests in flight). */
  held(): number {
    let held = 0;
    for (let slot = this.head; slot !== null; slot = slot.next) {
      if (slot.data !== null) held += slot.data.length;
      for (const part of slot.rest ?? []) held += part.length;
    }
    return held;
  }

  slotFilled(slot: ReplySlot): void {
    if (slot.upstream) {
      slot.upstream = false;
      this.inFlight--;
    }
    if (this.closed) return;
    if (slot === this.head || slot === this.waitingOn) this.flush();
    this.owner.replyArrived();
  }

  flush(): void {
    if (this.holds()) return;
    this.waitingOn = null;
    this.write();
  }

  /** Writes the filled replies at the head. */
  private write(): void {
    const out = this.out;
    let slot = this.head;
    while (slot !== null && slot.data !== null) {
      if (!slot.silent) {
        out.push(slot.data);
        if (this.counted) this.owner.countOut(slot.data.length);
        if (slot.rest !== null) {
          for (const part of slot.rest) {
            out.push(part);
            if (this.counted) this.owner.countOut(part.length);
          }
        }
      }
      if (slot.request !== null) this.owner.meter(slot.request, slot.startedAt, slot.data);
      if (slot.closeAfter) {
        this.clear();
        this.owner.endAfterWrite();
        return;
      }
      slot = slot.next;
    }
    this.head = slot;
    if (slot === null) this.tail = null;
    this.owner.flushed();
  }

  /** The run reply a filled prefix waits for, to leave with it in one write; null when none. */
  private waitingOn: ReplySlot | null = null;
  /** The filled replies ahead of waitingOn. */
  private heldCount = 0;
  /** Whether the queue is on a list of releaseHolds. */
  private listed = false;

  /**
   * Whether the filled replies at the head wait for a reply of the same cluster run that is
   * still on its way (another node's): the client's pipeline is answered in one write, not
   * one per node.
   */
  private holds(): boolean {
    const head = this.head;
    if (head === null || head.data === null) return false;
    // The replies before the one waited for were all in when it was found: the walk goes on
    // from there, so a pipeline's prefix is walked once, not once per node that answers.
    let stop = this.waitingOn ?? head.next;
    let filled = this.waitingOn === null ? 1 : this.heldCount;
    for (; stop !== null && stop.data !== null; stop = stop.next) {
      if (++filled === HOLD_LIMIT) return false;
    }
    if (stop === null || !stop.inRun) return false;
    this.waitingOn = stop;
    this.heldCount = filled;
    if (!this.listed) {
      this.listed = true;
      holdingNow.push(this);
      holdTimer ??= setTimeout(releaseHolds, HOLD_MS);
    }
    return true;
  }

  /** The hold's time is up (releaseHolds): what is filled is written now. */
  release(): void {
    this.listed = false;
    if (this.waitingOn === null || this.closed) return;
    this.waitingOn = null;
    this.write();
  }

  /** Forgets every reply still queued (the connection ends). */
  clear(): void {
    this.head = null;
    this.tail = null;
    this.waitingOn = null;
  }

  /** The client is gone: replies arriving later are dropped. */
  close(): void {
    this.closed = true;
    this.clear();
  }
}
