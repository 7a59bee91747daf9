import { expect } from "chai";
import { Isolate, RENEW_MAX_BYTES } from "../src/sandbox/isolate.js";
import type { HostBridge, IsolateLimits } from "../src/sandbox/types.js";
import { WarmIsolates, type WarmTiming } from "../src/sandbox/warm-isolates.js";
import { eventually } from "./support/polling.js";

const LIMITS: IsolateLimits = { memoryLimitMb: 32, timeoutMs: 1000 };

/** A host that answers every synchronous call with its own name, so the test sees who served it. */
function host(name: string): HostBridge {
  return {
    callSync: async () => name,
    callAsync: async (calls) => calls.map(() => ({ ok: name })),
    notify: () => {},
  };
}

describe("warm isolates (sandbox/warm-isolates.ts)", function () {
  this.timeout(30_000);
  const pools: WarmIsolates<Isolate>[] = [];
  let started = 0;

  function pool(timing: Partial<WarmTiming> = {}): WarmIsolates<Isolate> {
    const p = new WarmIsolates<Isolate>((limits, bridge) => {
      started++;
      return Isolate.create(limits, bridge);
    }, timing);
    pools.push(p);
    return p;
  }

  afterEach(async () => {
    for (const p of pools.splice(0)) await p.close();
  });

  it("hands out the isolate started ahead, wired to the taker's host, and starts the next one once the taker keeps it", async () => {
    const p = pool();
    started = 0;
    p.prepare(LIMITS);
    expect(started, "a spare started before anyone asked").to.equal(1);
    const first = await p.take(LIMITS, host("first"));
    expect(started, "no spare competes with the job it served while it may come back").to.equal(1);
    // Idle in its taker's hands (a session's, a library's): it is not coming back.
    await eventually(
      async () => started,
      (n) => n === 2,
      "the next spare started once the taken isolate stayed idle",
    );
    const second = await p.take(LIMITS, host("second"));
    expect(second).to.not.equal(first);
    // Each isolate calls the host of the execution that took it.
    const call = "__host.callSync('who')";
    expect(await first.evalScript(call, "t")).to.equal("first");
    expect(await second.evalScript(call, "t")).to.equal("second");
    await first.dispose();
    await second.dispose();
  });

  it("gives a fresh isolate for other limits and keeps a spare for each of the last two", async () => {
    const p = pool();
    started = 0;
    p.prepare(LIMITS);
    const other = { memoryLimitMb: 48, timeoutMs: 500 };
    const isolate = await p.take(other, host("other"));
    expect(isolate.limits).to.deep.equal(other);
    // One for LIMITS (kept), a fresh one for `other`, and, once it is seen kept, a spare for `other`.
    await eventually(
      async () => [started, p.spareCount],
      ([n, spares]) => n === 3 && spares === 2,
      "a spare for each set of limits",
    );
    const again = await p.take(LIMITS, host("again"));
    expect(again.limits).to.deep.equal(LIMITS);
    await eventually(
      async () => started,
      (n) => n === 4,
      "LIMITS' spare served; its refill started",
    );
    await isolate.dispose();
    await again.dispose();
  });

  it("does not hand out a spare that died; close() disposes the spares", async () => {
    const p = pool();
    p.prepare(LIMITS);
    const spare = await p.take(LIMITS, host("x"));
    await spare.dispose();
    const next = await p.take(LIMITS, host("y"));
    expect(next.alive).to.equal(true);
    await next.dispose();
    await p.close();
    started = 0;
    p.prepare(LIMITS);
    expect(started, "a closed pool starts nothing").to.equal(0);
  });

  it("a job that finished hands its thread back renewed: the job right after it takes that, fresh, and no thread starts", async () => {
    // A loaded machine may pause the test between two entries: no spare starts meanwhile.
    const p = pool({ keptIdleMs: 60_000, busyStartMs: 60_000 });
    started = 0;
    p.prepare(LIMITS);
    const first = await p.take(LIMITS, host("first"));
    expect(await first.evalScript("globalThis.left = 'by the first job'; 1 + 1", "t")).to.equal(2);
    await first.dispose();
    expect(first.alive).to.equal(false);
    // Disposed twice (an owner and a cleanup path both): the second call settles too.
    await first.dispose();
    await first.exited;
    expect(p.spareCount, "the renewed isolate is the spare").to.equal(1);
    const second = await p.take(LIMITS, host("second"));
    expect(started, "no new worker thread").to.equal(1);
    expect(second).to.not.equal(first);
    expect(second.threadId, "the first job's thread").to.equal(first.threadId);
    expect(await second.evalScript("typeof globalThis.left", "t"), "a fresh context").to.equal("undefined");
    expect(await second.evalScript("__host.callSync('who')", "t")).to.equal("second");
    // A renewed isolate keeps its limits: time and memory.
    const loop = await second.evalScript("for (;;) {}", "t").then(
      () => null,
      (e: Error) => e.message,
    );
    expect(loop).to.match(/timeout|time/i);
    expect(second.alive, "a timed-out entry leaves the isolate usable").to.equal(true);
    const hog = await second
      .evalScript("const a = []; for (;;) a.push('x'.repeat(1000) + a.length);", "t")
      .then(
        () => null,
        (e: Error) => e.message,
      );
    expect(hog).to.match(/memory/i);
    await second.dispose();
  });

  it("hands out isolates with their preload evaluated, spares and renewed ones included, and keeps kinds apart", async () => {
    // A loaded machine may pause the test between two entries: no spare starts meanwhile.
    const p = pool({ keptIdleMs: 60_000, busyStartMs: 60_000 });
    started = 0;
    const preload = {
      source: "globalThis.library = 'loaded'; globalThis.loads = (globalThis.loads || 0) + 1;",
      filename: "lib",
    };
    p.prepare(LIMITS, preload);
    const first = await p.take(LIMITS, host("first"), preload);
    expect(await first.evalScript("[library, loads]", "t")).to.deep.equal(["loaded", 1]);
    await first.evalScript("globalThis.extra = 1", "t");
    await first.dispose();
    // Renewed, and the preload evaluated again in its fresh context.
    const second = await p.take(LIMITS, host("second"), preload);
    expect(second.threadId).to.equal(first.threadId);
    expect(await second.evalScript("[library, loads, typeof extra]", "t")).to.deep.equal([
      "loaded",
      1,
      "undefined",
    ]);
    expect(await second.evalScript("__host.callSync('who')", "t")).to.equal("second");
    // An isolate of the same limits without the preload is another kind: not that spare.
    const plain = await p.take(LIMITS, host("plain"));
    expect(await plain.evalScript("typeof library", "t")).to.equal("undefined");
    // A cold one (no spare of its kind) is handed out with its preload too.
    const cold = await p.take(LIMITS, host("cold"), preload);
    expect(await cold.evalScript("library", "t")).to.equal("loaded");
    // A preload that fails fails the take, and leaves no isolate behind.
    const broken = { source: "throw new Error('bad library')", filename: "broken" };
    const failed = await p.take(LIMITS, host("x"), broken).then(
      () => null,
      (e: Error) => e.message,
    );
    expect(failed).to.match(/bad library/);
    await Promise.all([second.dispose(), plain.dispose(), cold.dispose()]);
  });

  it("does not renew an isolate whose memory grew past RENEW_MAX_BYTES: its thread ends and a new spare starts", async () => {
    const p = pool();
    started = 0;
    const roomy = { memoryLimitMb: 64, timeoutMs: 5000 };
    p.prepare(roomy);
    const big = await p.take(roomy, host("big"));
    await big.evalScript(
      `globalThis.keep = []; for (let i = 0; i < ${Math.ceil(RENEW_MAX_BYTES / 40)}; i++) keep.push('s' + i); 0`,
      "t",
    );
    expect(big.memoryBytes).to.be.greaterThan(RENEW_MAX_BYTES);
    await big.dispose();
    await big.exited;
    await eventually(
      async () => [started, p.spareCount],
      ([n, spares]) => n === 2 && spares === 1,
      "a new spare instead",
    );
    const next = await p.take(roomy, host("next"));
    expect(next.threadId).to.not.equal(big.threadId);
    await next.dispose();
  });

  it("a large job (hold) drops the spare started for its successor, starts none meanwhile, and starts it again once it is over", async () => {
    const p = pool({ settleMs: 50 });
    started = 0;
    p.prepare(LIMITS);
    const large = await p.take(LIMITS, host("large"));
    await eventually(
      async () => p.spareCount,
      (n) => n === 1,
      "the next spare starts once the taken one is seen kept",
    );
    p.hold(large);
    expect(p.spareCount, "dropped while the large job runs").to.equal(0);
    expect(p.holding).to.equal(1);
    const during = await p.take(LIMITS, host("during"));
    expect(p.spareCount, "no spare started while the large job runs").to.equal(0);
    expect(await during.evalScript("__host.callSync('who')", "t")).to.equal("during");
    await during.dispose();
    expect(await large.evalScript("__host.callSync('who')", "t")).to.equal("large");
    await large.dispose();
    await eventually(
      async () => p.spareCount,
      (n) => n === 1,
      "the spare started again after the large job",
    );
    expect(p.holding).to.equal(0);
    const before = started;
    const next = await p.take(LIMITS, host("next"));
    expect(started - before, "the next job took the spare").to.equal(0);
    await eventually(
      async () => started - before,
      (n) => n === 1,
      "only its successor started, once the next job kept its isolate",
    );
    await next.dispose();
  });

  it("a large job keeps the spares that were there before it, and ignores isolates the pool did not hand out", async () => {
    // The large job never runs an entry here: idle for a minute would end its hold.
    const p = pool({ idleMs: 60_000 });
    started = 0;
    const other = { memoryLimitMb: 48, timeoutMs: 500 };
    p.prepare(other);
    p.prepare(LIMITS);
    const large = await p.take(LIMITS, host("large"));
    await eventually(
      async () => p.spareCount,
      (n) => n === 2,
      "LIMITS' next spare started",
    );
    p.hold(large);
    expect(p.spareCount, "only the spare started when the large job took its isolate is dropped").to.equal(1);
    const stranger = await Isolate.create(LIMITS, host("stranger"));
    p.hold(stranger);
    expect(p.holding).to.equal(1);
    await stranger.dispose();
    await large.dispose();
  });
});
