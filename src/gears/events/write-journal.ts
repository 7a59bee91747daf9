import { isProxyKey } from "../../routing/hidden-keys.js";
import type { KeyEvent } from "./keyspace-source.js";

/**
 * The keyevent a write usually emits, where it is not the command's own name. A write
 * whose notification was lost is announced under this name.
 */
const EVENT_OF: Record<string, string> = {
  setex: "set",
  psetex: "set",
  setnx: "set",
  getset: "set",
  mset: "set",
  msetnx: "set",
  incr: "incrby",
  decr: "incrby",
  decrby: "incrby",
  unlink: "del",
  getdel: "del",
  hmset: "hset",
  hsetnx: "hset",
  lpushx: "lpush",
  rpushx: "rpush",
  zincrby: "zincr",
  pexpire: "expire",
  expireat: "expire",
  pexpireat: "expire",
};

/** Writes that change nothing when they answer 0 (DEL of a missing key, SADD of a member there...). */
const ZERO_IS_NOTHING = new Set([
  "del",
  "unlink",
  "hdel",
  "srem",
  "zrem",
  "sadd",
  "expire",
  "pexpire",
  "expireat",
  "pexpireat",
  "persist",
  "setnx",
  "hsetnx",
  "msetnx",
  "lrem",
  "xdel",
  "lpushx",
  "rpushx",
]);

/** Multi-key writes that write every key they name (each emits its own notification). */
const EVERY_KEY_WRITTEN = new Set(["mset", "msetnx", "rename", "renamenx", "smove", "lmove", "rpoplpush"]);
/** Multi-key writes counted in their reply: every key was written only when the count says so. */
const COUNTED = new Set(["del", "unlink"]);
/** Multi-key writes that write one key the proxy cannot tell beforehand: not followed. */
const UNKNOWN_TARGET = new Set(["lmpop", "zmpop", "sort"]);

/**
 * The keys a write changes, among those it names: every one, its destination (the first
 * key of the ...STORE family, BITOP, PFMERGE; the last of COPY), or none that can be told.
 */
function writtenKeys(name: string, keys: string[]): string[] {
  if (COUNTED.has(name)) return [...new Set(keys)];
  if (keys.length <= 1 || EVERY_KEY_WRITTEN.has(name)) return keys;
  if (UNKNOWN_TARGET.has(name)) return [];
  return name === "copy" ? keys.slice(-1) : keys.slice(0, 1);
}

/** A notification with no write waiting for it is kept this long: the write's reply may come after it. */
const CREDIT_MS = 2000;

interface Pending {
  event: string;
  at: number;
}

/**
 * What this proxy knows of the writes it forwarded: each write that succeeded waits here
 * until a keyspace notification for its key arrives. Notifications are lost when a shard's
 * subscription is down (a failover, a lost connection, a replica promoted before the proxy
 * subscribed to it); a barrier on the subscriptions tells when a write's notification can no
 * longer come, and the writes still waiting then become events of their own. The journal
 * follows database 0 (a cluster's only one), where the router reports writes. A notification
 * takes one waiting write of its key, so nothing is announced twice once they flow again.
 */
export class WriteJournal {
  private readonly pending = new Map<string, Pending[]>();
  /** Notifications that came before their write's reply (the two travel on different connections). */
  private readonly credits = new Map<string, number[]>();
  private size = 0;

  get waiting(): number {
    return this.size;
  }

  /**
   * A write leaving the proxy: what to call with its reply once it succeeded, or null when
   * it concerns no user key.
   */
  watch(name: string, argv: readonly Buffer[], keys: Buffer[]): ((reply: Buffer) => void) | null {
    const names = writtenKeys(
      name,
      keys.filter((k) => !isProxyKey(k)).map((k) => k.toString("latin1")),
    );
    if (names.length === 0) return null;
    const event = EVENT_OF[name] ?? name;
    const conditional = name === "set" && argv.some((a) => a.length === 2 && /^(nx|xx)$/i.test(a.toString()));
    const counted = COUNTED.has(name) && names.length > 1 ? names.length : 0;
    return (reply) => {
      if (changedNothing(name, reply, conditional)) return;
      // DEL of several keys: which were there is unknown unless all were.
      if (counted > 0 && reply.toString("latin1", 1, reply.length - 2) !== String(counted)) return;
      const at = Date.now();
      for (const key of names) this.add(key, event, at);
    };
  }

  private add(key: string, event: string, at: number): void {
    const credits = this.credits.get(key);
    if (credits !== undefined) {
      while (credits.length > 0 && credits[0] < at - CREDIT_MS) credits.shift();
      if (credits.length > 0) {
        credits.shift();
        if (credits.length === 0) this.credits.delete(key);
        return;
      }
      this.credits.delete(key);
    }
    let list = this.pending.get(key);
    if (list === undefined) {
      list = [];
      this.pending.set(key, list);
    }
    list.push({ event, at });
    this.size++;
  }

  /** Notifications that arrived: each settles one waiting write of its key. */
  confirm(events: readonly KeyEvent[]): void {
    for (const e of events) {
      if (e.db !== 0) continue;
      const key = e.key.toString("latin1");
      const list = this.pending.get(key);
      if (list !== undefined) {
        list.shift();
        this.size--;
        if (list.length === 0) this.pending.delete(key);
        continue;
      }
      if (isProxyKey(e.key)) continue;
      let credits = this.credits.get(key);
      if (credits === undefined) {
        credits = [];
        this.credits.set(key, credits);
      }
      credits.push(e.at);
    }
  }

  /**
   * The writes acknowledged at or before `cut` that no notification settled: call after a
   * barrier begun after `cut` resolved, when theirs can no longer come. They leave the
   * journal; `shardOf` names the shard each key lives on now.
   */
  takeUnconfirmed(cut: number, shardOf: (key: Buffer) => string): KeyEvent[] {
    const out: KeyEvent[] = [];
    for (const [key, list] of this.pending) {
      let n = 0;
      while (n < list.length && list[n].at <= cut) n++;
      if (n === 0) continue;
      const buffer = Buffer.from(key, "latin1");
      const shard = shardOf(buffer);
      for (const p of list.splice(0, n)) out.push({ key: buffer, event: p.event, shard, at: p.at, db: 0 });
      this.size -= n;
      if (list.length === 0) this.pending.delete(key);
    }
    const stale = Date.now() - CREDIT_MS;
    for (const [key, credits] of this.credits) {
      while (credits.length > 0 && credits[0] < stale) credits.shift();
      if (credits.length === 0) this.credits.delete(key);
    }
    return out;
  }

  clear(): void {
    this.pending.clear();
    this.credits.clear();
    this.size = 0;
  }
}

/** Whether a write's reply says it changed nothing, so it emitted no notification. */
function changedNothing(name: string, reply: Buffer, conditional: boolean): boolean {
  const nil = (reply[0] === 36 || reply[0] === 42) && reply[1] === 45; /* $-1, *-1 */
  if (nil || reply[0] === 95 /* _ (RESP3 null) */) return name !== "set" || conditional;
  return reply[0] === 58 /* : */ && reply[1] === 48 /* 0 */ && reply[2] === 13 && ZERO_IS_NOTHING.has(name);
}
