/**
 * Bounds what clients hold in the proxy: each client's output (Redis' client-output-buffer-limit,
 * counting every reply held for it, also those waiting behind an earlier one) and all clients
 * together (Redis 7's maxmemory-clients), evicting the largest clients first.
 *
 * It runs from a timer rather than on every read or write, so the hot path pays nothing; a client
 * can overshoot for at most one interval (on loopback, tens of MB per 100 ms).
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
