import type { Socket } from "node:net";

/** Concatenating is cheaper than writev below this many bytes. */
const CONCAT_LIMIT = 64 * 1024;

/** Buffers with bytes to write this turn; `first` ones (upstream requests) leave before the rest. */
let dirtyFirst: OutputBuffer[] = [];
let dirty: OutputBuffer[] = [];
let scheduled = false;

function flushAll(): void {
  scheduled = false;
  // Buffers marked dirty while flushing (by write callbacks) wait for the next turn.
  const first = dirtyFirst;
  const rest = dirty;
  dirtyFirst = [];
  dirty = [];
  for (let i = 0; i < first.length; i++) first[i].flush();
  for (let i = 0; i < rest.length; i++) rest[i].flush();
}

/**
 * Bytes bound for one socket, written once per event-loop turn: every reply or request
 * produced while handling this turn's reads leaves in a single write.
 */
export class OutputBuffer {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private queued = false;

  /**
   * @param first write before the other buffers of the turn. Requests bound for a server go
   * first so that it works on them, on another core, while the proxy writes the replies to
   * its clients (each write to a client is a syscall that also wakes the client).
   */
  constructor(
    private readonly socket: Socket,
    private readonly first = false,
  ) {}

  /** Bytes accepted but not yet handed to the kernel, including the socket's own buffer. */
  get pending(): number {
    return this.bytes + this.socket.writableLength;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (!this.queued) {
      this.queued = true;
      (this.first ? dirtyFirst : dirty).push(this);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flushAll);
      }
    }
  }

  flush(): void {
    this.queued = false;
    const chunks = this.chunks;
    if (chunks.length === 0) return;
    const bytes = this.bytes;
    this.chunks = [];
    this.bytes = 0;
    if (this.socket.destroyed) return;
    if (chunks.length === 1) {
      this.socket.write(chunks[0]);
    } else if (bytes <= CONCAT_LIMIT) {
      this.socket.write(Buffer.concat(chunks, bytes));
    } else {
      this.socket.cork();
      for (const c of chunks) this.socket.write(c);
      this.socket.uncork();
    }
  }

  /** Drops what has not been written (the socket is going away). */
  discard(): void {
    this.chunks = [];
    this.bytes = 0;
  }
}
