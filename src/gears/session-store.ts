import type { Logger } from "../observability/log.js";
import type { Router } from "../routing/router.js";
import { DurableStore } from "./durable-store.js";

/** What is kept of a session so another proxy start can bring it back as it was. */
export interface StoredSession {
  id: string;
  script: string;
  description: string | null;
  /** Registration ids by the index of the register() call in the script that made them. */
  registrations: Record<string, string>;
  /** The database it was registered from, when not 0. */
  db?: number;
  /** The script is Python (RG.PYEXECUTE). */
  python?: boolean;
  /** The ACL user who registered it (with --aclfile). */
  owner?: string;
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

  /** Whether follow() has anything to do (see DurableStore.changed). */
  changed(holding: boolean): Promise<boolean> {
    return this.store.changed(holding);
  }

  /**
   * Makes `local` (session id -> its JSON as last saved or loaded) follow the store:
   * `removed` for tombstones, `changed` for new or different sessions, and sessions the
   * store lost written back. Throws when Redis cannot be read.
   */
  follow(
    local: ReadonlyMap<string, string>,
    on: {
      removed(id: string): void;
      changed(session: StoredSession, json: string): Promise<void>;
    },
  ): Promise<void> {
    return this.store.follow(local, {
      removed: (id) => on.removed(id),
      changed: async (id, json) => {
        let session: StoredSession;
        try {
          session = JSON.parse(json) as StoredSession;
        } catch {
          this.log.warn({ session: id }, "stored gears session is unreadable; skipped");
          return;
        }
        await on.changed(session, json);
      },
      restored: (ids, written) =>
        this.log.warn(
          { sessions: ids, written },
          "gears session store lost sessions (a flush?): written back from memory",
        ),
    });
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
