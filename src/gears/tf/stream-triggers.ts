import type { Logger } from "../../observability/log.js";
import type { Router } from "../../routing/router.js";
import type { Shards } from "../../routing/shards.js";
import type { JsonValue } from "../../sandbox/types.js";
import { StreamConsumer } from "../events/stream-consumer.js";
import type { TfStreamTriggerInfo } from "../guest/entry.js";
import { sandboxText, type TfLibraries } from "./libraries.js";
import { utf8Text } from "./values.js";
import { entryBudgetMs } from "../guest-isolate.js";

/** The consumer group of a stream trigger: T&F's progress per library (and trigger) and stream. */
export const streamGroup = (library: string, trigger: string): string =>
  `{gears-proxy}:tf:${library}:${trigger}`;

/**
 * One stream record as the guest's trigger gets it: [id, [field, value, ...]], each field
 * and value as [its UTF-8 text or null, its bytes in latin1].
 */
export type StreamRecord = [string, [string | null, string][]];

function prefixText(t: TfStreamTriggerInfo): string {
  if (typeof t.prefix === "string") return t.prefix;
  return t.prefix !== null && "b" in t.prefix ? Buffer.from(t.prefix.b, "latin1").toString() : "";
}

/**
 * The libraries' stream triggers, each a consumer group on every stream its prefix matches
 * (the gears StreamConsumer: read on xadd notifications and by a poll, acknowledged after
 * the callback, claimed from a dead proxy after StreamClaimIdleMS, trimmed when asked). The
 * group keeps the progress in Redis, so a REPLACE, a restart or another proxy goes on from it.
 */
/** Who consumes and how long leases and idle claims last: the gears room's settings. */
export interface StreamTiming {
  consumerName: string;
  claimIdleMs(): number;
  streamLeaseMs(): number;
}

/** What TFUNCTION LIST vv shows of one stream a stream trigger consumes. */
export interface StreamStats {
  name: Buffer;
  lastProcessedTime: number;
  totalProcessedTime: number;
  lastLag: number;
  totalLag: number;
  totalRecordProcessed: number;
  /** Ids handed to the trigger and not finished yet. */
  pendingIds: Set<string>;
  /** The id after which the next read starts (the last one handled). */
  idToReadFrom: string | null;
  lastError: string | null;
  /**
   * When its last window ended and its last failure came (Date.now(), 0 before any): after a
   * lease hand-over two threads of a --threads proxy may list the stream, and the merged
   * listing (list-stats.ts) takes the "last" figures of the newest.
   */
  lastRunAt: number;
  lastErrorAt: number;
}

export class StreamTriggers {
  private readonly consumers = new Map<string, { consumer: StreamConsumer; shape: string }>();
  /** By consumer group (library and trigger), then stream (latin1): kept across a REPLACE. */
  private readonly stats = new Map<string, Map<string, StreamStats>>();

  constructor(
    private readonly router: Router,
    private readonly shards: Shards,
    private readonly log: Logger,
    private readonly libraries: TfLibraries,
    private readonly timing: StreamTiming,
  ) {}

  get active(): boolean {
    return this.consumers.size > 0;
  }

  /** The streams a trigger consumes, as TFUNCTION LIST vv shows them. */
  statsOf(library: string, trigger: string): StreamStats[] {
    return [...(this.stats.get(streamGroup(library, trigger))?.values() ?? [])];
  }

  private streamStats(library: string, trigger: string, stream: Buffer): StreamStats {
    const group = streamGroup(library, trigger);
    let byStream = this.stats.get(group);
    if (byStream === undefined) this.stats.set(group, (byStream = new Map()));
    const key = stream.toString("latin1");
    let stats = byStream.get(key);
    if (stats === undefined) {
      stats = {
        name: Buffer.from(stream),
        lastProcessedTime: 0,
        totalProcessedTime: 0,
        lastLag: 0,
        totalLag: 0,
        totalRecordProcessed: 0,
        pendingIds: new Set(),
        idToReadFrom: null,
        lastError: null,
        lastRunAt: 0,
        lastErrorAt: 0,
      };
      byStream.set(key, stats);
    }
    return stats;
  }

