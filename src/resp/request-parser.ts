import { ByteQueue, findCrlf, parseIntAscii } from "./byte-queue.js";

/** One client request: its arguments, and its exact bytes when it came as a RESP array. */
export interface Request {
  argv: Buffer[];
  /** The request as received (zero-copy), so it can be forwarded without re-encoding. */
  raw: Buffer | null;
}

export interface RequestLimits {
  /** Largest bulk argument accepted (Redis' proto-max-bulk-len). */
  maxBulkLen: number;
  /** Largest number of arguments accepted in one request. */
  maxArgs: number;
}

/** Redis' PROTO_INLINE_MAX_SIZE: also the longest header line we wait for. */
export const INLINE_MAX = 64 * 1024;
/** Until a client authenticates, Redis accepts only small requests (see processMultibulkBuffer). */
const UNAUTHENTICATED_MAX_ARGS = 10;
const UNAUTHENTICATED_MAX_BULK = 16384;

/** A malformed request: the text after "ERR Protocol error: ", as Redis words it. */
export class ProtocolError extends Error {}

/**
 * Incremental parser of client requests: RESP arrays of bulk strings and inline commands.
 * It keeps its place inside a large request, so a value that arrives over many reads is
 * scanned once, and it never allocates ahead of the bytes actually received.
 */
export class RequestParser {
  readonly input = new ByteQueue();
  /** Arguments still expected by the array being read; 0 between requests. */
  private remaining = 0;
  private argv: Buffer[] = [];
  /** Offset from input.start where reading resumes inside the current request. */
  private pos = 0;
  authenticated = true;

  constructor(private readonly limits: RequestLimits) {}

  push(chunk: Buffer): void {
    this.input.append(chunk);
  }

  /** Bytes received but not yet returned as requests. */
  get buffered(): number {
    return this.input.length;
  }

  /** The next complete request, or null until more bytes arrive. Throws ProtocolError. */
  next(): Request | null {
    for (;;) {
      const q = this.input;
      if (q.length === 0) return null;
      if (this.remaining === 0 && this.pos === 0) {
        if (q.buf[q.start] !== 42 /* * */) {
          const inline = this.readInline();
          if (inline === null) return null;
          if (inline.length === 0) continue;
          return { argv: inline, raw: null };
        }
        const count = this.readArrayHeader();
        if (count === null) return null;
        if (count <= 0) {
          // "*0\r\n" and "*-1\r\n" are empty requests that Redis silently skips.
          q.consume(this.pos);
          this.pos = 0;
          continue;
        }
        this.remaining = count;
        this.argv = [];
      }
      if (!this.readArguments()) return null;
      const raw = q.buf.subarray(q.start, q.start + this.pos);
      const argv = this.argv;
      q.consume(this.pos);
      this.pos = 0;
      this.argv = [];
      return { argv, raw };
    }
  }

  private readArrayHeader(): number | null {
    const q = this.input;
    const cr = findCrlf(q.buf, q.start + 1, q.end);
    if (cr === -1) {
      if (q.length > INLINE_MAX) throw new ProtocolError("too big mbulk count string");
      return null;
    }
    const n = parseIntAscii(q.buf, q.start + 1, cr);
    if (Number.isNaN(n) || n > this.limits.maxArgs) throw new ProtocolError("invalid multibulk length");
    if (n > UNAUTHENTICATED_MAX_ARGS && !this.authenticated) {
      throw new ProtocolError("invalid multibulk length");
    }
    this.pos = cr + 2 - q.start;
    return n;
  }

  /** Reads bulk arguments until the array is complete (true) or bytes run out (false). */
  private readArguments(): boolean {
    const q = this.input;
    while (this.remaining > 0) {
      const at = q.start + this.pos;
      if (at >= q.end) return false;
      if (q.buf[at] !== 36 /* $ */) {
        throw new ProtocolError(`expected '$', got '${String.fromCharCode(q.buf[at])}'`);
      }
      const cr = findCrlf(q.buf, at + 1, q.end);
      if (cr === -1) {
        if (q.end - at > INLINE_MAX) throw new ProtocolError("too big bulk count string");
        return false;
      }
      const len = parseIntAscii(q.buf, at + 1, cr);
      if (Number.isNaN(len) || len < 0 || len > this.limits.maxBulkLen) {
        throw new ProtocolError("invalid bulk length");
      }
      if (len > UNAUTHENTICATED_MAX_BULK && !this.authenticated) {
        throw new ProtocolError("invalid bulk length");
      }
      const dataStart = cr + 2;
      // Like Redis, the two bytes after the data are skipped, not checked.
      if (dataStart + len + 2 > q.end) return false;
      this.argv.push(q.buf.subarray(dataStart, dataStart + len));
      this.pos = dataStart + len + 2 - q.start;
      this.remaining--;
    }
    return true;
  }

  /** An inline command (telnet style): one line, split like Redis' sdssplitargs. */
  private readInline(): Buffer[] | null {
    const q = this.input;
    const lf = q.buf.indexOf(10, q.start);
    if (lf === -1 || lf >= q.end) {
      if (q.length > INLINE_MAX) throw new ProtocolError("too big inline request");
      return null;
    }
    if (lf - q.start > INLINE_MAX) throw new ProtocolError("too big inline request");
    let lineEnd = lf;
    if (lineEnd > q.start && q.buf[lineEnd - 1] === 13) lineEnd--;
    const line = q.buf.subarray(q.start, lineEnd);
    const argv = splitInlineArgs(line);
    q.consume(lf + 1 - q.start);
    if (argv === null) throw new ProtocolError("unbalanced quotes in request");
    return argv;
  }
}

const ESCAPES: Record<string, number> = { n: 10, r: 13, t: 9, b: 8, a: 7 };

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || c === 11 || c === 12;
}

/**
 * Splits an inline command as Redis does: blanks separate arguments; "double quotes"
 * take \n \r \t \b \a \xHH escapes; 'single quotes' take \' only. Null when quotes
 * are unbalanced or a closing quote is not followed by a blank.
 */
export function splitInlineArgs(line: Buffer): Buffer[] | null {
  const args: Buffer[] = [];
  let i = 0;
  const n = line.length;
  while (true) {
    while (i < n && isSpace(line[i])) i++;
    if (i >= n) return args;
    const bytes: number[] = [];
    const quote = line[i] === 34 ? 34 : line[i] === 39 ? 39 : 0;
    if (quote === 0) {
      const start = i;
      while (i < n && !isSpace(line[i])) i++;
      args.push(Buffer.from(line.subarray(start, i)));
      continue;
    }
    i++;
    for (;;) {
      if (i >= n) return null;
      const c = line[i];
      if (c === quote) {
        if (i + 1 < n && !isSpace(line[i + 1])) return null;
        i++;
        break;
      }
      if (c === 92 /* \ */ && i + 1 < n) {
        const e = line[i + 1];
        if (quote === 34 && e === 120 /* x */ && i + 3 < n && isHex(line[i + 2]) && isHex(line[i + 3])) {
          bytes.push(parseInt(String.fromCharCode(line[i + 2], line[i + 3]), 16));
          i += 4;
          continue;
        }
        if (quote === 34) {
          bytes.push(ESCAPES[String.fromCharCode(e)] ?? e);
          i += 2;
          continue;
        }
        if (e === 39) {
          bytes.push(39);
          i += 2;
          continue;
        }
      }
      bytes.push(c);
      i++;
    }
    args.push(Buffer.from(bytes));
  }
}
