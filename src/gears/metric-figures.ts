import type { GearsFigures, RegistrationFigures } from "../observability/gears-metrics.js";
import type { GearsEngine } from "./engine.js";
import type { Registration } from "./registration.js";

/**
 * What /metrics shows of the gears engine, read from it at scrape time: the engine counts
 * nothing for the metrics beyond the counters RG.DUMPREGISTRATIONS and TFUNCTION LIST keep.
 */
export function gearsFigures(engine: GearsEngine | null): GearsFigures {
  if (engine === null) {
    return {
      executionsByStatus: new Map(),
      registrations: [],
      isolateMemoryBytes: 0,
      leasesHeld: null,
      triggers: [],
      streamTriggers: [],
    };
  }
  const executionsByStatus = new Map<string, number>();
  for (const execution of [...engine.list(), ...engine.registry.registeredExecutions()]) {
    executionsByStatus.set(execution.status, (executionsByStatus.get(execution.status) ?? 0) + 1);
  }
  let isolateMemoryBytes = 0;
  for (const session of engine.registry.allSessions()) {
    if (session.isolate.alive) isolateMemoryBytes += session.isolate.memoryBytes;
  }
  for (const isolate of engine.tf.libraries.isolates()) {
    if (isolate.alive) isolateMemoryBytes += isolate.memoryBytes;
  }
  const triggers: GearsFigures["triggers"] = [];
  const streamTriggers: GearsFigures["streamTriggers"] = [];
  for (const library of engine.tf.libraries.all()) {
    for (const trigger of library.registrations.streamTriggers) {
      const records = engine.tf.streamTriggers
        .statsOf(library.name, trigger.name)
        .reduce((sum, stream) => sum + stream.totalRecordProcessed, 0);
      streamTriggers.push({ library: library.name, trigger: trigger.name, records });
    }
    for (const trigger of library.registrations.keyspaceTriggers) {
      const stats = engine.tf.keyspaceTriggers.statsOf(library.name, trigger.name);
      triggers.push({
        library: library.name,
        trigger: trigger.name,
        runs: stats.numTrigger,
        failures: stats.numFailed,
      });
    }
  }
  return {
    executionsByStatus,
    registrations: engine.registry.all().map((r) => registrationFigures(r, engine.registry.queuedOf(r))),
    isolateMemoryBytes,
    leasesHeld: engine.ownedShards?.length ?? null,
    triggers,
    streamTriggers,
  };
}

/** `queued`: the registry's count of its events waiting or in a batch (queuedOf). */
function registrationFigures(r: Registration, queued: number): RegistrationFigures {
  let oldest = r.inFlight[0]?.at ?? r.queue.oldestAt() ?? null;
  for (const local of r.localQueues.values()) {
    const first = local.inFlight[0]?.at ?? local.queue.oldestAt();
    if (first !== undefined && (oldest === null || first < oldest)) oldest = first;
  }
  return {
    id: r.id,
    reader: r.action.reader,
    triggered: r.stats.numTriggered,
    succeeded: r.stats.numSuccess,
    failed: r.stats.numFailures,
    queued,
    oldestQueuedAt: oldest,
    queuedOverBound: r.stats.numQueuedOverBound,
  };
}
