/**
 * The host's side of the bridge as the guest sees it: `globalThis.__host`, which the sandbox's
 * prelude defines before any guest library runs (src/sandbox/types.ts, HostBridge). The
 * arguments after the name are the host's `args` array.
 */
export interface GuestHost {
  /** Blocks the guest until the host answers; an error answer throws. */
  callSync(name: string, ...args: unknown[]): unknown;
  /** Batched with the other calls made before the guest yields; settles later. */
  callAsync(name: string, ...args: unknown[]): PromiseLike<unknown>;
  /** Fire and forget (logs). */
  notify(name: string, ...args: unknown[]): void;
}

/** The global object of the isolate, seen as a bag of properties the libraries define. */
export const g = globalThis as unknown as Record<string, unknown>;

export const host = g.__host as GuestHost;

/** Installs a library's entry object (what the host's facade calls) where the host finds it. */
export function defineEntry(name: string, entry: object): void {
  Object.defineProperty(g, name, { value: Object.freeze(entry), writable: false, configurable: false });
}
