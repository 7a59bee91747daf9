import { Request } from "../resp/request-parser.js";

/** The proxy's own SLOWLOG: commands that took long as the proxy's clients saw them. */

/** Redis keeps at most 32 arguments and 128 bytes of each (slowlog.c's limits). */
const MAX_ARGC = 32;
const MAX_STRING = 128;

export interface SlowLogEntry {
  id: number;
  /** Unix time in seconds when the command was logged. */
  timestamp: number;
  durationUs: number;
  /** Trimmed as Redis trims them. */
  readonly argv: Buffer[];
  addr: string;
  name: string;
}

/** A SLOWLOG GET row as Redis lays it out: id, unix time, µs, arguments, client address and name. */
export type SlowLogRow = [number, number, number, Buffer[], Buffer, Buffer];

/** Requests up to this size are kept as one copy and split when read. */
const KEEP_RAW_BYTES = 4096;

/**
 * A logged command. When a proxy is overloaded every command is slow as its clients see it,
 * so logging must cost little: one copy of the request's bytes, split and trimmed only when
 * SLOWLOG GET reads it.
 */
class Entry implements SlowLogEntry {
  private args: Buffer[] | null;

  constructor(
    readonly id: number,
    readonly timestamp: number,
    readonly durationUs: number,
    private readonly request: Request | null,
    args: Buffer[] | null,
    readonly addr: string,
    readonly name: string,
  ) {
    this.args = args;
  }

  get argv(): Buffer[] {
    return (this.args ??= trimArgv(this.request!.argv));
  }
}

export class SlowLog {
  /** Oldest first; holds up to twice maxLen, so that dropping the oldest is a rare splice. */
  private entries: Entry[] = [];
  private nextId = 0;

  constructor(
    /** Microseconds; a command taking at least this long is logged; negative logs nothing. */
    public slowerThanUs: number,
    public maxLen: number,
  ) {}

  /** False when nothing can ever be logged, so the client session need not time commands. */
  get enabled(): boolean {
    return this.maxLen > 0;
  }

  /** Whether a command that took `durationUs` is logged: record() keeps it. */
  logs(durationUs: number): boolean {
    return durationUs >= this.slowerThanUs && this.slowerThanUs >= 0 && this.maxLen > 0;
  }

  record(durationUs: number, request: Request, addr: string, name: string): void {
    if (!this.logs(durationUs)) return;
    const raw = request.raw;
    const kept =
      raw !== null && raw.length <= KEEP_RAW_BYTES
        ? new Request(request.name, null, Buffer.from(raw), 0, raw.length, request.argc)
        : null;
    this.entries.push(
      new Entry(
        this.nextId++,
        Math.floor(Date.now() / 1000),
        Math.floor(durationUs),
        kept,
        kept === null ? trimArgv(request.argv) : null,
        addr,
        name,
      ),
    );
    if (this.entries.length >= 2 * this.maxLen) this.trim();
  }

  /** Newest first, as SLOWLOG GET; a negative count means all. */
  get(count: number): readonly SlowLogEntry[] {
    const n = count < 0 ? this.length : Math.min(count, this.length);
    const out: SlowLogEntry[] = [];
    for (let i = this.entries.length - 1; out.length < n; i--) out.push(this.entries[i]);
    return out;
  }

  /**
   * get(count) as SLOWLOG GET rows. With `thread` (a --threads proxy), ids are made unique
   * over the threads: id * count + index, so each thread's ids keep their order.
   */
  rows(count: number, thread?: { index: number; count: number }): SlowLogRow[] {
    return this.get(count).map((e) => [
      thread === undefined ? e.id : e.id * thread.count + thread.index,
      e.timestamp,
      e.durationUs,
      e.argv,
      Buffer.from(e.addr),
      Buffer.from(e.name),
    ]);
  }

  get length(): number {
    return Math.min(this.entries.length, this.maxLen);
  }

