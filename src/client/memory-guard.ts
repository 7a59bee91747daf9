/**
 * Bounds what clients hold in the proxy: each client's output (Redis' client-output-buffer-limit,
 * counting every reply held for it, also those waiting behind an earlier one) and all clients
 * together (Redis 7's maxmemory-clients), evicting the largest clients first.
 *
 * It runs from a timer, and also as soon as one client's buffers grow by a step past what they
 * held at the last check (MemoryGuard.grew): a burst that arrives faster than the timer (on
 * loopback, hundreds of MB per 100 ms) is cut within a step. The hot path pays one integer
 * compare per read or flush against the client's `memoryMark`.
 */

/** Bytes one client holds in the proxy. */
export interface ClientMemory {
  /** Request bytes received and not yet run. */
  readonly query: number;
  /** Reply bytes not yet handed to the kernel: the output buffer and replies waiting their turn. */
  readonly output: number;
}

/** What the guard needs of a client. */
export interface MemoryHolder {
  readonly id: number;
  readonly addr: string;
  memory(): ClientMemory;
  kill(reason: string): void;
  /** Bytes (query or output) past which the client asks the guard for a check (MemoryGuard.grew). */
  memoryMark: number;
}

export interface MemoryLimits {
  /** Most output one client may hold; 0 = no limit. */
  readonly perClientOutput: number;
  /** Most all clients may hold together (query + output); 0 = no limit. */
  readonly total: number;
}

export type EvictionReason = "output-buffer-limit" | "maxmemory-clients";

export interface Eviction {
  readonly client: MemoryHolder;
  readonly reason: EvictionReason;
  readonly bytes: number;
}

/**
 * Picks the clients to disconnect: first every client over its own output limit, then, while the
 * rest together exceed the total, the largest remaining ones. Pure, so it is tested on its own.
 */
export function chooseEvictions(
  clients: Iterable<MemoryHolder>,
  limits: MemoryLimits,
): { evictions: Eviction[]; total: number } {
  const evictions: Eviction[] = [];
  const kept: { client: MemoryHolder; bytes: number }[] = [];
  let total = 0;
  let all = 0;
  for (const client of clients) {
    const { query, output } = client.memory();
    if (limits.perClientOutput > 0 && output > limits.perClientOutput) {
      evictions.push({ client, reason: "output-buffer-limit", bytes: output });
      continue;
    }
    const bytes = query + output;
    total += bytes;
    all += bytes;
    if (bytes > 0) kept.push({ client, bytes });
  }
  if (limits.total > 0 && total > limits.total) {
    kept.sort((a, b) => b.bytes - a.bytes);
    for (const { client, bytes } of kept) {
      if (total <= limits.total) break;
      evictions.push({ client, reason: "maxmemory-clients", bytes });
      total -= bytes;
    }
  }
  return { evictions, total: all };
}

/** The smallest growth that triggers a check between two timer ticks. */
const MIN_STEP = 1024 * 1024;
/** Steps per limit: a client crossing a step overshoots its limit by at most 1/STEPS of it. */
const STEPS = 16;

/**
 * Runs chooseEvictions over the clients, from a timer and whenever a client grows by a step;
 * `evict` disconnects a chosen client (counts, logs) and `measured` hears the total held.
 */
export class MemoryGuard {
  /** Growth of one client, in bytes, past its last check that triggers the next. */
  readonly step: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly clients: () => Iterable<MemoryHolder>,
    private readonly limits: MemoryLimits,
    private readonly evict: (eviction: Eviction) => void,
    private readonly measured: (total: number) => void,
  ) {
    const smallest = Math.min(...[limits.perClientOutput, limits.total].filter((l) => l > 0));
    this.step = Number.isFinite(smallest) ? Math.max(MIN_STEP, Math.floor(smallest / STEPS)) : Infinity;
  }

  /** The timer's checks; unref'd, so it keeps nothing alive. */
  start(intervalMs: number): void {
    this.stop();
    this.timer = setInterval(() => this.check(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** A client's buffers went past its mark: check now rather than at the next tick. */
  grew(): void {
    this.check();
  }

  check(): void {
    const clients = [...this.clients()];
    const { evictions, total } = chooseEvictions(clients, this.limits);
    // Each client kept waits for another step of growth from what it holds now.
    for (const client of clients) {
      const { query, output } = client.memory();
      client.memoryMark = Math.max(query, output) + this.step;
    }
    this.measured(total);
    for (const eviction of evictions) this.evict(eviction);
  }
}
