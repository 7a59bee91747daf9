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

import { parseSize } from "../config.js";

const MB = 1024 * 1024;

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
  /** Subscribed to a channel, pattern or shard channel: Redis' pubsub class of output limits. */
  readonly isPubSub: boolean;
  /** When the client's output went over the pubsub soft limit (ms), 0 while it is under. */
  softLimitSince: number;
  /** CLIENT NO-EVICT ON: never chosen to bring all clients under the total (its own limits still hold). */
  readonly noEvict: boolean;
}

/** One class of Redis' client-output-buffer-limit: bytes, bytes, seconds; 0 turns each off. */
export interface ClassLimit {
  hard: number;
  soft: number;
  softSeconds: number;
}

export interface MemoryLimits {
  /** Most output one client may hold; 0 = no limit. */
  readonly perClientOutput: number;
  /** Most all clients may hold together (query + output); 0 = no limit. */
  readonly total: number;
  /**
   * Subscribers' limits, on top of perClientOutput, as Redis applies its pubsub class (default
   * 32mb 8mb 60): a subscriber that does not read must not hold 256 MB in the proxy when Redis
   * would have cut it at 32. Absent: none.
   */
  readonly pubsub?: ClassLimit;
}

/** Redis 7's default pubsub class: `client-output-buffer-limit pubsub 32mb 8mb 60`. */
export const REDIS_PUBSUB_LIMIT: Readonly<ClassLimit> = { hard: 32 * MB, soft: 8 * MB, softSeconds: 60 };

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
  now = Date.now(),
): { evictions: Eviction[]; total: number } {
  const evictions: Eviction[] = [];
  const kept: { client: MemoryHolder; bytes: number }[] = [];
  let total = 0;
  let all = 0;
  for (const client of clients) {
    const { query, output } = client.memory();
    if (
      (limits.perClientOutput > 0 && output > limits.perClientOutput) ||
      (client.isPubSub && limits.pubsub !== undefined && overClassLimit(client, output, limits.pubsub, now))
    ) {
      evictions.push({ client, reason: "output-buffer-limit", bytes: output });
      continue;
    }
    const bytes = query + output;
    total += bytes;
    all += bytes;
    if (bytes > 0 && !client.noEvict) kept.push({ client, bytes });
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

/** Redis' rule for one class: over the hard limit, or over the soft one for softSeconds on end. */
function overClassLimit(client: MemoryHolder, output: number, limit: ClassLimit, now: number): boolean {
  if (limit.hard > 0 && output > limit.hard) return true;
  if (limit.soft > 0 && output > limit.soft) {
    if (client.softLimitSince === 0) client.softLimitSince = now;
    return now - client.softLimitSince >= limit.softSeconds * 1000;
  }
  client.softLimitSince = 0;
  return false;
}

/** A size as Redis writes it (config.ts parseSize); undefined when it is not one. */
function sizeOf(word: string): number | undefined {
  try {
    return parseSize(word);
  } catch {
    return undefined;
  }
}

/**
 * A client's CONFIG SET client-output-buffer-limit value ("<class> <hard> <soft> <seconds>"...,
 * sizes as Redis writes them: 32mb, 8m, 1gb, bytes) -> its pubsub class; undefined when the
 * value names none or does not parse (Redis refuses such a value too).
 */
export function pubsubLimitOf(value: string): ClassLimit | undefined {
  const words = value.trim().toLowerCase().split(/\s+/);
  if (words.length % 4 !== 0) return undefined;
  let found: ClassLimit | undefined;
  for (let i = 0; i < words.length; i += 4) {
    const [hard, soft, seconds] = [sizeOf(words[i + 1]), sizeOf(words[i + 2]), Number(words[i + 3])];
    if (hard === undefined || soft === undefined || !Number.isSafeInteger(seconds) || seconds < 0)
      return undefined;
    if (words[i] === "pubsub") found = { hard, soft, softSeconds: seconds };
  }
  return found;
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
  /** The same for a subscriber, whose limits (the pubsub class) are smaller. */
  private pubsubStep: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly clients: () => Iterable<MemoryHolder>,
    private readonly limits: MemoryLimits,
    private readonly evict: (eviction: Eviction) => void,
    private readonly measured: (total: number) => void,
  ) {
    this.step = stepFor([limits.perClientOutput, limits.total]);
    this.pubsubStep = this.subscriberStep();
  }

  /** Most output a client may hold before it is cut as soon as it writes (the hard limits). */
  outputLimit(isPubSub: boolean): number {
    const own = this.limits.perClientOutput > 0 ? this.limits.perClientOutput : Infinity;
    const hard = isPubSub ? this.limits.pubsub?.hard || Infinity : Infinity;
    return Math.min(own, hard);
  }

  /** Takes the pubsub class from a client-output-buffer-limit value (CONFIG SET, or the server's at start). */
  followOutputLimits(value: string): void {
    const pubsub = this.limits.pubsub;
    if (pubsub === undefined) return;
    const next = pubsubLimitOf(value);
    if (next === undefined) return;
    Object.assign(pubsub, next);
    this.pubsubStep = this.subscriberStep();
  }

  private subscriberStep(): number {
    const p = this.limits.pubsub;
    return p === undefined ? this.step : Math.min(this.step, stepFor([p.hard, p.soft]));
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
      client.memoryMark = Math.max(query, output) + (client.isPubSub ? this.pubsubStep : this.step);
    }
    this.measured(total);
    for (const eviction of evictions) this.evict(eviction);
  }
}

/** A step of 1/STEPS of the smallest limit set (not under MIN_STEP); Infinity when none is. */
function stepFor(limits: number[]): number {
  const smallest = Math.min(...limits.filter((l) => l > 0));
  return Number.isFinite(smallest) ? Math.max(MIN_STEP, Math.floor(smallest / STEPS)) : Infinity;
}
