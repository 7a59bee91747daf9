/** The texts of the sandbox's errors, shared by the main thread and the worker. */
export const timeoutMessage = (timeoutMs: number): string => `script timed out after ${timeoutMs} ms`;
export const memoryMessage = (memoryLimitMb: number): string =>
  `script exceeded its memory limit of ${memoryLimitMb} MB`;
export const stackMessage = (): string => "script exceeded the stack limit (too much recursion)";
export const abortedMessage = (): string => "script aborted";
export const terminatedMessage = (): string => "the isolate is gone";
