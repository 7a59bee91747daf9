/**
 * Preloaded into gears-proxy by `bench/events.ts --alloc-profile DIR` (node --import): V8's
 * sampling heap profiler on the main thread, counting the objects that scavenges and mark-sweeps
 * collected too (what --heap-prof leaves out), so that a profile tells where a run's garbage is
 * made. At each SIGUSR2 the profile so far is written to DIR/<label>.heapprofile, the label
 * read from DIR/label (written by the bench just before), and sampling starts again.
 */
import fs from "node:fs";
import inspector from "node:inspector";
import path from "node:path";
import { isMainThread } from "node:worker_threads";

const dir = process.env.EVENTS_ALLOC_DIR;
/** One sample per this many bytes allocated, on average. */
const SAMPLING_INTERVAL = 4096;

if (isMainThread && dir !== undefined) {
  const session = new inspector.Session();
  session.connect();
  const start = (): void =>
    session.post("HeapProfiler.startSampling", {
      samplingInterval: SAMPLING_INTERVAL,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  session.post("HeapProfiler.enable", () => start());
  process.on("SIGUSR2", () => {
    session.post("HeapProfiler.stopSampling", (err, result) => {
      if (err === null) {
        const label = fs.readFileSync(path.join(dir, "label"), "utf8").trim();
        fs.writeFileSync(path.join(dir, `${label}.heapprofile`), JSON.stringify(result.profile));
      }
      start();
    });
  });
}
