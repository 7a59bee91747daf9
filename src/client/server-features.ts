import type { ServerIdentity } from "../routing/router.js";

/**
 * What the upstream's version changes in what the proxy answers itself, so that it reads as
 * the server's own would: Redis 7.2 named the user in NOPERM errors, Redis 7.4 and Valkey 8.0
 * added CLIENT KILL MAXAGE and CLIENT LIST's `watch` field, Redis 8.0 its `io-thread` field.
 */

/** Whether `version` ("7.4.2") is at least major.minor. */
function atLeast(version: string, major: number, minor: number): boolean {
  const [a, b] = version.split(".").map(Number);
  return a > major || (a === major && b >= minor);
}

/**
 * Redis 6.2 or later, or Valkey: SELECT of a non-number says 'value is not an integer or out of
 * range' (6.0: 'invalid DB index'), SCRIPT DEBUG's error names YES/SYNC/NO (6.0: yes/sync/no),
 * and CLIENT's subcommand errors end with a period (6.0: without).
 */
export function since62({ name, version }: ServerIdentity): boolean {
  return name === "valkey" || atLeast(version, 6, 2);
}

/** Redis 7.0 or later, or Valkey: a subcommand table, whose arity errors name 'client|<sub>'. */
export function since70({ name, version }: ServerIdentity): boolean {
  return name === "valkey" || atLeast(version, 7, 0);
}

/** Redis 7.2 or later, or Valkey (forked from 7.2): NOPERM errors that name the user. */
export function since72({ name, version }: ServerIdentity): boolean {
  return name === "valkey" || atLeast(version, 7, 2);
}

/** Redis 7.4 or later, Valkey 8.0 or later: CLIENT KILL MAXAGE, CLIENT LIST's `watch=`. */
export function since74({ name, version }: ServerIdentity): boolean {
  return name === "valkey" ? atLeast(version, 8, 0) : atLeast(version, 7, 4);
}

/**
 * Redis 7.4 or later (not Valkey): FLUSHALL/FLUSHDB SYNC run in the background while their
 * client waits, so that client's own tracking null comes before the command's reply.
 */
export function flushesInBackground({ name, version }: ServerIdentity): boolean {
  return name !== "valkey" && atLeast(version, 7, 4);
}

/** Redis 8.0 or later: CLIENT LIST's `io-thread=` (Valkey has none). */
export function since80({ name, version }: ServerIdentity): boolean {
  return name !== "valkey" && atLeast(version, 8, 0);
}
