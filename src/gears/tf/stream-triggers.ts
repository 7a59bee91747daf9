import type { Logger } from "../../observability/log.js";
import type { Router } from "../../routing/router.js";
import type { Shards } from "../../routing/shards.js";
import type { JsonValue } from "../../sandbox/types.js";
import { StreamConsumer } from "../events/stream-consumer.js";
import type { TfStreamTriggerInfo } from "../guest/entry.js";
import { sandboxText, type TfLibraries } from "./libraries.js";
import { utf8Text } from "./values.js";

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

export class StreamTriggers {
  private readonly consumers = new Map<string, { consumer: StreamConsumer; shape: string }>();

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

  /** Makes the consumers what the libraries register; a deleted library's groups go too. */
  async update(deleted: string | null): Promise<void> {
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
    try {
      const live = await this.libraries.revive(current);
      live.bridge.pendingJobs += entries.length;
      let errors: (string | null)[];
      try {
        errors = await live.guest.fireStreamTrigger(trigger, stream, entries);
      } finally {
        live.bridge.pendingJobs -= entries.length;
      }
      for (const error of errors) {
        if (error !== null) this.log.debug({ library, trigger, err: error }, "stream trigger failed");
      }
    } catch (err) {
      this.log.warn({ library, trigger, err: sandboxText(err) }, "stream trigger failed");
    }
    // T&F counted a failed record as processed: no retry.
    return { failed: false };
  }

  async close(): Promise<void> {
    await Promise.all([...this.consumers.values()].map(({ consumer }) => consumer.stop(false)));
    this.consumers.clear();
  }
}
