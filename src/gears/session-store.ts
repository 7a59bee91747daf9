import type { Logger } from "../observability/log.js";
import type { Router } from "../routing/router.js";
import { RespError } from "../resp/values.js";
import { PROXY_HASHTAG } from "./events/proxy-keys.js";

/** One hash in Redis (one hashtag, so one slot) holds every session: id -> its script and ids. */
export const SESSIONS_KEY = `${PROXY_HASHTAG}:sessions`;
/** Counts changes to the sessions, so proxies notice another's change with one GET. */
export const SESSIONS_VERSION_KEY = `${PROXY_HASHTAG}:sessions:version`;

/** What is kept of a session so another proxy start can bring it back as it was. */
export interface StoredSession {
  id: string;
  script: string;
  description: string | null;
  /** Registration ids by the index of the register() call in the script that made them. */
  registrations: Record<string, string>;
  /** The script is Python (RG.PYEXECUTE). */
  python?: boolean;
}

/** Sessions persisted in Redis itself, so they survive the proxy. */
export class SessionStore {
  constructor(
    private readonly router: Router,
    private readonly log: Logger,
  ) {}

  async save(session: StoredSession): Promise<void> {
    await this.write(["HSET", SESSIONS_KEY, session.id, JSON.stringify(session)]);
    await this.write(["INCR", SESSIONS_VERSION_KEY]);
  }

  async remove(id: string): Promise<void> {
    await this.write(["HDEL", SESSIONS_KEY, id]);
    await this.write(["INCR", SESSIONS_VERSION_KEY]);
  }

  /** The change counter ("0" before any change); throws when Redis cannot be read. */
  async version(): Promise<string> {
    const reply = await this.router.call(["GET", SESSIONS_VERSION_KEY]);
    if (reply instanceof RespError) throw new Error(reply.message);
    return reply === null ? "0" : String(reply);
  }

  async load(): Promise<StoredSession[]> {
    const reply = await this.router.call(["HGETALL", SESSIONS_KEY]);
    if (!Array.isArray(reply)) return [];
    const out: StoredSession[] = [];
    for (let i = 1; i < reply.length; i += 2) {
      try {
        out.push(JSON.parse(String(reply[i])) as StoredSession);
      } catch {
        this.log.warn({ session: String(reply[i - 1]) }, "stored gears session is unreadable; skipped");
      }
    }
    return out;
  }

  private async write(argv: string[]): Promise<void> {
    try {
      const reply = await this.router.call(argv);
      if (reply instanceof RespError) throw new Error(reply.message);
    } catch (err) {
      // The session still runs; it just will not come back after a restart.
      this.log.warn(
        { err: err instanceof Error ? err.message : String(err) },
        "could not persist gears session",
      );
    }
  }
}
