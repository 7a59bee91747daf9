/** Waiting in tests for effects that arrive in the background: poll with a deadline, never a bare sleep. */

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `probe` until `ok` holds; fails with the last value seen after `timeoutMs`.
 */
export async function eventually<T>(
  probe: () => Promise<T>,
  ok: (value: T) => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = await probe();
  while (!ok(last)) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: not reached within ${timeoutMs} ms; last value ${JSON.stringify(last)}`);
    }
    await sleep(20);
    last = await probe();
  }
  return last;
}

/** Polls `probe` until two reads `gapMs` apart agree (a counter that stopped moving). */
export async function stable<T>(
  probe: () => Promise<T>,
  what: string,
  gapMs = 250,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = JSON.stringify(await probe());
  for (;;) {
    await sleep(gapMs);
    const value = await probe();
    const now = JSON.stringify(value);
    if (now === last) return value;
    if (Date.now() > deadline) throw new Error(`${what}: still changing after ${timeoutMs} ms (${now})`);
    last = now;
  }
}

/** Polls `check` until it is true; fails naming `what` after `timeoutMs`. */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 5000,
): Promise<void> {
  await eventually(
    async () => await check(),
    (ok) => ok,
    what,
    timeoutMs,
  );
}

/** `promise`'s value, or a failure naming `what` if it takes longer than `ms`. */
export async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not answered within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Tells whether `promise` has settled yet (without waiting for it). */
export function tracked<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const p = promise.finally(() => (done = true));
  // Unhandled in the meantime is fine: the test awaits it.
  p.catch(() => {});
  return { promise: p, settled: () => done };
}
