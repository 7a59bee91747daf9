import type { Logger } from "../../observability/log.js";
import type { Router } from "../../routing/router.js";
import { RespError } from "../../resp/values.js";
import { PROXY_HASHTAG } from "../../routing/hidden-keys.js";

/** One hash holds every T&F library (name -> StoredLibrary JSON), beside the gears sessions. */
export const LIBRARIES_KEY = `${PROXY_HASHTAG}:tf:libraries`;
/** Counts changes, so proxies notice another's change with one GET. */
export const LIBRARIES_VERSION_KEY = `${PROXY_HASHTAG}:tf:version`;

/** What TFUNCTION LOAD needs to load a library again (T&F kept the same in RDB aux data). */
export interface StoredLibrary {
  name: string;
  code: string;
  config: string | null;
  user: string;
}

/**
 * T&F libraries persisted in Redis itself. Every write sets the whole library, so the store
 * can be rewritten from the proxy's memory when its keys are found missing (FLUSHALL):
 * `rewrite()` does that from the libraries a proxy holds.
 */
export class LibraryStore {
  constructor(
    private readonly router: Router,
    private readonly log: Logger,
  ) {}

  async save(library: StoredLibrary): Promise<void> {
    await this.write(["HSET", LIBRARIES_KEY, library.name, JSON.stringify(library)]);
    await this.write(["INCR", LIBRARIES_VERSION_KEY]);
  }

  async remove(name: string): Promise<void> {
    await this.write(["HDEL", LIBRARIES_KEY, name]);
    await this.write(["INCR", LIBRARIES_VERSION_KEY]);
  }

  /** Puts every library back (after the keys were lost); the version moves so others look. */
  async rewrite(libraries: StoredLibrary[]): Promise<void> {
    for (const library of libraries)
      await this.write(["HSET", LIBRARIES_KEY, library.name, JSON.stringify(library)]);
    await this.write(["INCR", LIBRARIES_VERSION_KEY]);
  }

  /**
   * The change counter; null when it is missing (never written, or the keys were flushed:
   * FLUSHALL/FLUSHDB, through the proxy or not). Throws when Redis cannot be read.
   */
  async version(): Promise<string | null> {
    const reply = await this.router.call(["GET", LIBRARIES_VERSION_KEY]);
    if (reply instanceof RespError) throw new Error(reply.message);
    return reply === null ? null : String(reply);
  }

  /** Every stored library; throws when Redis cannot be read. */
  async load(): Promise<StoredLibrary[]> {
    const reply = await this.router.call(["HGETALL", LIBRARIES_KEY]);
    if (reply instanceof RespError) throw new Error(reply.message);
    if (!Array.isArray(reply)) return [];
    const out: StoredLibrary[] = [];
    for (let i = 1; i < reply.length; i += 2) {
      try {
        out.push(JSON.parse(String(reply[i])) as StoredLibrary);
      } catch {
        this.log.warn({ library: String(reply[i - 1]) }, "stored T&F library is unreadable; skipped");
      }
    }
    return out;
  }

  private async write(argv: string[]): Promise<void> {
    try {
      const reply = await this.router.call(argv);
      if (reply instanceof RespError) throw new Error(reply.message);
    } catch (err) {
      // The library still runs here; it just will not come back after a restart.
      this.log.warn(
        { err: err instanceof Error ? err.message : String(err) },
        "could not persist T&F library",
      );
    }
  }
}
