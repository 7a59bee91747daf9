import type { Logger } from "../../observability/log.js";
import type { Router } from "../../routing/router.js";
import { SandboxError } from "../../sandbox/types.js";
import type { Tagged, TfRegistrations } from "../guest/entry.js";
import type { IsolateFactory } from "../guest-isolate.js";
import { tfGuestSource } from "../guest-bundles.js";
import type { TfConfig } from "./config.js";
import { DurableStore } from "../durable-store.js";
import { parsePrologue, type Prologue } from "./prologue.js";
import { nameError } from "../guest/tf/names.js";
import { LIMITS_ERROR } from "../guest/entry.js";
import { TfBridge, type TfHooks } from "./tf-bridge.js";
import type { CommandGuard } from "../host-bridge.js";
import { TfGuest } from "./tf-guest.js";

/** T&F's answer while its isolates together use more than v8-maxmemory. */
export const OOM_STATE = "JS engine reached OOM state and can not run any more code";

const MB = 1024 * 1024;
/**
 * What every QuickJS isolate starts with (sandbox/worker.ts: 256 wasm pages), whatever runs
 * in it: the share of v8-maxmemory counts what an isolate grew beyond that.
 */
const ISOLATE_BASE_MB = 16;

/** How often the store's version is checked for other proxies' changes. */
const STORE_POLL_MS = 1000;
/** Each library's isolate gets this much memory at most (capped by v8-maxmemory). */
const LIBRARY_MEMORY_MB = 64;

/** What TFUNCTION LOAD needs to load a library again (T&F kept the same in RDB aux data). */
export interface StoredLibrary {
  name: string;
  code: string;
  config: string | null;
  user: string;
}

/** The stored form's JSON, fields in a fixed order (the store compares texts). */
function storedJson({ name, code, config, user }: StoredLibrary): string {
  return JSON.stringify({ name, code, config, user });
}

/** A loaded library: its stored form, its isolate and what its code registered. */
export interface TfLibrary extends StoredLibrary {
  apiVersion: string;
  guest: TfGuest;
  bridge: TfBridge;
  registrations: TfRegistrations;
}

export interface LoadRequest {
  code: string;
  replace: boolean;
  config: string | null;
  user: string;
}

/** A SandboxError as T&F's text: the limits end the run with T&F's own error. */
export function sandboxText(err: unknown): string {
  if (err instanceof SandboxError) {
    return err.kind === "throw" || err.kind === "syntax" ? err.message : LIMITS_ERROR;
  }
  return err instanceof Error ? err.message : String(err);
}

/**
 * The T&F libraries of this proxy: TFUNCTION LOAD/DELETE, persisted in Redis and followed
 * from there, each library in its own isolate.
 */
export class TfLibraries {
  private readonly libraries = new Map<string, TfLibrary>();
  /** The ACL check of a user's commands (--aclfile): functions run with their loader's rights. */
  guardFor: ((user: string) => CommandGuard | null) | null = null;
  /**
   * A second isolate per library for its cluster functions: the library's own isolate waits
   * for its runOnKey/runOnShards calls and cannot run them too.
   */
  private readonly remotes = new Map<string, Promise<TfLibrary | string>>();
  /** The remote isolates built so far (for the memory they use). */
  private readonly settledRemotes = new Map<string, TfLibrary>();
  /**
   * `{gears-proxy}:tf:libraries`, name -> StoredLibrary JSON, beside the gears sessions; it
   * outlives flushes and tells deletes (tombstones) from losses (see DurableStore).
   */
  private readonly store: DurableStore;
  private storePoll: NodeJS.Timeout | null = null;
  /** Told after a library came in (loaded, replaced, restored) or went away. */
  onChange: (name: string, deleted: boolean) => Promise<void> = () => Promise.resolve();
  /** Loads and deletes run one at a time. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly router: Router,
    private readonly log: Logger,
    private readonly newIsolate: IsolateFactory,
    readonly config: TfConfig,
    private readonly hooks: TfHooks,
  ) {
    this.store = new DurableStore(router, "tf:libraries");
    config.onSet = (name) => {
      if (name !== "lock-redis-timeout") return;
      // T&F applied a new lock timeout to the libraries already loaded.
      const ms = config.number(name);
      for (const isolate of this.isolates()) isolate.setTimeoutMs(ms);
    };
  }

  /** Every live isolate of the libraries, their cluster-function isolates included. */
  isolates(): TfGuest["isolate"][] {
    const out = this.all().map((l) => l.guest.isolate);
    for (const remote of this.settledRemotes.values()) out.push(remote.guest.isolate);
    return out.filter((i) => i.alive);
  }

