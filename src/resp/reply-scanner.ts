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
    for (;;) {
      const at = q.start + this.pos;
      if (at >= q.end) return null;
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
      if (this.closeAggregates()) {
        const reply = q.buf.subarray(q.start, afterValue);
        q.consume(this.pos);
        this.pos = 0;
        return reply;
      }
    }
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
