/**
 * What the pool (main thread) and the Pyodide workers share beyond the sandbox's protocol,
 * handed over through worker_threads' environment data (the Isolate that starts a worker is
 * the QuickJS one's too and carries no runtime-specific options):
 * - where the start-up memory snapshot is cached;
 * - the interpreter's WebAssembly, compiled once per process;
 * - the memory budget of all Python instances: an Int32Array over a SharedArrayBuffer,
 *   counted in WebAssembly pages (64 KiB): [0] the total, [1 + slot] one instance's share.
 */

/** Environment data key of the snapshot file's path (the same for every pool of a process). */
export const SNAPSHOT_KEY = "gears-proxy:pyodide-snapshot";

/** Environment data key of the interpreter's compiled WebAssembly (a CompiledPyodide). */
export const MODULE_KEY = "gears-proxy:pyodide-module";

export interface CompiledPyodide {
  module: WebAssembly.Module;
  /** The size of pyodide.asm.wasm, by which the worker knows the bytes Pyodide instantiates. */
  byteLength: number;
}

/** Environment data key of one pool's budget (a worker is told its pool's when it is taken on). */
export const budgetKey = (poolId: number): string => `gears-proxy:pyodide-budget:${poolId}`;

export interface BudgetData {
  buffer: SharedArrayBuffer;
  /** The cap, in pages; 0 for none. */
  capPages: number;
  capMb: number;
}

export const PAGE_BYTES = 65536;

/** Instances one pool can count: far beyond what a cap of a few GB holds (25-50 MB each). */
export const BUDGET_SLOTS = 1024;

export const pagesToMb = (pages: number): number => Math.round((pages * PAGE_BYTES) / (1024 * 1024));

/** The error Python gets when a growth would take all instances past the cap. */
export const totalMemoryMessage = (capMb: number): string =>
  `the Python instances together reached their memory cap of ${capMb} MB (--python-max-memory)`;

/** The error RG.PYEXECUTE gets when a new instance would not fit under the cap. */
export const startRefusedMessage = (capMb: number, inUsePages: number, needPages: number): string =>
  `no room for another Python instance: it needs ${pagesToMb(needPages)} MB and the Python instances hold ` +
  `${pagesToMb(inUsePages)} MB of the ${capMb} MB cap (--python-max-memory)`;
