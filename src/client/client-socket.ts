import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { callbackNow } from "../observability/callback-clock.js";
import { OutputBuffer } from "../io/output-buffer.js";
import { readBytes } from "../io/socket-reader.js";
import { RequestParser } from "../resp/request-parser.js";
import type { ProxyContext } from "./context.js";

/** Stop reading from a client whose replies pile up beyond this; resume on drain. */
const PAUSE_READING_BYTES = 4 * 1024 * 1024;
/** Redis' client-query-buffer-limit: unparsed input a client may leave with us. */
const QUERY_BUFFER_LIMIT = 1024 * 1024 * 1024;

/** What the socket tells the session it reads and writes for. */
export interface SocketHost {
  readonly ctx: ProxyContext;
  readonly id: number;
  /** Query or output bytes past which the memory guard checks at once (client/memory-guard.ts). */
  readonly memoryMark: number;
  readonly closed: boolean;
  /** Subscribed: Redis' pubsub class of output limits applies. */
  readonly isPubSub: boolean;
  /** New input is parsed in, or reading resumed: run what can run. */
  readable(): void;
  kill(reason: string): void;
  close(): void;
}

/**
 * A client's TCP connection: the bytes in (into the request parser, within Redis' query
 * buffer limit) and out (the output buffer, pausing the input while the client does not
 * read, closing it past client-output-buffer-limit).
 */
export class ClientSocket {
  readonly parser: RequestParser;
  readonly out: OutputBuffer;
  readonly addr: string;
  readonly laddr: string;
  /** The client reads too slowly: its input waits until the output drains. */
  paused = false;
  /** The proxy is shutting down: no new command runs; the connection ends once replies are out. */
  draining = false;
  /**
   * When the client last sent bytes (monotonic ms): the event-loop turn's clock, read once
   * per turn for all the reads of the turn, not once per read (idle times are in seconds).
   */
  private lastActivity = performance.now();
  private readonly socket: Socket;

  constructor(
    accepted: Socket,
    private readonly host: SocketHost,
  ) {
    const ctx = host.ctx;
    this.addr = `${accepted.remoteAddress}:${accepted.remotePort}`;
    this.laddr = `${accepted.localAddress}:${accepted.localPort}`;
    this.parser = new RequestParser({ maxBulkLen: ctx.config.protoMaxBulkLen, maxArgs: 1024 * 1024 });
    const socket = readBytes(accepted, (chunk) => this.onData(chunk));
    this.socket = socket;
    this.out = new OutputBuffer(socket);
    socket.setNoDelay(true);
    socket.on("error", () => host.close());
    socket.on("close", () => host.close());
    socket.on("drain", () => this.resumeReading());
  }

  get idleMs(): number {
    return performance.now() - this.lastActivity;
  }

  private onData(chunk: Buffer): void {
    const host = this.host;
    this.lastActivity = callbackNow();
    host.ctx.metrics?.clientBytesIn(chunk.length);
    this.parser.push(chunk);
    if (this.parser.buffered > QUERY_BUFFER_LIMIT) {
      host.ctx.log.warn({ client: host.id, addr: this.addr }, "client query buffer limit reached");
      host.kill("query buffer limit reached");
      return;
    }
    if (this.parser.buffered > host.memoryMark) {
      host.ctx.memoryGuard?.grew();
      if (host.closed) return;
    }
    host.readable();
  }

  /** Everything writable was written: checks what the client leaves unread. */
  applyBackpressure(): void {
    const host = this.host;
    const pending = this.out.pending;
    if (pending > host.memoryMark) {
      host.ctx.memoryGuard?.grew();
      if (host.closed) return;
    }
    const guard = host.ctx.memoryGuard;
    const limit =
      guard === undefined ? host.ctx.config.clientOutputBufferLimit : guard.outputLimit(host.isPubSub);
    if (pending > limit) {
      host.ctx.stats.outputLimitDisconnections++;
      host.ctx.log.warn({ client: host.id, addr: this.addr, pending }, "client output buffer limit reached");
      host.close();
    } else if (pending > PAUSE_READING_BYTES && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private resumeReading(): void {
    if (!this.paused || this.host.closed || this.draining) return;
    this.paused = false;
    this.socket.resume();
    this.host.readable();
  }

  /**
   * Closes for good once the output is out, as Redis closes it: a client still writing
   * (after a protocol error) gets a reset instead of a half-open connection that never fails.
   */
  endAfterWrite(): void {
    this.out.flush();
    this.socket.end(() => this.socket.destroy());
  }

  /** Proxy shutdown: reads no more; resolves once the connection is closed. */
  drain(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.socket.once("close", () => resolve()));
    this.draining = true;
    this.socket.pause();
    return closed;
  }

  destroy(): void {
    this.out.discard();
    this.socket.destroy();
  }
}
