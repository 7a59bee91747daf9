/**
 * The gears and T&F metrics that are read from the engine when Prometheus scrapes
 * (src/gears/metric-figures.ts gathers the figures); the counted ones live in metrics.ts.
 */
import { Counter, Gauge, type Registry } from "prom-client";

/** What the gears engine shows at scrape time (src/gears/metric-figures.ts reads it). */
export interface GearsFigures {
  /** Executions kept now (RG.DUMPEXECUTIONS' list), by status. */
  executionsByStatus: Map<string, number>;
  registrations: RegistrationFigures[];
  /** Memory of the live session and T&F library isolates together, in bytes. */
  isolateMemoryBytes: number;
  /** Shards whose event lease this proxy holds; null when it runs no event source. */
  leasesHeld: number | null;
  /** T&F keyspace triggers' counters (TFUNCTION LIST's). */
  triggers: { library: string; trigger: string; runs: number; failures: number }[];
  /** T&F stream triggers: records handled, over all the streams each consumes. */
  streamTriggers: { library: string; trigger: string; records: number }[];
}

/** One registration's counters (RG.DUMPREGISTRATIONS') and queue. */
export interface RegistrationFigures {
  id: string;
  reader: string;
  /** Events run, successful or not (numTriggered). */
  triggered: number;
  succeeded: number;
  failed: number;
  /** Events waiting or in the batch running now. */
  queued: number;
  /** When the oldest of them arrived (ms since the epoch); null when none waits. */
  oldestQueuedAt: number | null;
  /** Events queued while the queue was at MaxQueuedEvents (numQueuedOverBound). */
  queuedOverBound: number;
}

/** The gears figures read at scrape time: nothing is counted for them on the event path. */
export function gearsMetrics(registers: Registry[], read: () => GearsFigures): void {
  // Each metric reads the engine afresh (`read`): a few lists walked per scrape, never per event.
  type Put = (labels: Record<string, string>, value: number) => void;
  type Fill = (put: Put, f: GearsFigures) => void;
  // A counter read at scrape time is a gauge's reset-and-set, typed as a counter for Prometheus.
  const define = (
    type: "gauge" | "counter",
    name: string,
    help: string,
    labelNames: string[],
    fill: Fill,
  ): void => {
    const config = { name, help, labelNames, registers };
    if (type === "gauge") {
      new Gauge({
        ...config,
        collect: function (this: Gauge) {
          this.reset();
          fill((l, v) => this.set(l, v), read());
        },
      });
    } else {
      new Counter({
        ...config,
        collect: function (this: Counter) {
          this.reset();
          fill((l, v) => this.inc(l, v), read());
        },
      });
    }
  };
  const gauge = (name: string, help: string, labelNames: string[], fill: Fill): void =>
    define("gauge", name, help, labelNames, fill);
  const counter = (name: string, help: string, labelNames: string[], fill: Fill): void =>
    define("counter", name, help, labelNames, fill);
  gauge("gears_proxy_gears_executions", "Gears executions kept now, by status.", ["status"], (set, f) => {
    for (const [status, n] of f.executionsByStatus) set({ status }, n);
  });
  const registration = (r: RegistrationFigures): Record<string, string> => ({
    registration: r.id,
    reader: r.reader,
  });
  counter(
    "gears_proxy_gears_registration_events_seen_total",
    "Events that reached a registration: run or waiting (RG.CLEARREGISTRATIONSSTATS resets it).",
    ["registration", "reader"],
    (inc, f) => f.registrations.forEach((r) => inc(registration(r), r.triggered + r.queued)),
  );
  counter(
    "gears_proxy_gears_registration_events_handled_total",
    "Events a registration ran without error (numSuccess).",
    ["registration", "reader"],
    (inc, f) => f.registrations.forEach((r) => inc(registration(r), r.succeeded)),
  );
  counter(
    "gears_proxy_gears_registration_events_failed_total",
    "Events whose run failed (numFailures).",
    ["registration", "reader"],
    (inc, f) => f.registrations.forEach((r) => inc(registration(r), r.failed)),
  );
  gauge(
    "gears_proxy_gears_registration_queue_length",
    "Events waiting for a registration, or in its batch running now.",
    ["registration", "reader"],
    (set, f) => f.registrations.forEach((r) => set(registration(r), r.queued)),
  );
  counter(
    "gears_proxy_gears_registration_events_over_bound_total",
    "Events queued while the registration's queue was at MaxQueuedEvents (numQueuedOverBound).",
    ["registration", "reader"],
    (inc, f) => f.registrations.forEach((r) => inc(registration(r), r.queuedOverBound)),
  );
  gauge(
    "gears_proxy_gears_registration_oldest_event_age_seconds",
    "Age of the oldest event waiting for a registration; 0 when none waits.",
    ["registration", "reader"],
    (set, f) => {
      const now = Date.now();
      f.registrations.forEach((r) =>
        set(registration(r), r.oldestQueuedAt === null ? 0 : Math.max(0, now - r.oldestQueuedAt) / 1000),
      );
    },
  );
  gauge(
    "gears_proxy_gears_isolate_memory_bytes",
    "Memory of the live JavaScript/Python isolates of gears sessions and T&F libraries together.",
    [],
    (set, f) => set({}, f.isolateMemoryBytes),
  );
  gauge(
    "gears_proxy_gears_event_leases_held",
    "Shards whose event lease this proxy holds (absent while it runs no event source).",
    [],
    (set, f) => {
      if (f.leasesHeld !== null) set({}, f.leasesHeld);
    },
  );
  counter(
    "gears_proxy_tf_trigger_runs_total",
    "T&F keyspace trigger runs, by library and trigger (TFUNCTION LIST's num_trigger).",
    ["library", "trigger"],
    (inc, f) => f.triggers.forEach((t) => inc({ library: t.library, trigger: t.trigger }, t.runs)),
  );
  counter(
    "gears_proxy_tf_stream_trigger_records_total",
    "Stream records a T&F stream trigger handled, by library and trigger (TFUNCTION LIST's total_record_processed).",
    ["library", "trigger"],
    (inc, f) => f.streamTriggers.forEach((t) => inc({ library: t.library, trigger: t.trigger }, t.records)),
  );
  counter(
    "gears_proxy_tf_trigger_failures_total",
    "T&F keyspace trigger runs that failed (num_failed).",
    ["library", "trigger"],
    (inc, f) => f.triggers.forEach((t) => inc({ library: t.library, trigger: t.trigger }, t.failures)),
  );
}
