/**
 * The API's global functions other than the builders: execute() and its async form (answered
 * from a read-ahead when one has the reply), log, config, hashtag, the command hooks and
 * time events. They are set on the global object when the bundle is evaluated, before the
 * user's script runs.
 */
import { safeString } from "../core/errors.js";
import { g, host } from "../core/host.js";
import { dropRounds, dropUnlessReadAhead, MISS, readAhead, readAheadSame } from "./read-ahead.js";
import { at } from "./state.js";
import type { Fn } from "./types.js";

g.execute = function execute(command: unknown, ...args: unknown[]): unknown {
  // Most calls of a step that reads ahead: the reply is the round's next one.
  const same = readAheadSame(command, args);
  if (same !== MISS) return same;
  const name = typeof command === "string" ? command : safeString(command);
  const argv = new Array<string>(args.length);
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    argv[i] = typeof a === "string" ? a : safeString(a);
  }
  const v = readAhead(name, argv);
  if (v !== MISS) return v;
  return host.callSync("execute", at.part, name, ...argv);
};
g.executeAsync = function executeAsync(command: unknown, ...args: unknown[]): PromiseLike<unknown> {
  const name = safeString(command);
  dropUnlessReadAhead(name);
  return host.callAsync("execute", at.part, name, ...args.map(safeString));
};

/**
 * The library's own execute functions, as set above: a script that replaces them takes the
 * per-record way in a batched foreach, so its own functions see every call.
 */
export const ownExecute = g.execute;
export const ownExecuteAsync = g.executeAsync;

g.log = function log(message: unknown, level: unknown = "notice"): void {
  host.notify("log", safeString(level), safeString(message));
};
const configGet = function configGet(name: unknown): unknown {
  return host.callSync("configGet", safeString(name));
};
g.configGet = configGet;
g.gearsConfigGet = function gearsConfigGet(name: unknown, dflt?: unknown): unknown {
  return configGet(name) ?? dflt ?? null;
};
g.hashtag = function hashtag(): unknown {
  return host.callSync("hashtag", at.part);
};
g.callNext = function callNext(...args: unknown[]): unknown {
  dropRounds();
  return host.callSync("callNext", ...args.map(safeString));
};
g.getCommand = function getCommand(): unknown {
  return host.callSync("getCommand");
};
g.overrideReply = function overrideReply(value: unknown): void {
  host.callSync("overrideReply", value === undefined ? null : value);
};

/** registerTimeEvent callbacks by the id the host names when a timer fires. */
export const timers: Fn[] = [];
g.registerTimeEvent = function registerTimeEvent(
  seconds: unknown,
  callback: unknown,
  keyName?: unknown,
): void {
  if (typeof callback !== "function") throw new TypeError("registerTimeEvent needs a callback function");
  const n = Number(seconds);
  if (!(n > 0)) throw new RangeError("registerTimeEvent needs a positive number of seconds");
  timers.push(callback as Fn);
  host.callSync(
    "registerTimeEvent",
    timers.length - 1,
    n,
    keyName === undefined ? null : safeString(keyName),
  );
};
