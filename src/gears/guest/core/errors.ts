/** Small helpers shared by the guest libraries: thenables, safe strings, error texts and lines. */

export function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    v !== null &&
    (typeof v === "object" || typeof v === "function") &&
    typeof (v as { then?: unknown }).then === "function"
  );
}

/** The first frame of a stack that is in the user's script (filename "script"). */
export function scriptLine(stack: unknown): number | null {
  if (typeof stack !== "string") return null;
  const m = /(?:^|[\s(@])script:(\d+)/.exec(stack);
  return m === null ? null : Number(m[1]);
}

export function callerLine(): number | null {
  return scriptLine(new Error().stack);
}

export function safeString(v: unknown): string {
  try {
    return String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

/** Errors the engine must not swallow: the isolate's own limits (memory, stack, interrupt). */
export function isFatal(e: unknown): boolean {
  // QuickJS throws null when it cannot even allocate the out-of-memory error.
  if (e === null) return true;
  if (typeof e !== "object") return false;
  const o = e as { name?: unknown; message?: unknown };
  if (o.name === "InternalError") return true;
  return o.name === "RangeError" && typeof o.message === "string" && o.message.includes("call stack");
}

export function formatError(e: unknown, type: string, line: number | null): string {
  let name = "Error";
  let message: string;
  if (e !== null && typeof e === "object") {
    const o = e as { name?: unknown; message?: unknown; stack?: unknown };
    if (typeof o.name === "string" && o.name !== "") name = o.name;
    message = typeof o.message === "string" ? o.message : safeString(e);
    const l = scriptLine(o.stack);
    if (l !== null) line = l;
  } else {
    message = safeString(e);
  }
  return `${name}: ${message} in ${type}` + (line === null ? "" : ` at script:${line}`);
}
