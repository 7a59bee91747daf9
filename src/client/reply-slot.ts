import type { Request } from "../resp/request-parser.js";
import { encodeError } from "../resp/encode.js";
import type { ReplySink } from "../routing/lease.js";

/** What a slot reports to the session that owns it. */
export interface SlotOwner {
  slotFilled(slot: ReplySlot): void;
}

/**
 * The place of one reply in a client's output, in request order. Replies from several
 * upstreams may fill slots out of order; the session writes them out strictly in order.
 */
export class ReplySlot implements ReplySink {
  data: Buffer | null = null;
  /** More of the reply, written after `data` as they are (a large gears result, not joined). */
  rest: Buffer[] | null = null;
  next: ReplySlot | null = null;
  /** True while an upstream holds this slot (counted in the session's in-flight total). */
  upstream = false;
  /** Not written to the client (CLIENT REPLY OFF/SKIP). */
  silent = false;
  /** Close the connection once this reply is written (QUIT). */
  closeAfter = false;
  /** Runs when the reply arrives, before it is written; may replace it. */
  onReply: ((data: Buffer) => Buffer | void) | null = null;
  /** Holds the arrived reply back until this settles (writes waiting for `sync` handlers). */
  gate: (() => Promise<void>) | null = null;
  /** The command this slot answers and when it arrived, set only while metrics are on. */
  request: Request | null = null;
  /** The command answered, kept only while its client tracks keys (tracking/ places invalidations by it). */
  cause: Request | null = null;
  /** A frame nobody asked for (a message, an invalidation), not a reply. */
  pushed = false;
  /** Its request joined a client's cluster run: replies before it may wait for it (reply-queue.ts). */
  inRun = false;
  startedAt = 0;

  constructor(private readonly owner: SlotOwner) {}

  reply(data: Buffer): void {
    const onReply = this.onReply;
    if (onReply !== null) {
      // Once: a gated reply comes back here when its gate settles.
      this.onReply = null;
      data = onReply(data) ?? data;
    }
    const gate = this.gate;
    if (gate !== null) {
      this.gate = null;
      const fill = (): void => this.reply(data);
      gate().then(fill, fill);
      return;
    }
    this.data = data;
    this.owner.slotFilled(this);
  }

  /** A reply in several buffers, written in order. */
  replyParts(parts: Buffer[]): void {
    if (parts.length > 1) this.rest = parts.slice(1);
    this.reply(parts[0]);
  }

  fail(message: string): void {
    this.reply(encodeError(message));
  }
}
