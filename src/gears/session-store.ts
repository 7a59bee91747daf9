import type { Logger } from "../observability/log.js";
import type { Router } from "../routing/router.js";
import { DurableStore, type StoreSnapshot } from "./durable-store.js";

/** What is kept of a session so another proxy start can bring it back as it was. */
export interface StoredSession {
  id: string;
  script: string;
  description: string | null;
  /** Registration ids by the index of the register() call in the script that made them. */
  registrations: Record<string, string>;
  /** The database it was registered from, when not 0. */
  db?: number;
}

/** The sessions as one read of the store saw them. */
export interface StoredSessions {
  version: string | null;
  /** Each live session with its JSON as stored (what differs from a proxy's copy is new). */
  sessions: { session: StoredSession; json: string }[];
  /** Sessions unregistered on purpose. */
  removed: Set<string>;
}

/**
 * Sessions persisted in Redis itself (`{gears-proxy}:sessions`), so they survive the proxy
 * and flushes: see DurableStore.
 */
export class SessionStore {
  private readonly store: DurableStore;

  constructor(
    router: Router,
    private readonly log: Logger,
  ) {
    this.store = new DurableStore(router, "sessions");
  }

  save(session: StoredSession, json: string): Promise<void> {
    return this.guard(this.store.save(session.id, json));
  }

  remove(id: string): Promise<void> {
    return this.guard(this.store.remove(id));
  }

  /** The version token (null when the store is gone); throws when Redis cannot be read. */
  version(): Promise<string | null> {
    return this.store.version();
  }

  /** Writes back sessions the store lost; how many were. */
  restore(sessions: [string, string][]): Promise<number> {
    return this.store.restore(sessions);
  }

  async load(): Promise<StoredSessions> {
    const snapshot: StoreSnapshot = await this.store.read();
    const sessions: StoredSessions["sessions"] = [];
    for (const [id, json] of snapshot.entries) {
      try {
        sessions.push({ session: JSON.parse(json) as StoredSession, json });
      } catch {
        this.log.warn({ session: id }, "stored gears session is unreadable; skipped");
      }
    }
    return { version: snapshot.version, sessions, removed: snapshot.removed };
  }

  private async guard(write: Promise<void>): Promise<void> {
    try {
      await write;
    } catch (err) {
      // The session still runs; the store is written again from memory when found missing.
      this.log.warn(
        { err: err instanceof Error ? err.message : String(err) },
        "could not persist gears session",
      );
    }
  }
}