  /**
   * v8-maxmemory is one cap for all the isolates together: each may grow by what the others
   * left of it (the entry that grows past that is ended), and once they are over it, T&F's
   * "OOM state": nothing runs until a library goes (TFUNCTION DELETE). True in that state.
   */
  shareMemory(): boolean {
    const capMb = this.config.number("v8-maxmemory") / MB;
    const isolates = this.isolates();
    const grown = isolates.map((i) => Math.max(0, i.memoryBytes / MB - ISOLATE_BASE_MB));
    const total = grown.reduce((a, b) => a + b, 0);
    isolates.forEach((isolate, n) => {
      const left = capMb - (total - grown[n]);
      // At least 1: 0 would mean "no allowance".
      isolate.setMemoryAllowanceMb(Math.max(1, ISOLATE_BASE_MB + left));
    });
    return total > capMb;
  }

  get(name: string): TfLibrary | undefined {
    return this.libraries.get(name);
  }

  all(): TfLibrary[] {
    return [...this.libraries.values()];
  }

  private serialized<T>(job: () => Promise<T>): Promise<T> {
    const run = this.queue.then(job, job);
    this.queue = run.catch(() => {});
    return run;
  }

  /**
   * The other threads of a --threads proxy follow the store now (GearsEngine.peersFollow).
   * Awaited outside the serialized queue: two threads loading at once would each wait for the
   * other's follow, queued behind its load.
   */
  peersFollow: () => Promise<void> = () => Promise.resolve();

  /** TFUNCTION LOAD: null when loaded, else T&F's error text. A failed REPLACE keeps the old library. */
  async load(request: LoadRequest): Promise<string | null> {
    const error = await this.loadHere(request);
    if (error === null) await this.peersFollow();
    return error;
  }

  private loadHere(request: LoadRequest): Promise<string | null> {
    return this.serialized(async () => {
      if (this.shareMemory()) return OOM_STATE;
      const built = await this.build(request);
      if (typeof built === "string") return built;
      const refused = this.upgradeError(built);
      if (refused !== null) {
        void built.guest.isolate.dispose().catch(() => {});
        return refused;
      }
      await this.install(built);
      await this.persist(this.store.save(built.name, storedJson(built)));
      return null;
    });
  }

  /** A REPLACE may change a stream trigger's window and callback, not its prefix (its progress is the prefix's). */
  private upgradeError(library: TfLibrary): string | null {
    const old = this.libraries.get(library.name);
    const text = (p: Tagged): string => (typeof p === "string" ? p : p !== null && "b" in p ? p.b : "");
    for (const t of library.registrations.streamTriggers) {
      const before = old?.registrations.streamTriggers.find((o) => o.name === t.name);
      if (before !== undefined && text(before.prefix) !== text(t.prefix)) {
        return `Can not upgrade an existing consumer with different prefix, consumer: '${t.name}', old_prefix: ${text(before.prefix)}, new_prefix: ${text(t.prefix)}.`;
      }
    }
    return null;
  }

  /** TFUNCTION DELETE: null when deleted, else T&F's error text. */
  async remove(name: string): Promise<string | null> {
    const error = await this.removeHere(name);
    if (error === null) await this.peersFollow();
    return error;
  }

