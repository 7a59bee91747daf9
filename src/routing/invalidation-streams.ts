import { decodeReply } from "../resp/decode.js";
import { encodeCommand } from "../resp/encode.js";
import type { UpstreamConnection } from "../upstream/connection.js";
import type { UpstreamNode } from "../upstream/node.js";
import type { Router } from "./router.js";

/** What the streams report: keys changed on some node, or every key gone (flush, lost stream). */
export interface InvalidationHandlers {
  onKeys(keys: Buffer[]): void;
  onFlush(): void;
}

const TRACKING_ON = encodeCommand(["CLIENT", "TRACKING", "ON", "BCAST"]);
/** How often the set of masters is compared while streams run, and a lost stream retried. */
const CHECK_MS = 500;
/** Streams stay this long after the last tracking client left, so on/off churn costs nothing. */
const LINGER_MS = 5000;

interface Stream {
  node: UpstreamNode;
  conn: UpstreamConnection;
  ready: Promise<void>;
}

/**
 * One connection per master in RESP3 with `CLIENT TRACKING ON BCAST` and no prefix: the
 * server pushes the name of every key that changes on it (a write through the proxy, a
 * write straight to the node, an expiry, an eviction) and a null on FLUSHALL/FLUSHDB. The
 * client room keeps the table of who read what and turns these into its clients'
 * invalidations. A stream lost, or a master added, means changes may have been missed:
 * that is reported as a flush, as Redis' own clients treat a lost connection.
 */
export class InvalidationStreams {
  private readonly streams = new Map<string, Stream>();
  private timer: NodeJS.Timeout | null = null;
  private lingering: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly router: Router,
    private readonly handlers: InvalidationHandlers,
  ) {}

  /** Opens a stream on every master not streaming yet; resolves once all of them track. */
  ensure(): Promise<void> {
    if (this.lingering !== null) {
      clearTimeout(this.lingering);
      this.lingering = null;
    }
    if (this.closed) return Promise.reject(new Error("the proxy is shutting down"));
    const masters = this.router.masters();
    const pending = masters.map((node) => this.streams.get(node.id)?.ready ?? this.open(node));
    if (this.timer === null) {
      this.timer = setInterval(() => this.check(), CHECK_MS);
      this.timer.unref();
    }
    return Promise.all(pending).then(() => undefined);
  }

  /** No client tracks any more: the streams close after a while, unless ensure() comes first. */
  idle(): void {
    if (this.lingering !== null || this.streams.size === 0) return;
    this.lingering = setTimeout(() => {
      this.lingering = null;
      this.stop();
      // Changes are no longer seen: whatever the table holds is stale from now on.
      this.handlers.onFlush();
    }, LINGER_MS);
    this.lingering.unref();
  }

  get active(): boolean {
    return this.streams.size > 0;
  }

  close(): void {
    this.closed = true;
    if (this.lingering !== null) clearTimeout(this.lingering);
    this.lingering = null;
    this.stop();
  }

  private stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    for (const stream of [...this.streams.values()]) this.drop(stream);
  }

  /** Opens the stream of one master; resolves once the server tracks for it. */
  private open(node: UpstreamNode): Promise<void> {
    const conn = node.acquire(3);
    // Not kept: the next ensure() or check() tries again.
    if (conn === null) return Promise.reject(new Error(node.failure || "node unavailable"));
    let settle!: { resolve: () => void; reject: (e: Error) => void };
    const ready = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    const stream: Stream = { node, conn, ready };
    this.streams.set(node.id, stream);
    conn.pushHandler = (frame) => this.onFrame(frame);
    conn.onBorrowerLost = () => this.lost(stream);
    conn.send(TRACKING_ON, {
      reply: (data) => {
        if (data[0] === 43 /* + */) settle.resolve();
        else settle.reject(new Error(data.toString("utf8", 1, data.length - 2)));
      },
      fail: (message) => settle.reject(new Error(message)),
    });
    ready.catch(() => this.drop(stream));
    return ready;
  }

  private onFrame(frame: Buffer): void {
    const value = decodeReply(frame);
    if (!Array.isArray(value) || value.length !== 2 || !Buffer.isBuffer(value[0])) return;
    if (value[0].toString() !== "invalidate") return;
    const keys = value[1];
    if (keys === null) this.handlers.onFlush();
    else if (Array.isArray(keys)) this.handlers.onKeys(keys.filter((k): k is Buffer => Buffer.isBuffer(k)));
  }

  private lost(stream: Stream): void {
    if (this.streams.get(stream.node.id) !== stream) return;
    this.streams.delete(stream.node.id);
    this.handlers.onFlush();
    // check() reopens it; once it is up again, changes made meanwhile are flushed too.
  }

  private drop(stream: Stream): void {
    if (this.streams.get(stream.node.id) === stream) this.streams.delete(stream.node.id);
    stream.conn.onBorrowerLost = null;
    stream.conn.pushHandler = null;
    stream.node.destroy(stream.conn);
  }

  /** Follows the masters: a new or reconnected one streams again, then everything is flushed. */
  private check(): void {
    const masters = this.router.masters();
    const ids = new Set(masters.map((n) => n.id));
    for (const stream of [...this.streams.values()]) if (!ids.has(stream.node.id)) this.drop(stream);
    const missing = masters.filter((n) => !this.streams.has(n.id));
    if (missing.length === 0) return;
    const opened = missing.map((node) => this.open(node));
    Promise.all(opened).then(
      () => this.handlers.onFlush(),
      () => {},
    );
  }
}
