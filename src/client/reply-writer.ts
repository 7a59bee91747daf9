import type { OutputBuffer } from "../io/output-buffer.js";
import { encodeError, encodeValue } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import { RespVerbatim, type Protocol, type RespValue } from "../resp/values.js";
import { Metrics } from "../observability/metrics.js";
import type { ProxyContext } from "./context.js";
import { ReplyQueue, type QueueOwner } from "./reply-queue.js";
import type { ReplySlot } from "./reply-slot.js";
import type { TrackingState } from "./tracking/state.js";

/** What the writer reads of the client, and tells it. */
export interface WriterHost extends Pick<QueueOwner, "endAfterWrite" | "flushed" | "replyArrived"> {
  readonly ctx: ProxyContext;
  readonly addr: string;
  /** CLIENT SETNAME's name, as the slow log records it. */
  readonly name: string;
  readonly proto: Protocol;
  readonly tracking: TrackingState | null;
  /** CLIENT REPLY: on, off, or skip the next reply. */
  replyMode: "on" | "off" | "skip";
}

/**
 * Where a client's replies are written: each command takes a place in the ReplyQueue in
 * request order, marked for CLIENT REPLY, client tracking (which command may carry a key's
 * old value) and metering (the latency its client saw, taken when its reply goes out).
 */
export class ReplyWriter implements QueueOwner {
  readonly queue: ReplyQueue;
  /** The command being run (CLIENT LIST's cmd, tracking's cause). */
  lastRequest: Request | null = null;
  /** The command being run and its arrival time, until its first slot takes them (metrics on). */
  private metered: Request | null = null;
  private meteredAt = 0;
  /** Commands are timed only for metrics or the slow log. */
  private readonly timed: boolean;

  constructor(
    out: OutputBuffer,
    private readonly host: WriterHost,
  ) {
    const ctx = host.ctx;
    this.timed = ctx.metrics !== null || ctx.slowlog.enabled;
    this.queue = new ReplyQueue(out, this, ctx.metrics !== null);
  }

  /** A command starts: its first slot is the reply its client waits for. */
  begin(request: Request): void {
    if (this.timed) {
      this.metered = request;
      this.meteredAt = Metrics.now();
    }
    this.lastRequest = request;
  }

  /** A place in the reply order; a `pushed` frame (pub/sub) is written whatever CLIENT REPLY says. */
  slot(pushed: boolean, awaited: boolean): ReplySlot {
    const slot = awaited ? this.queue.appendAwaited() : this.queue.append();
    const host = this.host;
    if (pushed) slot.pushed = true;
    else if (host.tracking !== null) slot.cause = this.lastRequest;
    if (this.metered !== null) {
      // The command's first reply is the one the client waits for; later ones are pushes.
      slot.request = this.metered;
      slot.startedAt = this.meteredAt;
      this.metered = null;
    }
    if (host.replyMode !== "on" && !pushed) {
      slot.silent = true;
      if (host.replyMode === "skip") host.replyMode = "on";
    }
    return slot;
  }

  /** A slot an upstream (or a later computation) will fill; counted until it does. */
  awaited(): ReplySlot {
    return this.slot(false, true);
  }

  now(data: Buffer): ReplySlot {
    return this.queue.appendNow(data, this.slot(false, false));
  }

  error(message: string): void {
    this.now(encodeError(message));
  }

  /** A reply the proxy built, encoded in the client's protocol. */
  value(value: RespValue): void {
    this.now(encodeValue(value, this.host.proto));
  }

  /** Text the proxy built (INFO, CLIENT LIST): a verbatim string in RESP3, as Redis sends it. */
  text(text: string): void {
    this.value(new RespVerbatim("txt", Buffer.from(text)));
  }

  /** A last reply: the connection closes once it and every earlier one are written. */
  last(data: Buffer): void {
    const slot = this.slot(false, false);
    slot.closeAfter = true;
    this.queue.appendNow(data, slot);
  }

  /** A frame the server sent unasked (a message, a MONITOR line): written after what is queued. */
  pushed(frame: Buffer): void {
    this.queue.appendNow(frame, this.slot(true, false));
  }

  /**
   * An invalidation of `keys` (null: every key), placed among the queued replies by the
   * tracking table (follows): as Redis writes a command's own invalidations after its reply
   * and others' at once, and so that a reply that may carry a key's old value is never
   * written after the invalidation of that key.
   */
  invalidation(frame: Buffer, keys: readonly Buffer[] | null): void {
    const tracking = this.host.ctx.tracking;
    this.queue.insertPushed(frame, (s) => tracking.follows(s, keys));
  }

  // ---- QueueOwner ----------------------------------------------------------------------

  countOut(bytes: number): void {
    this.host.ctx.metrics?.clientBytesOut(bytes);
  }

  /** The one seam where a command's reply goes out: counted with the latency its client saw. */
  meter(request: Request, startedAt: number, data: Buffer): void {
    const host = this.host;
    const us = (Metrics.now() - startedAt) * 1000;
    host.ctx.metrics?.commandDone(request.name, us / 1e6, data);
    // Redis logs the commands EXEC runs, never EXEC itself.
    const slowlog = host.ctx.slowlog;
    if (request.name !== "exec" && slowlog.logs(us)) slowlog.record(us, request, host.addr, host.name);
  }

  endAfterWrite(): void {
    this.host.endAfterWrite();
  }

  flushed(): void {
    this.host.flushed();
  }

  replyArrived(): void {
    this.host.replyArrived();
  }
}
