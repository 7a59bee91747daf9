import { pino, type Logger } from "pino";
import type { ProxyConfig } from "../config.js";

export type { Logger };

/** JSON lines on stderr, so stdout stays free for tools that wrap the proxy. */
export function createLogger(level: ProxyConfig["logLevel"]): Logger {
  return pino({ level, base: { name: "gears-proxy" } }, pino.destination(2));
}