  private removeHere(name: string): Promise<string | null> {
    return this.serialized(async () => {
      const library = this.libraries.get(name);
      if (library === undefined) return "library does not exists";
      this.libraries.delete(name);
      this.dropRemote(name);
      retire(library, "deleted");
      await this.onChange(name, true);
      await this.persist(this.store.remove(name));
      return null;
    });
  }

  /** Puts a built library in place; resolves once what it needs (keyspace events) runs. */
  private install(library: TfLibrary): Promise<void> {
    this.dropRemote(library.name);
    const old = this.libraries.get(library.name);
    this.libraries.set(library.name, library);
    if (old !== undefined) retire(old, "replaced");
    return this.onChange(library.name, false);
  }

  /** A new isolate with the library's code run: the library, or the load error's text. */
  private async build(request: LoadRequest): Promise<TfLibrary | string> {
    const prologue = parsePrologue(request.code);
    if ("error" in prologue) return prologue.error;
    if (prologue.engine !== "js") return `Unknown backend ${prologue.engine}`;
    const invalid = nameError("library", prologue.name);
    if (invalid !== null) return invalid;
    if (!request.replace && this.libraries.has(prologue.name))
      return `Library ${prologue.name} already exists.`;
    const bridge = new TfBridge(prologue.name, this.router, this.log, this.hooks);
    bridge.guard = this.guardFor?.(request.user) ?? null;
    const isolate = await this.newIsolate(
      {
        memoryLimitMb: Math.min(LIBRARY_MEMORY_MB, Math.floor(this.config.number("v8-maxmemory") / 2 ** 20)),
        timeoutMs: this.config.number("lock-redis-timeout"),
      },
      bridge,
    );
    const guest = new TfGuest(isolate);
    const built = await this.run(request, prologue, guest, bridge);
    if (typeof built === "string") void isolate.dispose().catch(() => {});
    return built;
  }

  private async run(
    request: LoadRequest,
    prologue: Prologue,
    guest: TfGuest,
    bridge: TfBridge,
  ): Promise<TfLibrary | string> {
    try {
      await guest.isolate.evalScript(tfGuestSource(), "tf-library");
      await guest.prepare(request.config, prologue.apiVersion);
      // The prologue line stays a line (an empty one), so error lines match the user's code.
      const body = request.code.replace(/^[^\n]*/, "");
      try {
        await guest.isolate.evalScript(body, "script");
      } catch (err) {
        if (err instanceof SandboxError && err.kind === "syntax")
          return `Failed to compile library: ${err.message}`;
        if (err instanceof SandboxError && err.kind === "throw")
          return `Failed loading library: ${err.message}.`;
        return sandboxText(err);
      }
      const out = await guest.loaded();
      if ("err" in out) return out.err;
      return {
        name: prologue.name,
        code: request.code,
        config: request.config,
        user: request.user,
        apiVersion: prologue.apiVersion,
        guest,
        bridge,
        registrations: out.ok,
      };
    } catch (err) {
      return sandboxText(err);
    }
  }

  /**
   * An isolate that died (the watchdog ended a stuck call) is replaced by a fresh one running
   * the same code, so the library keeps answering.
   */
  async revive(library: TfLibrary): Promise<TfLibrary> {
    if (this.shareMemory()) throw new Error(OOM_STATE);
    if (library.guest.isolate.alive) return library;
    return this.serialized(async () => {
      const current = this.libraries.get(library.name);
      if (current === undefined || current.guest.isolate.alive) return current ?? library;
      const built = await this.build({ ...current, replace: true });
      if (typeof built === "string") {
        this.log.warn({ library: library.name, err: built }, "T&F library could not be restarted");
        return current;
      }
      await this.install(built);
      return built;
    });
  }

