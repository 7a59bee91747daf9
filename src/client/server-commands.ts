import type { LocalCommand } from "./command-host.js";

/** MONITOR: every master's stream, relayed (client/monitor.ts). */
export const monitor: LocalCommand = (session) => session.monitor.start();

/** SHUTDOWN's options in Redis 7.0; anything else is its syntax error, refused before the rest. */
const SHUTDOWN_OPTIONS = new Set(["nosave", "save", "now", "force", "abort"]);

export const shutdown: LocalCommand = (session, { argv }) => {
  if (argv.slice(1).some((a) => !SHUTDOWN_OPTIONS.has(a.toString().toLowerCase())))
    return session.replyError("ERR syntax error");
  session.replyError("ERR SHUTDOWN is not allowed through gears-proxy: stop the Redis server itself");
};
