import type {
  AsyncPart,
  AsyncResult,
  HostBridge,
  IsolateLimits,
  JsonValue,
  Preload,
  RawJson,
} from "./types.js";

/** What the pool needs of an isolate. */
export interface Disposable<Self = unknown> {
  dispose(): Promise<void>;
  evalScript(source: string, filename: string): Promise<unknown>;
  readonly alive: boolean;
  /** When its last entry ended (performance.now()), or null while one runs or waits. */
  readonly idleSince: number | null;
  /** Isolate.renewOnDispose: its dispose() may hand its thread back, renewed, instead. */
  renewOnDispose?(
    limits: IsolateLimits,
    wanted: () => boolean,
    bridge: () => HostBridge,
    take: (renewed: Promise<Self> | null) => void,
  ): void;
}

/** How long a large job holds spares back (see WarmIsolates.hold). */
export interface WarmTiming {
  /** After a large job's isolate is disposed, spares wait this long more: its reply leaves first. */
  settleMs: number;
  /** An isolate idle this long is done with its job, disposed or not. */
  idleMs: number;
  /** A job holds spares back this long at most. */
  maxHoldMs: number;
  /**
   * A taken isolate idle this long is kept by its taker (a registration's session, a library),
   * not coming back: the next spare starts then.
   */
  keptIdleMs: number;
  /** A taken isolate still at work after this long: the next spare starts anyway. */
  busyStartMs: number;
}

export const WARM_TIMING: WarmTiming = {
  settleMs: 1000,
  idleMs: 1000,
  maxHoldMs: 60_000,
  keptIdleMs: 150,
  busyStartMs: 1000,
};

/** How often the large jobs are looked at, while there are any. */
const REVIEW_MS = 50;

/**
 * A bridge whose host side is named later: a spare isolate is started before anyone knows
 * which execution it will serve, and the execution plugs its own bridge in when it takes it.
 */
class LateBridge implements HostBridge {
  target: HostBridge | null = null;

  private host(): HostBridge {
    if (this.target === null) throw new Error("a spare isolate called its host before it was taken");
    return this.target;
  }

  callSync(name: string, args: JsonValue[]): Promise<JsonValue | RawJson> {
    return this.host().callSync(name, args);
  }

  callAsync(calls: { name: string; args: JsonValue[] }[]): Promise<AsyncResult[]> {
    return this.host().callAsync(calls);
  }

  callAsyncParts(calls: { name: string; args: JsonValue[] }[], mayWait: boolean): Promise<AsyncPart[]> {
    const host = this.host();
    return host.callAsyncParts === undefined ? host.callAsync(calls) : host.callAsyncParts(calls, mayWait);
  }

  notify(name: string, args: JsonValue[]): void {
    this.host().notify(name, args);
  }
}

/** What a spare is for: its limits, and the script it is handed out with already evaluated. */
interface Kind {
  readonly limits: IsolateLimits;
  readonly preload: Preload | null;
}

interface Spare<I> {
  readonly kind: Kind;
  readonly bridge: LateBridge;
  readonly isolate: Promise<I>;
  readonly startedAt: number;
}

/** A large job, watched until it is over: no spare starts meanwhile. */
interface Job {
  readonly isolate: Disposable;
  readonly heldAt: number;
  /** When it was first seen disposed. */
  goneAt: number | null;
}

/** Spares are kept for this many sets of limits at most (RG.EXECUTE's and T&F libraries'). */
const MAX_SPARES = 2;

