import { pino, type Logger } from "pino";
import { build as prettyStream } from "pino-pretty";
import type { ProxyConfig } from "../config.js";

export type { Logger };

/**
 * Log lines on stderr, so stdout stays free for tools that wrap the proxy. JSON lines (level
 * names, ISO times) for log collectors; human-readable lines on a terminal, or when asked.
 */
export function createLogger(
  level: ProxyConfig["logLevel"],
  format: ProxyConfig["logFormat"] = process.stderr.isTTY ? "pretty" : "json",
): Logger {
  const base = { name: "gears-proxy" };
  if (format === "json") {
    const json = {
      level,
      base,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label: string) => ({ level: label }) },
    };
    return pino(json, pino.destination(2));
  }
  // Written synchronously in this thread: a transport worker would lose the last lines of a crash.
  const pretty = prettyStream({
    destination: 2,
    sync: true,
    colorize: process.stderr.isTTY,
    translateTime: "SYS:yyyy-mm-dd HH:MM:ss.l",
    ignore: "pid,hostname,name",
    singleLine: true,
  });
  return pino({ level, base }, pretty);
}
