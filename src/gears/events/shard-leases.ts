import type { Logger } from "../../observability/log.js";
import type { Router } from "../../routing/router.js";
import type { NodeSubscription, Shards } from "../../routing/shards.js";
import { decodeReply } from "../../resp/decode.js";
import { encodeCommand } from "../../resp/encode.js";
import { RespError, type RespValue } from "../../resp/values.js";
import { noteProxyKey, PROXY_HASHTAG, PROXY_KEYS_SLOT } from "../../routing/hidden-keys.js";

/** Lease keys share one hashtag with the stored sessions: one slot, one place to look. */
const LEASE_PREFIX = `${PROXY_HASHTAG}:lease:`;

/**
 * Renews the lease only while this proxy still holds it, writing its new "handled through"
 * time; 0 when another proxy took it (after it expired). A lease key that vanished (a
 * FLUSHALL) is this proxy's still: nobody else had it.
 */
const RENEW_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if (not v) or string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`;

/** Deletes the lease only if it is this proxy's (a clean shutdown hands the shard over at once). */
const RELEASE_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0`;

/**
 * A proxy that gives its leases back (a clean shutdown) says so here, and the others try for
 * them at once instead of at their next round (a third of the lease time later).
 */
const RELEASED_CHANNEL = `${PROXY_HASHTAG}:leases-released`;

/** What a lease key holds: the owner and the time up to which it has handled that shard's events. */
export interface LeaseValue {
  owner: string;
  handledThrough: number;
}

function parseLease(v: RespValue): LeaseValue | null {
  if (!Buffer.isBuffer(v)) return null;
  const [owner, at] = v.toString().split(" ");
  const handledThrough = Number(at);
  return owner === undefined || !Number.isFinite(handledThrough) ? null : { owner, handledThrough };
}

export interface LeaseEvents {
  /**
   * This proxy now owns the shard whose master is `node`; `previous` is what the last owner
   * wrote before its lease ran out (null when there was none), so events it may not have
   * handled can be replayed.
   */
  acquired(node: string, previous: LeaseValue | null): void;
  lost(node: string): void;
  /** The time up to which every event of the shard has been handled by this proxy. */
  handledThrough(node: string): number;
}

interface ShardLease {
  /** The shard's identity shared by every proxy: the first slot its master serves. */
  key: string;
  owned: boolean;
  /** The value last seen while another proxy held the lease. */
  lastSeen: LeaseValue | null;
}

/**
 * One lease per shard, kept in Redis with an expiry: the proxy holding a shard's lease is
 * the one that runs keyspace-event handlers and timers for it, so several proxies in front
 * of one cluster handle each event once. A proxy that dies stops renewing; another takes the
 * lease when it expires and replays, from the events it buffered, those after the time the
 * dead owner last said it had handled.
 */
export class ShardLeases {
  private readonly leases = new Map<string, ShardLease>();
  private timer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> = Promise.resolve();
  private unwatch: (() => void) | null = null;
  private stopped = false;
  /** The subscription to RELEASED_CHANNEL; reopened by the next round when lost. */
  private releases: NodeSubscription | null = null;

  constructor(
    private readonly router: Router,
    private readonly shards: Shards,
    private readonly log: Logger,
    private readonly proxyId: string,
    private readonly leaseMs: () => number,
    private readonly events: LeaseEvents,
  ) {}

  /**
   * Tries every shard's lease once, then keeps renewing and trying every third of the lease
   * time, and at once when the masters change (a promoted replica's events are handled
   * without waiting for the next round).
   */
  async start(): Promise<void> {
    await this.runTick();
    this.unwatch = this.shards.onChange(() => void this.runTick());
    const schedule = (): void => {
      if (this.stopped) return;
      this.timer = setTimeout(
        () => void this.runTick().finally(schedule),
        Math.max(50, Math.floor(this.leaseMs() / 3)),
      );
      this.timer.unref();
    };
    schedule();
  }

  /** One round after the one under way, never two at once. */
  private runTick(): Promise<void> {
    const next = this.ticking.then(() => this.tick());
    this.ticking = next.catch(() => {});
    return next;
  }

  /** Whether this proxy handles the events of the master `node` (host:port). */
  owns(node: string): boolean {
    return this.leases.get(node)?.owned ?? false;
  }

  /** What the owner of the master `node`'s lease last said it had handled through (ms); null if unknown. */
  ownerMark(node: string): number | null {
    return this.leases.get(node)?.lastSeen?.handledThrough ?? null;
  }

