import { SandboxError } from "../sandbox/types.js";
import type { GuestIsolate } from "./guest-isolate.js";
import { GearsGuest } from "./gears-guest.js";

function withLine(message: string, line: number | undefined): string {
  return line === undefined || /at script:\d+/.test(message) ? message : `${message} at script:${line}`;
}

/** An error of the script's top level (RG.EXECUTE's error reply), without the ERR prefix. */
export function topLevelError(err: unknown): string {
  if (err instanceof SandboxError) {
    // A plain Error reads better as its message alone; other names (TypeError...) stay.
    const message = err.kind === "throw" ? err.message.replace(/^Error: /, "") : err.message;
    return withLine(message, err.line);
  }
  return err instanceof Error ? err.message : String(err);
}

/**
 * An error that ended an execution, for its errors list. A time-out names the step that
 * was running, which the guest library still knows after the interrupt.
 */
export async function executionError(err: unknown, isolate: GuestIsolate): Promise<string> {
  if (err instanceof SandboxError && err.kind === "timeout" && isolate.alive) {
    try {
      const current = await new GearsGuest(isolate).current();
      if (current?.step) {
        return `${err.message} in ${current.step}${current.line ? ` at script:${current.line}` : ""}`;
      }
    } catch {
      // The isolate cannot say: report the time-out alone.
    }
  }
  return topLevelError(err);
}
