/**
 * The global environment T&F gave a library (its isolate filtered V8's globals against an
 * allow-list): `eval`, `EvalError` and `SharedArrayBuffer` removed, `console` present though
 * nothing reads what it prints (use redis.log). QuickJS's own extras that code may test for are
 * left (InternalError, the bridge's frozen __host/__steps/__tf, which the sandbox needs).
 */
import { g } from "../core/host.js";

const REMOVED = ["eval", "EvalError", "SharedArrayBuffer"];
const CONSOLE_METHODS = ["log", "info", "warn", "error", "debug", "trace", "dir", "table", "assert"];

export function shapeGlobals(): void {
  for (const name of REMOVED) delete g[name];
  // A stack overflow caught by the library is `instanceof RangeError`, as V8's was.
  const internal = g.InternalError as { prototype: object } | undefined;
  const range = g.RangeError as { prototype: object };
  if (internal !== undefined) Object.setPrototypeOf(internal.prototype, range.prototype);
  const noop = (): void => {};
  const console: Record<string, () => void> = {};
  for (const m of CONSOLE_METHODS) console[m] = noop;
  Object.defineProperty(g, "console", {
    value: console,
    writable: true,
    enumerable: false,
    configurable: true,
  });
}

/** The classes QuickJS throws its "stack overflow" as (the parser's, in JSON.parse or eval, a SyntaxError). */
const OVERFLOW_CLASSES = new Set(["InternalError", "SyntaxError", "RangeError"]);

/**
 * A guest stack overflow: QuickJS's "stack overflow" where V8 threw a RangeError. In T&F it
 * was an ordinary exception, so it is answered with V8's text.
 */
export function isStackOverflow(e: unknown): boolean {
  return (
    e !== null &&
    typeof e === "object" &&
    OVERFLOW_CLASSES.has((e as { name?: unknown }).name as string) &&
    (e as { message?: unknown }).message === "stack overflow"
  );
}

export const STACK_OVERFLOW_TEXT = "RangeError: Maximum call stack size exceeded";