/**
 * Keeps an isolate started ahead, so the next one asked for (an RG.EXECUTE, a registration's
 * session, a T&F library) does not wait for a worker thread to start and compile the runtime,
 * which is most of what a small job costs (about 65 ms). One spare per set of limits asked
 * for lately; limits changed by a CONFIGSET get a fresh isolate once, then a spare again.
 *
 * An isolate that can be renewed (Isolate.renewOnDispose) comes back when its taker disposes
 * of it, a fresh runtime on the same worker thread: about a quarter of a new isolate's cost,
 * and none of it while the job runs, where on a small machine a new worker's start competes
 * with the job for the cores. So the next spare is started only once the taken isolate shows
 * it is not coming back soon: kept idle by its taker (keptIdleMs), disposed unrenewed, or
 * still at work after busyStartMs. Small jobs back to back each find their predecessor's
 * thread renewed.
 *
 * A large job (a large result set) must not pay for a new worker's heap (6-9 MB) at its
 * peak: once its taker says it is large (hold()), the spares started since it began are
 * dropped, none starts while it runs, and they start again once it is over.
 */
export class WarmIsolates<I extends Disposable<I>> {
  private readonly spares = new Map<string, Spare<I>>();
  private readonly jobs = new Set<Job>();
  /** When each isolate handed out was asked for. */
  private readonly takenAt = new WeakMap<object, number>();
  /** The kinds whose spare waits for the large jobs' end. */
  private readonly wanted = new Map<string, Kind>();
  private readonly timing: WarmTiming;
  private reviewer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly create: (limits: IsolateLimits, bridge: HostBridge) => Promise<I>,
    timing: Partial<WarmTiming> = {},
  ) {
    this.timing = { ...WARM_TIMING, ...timing };
  }

  /** Spares kept now (started or starting). */
  get spareCount(): number {
    return this.spares.size;
  }

  /** Large jobs holding spares back now. */
  get holding(): number {
    return this.jobs.size;
  }

  /**
   * An isolate with these limits serving `bridge`, with `preload` evaluated in it: the spare
   * when there is one (its preload evaluated while nobody waited), else a new one.
   */
  async take(limits: IsolateLimits, bridge: HostBridge, preload: Preload | null = null): Promise<I> {
    const takenAt = performance.now();
    const kind: Kind = { limits: { ...limits }, preload };
    const key = keyOf(kind);
    const spare = this.spares.get(key);
    this.spares.delete(key);
    if (spare !== undefined) {
      const isolate = await spare.isolate.catch(() => null);
      if (isolate !== null && isolate.alive) {
        spare.bridge.target = bridge;
        return this.watch(isolate, kind, takenAt);
      }
    }
    return this.watch(await loaded(this.create(kind.limits, bridge), preload), kind, takenAt);
  }

  /** Starts a spare of this kind (at start-up, and once the last one is not coming back), unless a large job runs. */
  prepare(limits: IsolateLimits, preload: Preload | null = null): void {
    this.start({ limits: { ...limits }, preload });
  }

  private start(kind: Kind): void {
    const key = keyOf(kind);
    if (this.closed || this.spares.has(key)) return;
    if (this.jobs.size > 0) {
      this.wanted.set(key, kind);
      return;
    }
    const bridge = new LateBridge();
    const isolate = loaded(this.create({ ...kind.limits }, bridge), kind.preload);
    // A spare that failed to start is noticed by take(), which then makes one the usual way.
    isolate.catch(() => {});
    this.keep(key, { kind, bridge, isolate, startedAt: performance.now() });
  }

  /** A new spare; the oldest go past MAX_SPARES. */
  private keep(key: string, spare: Spare<I>): void {
    this.spares.set(key, spare);
    for (const [oldest, dropped] of this.spares) {
      if (this.spares.size <= MAX_SPARES) break;
      this.spares.delete(oldest);
      void dropped.isolate.then((i) => i.dispose()).catch(() => {});
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reviewer !== null) clearInterval(this.reviewer);
    this.reviewer = null;
    this.jobs.clear();
    this.wanted.clear();
    const spares = [...this.spares.values()];
    this.spares.clear();
    await Promise.all(spares.map((s) => s.isolate.then((i) => i.dispose()).catch(() => {})));
  }

  /**
   * The job of `taken` (an isolate this pool handed out) has grown large: the spares started since
   * it took the isolate are dropped, and none starts until it is over (its isolate disposed, or
   * idle), so that its peak does not carry a new worker's heap.
   */
  hold(taken: object): void {
    const takenAt = this.takenAt.get(taken);
    if (this.closed || takenAt === undefined) return;
    // Only isolates this pool handed out are in takenAt.
    const isolate = taken as I;
    if (!isolate.alive) return;
    for (const job of this.jobs) if (job.isolate === isolate) return;
    this.jobs.add({ isolate, heldAt: performance.now(), goneAt: null });
    for (const [key, spare] of this.spares) {
      // Those from before it were there already: its growth does not count them.
      if (spare.startedAt < takenAt) continue;
      this.spares.delete(key);
      this.wanted.set(key, spare.kind);
      void spare.isolate.then((i) => i.dispose()).catch(() => {});
    }
    if (this.reviewer === null) {
      this.reviewer = setInterval(() => this.review(), REVIEW_MS);
      this.reviewer.unref();
    }
  }

  private watch(isolate: I, kind: Kind, takenAt: number): I {
    this.takenAt.set(isolate, takenAt);
    if (isolate.renewOnDispose === undefined) {
      this.start(kind);
      return isolate;
    }
    const key = keyOf(kind);
    let bridge: LateBridge | null = null;
    let back = false;
    isolate.renewOnDispose(
      kind.limits,
      () => !this.closed && !this.spares.has(key) && this.jobs.size === 0,
      () => (bridge = new LateBridge()),
      (renewed) => {
        back = true;
        if (renewed === null) this.start(kind);
        else this.adopt(kind, bridge!, renewed);
      },
    );
    // Until it is back (renewed, or ended): is its taker keeping it?
    const { keptIdleMs, busyStartMs } = this.timing;
    const look = (): void => {
      if (back || this.closed || this.spares.has(key)) return;
      const now = performance.now();
      const idle = isolate.idleSince;
      if ((idle !== null && now - Math.max(idle, takenAt) >= keptIdleMs) || now - takenAt >= busyStartMs) {
        this.start(kind);
        return;
      }
      setTimeout(look, keptIdleMs).unref();
    };
    setTimeout(look, keptIdleMs).unref();
    return isolate;
  }

  /** A taken isolate came back renewed: the spare of its kind (preload evaluated), unless one came first. */
  private adopt(kind: Kind, bridge: LateBridge, renewed: Promise<I>): void {
    const key = keyOf(kind);
    renewed.catch(() => {});
    if (this.closed || this.spares.has(key)) {
      void renewed.then((i) => i.dispose()).catch(() => {});
      return;
    }
    const isolate = loaded(renewed, kind.preload);
    isolate.catch(() => {});
    this.keep(key, { kind, bridge, isolate, startedAt: performance.now() });
  }

  /** Ends the holds of the large jobs that are over, and starts the spares they held back. */
  private review(): void {
    const now = performance.now();
    const t = this.timing;
    for (const job of this.jobs) {
      if (!job.isolate.alive) {
        job.goneAt ??= now;
        if (now - job.goneAt >= t.settleMs) this.jobs.delete(job);
        continue;
      }
      const idleSince = job.isolate.idleSince;
      if ((idleSince !== null && now - idleSince >= t.idleMs) || now - job.heldAt >= t.maxHoldMs) {
        this.jobs.delete(job);
      }
    }
    if (this.jobs.size > 0) return;
    if (this.reviewer !== null) clearInterval(this.reviewer);
    this.reviewer = null;
    const wanted = [...this.wanted.values()];
    this.wanted.clear();
    for (const kind of wanted) this.start(kind);
  }
}

function keyOf(kind: Kind): string {
  return `${kind.limits.memoryLimitMb}/${kind.limits.timeoutMs}/${kind.preload?.filename ?? ""}`;
}

/** The isolate once `preload` ran in it; one that failed to run it is disposed. */
async function loaded<I extends Disposable<I>>(isolate: Promise<I>, preload: Preload | null): Promise<I> {
  const i = await isolate;
  if (preload === null) return i;
  try {
    await i.evalScript(preload.source, preload.filename);
  } catch (err) {
    await i.dispose().catch(() => {});
    throw err;
  }
  return i;
}
