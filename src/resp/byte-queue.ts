const EMPTY = Buffer.alloc(0);

/**
 * Unread bytes of a socket, kept contiguous so parsers can hand out zero-copy views.
 *
 * Bytes once written are never overwritten: views given out earlier stay valid while
 * new data is appended behind them, and growth reallocates by doubling so a large
 * value arriving in many small chunks costs linear, not quadratic, copying.
 */
export class ByteQueue {
  buf: Buffer = EMPTY;
  /** Offset of the first unread byte in `buf`. */
  start = 0;
  /** Offset one past the last written byte in `buf`. */
  end = 0;

  get length(): number {
    return this.end - this.start;
  }

  append(chunk: Buffer): void {
    if (this.start === this.end) {
      // Common case: nothing pending, so adopt the chunk itself without copying.
      this.buf = chunk;
      this.start = 0;
      this.end = chunk.length;
      return;
    }
    if (this.end + chunk.length <= this.buf.length) {
      chunk.copy(this.buf, this.end);
      this.end += chunk.length;
      return;
    }
    const live = this.end - this.start;
    const next = Buffer.allocUnsafe(Math.max(live + chunk.length, live * 2, 16 * 1024));
    this.buf.copy(next, 0, this.start, this.end);
    chunk.copy(next, live);
    this.buf = next;
    this.start = 0;
    this.end = live + chunk.length;
  }

  /** Marks `n` bytes as read. */
  consume(n: number): void {
    this.start += n;
    if (this.start >= this.end) this.clear();
  }

  clear(): void {
    this.buf = EMPTY;
    this.start = 0;
    this.end = 0;
  }
}

const CR = 13;
const LF = 10;

/** Header lines are a few bytes long: up to here a plain loop beats a call into native indexOf. */
const SHORT_SCAN = 32;

/** Index of the '\r' of the next "\r\n" in buf[from, end), or -1 when not there yet. */
export function findCrlf(buf: Buffer, from: number, end: number): number {
  // Bytes past `end` are spare capacity: a hit there means "not yet".
  const last = end - 1;
  const short = Math.min(last, from + SHORT_SCAN);
  let i = from;
  for (; i < short; i++) if (buf[i] === CR && buf[i + 1] === LF) return i;
  if (i >= last) return -1;
  i = buf.indexOf(CR, i);
  while (i !== -1 && i < last) {
    if (buf[i + 1] === LF) return i;
    i = buf.indexOf(CR, i + 1);
  }
  return -1;
}

/**
 * Parses the signed decimal in buf[from, to) as Redis' string2ll would; NaN when it is
 * not a plain integer (empty, stray characters, or too long to be exact).
 */
export function parseIntAscii(buf: Buffer, from: number, to: number): number {
  if (from >= to || to - from > 16) return Number.NaN;
  let i = from;
  let negative = false;
  if (buf[i] === 45 /* - */) {
    negative = true;
    i++;
    if (i === to) return Number.NaN;
  }
  let n = 0;
  for (; i < to; i++) {
    const d = buf[i] - 48;
    if (d < 0 || d > 9) return Number.NaN;
    n = n * 10 + d;
  }
  return negative ? -n : n;
}
