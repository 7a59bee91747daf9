import type { CallOptions, HostBridge, IsolateLimits, JsonValue, Preload } from "../sandbox/types.js";

/** What gears needs of an isolate (the sandbox's Isolate provides it). */
export interface GuestIsolate {
  evalScript(source: string, filename: string): Promise<JsonValue>;
  call(path: string, args: JsonValue[], options?: CallOptions): Promise<JsonValue>;
  abort(): void;
  dispose(): Promise<void>;
  readonly alive: boolean;
  readonly limits: IsolateLimits;
  /** Which language runtime runs the user's code: QuickJS (JavaScript) or Pyodide (Python). */
  readonly runtime: "quickjs" | "pyodide";
  /** Whether callBinary() may be used: the isolate's QuickJS reads src/sandbox/bjson.ts's format. */
  readonly binary: boolean;
  /** call(), with args[index] given in QuickJS's binary object format instead of JSON. */
  callBinary(path: string, argsJson: string, index: number, bytes: Uint8Array): Promise<JsonValue>;
  /** A new time limit for the entries that start from now on. */
  setTimeoutMs(ms: number): void;
  /** How far the memory may grow now, in MiB (0: up to its cap): a cap several isolates share. */
  setMemoryAllowanceMb(mb: number): void;
  /** The memory size, in bytes (it only grows). */
  readonly memoryBytes: number;
}

/**
 * How long one guest entry may go on starting work (records, calls, trigger events): half the
 * isolate's time limit, so that the limit applies to one callback, not to a whole batch, and a
 * callback started just before the budget ran out still has its share.
 */
export const entryBudgetMs = (isolate: GuestIsolate): number =>
  Math.max(1, Math.floor(isolate.limits.timeoutMs / 2));

/** A new isolate (a warm one when there is one), with `preload` evaluated in it when given. */
export type IsolateFactory = (
  limits: IsolateLimits,
  bridge: HostBridge,
  preload?: Preload,
) => Promise<GuestIsolate>;

/** A Pyodide isolate: JavaScript for the libraries beside Python for the user's code. */
export interface PythonIsolate extends GuestIsolate {
  evalPython(source: string, filename: string): Promise<JsonValue>;
}

export type PythonIsolateFactory = (limits: IsolateLimits, bridge: HostBridge) => Promise<PythonIsolate>;

/** The language a user's script is written in, as RG.DUMPSESSIONS and RG.DUMPREGISTRATIONS show it. */
export const languageOf = (isolate: GuestIsolate): "python" | "javascript" =>
  isolate.runtime === "pyodide" ? "python" : "javascript";

/** One step of a plan, as the guest library reports it. */
export interface StepInfo {
  type: string;
  name: string;
  arg: string;
  line: number | null;
}

/** What a script asked for: run() or register(), as the guest library reports it. */
export interface Action {
  kind: "run" | "register";
  reader: string;
  arg: JsonValue;
  options: Record<string, JsonValue>;
  desc: string | null;
  steps: StepInfo[];
}
