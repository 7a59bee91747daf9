/**
 * Commands that need something other than a shared pipelined connection. Names are
 * lower case, as the client session compares them.
 */

/** Commands that may block the connection until data arrives. */
const BLOCKING = new Set([
  "blpop",
  "brpop",
  "brpoplpush",
  "blmove",
  "blmpop",
  "bzpopmin",
  "bzpopmax",
  "bzmpop",
  "wait",
  "waitaof",
]);

export function isBlocking(name: string, argv: readonly Buffer[]): boolean {
  if (BLOCKING.has(name)) return true;
  if (name === "xread" || name === "xreadgroup") {
    // Only with a BLOCK option, which comes before STREAMS.
    for (let i = 1; i < argv.length; i++) {
      const arg = argv[i].toString("latin1").toLowerCase();
      if (arg === "block") return true;
      if (arg === "streams") return false;
    }
  }
  return false;
}

/** Commands that put a connection into subscriber mode or act on its subscriptions. */
export const SUBSCRIBE_FAMILY = new Set([
  "subscribe",
  "psubscribe",
  "ssubscribe",
  "unsubscribe",
  "punsubscribe",
  "sunsubscribe",
]);

/** What a RESP2 client in subscriber mode may still send (Redis' own list). */
export const ALLOWED_WHILE_SUBSCRIBED = new Set([...SUBSCRIBE_FAMILY, "ping", "quit", "reset"]);

/**
 * Scripts and functions, which may run long. A busy one must hold only a connection of its
 * own, so that other clients get the server's BUSY at once instead of waiting behind it
 * on a shared connection.
 */
const SCRIPTS = new Set(["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"]);

export function isScript(name: string): boolean {
  return SCRIPTS.has(name);
}
