import { randomBytes } from "node:crypto";
import { noteProxyKey, PROXY_HASHTAG } from "../routing/hidden-keys.js";
import type { Router } from "../routing/router.js";
import { RespError, type RespValue } from "../resp/values.js";

/** What an entry removed on purpose holds: a tombstone, so a missing entry means "lost", not "removed". */
const TOMBSTONE = "";

/** Writes an entry (or its tombstone) and a new version token in one step. */
const WRITE_SCRIPT = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1`;

/**
 * Writes back entries the store lost (a FLUSHALL, a FLUSHDB, a failover without
 * persistence), never over an entry or a tombstone written since; a new version token when
 * anything was written, so the other proxies look again.
 */
const RESTORE_SCRIPT = `
local n = 0
for i = 2, #ARGV, 2 do
  n = n + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
if n > 0 or redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[1]) end
return n`;

/** The version token and every field, read together. */
const READ_SCRIPT = `return {redis.call('GET', KEYS[2]), redis.call('HGETALL', KEYS[1])}`;

/** The store as one read saw it. */
export interface StoreSnapshot {
  /** Changes with every write; null when the store is gone (never written, or flushed). */
  version: string | null;
  /** Live entries by id. */
  entries: Map<string, string>;
  /** Ids removed on purpose (tombstones). */
  removed: Set<string>;
}

/** What a follower of the store is told. */
export interface StoreFollower {
  /** Removed on purpose (a tombstone), by this or another proxy. */
  removed(id: string): void;
  /** New, or different from the follower's copy. */
  changed(id: string, value: string): Promise<void>;
  /** Lost by the store (a flush) and written back from the follower's copy. */
  restored(ids: string[], written: number): void;
}

function newToken(): string {
  return randomBytes(8).toString("hex");
}

/**
 * A small keyed store in Redis itself that outlives flushes: one hash (entries and
 * tombstones) and a version token, both under the proxy's hashtag, so one slot and hidden
 * from users. Entries leave only by remove(), which leaves a tombstone; an entry found
 * missing is one the store lost, and whoever holds it in memory writes it back with
 * restore(). The version token is random, so a store flushed and written again never
 * looks unchanged. Gears sessions use it; the T&F library store can too.
 */
export class DurableStore {
  readonly key: string;
  readonly versionKey: string;
  /** The version last followed (undefined before the first follow()). */
  private followed: string | null | undefined = undefined;

  constructor(
    private readonly router: Router,
    /** The store's name: its keys are `{gears-proxy}:<name>` and `{gears-proxy}:<name>:version`. */
    name: string,
  ) {
    this.key = `${PROXY_HASHTAG}:${name}`;
    this.versionKey = `${this.key}:version`;
    noteProxyKey(this.key);
    noteProxyKey(this.versionKey);
  }

  save(id: string, value: string): Promise<void> {
    if (value === TOMBSTONE) throw new Error("an empty entry would read as removed");
    return this.write(id, value);
  }

  /** Removes an entry on purpose: a tombstone stays, so no proxy writes it back. */
  remove(id: string): Promise<void> {
    return this.write(id, TOMBSTONE);
  }

  /** The version token (null when the store is gone); throws when Redis cannot be read. */
  async version(): Promise<string | null> {
    const reply = await this.router.call(["GET", this.versionKey]);
    if (reply instanceof RespError) throw new Error(reply.message);
    return reply === null ? null : String(reply);
  }

  async read(): Promise<StoreSnapshot> {
    const reply = await this.router.call(["EVAL", READ_SCRIPT, "2", this.key, this.versionKey]);
    if (reply instanceof RespError) throw new Error(reply.message);
    if (!Array.isArray(reply)) throw new Error("unexpected store reply");
    const version = reply[0] === null || reply[0] === undefined ? null : String(reply[0]);
    const flat: RespValue[] = Array.isArray(reply[1]) ? reply[1] : [];
    const entries = new Map<string, string>();
    const removed = new Set<string>();
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const id = String(flat[i]);
      const value = String(flat[i + 1]);
      if (value === TOMBSTONE) removed.add(id);
      else entries.set(id, value);
    }
    return { version, entries, removed };
  }

  /** Writes back lost entries (only where the store has neither the entry nor its tombstone); how many. */
  async restore(entries: [string, string][]): Promise<number> {
    const argv = [newToken(), ...entries.flat()];
    const reply = await this.router.call(["EVAL", RESTORE_SCRIPT, "2", this.key, this.versionKey, ...argv]);
    if (reply instanceof RespError) throw new Error(reply.message);
    return Number(reply);
  }

  /**
   * Whether follow() has anything to do: the version moved, or the store vanished while the
   * follower holds entries (a flush). Throws when Redis cannot be read.
   */
  async changed(holding: boolean): Promise<boolean> {
    const version = await this.version();
    return version !== this.followed || (version === null && holding);
  }

  /**
   * Makes a follower's copy (`local`: id -> value as it last saved or loaded it) follow the
   * store: tombstones remove, new or different entries come in, and entries the store lost
   * are written back from the copy. Throws when Redis cannot be read.
   */
  async follow(local: ReadonlyMap<string, string>, on: StoreFollower): Promise<void> {
    const snapshot = await this.read();
    this.followed = snapshot.version;
    const lost: [string, string][] = [];
    for (const [id, value] of [...local]) {
      if (snapshot.entries.has(id)) continue;
      if (snapshot.removed.has(id)) on.removed(id);
      else lost.push([id, value]);
    }
    if (lost.length > 0) {
      const written = await this.restore(lost);
      this.followed = await this.version();
      on.restored(
        lost.map(([id]) => id),
        written,
      );
    }
    for (const [id, value] of snapshot.entries) {
      if (local.get(id) !== value) await on.changed(id, value);
    }
  }

  private async write(id: string, value: string): Promise<void> {
    const reply = await this.router.call([
      "EVAL",
      WRITE_SCRIPT,
      "2",
      this.key,
      this.versionKey,
      id,
      value,
      newToken(),
    ]);
    if (reply instanceof RespError) throw new Error(reply.message);
  }
}
