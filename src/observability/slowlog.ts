/** The proxy's own SLOWLOG: commands that took long as the proxy's clients saw them. */

/** Redis keeps at most 32 arguments and 128 bytes of each (slowlog.c's limits). */
const MAX_ARGC = 32;
const MAX_STRING = 128;

export interface SlowLogEntry {
  id: number;
  /** Unix time in seconds when the command was logged. */
  timestamp: number;
  durationUs: number;
  argv: Buffer[];
  addr: string;
  name: string;
}

export class SlowLog {
  private entries: SlowLogEntry[] = [];
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

  record(durationUs: number, argv: readonly Buffer[], addr: string, name: string): void {
    if (!this.logs(durationUs)) return;
    this.entries.unshift({
      id: this.nextId++,
      timestamp: Math.floor(Date.now() / 1000),
      durationUs: Math.floor(durationUs),
      argv: trimArgv(argv),
      addr,
      name,
    });
    if (this.entries.length > this.maxLen) this.entries.length = this.maxLen;
  }

  /** Newest first, as SLOWLOG GET; a negative count means all. */
  get(count: number): readonly SlowLogEntry[] {
    return count < 0 ? this.entries : this.entries.slice(0, count);
  }

  get length(): number {
    return this.entries.length;
  }

  /**
   * Follows a client's CONFIG SET of slowlog-log-slower-than / slowlog-max-len (which also
   * reaches the upstream), so tools that tune Redis's slow log tune the proxy's the same way.
   */
  noteConfigSet(argv: readonly Buffer[]): void {
    if (argv.length < 4 || argv[1].toString().toLowerCase() !== "set") return;
    for (let i = 2; i + 1 < argv.length; i += 2) {
      const key = argv[i].toString().toLowerCase();
      const value = Number(argv[i + 1].toString());
      if (!Number.isSafeInteger(value)) continue;
      if (key === "slowlog-log-slower-than") this.slowerThanUs = value;
      else if (key === "slowlog-max-len" && value >= 0) {
        this.maxLen = value;
        if (this.entries.length > value) this.entries.length = value;
      }
    }
  }

  reset(): void {
    this.entries = [];
  }
}

/** As Redis trims: 31 arguments then "... (N more arguments)"; long strings cut at 128 bytes. */
function trimArgv(argv: readonly Buffer[]): Buffer[] {
  const kept = argv.length > MAX_ARGC ? MAX_ARGC - 1 : argv.length;
  const out: Buffer[] = [];
  for (let i = 0; i < kept; i++) {
    const arg = argv[i];
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
