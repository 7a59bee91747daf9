import { aclCommand } from "./acl-command.js";
import { auth, hello } from "./auth-commands.js";
import { clientCommand } from "./client-command.js";
import { clusterCommand, clusterFlagCommand } from "./cluster-command.js";
import type { LocalCommand } from "./command-host.js";
import { echo, ping, quit, reset, select } from "./connection-commands.js";
import { infoCommand } from "./info-command.js";
import { monitor, shutdown } from "./server-commands.js";
import { slowlogCommand } from "./slowlog-command.js";

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
]);
