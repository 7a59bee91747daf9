import type { LocalCommand } from "./command-host.js";

/** MONITOR: every master's stream, relayed (client/monitor.ts). */
export const monitor: LocalCommand = (session) => session.monitor.start();

export const shutdown: LocalCommand = (session) => {
  session.replyError("ERR SHUTDOWN is not allowed through gears-proxy: stop the Redis server itself");
};
