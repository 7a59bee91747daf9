import { performance } from "node:perf_hooks";

/**
 * The monotonic clock (ms), read at most once per event-loop turn. Requests parsed from one
 * turn's socket reads, and replies scanned from them, are stamped alike: a latency is then
 * exact to one turn, which under load is a fraction of a millisecond, below the first
 * histogram bucket and the slow log's threshold. Reading performance.now() twice per request,
 * client side and upstream side, cost about 6% of throughput at P=16 with metrics on
 * (bench:passthrough --metrics-ab); forgetting the cached value by a microtask after every
 * callback cost 2.5% of the proxy's busy time at P=1. It is forgotten by one setImmediate per
 * turn instead, which runs once the turn's I/O callbacks are done, beside the output flush
 * (io/output-buffer.ts). While an immediate is pending the loop does not block, so a stale
 * value never outlives a wait for I/O.
 */
let cached = -1;

function forget(): void {
  cached = -1;
}

export function callbackNow(): number {
  if (cached < 0) {
    cached = performance.now();
    setImmediate(forget);
  }
  return cached;
}