  /** The masters whose leases this proxy holds. */
  owned(): string[] {
    return [...this.leases].filter(([, l]) => l.owned).map(([node]) => node);
  }

  /** Stops renewing and gives the held leases back, so another proxy takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.unwatch?.();
    this.releases?.destroy();
    this.releases = null;
    await this.ticking;
    const held = [...this.leases.values()].filter((l) => l.owned);
    await Promise.all(
      held.map((l) =>
        this.router.call(["EVAL", RELEASE_SCRIPT, "1", LEASE_PREFIX + l.key, this.proxyId]).catch(() => null),
      ),
    );
    this.leases.clear();
    if (held.length > 0)
      await this.router.call(["PUBLISH", RELEASED_CHANNEL, this.proxyId]).catch(() => null);
  }

  /** Listens for other proxies giving leases back; a new round starts on each word of it. */
  private watchReleases(): void {
    if (this.stopped || (this.releases !== null && !this.releases.closed)) return;
    const sub = this.shards.subscribe(this.shards.idForSlot(PROXY_KEYS_SLOT), {
      onFrame: (frame) => {
        const value = decodeReply(frame);
        if (Array.isArray(value) && String(value[0]) === "message") void this.runTick();
      },
      onLost: () => {
        if (this.releases === sub) this.releases = null;
      },
    });
    if (typeof sub === "string") return;
    this.releases = sub;
    sub.send(encodeCommand(["SUBSCRIBE", RELEASED_CHANNEL]));
  }

  /** The shards of the current topology, by master id, with their shared identities. */
  private shardKeys(): Map<string, string> {
    const masters = this.shards.masters();
    const first = new Map<number, number>();
    for (const [start, , index] of this.shards.slotRanges()) {
      first.set(index, Math.min(start, first.get(index) ?? start));
    }
    const shards = new Map<string, string>();
    masters.forEach((m, i) => shards.set(m.id, String(first.get(i) ?? i)));
    return shards;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.watchReleases();
    const shards = this.shardKeys();
    for (const [node, lease] of this.leases) {
      if (shards.get(node) === lease.key) continue;
      // The master is gone or serves other slots now: its events are someone else's.
      this.leases.delete(node);
      if (lease.owned) this.events.lost(node);
    }
    await Promise.all(
      [...shards].map(async ([node, key]) => {
        let lease = this.leases.get(node);
        if (lease === undefined) {
          lease = { key, owned: false, lastSeen: null };
          this.leases.set(node, lease);
        }
        try {
          await this.tryLease(node, lease);
        } catch (err) {
          // Redis unreachable: an owner keeps handling what it sees; the lease decides later.
          this.log.debug(
            { node, err: err instanceof Error ? err.message : String(err) },
            "lease check failed",
          );
        }
      }),
    );
  }

  private async tryLease(node: string, lease: ShardLease): Promise<void> {
    const key = LEASE_PREFIX + lease.key;
    noteProxyKey(key, true);
    const ttl = String(this.leaseMs());
    if (lease.owned) {
      const at = String(this.events.handledThrough(node));
      const renewed = await this.router.call(["EVAL", RENEW_SCRIPT, "1", key, this.proxyId, at, ttl]);
      if (renewed instanceof RespError) throw new Error(renewed.message);
      if (renewed === 1 || this.stopped) return;
      lease.owned = false;
      this.log.warn({ node }, "lost the event lease of a shard to another proxy");
      this.events.lost(node);
      return;
    }
    const value = `${this.proxyId} ${Date.now()}`;
    const set = await this.router.call(["SET", key, value, "NX", "PX", ttl]);
    if (set instanceof RespError) throw new Error(set.message);
    if (set === "OK" && !this.stopped) {
      lease.owned = true;
      this.log.info({ node, previous: lease.lastSeen?.owner ?? null }, "took the event lease of a shard");
      this.events.acquired(node, lease.lastSeen);
      return;
    }
    lease.lastSeen = parseLease(await this.router.call(["GET", key]));
    if (lease.lastSeen?.owner === this.proxyId && !this.stopped) {
      // This proxy holds the shard already, under the master it had before a failover (the
      // lease is per shard, by its first slot): the promoted master's events are its own at once.
      lease.owned = true;
      this.log.info({ node }, "kept the event lease of a shard whose master changed");
      this.events.acquired(node, lease.lastSeen);
    }
  }
}
