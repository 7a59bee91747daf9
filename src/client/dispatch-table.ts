import { ALLOWED_WHILE_SUBSCRIBED, SUBSCRIBE_FAMILY } from "../routing/command-kinds.js";
import { isGearsCommand } from "../gears/commands.js";
import { aclCommand } from "./acl-command.js";
import { auth, hello } from "./auth-commands.js";
import { clientCommand } from "./client-command.js";
import { clusterCommand, clusterFlagCommand } from "./cluster-command.js";
import type { LocalCommand } from "./command-host.js";
import { echo, ping, quit, reset, select } from "./connection-commands.js";
import { infoCommand } from "./info-command.js";
import { monitor, shutdown } from "./server-commands.js";
import { slowlogCommand } from "./slowlog-command.js";
import { pubsubCommand } from "./pubsub-command.js";

/** Subcommands the proxy adds to a server's command, which the server's table does not know. */
export const PROXY_SUBCOMMANDS: ReadonlySet<string> = new Set(["slowlog|shards"]);

/** Commands a client may send before it has authenticated (as Redis' no-auth flag). */
export const NO_AUTH_COMMANDS = new Set(["auth", "hello", "quit", "reset"]);

/**
 * The commands the proxy answers itself, by name: one table the dispatcher reads, each
 * handler in the file of its family, each seeing the client only through CommandHost.
 */
export const LOCAL_COMMANDS = new Map<string, LocalCommand>([
  ["ping", ping],
  ["echo", echo],
  ["quit", quit],
  ["reset", reset],
  ["select", select],
  ["auth", auth],
  ["acl", aclCommand],
  ["hello", hello],
  ["client", clientCommand],
  ["info", infoCommand],
  ["monitor", monitor],
  ["slowlog", slowlogCommand],
  ["shutdown", shutdown],
  ["cluster", clusterCommand],
  ["readonly", clusterFlagCommand],
  ["readwrite", clusterFlagCommand],
  ["asking", clusterFlagCommand],
  ["pubsub", pubsubCommand],
]);

/**
 * Names the dispatcher must look at closely: answered locally, allowed before AUTH or while
 * subscribed, or changing the client's lane. Every other command, once the client is
 * authenticated, unsubscribed and outside MULTI, goes straight to forwarding.
 */
const SPECIAL = new Set([
  ...LOCAL_COMMANDS.keys(),
  ...NO_AUTH_COMMANDS,
  ...ALLOWED_WHILE_SUBSCRIBED,
  ...SUBSCRIBE_FAMILY,
  "multi",
  "watch",
  // CONFIG takes the full path: the gears room answers it for T&F's settings.
  "config",
  // SCRIPT DEBUG is answered by the proxy (script-debug.ts).
  "script",
  // HTTP's first lines: the connection closes (isHttpLine).
  "post",
  "host:",
]);

const NO_ARGS: readonly Buffer[] = [];

/** POST and Host:, which Redis takes for an HTTP request and answers by closing the connection. */
export function isHttpLine(name: string): boolean {
  return name === "post" || name === "host:";
}

/**
 * Whether `name` needs the dispatcher's full path. By the name alone: the one gears command
 * whose arguments tell (CONFIG, for T&F's settings) is in SPECIAL, so a forwarded command
 * builds no argument views here.
 */
export function isSpecial(name: string): boolean {
  return SPECIAL.has(name) || isGearsCommand(name, NO_ARGS);
}
