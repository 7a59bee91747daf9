import { ANY_DB, anyDbIn } from "../upstream/connection.js";

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

/**
 * isBlocking for a client's request, whose arguments are split only for the names that need
 * them (XREAD, XREADGROUP): a forwarded GET builds no argument views.
 */
export function isBlockingRequest(name: string, request: { readonly argv: readonly Buffer[] }): boolean {
  if (BLOCKING.has(name)) return true;
  return (name === "xread" || name === "xreadgroup") && hasBlockOption(request.argv);
}

export function isBlocking(name: string, argv: readonly Buffer[]): boolean {
  if (BLOCKING.has(name)) return true;
  return (name === "xread" || name === "xreadgroup") && hasBlockOption(argv);
}

/** XREAD/XREADGROUP with a BLOCK option, which comes before STREAMS. */
function hasBlockOption(argv: readonly Buffer[]): boolean {
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i].toString("latin1").toLowerCase();
    if (arg === "block") return true;
    if (arg === "streams") return false;
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

/**
 * Commands whose outcome does not depend on the selected database. Several of them are what
 * a busy server still runs (FUNCTION KILL and STATS, SCRIPT KILL, SHUTDOWN...): sent in ANY_DB,
 * they take no SELECT in front, and behind a SELECT the server refused their success is theirs,
 * not a command run in the wrong database.
 */
const RUNS_IN_ANY_DB = new Set([
  "function",
  "script",
  "ping",
  "echo",
  "client",
  "hello",
  "auth",
  "info",
  "config",
  "shutdown",
  "quit",
  "discard",
  "unwatch",
  "time",
  "command",
  "latency",
  "slowlog",
  "acl",
  "role",
  "lastsave",
]);

/**
 * The database to send a client's command `name` in: ANY_DB when it runs the same in every
 * one; while a client of the proxy monitors (`monitored`), in the client's one if it can, as
 * MONITOR shows it.
 */
export function dbFor(name: string, db: number, monitored: boolean): number {
  if (!RUNS_IN_ANY_DB.has(name)) return db;
  return monitored ? anyDbIn(db) : ANY_DB;
}

/**
 * In a cluster, channel pub/sub (PUBLISH, SUBSCRIBE, PSUBSCRIBE; PUBSUB CHANNELS, NUMSUB and
 * NUMPAT in fan-out.ts) goes to the master of this slot, from every client and every proxy. A
 * client sees one server: there a message published is received by every subscriber, and
 * PUBSUB NUMSUB counts them all. Spread over the masters, a message would cross the cluster
 * bus, which drops it while a link between two nodes is being made again (a late pong under
 * load; Valkey 8.0 also drops a lightweight PUBLISH sent first on a new link), and NUMSUB
 * would count one node's subscribers. Scripts and functions called without keys go there too
 * (routingSlot): what they PUBLISH counts, and reaches, every subscriber as on one server.
 */
export const PUBSUB_HOME_SLOT = 0;

/** Channel pub/sub commands (not shard channels'), which go to PUBSUB_HOME_SLOT's master. */
const CLASSIC_PUBSUB = new Set(["publish", "subscribe", "psubscribe", "unsubscribe", "punsubscribe"]);

export function isClassicPubSub(name: string): boolean {
  return CLASSIC_PUBSUB.has(name);
}
