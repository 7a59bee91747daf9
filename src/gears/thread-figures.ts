/**
 * Several threads' figures of one thing (a registration, a trigger, a stream) as one proxy's:
 * what registration-counters.ts and tf/list-stats.ts merge for their listings.
 */

/** The part whose `at` is the greatest (the first among equals). */
export function newest<T>(parts: readonly T[], at: (part: T) => number): T {
  return parts.reduce((best, part) => (at(part) > at(best) ? part : best));
}

/** The keys of T whose values are numbers. */
type NumberKeys<T> = { [P in keyof T]: T[P] extends number ? P : never }[keyof T];

/** `base` with each of `fields` the total of that field over `parts`. */
export function withTotals<T, K extends NumberKeys<T>>(
  base: T,
  parts: readonly T[],
  fields: readonly K[],
): T {
  const merged = { ...base };
  for (const field of fields)
    merged[field] = parts.reduce((total, part) => total + (part[field] as number), 0) as T[K];
  return merged;
}
