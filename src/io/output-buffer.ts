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
  /**
   * The first chunk of the turn; the others, if any, in `more`. At one reply per client per
   * turn (clients that do not pipeline) that is the only one: no array is made per write.
   */
  private head: Buffer | null = null;
  private more: Buffer[] | null = null;
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
    if (this.head === null) this.head = chunk;
    else if (this.more === null) this.more = [this.head, chunk];
    else this.more.push(chunk);
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
    const head = this.head;
    if (head === null) return;
    const more = this.more;
    const bytes = this.bytes;
    this.head = null;
    this.more = null;
    this.bytes = 0;
    if (this.socket.destroyed) return;
    if (more === null) {
      this.socket.write(head);
    } else if (bytes <= CONCAT_LIMIT) {
      this.socket.write(Buffer.concat(more, bytes));
    } else {
      this.socket.cork();
      for (const c of more) this.socket.write(c);
      this.socket.uncork();
    }
  }

  /** Drops what has not been written (the socket is going away). */
  discard(): void {
    this.head = null;
    this.more = null;
    this.bytes = 0;
  }
}
