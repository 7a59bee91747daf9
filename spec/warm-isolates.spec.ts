import { expect } from "chai";
import { Isolate } from "../src/sandbox/isolate.js";
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

  it("hands out the isolate started ahead, wired to the taker's host, and starts the next one", async () => {
    const p = pool();
    started = 0;
    p.prepare(LIMITS);
    expect(started, "a spare started before anyone asked").to.equal(1);
    const first = await p.take(LIMITS, host("first"));
    expect(started, "the spare served, and the next spare is on its way").to.equal(2);
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
    // One for LIMITS (kept), a fresh one for `other`, and a spare for `other`.
    expect(started).to.equal(3);
    const again = await p.take(LIMITS, host("again"));
    expect(again.limits).to.deep.equal(LIMITS);
    expect(started, "LIMITS' spare served; its refill started").to.equal(4);
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

  it("a job that finished leaves the next spare warm: the job right after it takes that one", async () => {
    const p = pool();
    started = 0;
    p.prepare(LIMITS);
    const first = await p.take(LIMITS, host("first"));
    expect(await first.evalScript("1 + 1", "t")).to.equal(2);
    await first.dispose();
    const second = await p.take(LIMITS, host("second"));
    expect(started, "the spare started when the first job took its isolate served the second").to.equal(3);
    expect(await second.evalScript("__host.callSync('who')", "t")).to.equal("second");
    await second.dispose();
  });

  it("a large job (hold) drops the spare started for its successor, starts none meanwhile, and starts it again once it is over", async () => {
    const p = pool({ settleMs: 50 });
    started = 0;
    p.prepare(LIMITS);
    const large = await p.take(LIMITS, host("large"));
    expect(p.spareCount, "the next spare starts when one is taken").to.equal(1);
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
    expect(started - before, "the next job took the spare; only its successor started").to.equal(1);
    await next.dispose();
  });

  it("a large job keeps the spares that were there before it, and ignores isolates the pool did not hand out", async () => {
    const p = pool();
    started = 0;
    const other = { memoryLimitMb: 48, timeoutMs: 500 };
    p.prepare(other);
    p.prepare(LIMITS);
    const large = await p.take(LIMITS, host("large"));
    expect(p.spareCount).to.equal(2);
    p.hold(large);
    expect(p.spareCount, "only the spare started when the large job took its isolate is dropped").to.equal(1);
    const stranger = await Isolate.create(LIMITS, host("stranger"));
    p.hold(stranger);
    expect(p.holding).to.equal(1);
    await stranger.dispose();
    await large.dispose();
  });
});
