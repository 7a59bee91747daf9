import type { ServerIdentity } from "../routing/router.js";

/**
 * What the upstream's version adds to what the proxy answers itself, so that CLIENT KILL and
 * CLIENT LIST/INFO read as the server's own would: Redis 7.4 and Valkey 8.0 added MAXAGE and
 * the `watch` field, Redis 8.0 the `io-thread` field.
 */

/** Whether `version` ("7.4.2") is at least major.minor. */
function atLeast(version: string, major: number, minor: number): boolean {
  const [a, b] = version.split(".").map(Number);
  return a > major || (a === major && b >= minor);
}

/** Redis 7.4 or later, Valkey 8.0 or later: CLIENT KILL MAXAGE, CLIENT LIST's `watch=`. */
export function since74({ name, version }: ServerIdentity): boolean {
  return name === "valkey" ? atLeast(version, 8, 0) : atLeast(version, 7, 4);
}

/** Redis 8.0 or later: CLIENT LIST's `io-thread=` (Valkey has none). */
export function since80({ name, version }: ServerIdentity): boolean {
  return name !== "valkey" && atLeast(version, 8, 0);
}
