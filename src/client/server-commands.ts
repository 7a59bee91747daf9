import type { LocalCommand } from "./command-host.js";

/** MONITOR: every master's stream, relayed (see the session's startMonitor). */
export const monitor: LocalCommand = (session) => session.startMonitor();

export const shutdown: LocalCommand = (session) => {
  session.replyError("ERR SHUTDOWN is not allowed through gears-proxy: stop the Redis server itself");
};
