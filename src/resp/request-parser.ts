import { ByteQueue, findCrlf, parseIntAscii } from "./byte-queue.js";

/**
 * One client request. Its arguments stay in the bytes they arrived in until someone asks
 * for them: a command forwarded as received needs only its name and its raw bytes, so the
 * hot path creates no Buffer view per argument.
 */
export class Request {
  private args: Buffer[] | null;
  private view: Buffer | null = null;

  /**
   * @param name the command name in lower case, interned (see commandName)
   * @param args the arguments when already split (inline commands); else read lazily from buf
   * @param buf holds the request's bytes in [start, end); they are never overwritten (ByteQueue)
   */
  constructor(
    readonly name: string,
    args: Buffer[] | null,
    readonly buf: Buffer,
    readonly start: number,
    readonly end: number,
    readonly argc: number,
  ) {
    this.args = args;
  }

  get argv(): Buffer[] {
    return (this.args ??= splitArray(this.buf, this.start, this.argc));
  }

  /**
   * `hash` of argument `i`'s bytes (i < argc), read where they lie: a request routed by one
   * key (a cluster's slot) needs no view of its arguments.
   */
  argHash<T>(i: number, hash: (buf: Uint8Array, start: number, end: number) => T): T {
    const args = this.args;
    if (args !== null) return hash(args[i], 0, args[i].length);
    const buf = this.buf;
    let at = this.start + 1;
    while (buf[at] !== 10) at++;
    at++;
    for (let k = 0; ; k++) {
      // buf[at] is the '$' of a header whose digits the parser checked.
      let len = 0;
      let c: number;
      for (at++; (c = buf[at]) !== 13; at++) len = len * 10 + c - 48;
      const dataStart = at + 2;
      if (k === i) return hash(buf, dataStart, dataStart + len);
      at = dataStart + len + 2;
    }
  }

  /**
   * The one `hash` of arguments first, first + stride, ... (first < argc) read where they lie,
   * or -1 when two differ: whether a multi-key command's keys share a slot, without views.
   */
  commonHash(
    first: number,
    stride: number,
    hash: (buf: Uint8Array, start: number, end: number) => number,
  ): number {
    const args = this.args;
    let common = -1;
    if (args !== null) {
      for (let i = first; i < args.length; i += stride) {
        const h = hash(args[i], 0, args[i].length);
        if (common === -1) common = h;
        else if (h !== common) return -1;
      }
      return common;
    }
    const buf = this.buf;
    let at = this.start + 1;
    while (buf[at] !== 10) at++;
    at++;
    let next = first;
    for (let k = 0; k < this.argc; k++) {
      let len = 0;
      let c: number;
      for (at++; (c = buf[at]) !== 13; at++) len = len * 10 + c - 48;
      const dataStart = at + 2;
      if (k === next) {
        const h = hash(buf, dataStart, dataStart + len);
        if (common === -1) common = h;
        else if (h !== common) return -1;
        next += stride;
      }
      at = dataStart + len + 2;
    }
    return common;
  }

  /** The request as received (zero-copy), so it can be forwarded without re-encoding; null when inline. */
  get raw(): Buffer | null {
    if (this.end === this.start) return null;
    return (this.view ??= this.buf.subarray(this.start, this.end));
  }
}

/** The argument views of a RESP array the parser has already validated. */
function splitArray(buf: Buffer, start: number, argc: number): Buffer[] {
  const argv = new Array<Buffer>(argc);
  let at = start + 1;
  while (buf[at] !== 10) at++;
  at++;
  for (let i = 0; i < argc; i++) {
    // buf[at] is the '$' of a header whose digits the parser checked.
    let len = 0;
    let c: number;
    for (at++; (c = buf[at]) !== 13; at++) len = len * 10 + c - 48;
    const dataStart = at + 2;
    argv[i] = buf.subarray(dataStart, dataStart + len);
    // The two bytes after the data are skipped unchecked, as the parser did.
    at = dataStart + len + 2;
  }
  return argv;
}

/**
 * A count in a request header, as Redis' string2ll reads it: no sign but '-', no leading
 * zeros ("03", "-0"), so the proxy refuses exactly what Redis refuses. NaN when invalid.
 */
function parseCount(buf: Buffer, from: number, to: number): number {
  const first = buf[from];
  if (first === 48 /* 0 */ && to - from > 1) return Number.NaN;
  if (first === 45 /* - */ && buf[from + 1] === 48) return Number.NaN;
  return parseIntAscii(buf, from, to);
}

const EMPTY = Buffer.alloc(0);

/** Command names are short; longer first arguments are not worth caching. */
const NAME_CACHE_MAX_LEN = 32;
const NAME_CACHE_SIZE = 512;
/** Direct-mapped, so a flood of distinct bogus names costs a bounded amount of memory. */
const cachedBytes: (Buffer | null)[] = new Array<Buffer | null>(NAME_CACHE_SIZE).fill(null);
const cachedNames: string[] = new Array<string>(NAME_CACHE_SIZE).fill("");

/**
 * buf[start, end) as a lower-case string, like toString("latin1").toLowerCase(), but
 * served from a small cache: a command name costs a hash of its bytes instead of two
 * string allocations, and equal names are the same string (cheap Map lookups).
 */
