/**
 * The Pyodide isolates of one proxy: a warm one kept ready (a cold interpreter takes seconds
 * to load, a restored snapshot a fraction of a second), handed out at once, the next started
 * as soon as one is taken; and the memory budget of them all (--python-max-memory). An
 * isolate's host calls go to whoever took it (its bridge is given when taken).
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { setEnvironmentData } from "node:worker_threads";
import { Isolate } from "../isolate.js";
import type { HostBridge, IsolateLimits, JsonValue, RawJson } from "../types.js";
import {
  BUDGET_SLOTS,
  MODULE_KEY,
  SNAPSHOT_KEY,
  budgetKey,
  startRefusedMessage,
  type BudgetData,
} from "./shared.js";

export interface PyodidePoolOptions {
  /** The limits each isolate gets (read when one starts: RG.CONFIGSET may change them). */
  limits: () => IsolateLimits;
  /** Total WebAssembly memory of all the pool's isolates, in MB; 0 for no cap. */
  maxMemoryMb: number;
  /** Where the start-up snapshot is cached (--data-dir); null to load every interpreter cold. */
  dataDir: string | null;
  /**
   * Run on each new isolate before it is handed out (the libraries its users need), while
   * it waits warm: host calls made then fail, as the isolate has no owner yet.
   */
  prepare?: (isolate: Isolate) => Promise<void>;
}

/** Forwards host calls to the bridge of the isolate's owner, set when it is taken. */
class HandOverBridge implements HostBridge {
  target: HostBridge | null = null;

  private owner(): HostBridge {
    if (this.target === null) throw new Error("the isolate has no owner yet");
    return this.target;
  }

  callSync(name: string, args: JsonValue[]): Promise<JsonValue | RawJson> {
    return this.owner().callSync(name, args);
  }

  callAsync(
    calls: { name: string; args: JsonValue[] }[],
  ): Promise<({ ok: JsonValue | RawJson } | { error: string })[]> {
    return this.owner().callAsync(calls);
  }

  notify(name: string, args: JsonValue[]): void {
    this.target?.notify(name, args);
  }
}

interface Warm {
  limits: IsolateLimits;
  bridge: HandOverBridge;
  isolate: Promise<Isolate>;
  loaded: boolean;
}

let pools = 0;

let compiled: Promise<void> | undefined;

/**
 * Compiles pyodide.asm.wasm once per process and leaves it where new workers find it: they
 * then share its machine code. Without it (a failure here) each worker compiles its own.
 */
function shareCompiledModule(): Promise<void> {
  compiled ??= (async () => {
    try {
      const bytes = await readFile(createRequire(import.meta.url).resolve("pyodide/pyodide.asm.wasm"));
      const module = await WebAssembly.compile(bytes);
      setEnvironmentData(MODULE_KEY, { module, byteLength: bytes.byteLength });
    } catch {
      // Each worker compiles the interpreter itself, as Pyodide does by default.
    }
  })();
  return compiled;
}

/** A snapshot fits the Pyodide build that made it (and the options the worker loads with). */
const PYODIDE_BUILD = `${(createRequire(import.meta.url)("pyodide/package.json") as { version: string }).version}-1`;

/**
 * How many isolates are kept warm: three, so that back-to-back RG.PYEXECUTEs find one ready
 * while the next restores (about half a second, 1-2 s on a loaded machine). About 30 MB each.
 */
const WARM_COUNT = 3;

export class PyodidePool {
  /** Oldest first: the one most likely loaded already. */
  private warm: Warm[] = [];
  private closed = false;
  private readonly key: string;
  private readonly pages: Int32Array;
  private readonly freeSlots: number[] = [];
  private readonly capPages: number;
  private readonly snapshotFile: string | undefined;
  /** Pages a new isolate held when it was counted (0 until one was): for refusing at once. */
  private startPages = 0;

  constructor(private readonly options: PyodidePoolOptions) {
    this.key = budgetKey(++pools);
    const buffer = new SharedArrayBuffer(4 * (1 + BUDGET_SLOTS));
    this.pages = new Int32Array(buffer);
    for (let slot = BUDGET_SLOTS; slot >= 1; slot--) this.freeSlots.push(slot);
    this.capPages = Math.floor((options.maxMemoryMb * 1024 * 1024) / 65536);
    const budget: BudgetData = { buffer, capPages: this.capPages, capMb: options.maxMemoryMb };
    // Workers started from now on find it (environment data is copied into each new one).
    setEnvironmentData(this.key, budget);
    this.snapshotFile =
      options.dataDir === null ? undefined : join(options.dataDir, `pyodide-${PYODIDE_BUILD}.snapshot`);
  }

