import type { KeyEvent } from "./keyspace-source.js";

/** Events kept per shard at most, so a busy shard cannot grow the backlog without end. */
const MAX_PER_SHARD = 200_000;

/**
 * Recent keyspace events of shards another proxy handles. Pub/sub keeps nothing, so when
 * this proxy takes a shard over from one that died, the events that one had not handled
 * can only come from here.
 */
export class EventBacklog {
  private readonly byShard = new Map<string, KeyEvent[]>();

  constructor(
    private readonly keepMs: () => number,
    /**
     * The time up to which the shard's owner last said it had handled its events: nothing
     * after it (less a margin) is dropped, however far behind the owner is.
     */
    private readonly ownerMark: (shard: string) => number | null,
    private readonly marginMs: number,
  ) {}

  add(events: KeyEvent[]): void {
    const recent = Date.now() - this.keepMs();
    for (const e of events) {
      let list = this.byShard.get(e.shard);
      if (list === undefined) {
        list = [];
        this.byShard.set(e.shard, list);
      }
      list.push(e);
    }
    for (const [shard, list] of this.byShard) {
      const mark = this.ownerMark(shard);
      const cutoff = mark === null ? recent : Math.min(recent, mark - this.marginMs);
      let drop = 0;
      while (drop < list.length && list[drop].at < cutoff) drop++;
      drop = Math.max(drop, list.length - MAX_PER_SHARD);
      if (drop > 0) list.splice(0, drop);
    }
  }

  /** Takes out the shard's events received at or after `since`; the rest of its backlog goes. */
  takeSince(shard: string, since: number): KeyEvent[] {
    const list = this.byShard.get(shard) ?? [];
    this.byShard.delete(shard);
    return list.filter((e) => e.at >= since);
  }

  clear(): void {
    this.byShard.clear();
  }
}