export function commandName(buf: Buffer, start: number, end: number): string {
  const len = end - start;
  if (len > NAME_CACHE_MAX_LEN) return buf.toString("latin1", start, end).toLowerCase();
  let h = len;
  for (let i = start; i < end; i++) h = Math.imul(h ^ foldAscii(buf[i]), 0x01000193);
  const slot = (h ^ (h >>> 15)) & (NAME_CACHE_SIZE - 1);
  const known = cachedBytes[slot];
  if (known !== null && known.length === len && equalsFolded(known, buf, start)) return cachedNames[slot];
  const name = buf.toString("latin1", start, end).toLowerCase();
  const bytes = Buffer.from(name, "latin1");
  // Only ASCII case folding is matched below; a name whose lower case differs otherwise stays uncached.
  if (bytes.length === len && equalsFolded(bytes, buf, start)) {
    cachedBytes[slot] = bytes;
    cachedNames[slot] = name;
  }
  return name;
}

function foldAscii(c: number): number {
  return c >= 65 && c <= 90 ? c | 32 : c;
}

function equalsFolded(known: Buffer, buf: Buffer, start: number): boolean {
  for (let i = 0; i < known.length; i++) if (known[i] !== foldAscii(buf[start + i])) return false;
  return true;
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
  /** Arguments of the array being read. */
  private argc = 0;
  /** Where the first argument (the command name) lies, from input.start. */
  private nameAt = 0;
  private nameLen = 0;
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
          const name = commandName(inline[0], 0, inline[0].length);
          return new Request(name, inline, EMPTY, 0, 0, inline.length);
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
        this.argc = count;
      }
      if (!this.readArguments()) return null;
      const start = q.start;
      const end = start + this.pos;
      const buf = q.buf;
      const name = commandName(buf, start + this.nameAt, start + this.nameAt + this.nameLen);
      q.consume(this.pos);
      this.pos = 0;
      return new Request(name, null, buf, start, end, this.argc);
    }
  }

  private readArrayHeader(): number | null {
    const q = this.input;
    const cr = findCrlf(q.buf, q.start + 1, q.end);
    if (cr === -1) {
      if (q.length > INLINE_MAX) throw new ProtocolError("too big mbulk count string");
      return null;
    }
    const n = parseCount(q.buf, q.start + 1, cr);
    if (Number.isNaN(n) || n > this.limits.maxArgs) throw new ProtocolError("invalid multibulk length");
    if (n > UNAUTHENTICATED_MAX_ARGS && !this.authenticated) {
      throw new ProtocolError("invalid multibulk length");
    }
    this.pos = cr + 2 - q.start;
    return n;
  }

  /**
   * Reads bulk arguments until the array is complete (true) or bytes run out (false). A
   * complete argument with a plain length goes through a tight loop over its header's digits
   * with the position in a local (the bulk of every request); anything else, including every
   * error, through readArgument. Why by hand: no RESP library parses without making a value
   * per argument, and this loop is a tenth of the proxy's time on a 10-key MSET.
   */
  private readArguments(): boolean {
    const q = this.input;
    const buf = q.buf;
    const end = q.end;
    const base = q.start;
    const maxBulk = this.authenticated
      ? this.limits.maxBulkLen
      : Math.min(this.limits.maxBulkLen, UNAUTHENTICATED_MAX_BULK);
    let pos = base + this.pos;
    let remaining = this.remaining;
    while (remaining > 0) {
      if (pos < end && buf[pos] === 36 /* $ */) {
        const first = pos + 1;
        let i = first;
        let len = 0;
        // At most 15 digits, exact as a double; no leading zero (parseCount's rule).
        const digitsEnd = Math.min(end, first + 15);
        for (; i < digitsEnd; i++) {
          const d = buf[i] - 48;
          if (d < 0 || d > 9) break;
          len = len * 10 + d;
        }
        const plain = i > first && (buf[first] !== 48 || i === first + 1);
        const dataStart = i + 2;
        if (plain && i + 1 < end && buf[i] === 13 && buf[i + 1] === 10 && len <= maxBulk) {
          if (dataStart + len + 2 > end) break;
          if (remaining === this.argc) {
            this.nameAt = dataStart - base;
            this.nameLen = len;
          }
          // Like Redis, the two bytes after the data are skipped, not checked.
          pos = dataStart + len + 2;
          remaining--;
          continue;
        }
      }
      this.pos = pos - base;
      this.remaining = remaining;
      if (!this.readArgument()) return false;
      pos = base + this.pos;
      remaining = this.remaining;
    }
    this.pos = pos - base;
    this.remaining = remaining;
    return remaining === 0;
  }

  /** Reads one bulk argument, or says why it cannot be one; false until its bytes are in. */
  private readArgument(): boolean {
    const q = this.input;
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
    const len = parseCount(q.buf, at + 1, cr);
    if (Number.isNaN(len) || len < 0 || len > this.limits.maxBulkLen) {
      throw new ProtocolError("invalid bulk length");
    }
    if (len > UNAUTHENTICATED_MAX_BULK && !this.authenticated) {
      throw new ProtocolError("invalid bulk length");
    }
    const dataStart = cr + 2;
    // Like Redis, the two bytes after the data are skipped, not checked.
    if (dataStart + len + 2 > q.end) return false;
    if (this.remaining === this.argc) {
      this.nameAt = dataStart - q.start;
      this.nameLen = len;
    }
    this.pos = dataStart + len + 2 - q.start;
    this.remaining--;
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
