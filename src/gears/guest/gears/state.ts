import type { Where } from "./types.js";

/** Where the engine is now, shared by the engine and the read-ahead. */
export const at: {
  /** Partition of the record being processed (null outside steps). */
  part: number | null;
  /** The step whose user code runs now. */
  step: Where | null;
} = { part: null, step: null };
