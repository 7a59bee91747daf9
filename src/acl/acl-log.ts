/**
 * ACL LOG: the refusals of the proxy's ACL (commands, keys, channels) and failed logins, as
 * Redis 7.0 keeps them (acl.c addACLLogEntry): newest first, a repeat of one of the 10 newest
 * entries within 60 s counted in it rather than added, at most acllog-max-len (128) entries.
 */
import { RespDouble, RespMap, type RespValue } from "../resp/values.js";

export type AclLogReason = "command" | "key" | "channel" | "auth";
export type AclLogContext = "toplevel" | "multi" | "module";

export interface AclLogEntry {
  count: number;
  reason: AclLogReason;
  context: AclLogContext;
  /** The command (`config|set`), key or channel refused, or the login command (AUTH, HELLO). */
  object: string;
  username: string;
  /** When it last happened, in ms since the epoch. */
  at: number;
  /** The CLIENT LIST line of the last client it happened to. */
  clientInfo: string;
}

/** Redis' ACL_LOG_GROUPING_MAX_TIME_DELTA. */
const GROUPING_MS = 60_000;
/** How many of the newest entries a new one is compared with (Redis' `toscan`). */
const SCANNED = 10;
/** Redis' acllog-max-len default. */
const DEFAULT_MAX_LEN = 128;

export class AclLog {
  /** Newest first. */
  private entries: AclLogEntry[] = [];
  private maxLen = DEFAULT_MAX_LEN;

  /** A client's CONFIG SET acllog-max-len (which the upstream checked): kept from then on. */
  followSetting(name: string, text: string): void {
    const value = Number(text);
    if (name !== "acllog-max-len" || !Number.isSafeInteger(value) || value < 0) return;
    this.maxLen = value;
    if (this.entries.length > value) this.entries.length = value;
  }

  add(entry: Omit<AclLogEntry, "count" | "at">, now = Date.now()): void {
    const scanned = Math.min(SCANNED, this.entries.length);
    for (let i = 0; i < scanned; i++) {
      const e = this.entries[i];
      if (
        e.reason === entry.reason &&
        e.context === entry.context &&
        Math.abs(e.at - now) <= GROUPING_MS &&
        e.object === entry.object &&
        e.username === entry.username
      ) {
        this.entries.splice(i, 1);
        this.entries.unshift({ ...e, count: e.count + 1, at: now, clientInfo: entry.clientInfo });
        return;
      }
    }
    this.entries.unshift({ ...entry, count: 1, at: now });
    if (this.entries.length > this.maxLen) this.entries.length = this.maxLen;
  }

  /** The newest `count` entries, newest first. */
  newest(count: number): AclLogEntry[] {
    return this.entries.slice(0, Math.max(0, count));
  }

  reset(): void {
    this.entries = [];
  }
}

/** The newest `count` of several threads' entries (each list newest first). */
export function mergeAclLogs(lists: readonly AclLogEntry[][], count: number): AclLogEntry[] {
  return lists
    .flat()
    .sort((a, b) => b.at - a.at)
    .slice(0, Math.max(0, count));
}

/** ACL LOG's reply: one map of 7 fields per entry, as Redis 7.0 sends it. */
export function aclLogReply(entries: readonly AclLogEntry[], now = Date.now()): RespValue {
  const b = (text: string): Buffer => Buffer.from(text);
  return entries.map(
    (e) =>
      new RespMap([
        [b("count"), e.count],
        [b("reason"), b(e.reason)],
        [b("context"), b(e.context)],
        [b("object"), b(e.object)],
        [b("username"), b(e.username)],
        [b("age-seconds"), new RespDouble((now - e.at) / 1000)],
        [b("client-info"), b(e.clientInfo)],
      ]),
  );
}