  /** The isolate that runs this library's cluster functions (the same code, loaded again). */
  remote(name: string): Promise<TfLibrary | string> {
    const library = this.libraries.get(name);
    if (library === undefined) return Promise.resolve(`Library ${name} does not exists on remote shard`);
    let remote = this.remotes.get(name);
    if (remote === undefined) {
      remote = this.build({ ...library, replace: true });
      this.remotes.set(name, remote);
      const pending = remote;
      void pending.then((r) => {
        if (typeof r !== "string" && this.remotes.get(name) === pending) this.settledRemotes.set(name, r);
      });
    }
    return remote.then(async (r) => {
      if (typeof r !== "string" && !r.guest.isolate.alive) {
        this.remotes.delete(name);
        return this.remote(name);
      }
      return r;
    });
  }

  private dropRemote(name: string): void {
    const remote = this.remotes.get(name);
    this.remotes.delete(name);
    this.settledRemotes.delete(name);
    void remote?.then((r) => (typeof r === "string" ? undefined : retire(r, "replaced or deleted")));
  }

  /** Loads the stored libraries (at start), then follows the store for other proxies' changes. */
  async restore(): Promise<void> {
    await this.serialized(() => this.followStore());
    this.storePoll = setInterval(() => void this.serialized(() => this.pollStore()), STORE_POLL_MS);
    this.storePoll.unref();
  }

  /** The library still runs here when its write fails; it just will not come back after a restart. */
  private async persist(write: Promise<void>): Promise<void> {
    try {
      await write;
    } catch (err) {
      this.log.warn(
        { err: err instanceof Error ? err.message : String(err) },
        "could not persist T&F library",
      );
    }
  }

  /** Another thread of this proxy changed the store: followed now, not at the next poll. */
  followNow(): Promise<void> {
    return this.serialized(() => this.followStore());
  }

  private async pollStore(): Promise<void> {
    try {
      if (!(await this.store.changed(this.libraries.size > 0))) return;
    } catch {
      return;
    }
    await this.followStore();
  }

  /** Makes the local libraries what the store holds; libraries the store lost are written back. */
  private async followStore(): Promise<void> {
    const local = new Map(this.all().map((l) => [l.name, storedJson(l)] as [string, string]));
    const removed: string[] = [];
    try {
      await this.store.follow(local, {
        removed: (name) => removed.push(name),
        changed: (name, json) => this.loadStored(name, json),
        restored: (names, written) =>
          this.log.info(
            { libraries: names, written },
            "T&F library store lost libraries (a flush?): written back",
          ),
      });
    } catch (err) {
      this.log.warn(
        { err: err instanceof Error ? err.message : String(err) },
        "could not read stored T&F libraries",
      );
    }
    for (const name of removed) {
      const library = this.libraries.get(name);
      if (library === undefined) continue;
      this.libraries.delete(name);
      this.dropRemote(name);
      retire(library, "deleted");
      await this.onChange(name, true);
      this.log.info({ library: name }, "T&F library deleted by another proxy");
    }
  }

  private async loadStored(name: string, json: string): Promise<void> {
    let stored: StoredLibrary;
    try {
      stored = JSON.parse(json) as StoredLibrary;
    } catch {
      this.log.warn({ library: name }, "stored T&F library is unreadable; skipped");
      return;
    }
    const built = await this.build({ ...stored, replace: true });
    if (typeof built === "string") {
      this.log.warn({ library: name, err: built }, "stored T&F library did not load");
      return;
    }
    await this.install(built);
    this.log.info({ library: name }, "T&F library loaded from the store");
  }

  async close(): Promise<void> {
    if (this.storePoll !== null) clearInterval(this.storePoll);
    for (const name of [...this.remotes.keys()]) this.dropRemote(name);
    await Promise.all(this.all().map((l) => l.guest.isolate.dispose().catch(() => {})));
    this.libraries.clear();
  }
}

/**
 * A library leaves (deleted, replaced): its isolate goes, and so do the blocking commands its
 * `callAsync`s still wait for (their connections close, so Redis pops nothing for them).
 */
function retire(library: TfLibrary, how: string): void {
  library.bridge.endBlocking(`ERR library '${library.name}' was ${how} while the command waited`);
  void library.guest.isolate.dispose().catch(() => {});
}