  private trim(): void {
    if (this.entries.length > this.maxLen) this.entries.splice(0, this.entries.length - this.maxLen);
  }

  /**
   * Follows one setting of a client's CONFIG SET (`name` lower case; the command also reaches
   * the upstream): slowlog-log-slower-than and slowlog-max-len, so tools that tune Redis's
   * slow log tune the proxy's the same way.
   */
  followSetting(name: string, text: string): void {
    const value = Number(text);
    if (!Number.isSafeInteger(value)) return;
    if (name === "slowlog-log-slower-than") this.slowerThanUs = value;
    else if (name === "slowlog-max-len" && value >= 0) {
      this.maxLen = value;
      this.trim();
    }
  }

  reset(): void {
    this.entries = [];
  }
}

/** As Redis trims: 31 arguments then "... (N more arguments)"; long strings cut at 128 bytes. */
const REDACTED = Buffer.from("(redacted)");

/** CONFIG SET values Redis 7.0 marks SENSITIVE_CONFIG. */
const SENSITIVE_CONFIGS = new Set([
  "masterauth",
  "requirepass",
  "tls-key-file-pass",
  "tls-client-key-file-pass",
]);

/**
 * The argument positions that carry a secret, which Redis shows as "(redacted)" in the slow log
 * (redactClientCommandArgument): AUTH's arguments, HELLO's AUTH user and password, ACL SETUSER's
 * rules (they may set passwords), MIGRATE's AUTH/AUTH2 credentials, sensitive CONFIG SET values.
 */
function secretPositions(argv: readonly Buffer[]): Set<number> {
  const secret = new Set<number>();
  const name = argv[0]?.toString().toLowerCase();
  const word = (i: number): string => argv[i]?.toString().toLowerCase() ?? "";
  if (name === "auth") for (let i = 1; i < argv.length; i++) secret.add(i);
  else if (name === "hello") {
    for (let i = 2; i < argv.length; i++)
      if (word(i) === "auth") {
        secret.add(i + 1);
        secret.add(i + 2);
      }
  } else if (name === "acl" && word(1) === "setuser") for (let i = 3; i < argv.length; i++) secret.add(i);
  else if (name === "migrate") {
    for (let i = 6; i < argv.length && word(i) !== "keys"; i++) {
      if (word(i) === "auth") secret.add(i + 1);
      else if (word(i) === "auth2") {
        secret.add(i + 1);
        secret.add(i + 2);
      }
    }
  } else if (name === "config" && word(1) === "set") {
    for (let i = 2; i + 1 < argv.length; i += 2) if (SENSITIVE_CONFIGS.has(word(i))) secret.add(i + 1);
  }
  return secret;
}

function trimArgv(argv: readonly Buffer[]): Buffer[] {
  const kept = argv.length > MAX_ARGC ? MAX_ARGC - 1 : argv.length;
  const secret = secretPositions(argv);
  const out: Buffer[] = [];
  for (let i = 0; i < kept; i++) {
    const arg = secret.has(i) ? REDACTED : argv[i];
    out.push(
      arg.length > MAX_STRING
        ? Buffer.concat([
            arg.subarray(0, MAX_STRING),
            Buffer.from(`... (${arg.length - MAX_STRING} more bytes)`),
          ])
        : Buffer.from(arg),
    );
  }
  if (kept < argv.length) out.push(Buffer.from(`... (${argv.length - kept} more arguments)`));
  return out;
}

/**
 * The threads' SLOWLOG GET rows (each newest first) as one log: newest first by time, a
 * thread's own rows in their order, the newest `count` (-1: all).
 */
export function mergeSlowLogRows(perThread: SlowLogRow[][], count: number): SlowLogRow[] {
  // Array.prototype.sort is stable: rows of one second keep their thread's order.
  const all = perThread.flat().sort((a, b) => b[1] - a[1]);
  return count < 0 ? all : all.slice(0, count);
}
