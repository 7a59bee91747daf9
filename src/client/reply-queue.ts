import type { OutputBuffer } from "../io/output-buffer.js";
import type { Request } from "../resp/request-parser.js";
import { ReplySlot, type SlotOwner } from "./reply-slot.js";

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
 * filled, and the ones behind it that are. The bytes are relayed as they came: the
 * session picks the protocol (RESP2/RESP3) when it sends or builds each reply.
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
    if (slot === this.head) this.flush();
    this.owner.replyArrived();
  }

  flush(): void {
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

  /** Forgets every reply still queued (the connection ends). */
  clear(): void {
    this.head = null;
    this.tail = null;
  }

  /** The client is gone: replies arriving later are dropped. */
  close(): void {
    this.closed = true;
    this.clear();
  }
}
