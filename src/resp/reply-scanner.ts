import { ByteQueue, findCrlf, parseIntAscii } from "./byte-queue.js";

/** Thrown when an upstream sends bytes that are not RESP: the connection cannot be trusted. */
export class ReplyFormatError extends Error {}

/**
 * Finds where each reply ends in a stream from a Redis server, without decoding it, so
 * replies can be forwarded as raw byte slices. It resumes where it stopped inside a long
 * nested reply instead of rescanning it on every read. Understands RESP2 and RESP3.
 */
export class ReplyScanner {
  readonly input = new ByteQueue();
  /** Offset from input.start where scanning resumes. */
  private pos = 0;
  /** Elements still expected by each open aggregate, innermost last. */
  private readonly open: number[] = [];

  push(chunk: Buffer): void {
    this.input.append(chunk);
  }

  /** The next complete reply as a zero-copy slice, or null until more bytes arrive. */
  next(): Buffer | null {
    const q = this.input;
    const open = this.open;
    for (;;) {
      const at = q.start + this.pos;
      if (at >= q.end) return null;
      if (open.length > 0 && q.buf[at] === 36 /* $ */) {
        const after = this.skipBulks(at);
        if (after !== at) {
          this.pos = after - q.start;
          // skipBulks leaves a finished aggregate at 0: it counts as one element of its parent.
          if (open[open.length - 1] === 0) {
            open.pop();
            if (this.closeAggregates()) return this.take(after);
          }
          continue;
        }
      }
      const cr = findCrlf(q.buf, at + 1, q.end);
      if (cr === -1) return null;
      const type = q.buf[at];
      let afterValue: number;
      switch (type) {
        case 43: // + simple string
        case 45: // - error
        case 58: // : integer
        case 95: // _ null
        case 35: // # boolean
        case 44: // , double
        case 40: // ( big number
          afterValue = cr + 2;
          break;
        case 36: // $ bulk string
        case 33: // ! bulk error
        case 61: {
          // = verbatim string
          const len = this.readLength(at, cr);
          if (len < 0) {
            afterValue = cr + 2;
            break;
          }
          if (cr + 2 + len + 2 > q.end) return null;
          afterValue = cr + 2 + len + 2;
          break;
        }
        case 42: // * array
        case 126: // ~ set
        case 62: // > push
        case 37: // % map
        case 124: {
          // | attribute: its pairs, then the value it describes
          const n = this.readLength(at, cr);
          const elements = type === 37 ? n * 2 : type === 124 ? n * 2 + 1 : n;
          if (elements > 0) {
            this.pos = cr + 2 - q.start;
            this.open.push(elements);
            continue;
          }
          afterValue = cr + 2;
          break;
        }
        default:
          throw new ReplyFormatError(`unexpected byte ${type} at the start of a reply`);
      }
      this.pos = afterValue - q.start;
      if (this.closeAggregates()) return this.take(afterValue);
    }
  }

  /** The whole reply ending at `end`, handed out and consumed. */
  private take(end: number): Buffer {
    const q = this.input;
    const buf = q.buf;
    // A read that held exactly this reply is handed out as it is: no view.
    const reply = q.start === 0 && end === buf.length ? buf : buf.subarray(q.start, end);
    q.consume(this.pos);
    this.pos = 0;
    return reply;
  }

  /**
   * Skips the complete bulk strings from `at` on inside the innermost open aggregate (the
   * elements of LRANGE, MGET, HGETALL...), counting them off it; where the first one that is
   * not a plain complete bulk string starts. The general loop handles that one (nulls,
   * incomplete or malformed input). Why by hand: this is most of a large reply's scanning, and
   * one pass over each header's digits with the count in a local halves it against the
   * general loop's CRLF search, length parse and count update per element.
   */
  private skipBulks(at: number): number {
    const q = this.input;
    const buf = q.buf;
    const end = q.end;
    const open = this.open;
    let left = open[open.length - 1];
    while (left > 0 && at < end && buf[at] === 36) {
      let i = at + 1;
      let len = 0;
      // At most 15 digits: exact as a double, and far beyond any real length.
      const digitsEnd = Math.min(end, i + 15);
      for (; i < digitsEnd; i++) {
        const d = buf[i] - 48;
        if (d < 0 || d > 9) break;
        len = len * 10 + d;
      }
      if (i === at + 1 || i + 1 >= end || buf[i] !== 13 || buf[i + 1] !== 10) break;
      const after = i + 4 + len;
      if (after > end) break;
      at = after;
      left--;
    }
    open[open.length - 1] = left;
    return at;
  }

  /** Counts one finished element against the open aggregates; true when the reply is whole. */
  private closeAggregates(): boolean {
    const open = this.open;
    while (open.length > 0) {
      const left = open[open.length - 1] - 1;
      if (left > 0) {
        open[open.length - 1] = left;
        return false;
      }
      open.pop();
    }
    return true;
  }

  private readLength(at: number, cr: number): number {
    const n = parseIntAscii(this.input.buf, at + 1, cr);
    if (Number.isNaN(n)) throw new ReplyFormatError("invalid length in a reply");
    return n;
  }
}