  /** Makes the consumers what the libraries register; a deleted library's groups go too. */
  async update(deleted: string | null): Promise<void> {
    if (deleted !== null) {
      for (const group of [...this.stats.keys()])
        if (group.startsWith(streamGroup(deleted, ""))) this.stats.delete(group);
    }
    const wanted = new Map<string, { library: string; trigger: TfStreamTriggerInfo }>();
    for (const library of this.libraries.all()) {
      for (const trigger of library.registrations.streamTriggers) {
        wanted.set(streamGroup(library.name, trigger.name), { library: library.name, trigger });
      }
    }
    for (const [group, { consumer, shape }] of this.consumers) {
      const want = wanted.get(group);
      if (want !== undefined && JSON.stringify(want.trigger) === shape) continue;
      this.consumers.delete(group);
      const gone = want === undefined && deleted !== null && group.startsWith(streamGroup(deleted, ""));
      await consumer.stop(gone);
    }
    for (const [group, { library, trigger }] of wanted) {
      if (this.consumers.has(group)) continue;
      const consumer = new StreamConsumer(
        this.router,
        this.shards,
        this.log,
        group,
        this.timing.consumerName,
        {
          prefix: `${prefixText(trigger)}*`,
          batch: trigger.window,
          // Fewer entries than the window run at once instead of waiting for more.
          durationMs: 1,
          onFailedPolicy: "continue",
          retryIntervalSec: 1,
          trimStream: trigger.trim,
          rawFields: true,
        },
        () => this.timing.claimIdleMs(),
        () => this.timing.streamLeaseMs(),
        (stream, records) => this.run(library, trigger.name, stream, records),
        () => {},
      );
      this.consumers.set(group, { consumer, shape: JSON.stringify(trigger) });
      consumer.start();
    }
  }

  /** An xadd notification: the consumers of matching prefixes read the stream. */
  onAppended(key: Buffer): void {
    const name = key.toString();
    for (const { consumer } of this.consumers.values()) if (consumer.matches(name)) consumer.onAppended(key);
  }

  /** A window of entries of one stream: the callbacks run at once; a failure is the trigger's last error. */
  private async run(
    library: string,
    trigger: string,
    stream: Buffer,
    records: JsonValue[],
  ): Promise<{ failed: boolean }> {
    const current = this.libraries.get(library);
    if (current === undefined) return { failed: false };
    const entries = records.map((r) => {
      const rec = r as { id: string; fields: string[] };
      const fields = rec.fields.map((f): [string | null, string] => [utf8Text(Buffer.from(f, "latin1")), f]);
      return [rec.id, fields] as StreamRecord;
    });
    const stats = this.streamStats(library, trigger, stream);
    const ids = entries.map(([id]) => id);
    for (const id of ids) stats.pendingIds.add(id);
    const started = Date.now();
    const lag = ids.length > 0 ? started - Number(ids[0].split("-")[0]) : 0;
    try {
      const live = await this.libraries.revive(current);
      // A window of callbacks that each fit in the limit but not all together goes in over
      // several entries, instead of the isolate ending the entry and the window's unstarted
      // records being acknowledged.
      const budget = entryBudgetMs(live.guest.isolate);
      for (let from = 0; from < entries.length;) {
        const window = from === 0 ? entries : entries.slice(from);
        live.bridge.pendingJobs += window.length;
        let errors: (string | null)[];
        try {
          // Streams are read in database 0: the trigger's calls run there too.
          errors = await live.guest.fireStreamTrigger(
            trigger,
            stream,
            window,
            budget,
            () => (live.bridge.db = 0),
          );
        } finally {
          live.bridge.pendingJobs -= window.length;
        }
        for (const error of errors) {
          if (error === null) continue;
          stats.lastError = error;
          stats.lastErrorAt = Date.now();
          this.log.debug({ library, trigger, err: error }, "stream trigger failed");
        }
        from += Math.max(1, errors.length);
      }
    } catch (err) {
      stats.lastError = sandboxText(err);
      stats.lastErrorAt = Date.now();
      this.log.warn({ library, trigger, err: stats.lastError }, "stream trigger failed");
    } finally {
      const took = Date.now() - started;
      for (const id of ids) stats.pendingIds.delete(id);
      stats.lastProcessedTime = took;
      stats.totalProcessedTime += took;
      stats.lastLag = lag;
      stats.totalLag += lag;
      stats.totalRecordProcessed += ids.length;
      if (ids.length > 0) stats.idToReadFrom = ids[ids.length - 1];
      stats.lastRunAt = Date.now();
    }
    // T&F counted a failed record as processed: no retry.
    return { failed: false };
  }

  async close(): Promise<void> {
    await Promise.all([...this.consumers.values()].map(({ consumer }) => consumer.stop(false)));
    this.consumers.clear();
  }
}
