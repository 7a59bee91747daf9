import { startApart, type Apart } from "./registry.js";

/**
 * Spares: a deployment of each kind started ahead, in the background, for the next test that
 * asks for that kind. Most of a 3-master cluster's start is waiting, not work (Redis lets a
 * master turn cluster_state ok only 2 s after it started, and redis-cli --cluster create sleeps
 * 2 s); a Sentinel set waits for the sentinels' hello messages (every 2 s). A spare does that
 * waiting while the tests before run: ~0.15 s of CPU for 2-3 s of wall time each.
 *
 * Each spare is a fresh deployment no test has used: taken once, never given back. Its servers
 * stay out of stopAll (the root hooks run it after each spec file) until taken, and are killed
 * at process exit like any leftover (registry.ts). A worker of a parallel mocha run keeps its
 * spares from one spec file to the next.
 */

/** What fromSpare() needs to know of a kind of deployment. */
export interface SpareKind<T> {
  /** Names the kind: the options the deployment is started with. */
  readonly key: string;
  start(): Promise<T>;
  /** Whether a spare still is what start() gives (it waited idle: a server may have died). */
  usable(spare: T): Promise<boolean>;
  /** Stops a spare found unusable. */
  discard(spare: T): Promise<void>;
}

/** The spare of each kind, started or starting; undefined when its start failed. */
const spares = new Map<string, Promise<Apart<unknown> | undefined>>();

/**
 * A deployment of `kind`: its spare when there is one (waiting for it if it is still starting)
 * and usable, else a fresh one. Then another spare of the kind starts, while the caller's tests
 * run rather than beside the caller's own start.
 */
export async function fromSpare<T>(kind: SpareKind<T>): Promise<T> {
  const spare = spares.get(kind.key) as Promise<Apart<T> | undefined> | undefined;
  // Taken at once (before any await): no other caller can take it too.
  spares.delete(kind.key);
  let deployment: T | undefined;
  const taken = (await spare)?.claim();
  if (taken !== undefined) {
    if (await kind.usable(taken)) deployment = taken;
    else await kind.discard(taken);
  }
  deployment ??= await kind.start();
  spares.set(
    kind.key,
    startApart(() => kind.start()).catch(() => undefined),
  );
  return deployment;
}

/** Resolves once every spare started so far is up (or failed): for the harness's own spec. */
export async function settleSpares(): Promise<void> {
  await Promise.all(spares.values());
}
