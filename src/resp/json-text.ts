/**
 * JSON text straight from RESP reply bytes, for values that go to a script's isolate: the
 * text is what `JSON.stringify(replyToJson(decodeReply(bytes)))` would give, without building
 * the RespValue tree, Buffers or JS strings in between (the gears hot path feeds whole
 * batches of records this way).
 */
import { findCrlf, parseIntAscii } from "./byte-queue.js";

/** An error reply met while converting: replyToJson throws these as Errors too. */
export class ReplyErrorText extends Error {}

/** A value the caller's fast path does not handle; it falls back to decoding. */
export class NotHandled extends Error {}

/** `"..."`: the UTF-8 bytes [start, end) as a JSON string (invalid UTF-8 reads as U+FFFD, as Buffer does). */
export function jsonString(buf: Buffer, start: number, end: number): string {
  for (let i = start; i < end; i++) {
    const c = buf[i];
    // Printable ASCII other than quote and backslash needs no escaping and decodes byte for byte.
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) {
      return JSON.stringify(buf.toString("utf8", start, end));
    }
  }
  return '"' + buf.toString("latin1", start, end) + '"';
}

function numberJson(n: number): string {
  return Number.isFinite(n) ? String(n) : "null";
}

/**
 * A position in a buffer of RESP replies, read forward. Methods throw NotHandled when the
 * bytes are not what the caller expects, and ReplyErrorText for an error reply.
 */
export class RespCursor {
  constructor(
    public buf: Buffer,
    public at = 0,
  ) {}

  /** Reads `buf` from its start. */
  reset(buf: Buffer): void {
    this.buf = buf;
    this.at = 0;
  }

  private lineEnd(): number {
    const cr = findCrlf(this.buf, this.at + 1, this.buf.length);
    if (cr === -1) throw new NotHandled("incomplete reply");
    return cr;
  }

  /** The next byte: the type of the next value. */
  peek(): number {
    return this.buf[this.at];
  }

  /** `*n`: n, or -1 for a null array. Anything else is NotHandled (an error reply: ReplyErrorText). */
  arrayLength(): number {
    const type = this.buf[this.at];
    if (type === 45 /* - */) this.value();
    if (type !== 42 /* * */) throw new NotHandled("not an array");
    const cr = this.lineEnd();
    const n = parseIntAscii(this.buf, this.at + 1, cr);
    this.at = cr + 2;
    return n;
  }

  /**
   * `$len`: the byte range of a bulk string (its start; `bulkEnd` its end), the cursor moved
   * past it; -1 for a null bulk. Other types are NotHandled.
   */
  bulk(): number {
    if (this.buf[this.at] !== 36 /* $ */) throw new NotHandled("not a bulk string");
    const cr = this.lineEnd();
    const len = parseIntAscii(this.buf, this.at + 1, cr);
    if (len < 0) {
      this.at = cr + 2;
      return -1;
    }
    this.bulkEnd = cr + 2 + len;
    this.at = this.bulkEnd + 2;
    return cr + 2;
  }

  bulkEnd = 0;

  /** A simple string's or integer's line, as text; the cursor moved past it. */
  line(): string {
    const cr = this.lineEnd();
    const line = this.buf.toString("utf8", this.at + 1, cr);
    this.at = cr + 2;
    return line;
  }

  /** Moves past the next value, whatever it is. */
  skip(): void {
    const buf = this.buf;
    const type = buf[this.at];
    const cr = this.lineEnd();
    switch (type) {
      case 36: // $
      case 61: // =
      case 33: {
        // !
        const len = parseIntAscii(buf, this.at + 1, cr);
        this.at = len < 0 ? cr + 2 : cr + 2 + len + 2;
        return;
      }
      case 42: // *
      case 126: // ~
      case 62: // >
      case 37: // %
      case 124: {
        // |
        const n = parseIntAscii(buf, this.at + 1, cr);
        this.at = cr + 2;
        const count = n < 0 ? 0 : type === 37 || type === 124 ? n * 2 : n;
        for (let i = 0; i < count; i++) this.skip();
        if (type === 124) this.skip();
        return;
      }
      default:
        this.at = cr + 2;
    }
  }

  /**
   * The next value as JSON text, as the guest sees a reply: strings, numbers, null and
   * arrays (RESP3 maps flat). An error reply anywhere in it throws ReplyErrorText.
   */
  value(): string {
    const buf = this.buf;
    const type = buf[this.at];
    const cr = this.lineEnd();
    const start = this.at + 1;
    switch (type) {
      case 43: // +
      case 44: // ,
        this.at = cr + 2;
        return jsonString(buf, start, cr);
      case 45: // -
        this.at = cr + 2;
        throw new ReplyErrorText(buf.toString("utf8", start, cr));
      case 58: // :
      case 40: // (
        this.at = cr + 2;
        return numberJson(Number(buf.toString("utf8", start, cr)));
      case 35: // #
        this.at = cr + 2;
        return buf[start] === 116 ? "1" : "0";
      case 95: // _
        this.at = cr + 2;
        return "null";
      case 36: // $
      case 61: // =
      case 33: {
        // !
        const len = parseIntAscii(buf, start, cr);
        if (len < 0) {
          this.at = cr + 2;
          return "null";
        }
        const end = cr + 2 + len;
        this.at = end + 2;
        if (type === 33) throw new ReplyErrorText(buf.toString("utf8", cr + 2, end));
        return jsonString(buf, cr + 2, end);
      }
      default: {
        const n = parseIntAscii(buf, start, cr);
        this.at = cr + 2;
        if (n < 0) return "null";
        const count = type === 37 || type === 124 ? n * 2 : n;
        if (type === 124) {
          // An attribute describes the value that follows it; keep the value only.
          for (let i = 0; i < count; i++) this.skip();
          return this.value();
        }
        if (count === 0) return "[]";
        let out = "[" + this.value();
        for (let i = 1; i < count; i++) out += "," + this.value();
        return out + "]";
      }
    }
  }
}

/** `[0, value]` or `[1, "message"]` for one whole reply: how the isolate hands replies to the guest. */
export function replyOutcomeJson(reply: Buffer): string {
  try {
    return "[0," + new RespCursor(reply).value() + "]";
  } catch (e) {
    if (e instanceof ReplyErrorText) return "[1," + JSON.stringify(e.message) + "]";
    throw e;
  }
}
