import type { Request } from "../resp/request-parser.js";
import { encodeError } from "../resp/encode.js";
import type { ReplySink } from "../routing/lease.js";

/** What a slot reports to the session that owns it. */
export interface SlotOwner {
  slotFilled(slot: ReplySlot): void;
}

const UPSTREAM = 1;
const SILENT = 2;
const CLOSE_AFTER = 4;
const PUSHED = 8;
const IN_RUN = 16;

/** What few slots carry: a reply in parts, a hook on its arrival, a gate, a tracking cause. */
interface SlotExtras {
  rest: Buffer[] | null;
  onReply: ((data: Buffer) => Buffer | void) | null;
  gate: (() => Promise<void>) | null;
  cause: Request | null;
}

/**
 * The place of one reply in a client's output, in request order. Replies from several
 * upstreams may fill slots out of order; the session writes them out strictly in order.
 */
export class ReplySlot implements ReplySink {
  data: Buffer | null = null;
  next: ReplySlot | null = null;
  /** The command this slot answers and when it arrived, set only while metrics or the slow log are on. */
  request: Request | null = null;
  startedAt = 0;
  /** The booleans below, one bit each: a slot is made per command, so it is kept small. */
  private flags = 0;
  /** The fields few slots use, made on first use (see SlotExtras). */
  private extras: SlotExtras | null = null;

  constructor(private readonly owner: SlotOwner) {}

  /** True while an upstream holds this slot (counted in the session's in-flight total). */
  get upstream(): boolean {
    return (this.flags & UPSTREAM) !== 0;
  }
  set upstream(on: boolean) {
    this.flags = on ? this.flags | UPSTREAM : this.flags & ~UPSTREAM;
  }

  /** Not written to the client (CLIENT REPLY OFF/SKIP). */
  get silent(): boolean {
    return (this.flags & SILENT) !== 0;
  }
  set silent(on: boolean) {
    this.flags = on ? this.flags | SILENT : this.flags & ~SILENT;
  }

  /** Close the connection once this reply is written (QUIT). */
  get closeAfter(): boolean {
    return (this.flags & CLOSE_AFTER) !== 0;
  }
  set closeAfter(on: boolean) {
    this.flags = on ? this.flags | CLOSE_AFTER : this.flags & ~CLOSE_AFTER;
  }

  /** A frame nobody asked for (a message, an invalidation), not a reply. */
  get pushed(): boolean {
    return (this.flags & PUSHED) !== 0;
  }
  set pushed(on: boolean) {
    this.flags = on ? this.flags | PUSHED : this.flags & ~PUSHED;
  }

  /** Its request joined a client's cluster run: replies before it may wait for it (reply-queue.ts). */
  get inRun(): boolean {
    return (this.flags & IN_RUN) !== 0;
  }
  set inRun(on: boolean) {
    this.flags = on ? this.flags | IN_RUN : this.flags & ~IN_RUN;
  }

  /** More of the reply, written after `data` as they are (a large gears result, not joined). */
  get rest(): Buffer[] | null {
    return this.extras === null ? null : this.extras.rest;
  }
  set rest(parts: Buffer[] | null) {
    if (parts !== null || this.extras !== null) this.more().rest = parts;
  }

  /** Runs when the reply arrives, before it is written; may replace it. */
  get onReply(): ((data: Buffer) => Buffer | void) | null {
    return this.extras === null ? null : this.extras.onReply;
  }
  set onReply(f: ((data: Buffer) => Buffer | void) | null) {
    if (f !== null || this.extras !== null) this.more().onReply = f;
  }

  /** Holds the arrived reply back until this settles (writes waiting for `sync` handlers). */
  get gate(): (() => Promise<void>) | null {
    return this.extras === null ? null : this.extras.gate;
  }
  set gate(f: (() => Promise<void>) | null) {
    if (f !== null || this.extras !== null) this.more().gate = f;
  }

  /** The command answered, kept only while its client tracks keys (tracking/ places invalidations by it). */
  get cause(): Request | null {
    return this.extras === null ? null : this.extras.cause;
  }
  set cause(request: Request | null) {
    if (request !== null || this.extras !== null) this.more().cause = request;
  }

  private more(): SlotExtras {
    return (this.extras ??= { rest: null, onReply: null, gate: null, cause: null });
  }

  reply(data: Buffer): void {
    const extras = this.extras;
    if (extras !== null) {
      const onReply = extras.onReply;
      if (onReply !== null) {
        // Once: a gated reply comes back here when its gate settles.
        extras.onReply = null;
        data = onReply(data) ?? data;
      }
      const gate = extras.gate;
      if (gate !== null) {
        extras.gate = null;
        const fill = (): void => this.reply(data);
        gate().then(fill, fill);
        return;
      }
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