  /** MB of WebAssembly memory the pool's isolates hold now (the warm ones included). */
  get memoryInUseMb(): number {
    return (Atomics.load(this.pages, 0) * 65536) / (1024 * 1024);
  }

  /**
   * Starts warm isolates until WARM_COUNT are ready or starting, one at a time: two loading
   * at once on a busy machine each take twice as long, and the next RG.PYEXECUTE waits for
   * the first.
   */
  prime(): void {
    if (this.closed || this.warm.length >= WARM_COUNT || this.warm.some((w) => !w.loaded)) return;
    const limits = { ...this.options.limits() };
    const bridge = new HandOverBridge();
    const isolate = this.start(limits, bridge);
    const warm: Warm = { limits, bridge, isolate, loaded: false };
    this.warm.push(warm);
    isolate.then(
      () => {
        warm.loaded = true;
        this.prime();
      },
      () => {
        // Not started again at once: a refusal (the memory cap) would only repeat.
        this.warm = this.warm.filter((w) => w !== warm);
      },
    );
  }

  /** An isolate for `bridge`: a warm one when its limits still hold, else a new one. */
  async take(limits: IsolateLimits, bridge: HostBridge): Promise<Isolate> {
    // Warm isolates started under other limits (RG.CONFIGSET since) are of no use now: their
    // memory leaves the budget before a new one is counted.
    const stale = this.warm.filter((w) => !sameLimits(w.limits, limits));
    this.warm = this.warm.filter((w) => sameLimits(w.limits, limits));
    await Promise.all(stale.map((w) => w.isolate.then((i) => i.dispose()).catch(() => {})));
    for (let warm = this.warm.shift(); warm !== undefined; warm = this.warm.shift()) {
      warm.bridge.target = bridge;
      this.prime();
      const isolate = await warm.isolate.catch(() => null);
      if (isolate !== null && isolate.alive) return isolate;
    }
    const isolate = await this.start(limits, bridge);
    this.prime();
    return isolate;
  }

  /** A new isolate, counted in the budget; refused (and ended) when it does not fit. */
  private async start(limits: IsolateLimits, bridge: HostBridge): Promise<Isolate> {
    // Known not to fit: refused without starting a worker (the worker checks again when counted).
    const inUse = Atomics.load(this.pages, 0);
    if (this.capPages > 0 && this.startPages > 0 && inUse + this.startPages > this.capPages) {
      throw new Error(startRefusedMessage(this.options.maxMemoryMb, inUse, this.startPages));
    }
    const slot = this.freeSlots.pop();
    if (slot === undefined) throw new Error(`no more than ${BUDGET_SLOTS} Python instances at once`);
    let isolate: Isolate;
    try {
      await shareCompiledModule();
      // Set just before the worker starts (Isolate.create starts it a microtask later): the
      // key is one for the process, and another pool may have a --data-dir of its own.
      setEnvironmentData(SNAPSHOT_KEY, this.snapshotFile);
      isolate = await Isolate.create(limits, bridge, "pyodide");
    } catch (e) {
      this.freeSlots.push(slot);
      throw e;
    }
    // Whatever ends the worker (dispose, a limit, a crash) gives its memory back.
    void isolate.exited.then(() => {
      Atomics.sub(this.pages, 0, Atomics.exchange(this.pages, slot, 0));
      this.freeSlots.push(slot);
    });
    try {
      await isolate.call("__pyrt.bindBudget", [this.key, slot]);
      this.startPages = Atomics.load(this.pages, slot);
      await this.options.prepare?.(isolate);
    } catch (e) {
      await isolate.dispose();
      throw e;
    }
    return isolate;
  }

  /** Settles once the warm isolates have loaded (or failed to). */
  async warmed(): Promise<void> {
    for (;;) {
      const loading = this.warm.filter((w) => !w.loaded);
      if (loading.length === 0) return;
      await Promise.all(loading.map((w) => w.isolate.catch(() => {})));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const warm = this.warm;
    this.warm = [];
    await Promise.all(warm.map((w) => w.isolate.then((i) => i.dispose()).catch(() => {})));
    setEnvironmentData(this.key, undefined);
  }
}

function sameLimits(a: IsolateLimits, b: IsolateLimits): boolean {
  return a.memoryLimitMb === b.memoryLimitMb && a.timeoutMs === b.timeoutMs;
}
