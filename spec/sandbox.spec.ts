import { expect } from "chai";
import { Isolate } from "../src/sandbox/isolate.js";
import {
  SandboxError,
  type HostBridge,
  type JsonValue,
  type SandboxErrorKind,
} from "../src/sandbox/types.js";

interface RecordingBridge extends HostBridge {
  syncCalls: { name: string; args: JsonValue[] }[];
  asyncBatches: { name: string; args: JsonValue[] }[][];
  notes: { name: string; args: JsonValue[] }[];
}

/** A bridge that echoes: callSync("fail", msg) throws msg, callSync("slow", ms) answers late. */
function recordingBridge(): RecordingBridge {
  const bridge: RecordingBridge = {
    syncCalls: [],
    asyncBatches: [],
    notes: [],
    async callSync(name, args) {
      bridge.syncCalls.push({ name, args });
      if (name === "fail") throw new Error(String(args[0]));
      if (name === "slow") await new Promise((r) => setTimeout(r, Number(args[0])));
      if (name === "never") await new Promise(() => undefined);
      return { name, args };
    },
    async callAsync(calls) {
      bridge.asyncBatches.push(calls);
      await new Promise((r) => setImmediate(r));
      return calls.map((c) =>
        c.name === "fail" ? { error: `failed ${String(c.args[0])}` } : { ok: c.args[0] },
      );
    },
    notify(name, args) {
      bridge.notes.push({ name, args });
    },
  };
  return bridge;
}

async function failure(p: Promise<unknown>): Promise<SandboxError> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(SandboxError);
    return e as SandboxError;
  }
  throw new Error("expected the entry to fail");
}

async function expectKind(p: Promise<unknown>, kind: SandboxErrorKind): Promise<SandboxError> {
  const err = await failure(p);
  expect(err.kind, err.message).to.equal(kind);
  return err;
}

describe("sandbox isolate", function () {
  this.timeout(20_000);
  const LIMITS = { memoryLimitMb: 32, timeoutMs: 300 };
  const open: Isolate[] = [];

  async function isolate(bridge: HostBridge = recordingBridge(), limits = LIMITS): Promise<Isolate> {
    const iso = await Isolate.create(limits, bridge);
    open.push(iso);
    return iso;
  }

  afterEach(async () => {
    await Promise.all(open.splice(0).map((iso) => iso.dispose()));
  });

  it("evaluates scripts and calls functions with JSON round trips", async () => {
    const iso = await isolate();
    expect(await iso.evalScript("var lib = { twice: (x) => x * 2 }; 40 + 2", "lib.js")).to.equal(42);
    expect(
      await iso.evalScript("function echo(...a) { return { got: a, n: lib.twice(a.length) }; }", "script"),
    ).to.equal(null);
    const args: JsonValue[] = ["s", 1.5, true, null, [1, [2]], { a: { b: "c" } }];
    expect(await iso.call("echo", args)).to.deep.equal({ got: args, n: 12 });
    expect(await iso.call("lib.twice", [21])).to.equal(42);
    expect(await iso.evalScript("({ f() {}, u: undefined, d: [undefined] })", "script")).to.deep.equal({
      d: [null],
    });
    expect(await iso.evalScript("Promise.resolve(7).then((x) => x * 6)", "script")).to.equal(42);
    const err = await expectKind(iso.call("nope.missing", []), "throw");
    expect(err.message).to.equal("TypeError: nope.missing is not a function");
  });

  it("reports a guest throw with its name, message and script line", async () => {
    const iso = await isolate();
    const err = await expectKind(iso.evalScript("let a = 1;\n\nnull.x;", "script"), "throw");
    expect(err.message).to.equal("TypeError: cannot read property 'x' of null");
    expect(err.line).to.equal(3);
    await iso.evalScript("function boom() {\n  throw new RangeError('too big');\n}", "script");
    const err2 = await expectKind(iso.call("boom", []), "throw");
    expect(err2.message).to.equal("RangeError: too big");
    expect(err2.line).to.equal(2);
    expect((await expectKind(iso.evalScript("throw 'plain'", "script"), "throw")).message).to.equal("plain");
    const rejected = await expectKind(
      iso.evalScript("Promise.reject(new Error('later'))", "script"),
      "throw",
    );
    expect(rejected.message).to.equal("Error: later");
  });

  it("reports a syntax error with its line", async () => {
    const iso = await isolate();
    const err = await expectKind(iso.evalScript("let a = 1;\nlet b = 2;\nlet c = ;\n", "script"), "syntax");
    expect(err.message).to.match(/^SyntaxError: /);
    expect(err.line).to.equal(3);
    // A SyntaxError thrown while running is a plain throw.
    expect((await expectKind(iso.evalScript("JSON.parse('{')", "script"), "throw")).message).to.match(
      /^SyntaxError/,
    );
  });

  it("callSync returns the host's values and throws the host's errors", async () => {
    const bridge = recordingBridge();
    const iso = await isolate(bridge);
    expect(await iso.evalScript("__host.callSync('get', 'k', 1, [true])", "script")).to.deep.equal({
      name: "get",
      args: ["k", 1, [true]],
    });
    expect(
      await iso.evalScript(
        "try { __host.callSync('fail', 'no such key'); 'not thrown' } catch (e) { [e instanceof Error, e.message] }",
        "script",
      ),
    ).to.deep.equal([true, "no such key"]);
    expect(bridge.syncCalls).to.deep.equal([
      { name: "get", args: ["k", 1, [true]] },
      { name: "fail", args: ["no such key"] },
    ]);
    const uncaught = await expectKind(iso.evalScript("\n__host.callSync('fail', 'boom')", "script"), "throw");
    expect(uncaught.message).to.equal("Error: boom");
    expect(uncaught.line).to.equal(2);
  });

  it("time spent waiting for the host does not count against the deadline", async () => {
    const iso = await isolate(recordingBridge(), { memoryLimitMb: 32, timeoutMs: 200 });
    const src = "for (let i = 0; i < 3; i++) __host.callSync('slow', 150); 'done'";
    expect(await iso.evalScript(src, "script")).to.equal("done");
    const asyncSrc =
      "(async () => { for (let i = 0; i < 20; i++) await __host.callAsync('x', i); return 'ok' })()";
    expect(await iso.evalScript(asyncSrc, "script")).to.equal("ok");
  });

  it("callAsync: 1,000 calls under Promise.all travel in a few batches and resolve in order", async () => {
    const bridge = recordingBridge();
    const iso = await isolate(bridge);
    await iso.evalScript(
      `async function many(n) {
        const ps = [];
        for (let i = 0; i < n; i++) ps.push(__host.callAsync('echo', i));
        const out = await Promise.all(ps);
        const again = await __host.callAsync('echo', 'second round');
        return { ok: out.every((v, i) => v === i), n: out.length, again };
      }
      function failing() { return __host.callAsync('fail', 'x').catch((e) => 'caught ' + e.message); }`,
      "script",
    );
    expect(await iso.call("many", [1000])).to.deep.equal({ ok: true, n: 1000, again: "second round" });
    expect(bridge.asyncBatches.length).to.be.within(1, 3);
    expect(bridge.asyncBatches[0].map((c) => c.args[0])).to.deep.equal(
      Array.from({ length: 1000 }, (_, i) => i),
    );
    expect(iso.stats.asyncCalls).to.equal(1001);
    expect(iso.stats.asyncBatches).to.equal(bridge.asyncBatches.length);
    expect(await iso.call("failing", [])).to.equal("caught failed x");
  });

  it("notify calls are batched and arrive in order", async () => {
    const bridge = recordingBridge();
    const iso = await isolate(bridge);
    await iso.evalScript(
      "for (let i = 0; i < 1000; i++) __host.notify('log', 'line ' + i, 'notice'); __host.callSync('after')",
      "script",
    );
    expect(bridge.notes.length).to.equal(1000);
    expect(bridge.notes[0]).to.deep.equal({ name: "log", args: ["line 0", "notice"] });
    expect(bridge.notes.map((n) => n.args[0])).to.deep.equal(
      Array.from({ length: 1000 }, (_, i) => `line ${i}`),
    );
    expect(iso.stats.notifyBatches).to.be.within(1, 10);
    expect(bridge.syncCalls.map((c) => c.name)).to.deep.equal(["after"]);
  });

  it("while(true){} times out, the main thread stays responsive, and the isolate keeps working", async () => {
    const iso = await isolate();
    await iso.evalScript("function add(a, b) { return a + b; }", "script");
    let ticks = 0;
    const interval = setInterval(() => ticks++, 20);
    const started = Date.now();
    try {
      const err = await expectKind(iso.evalScript("while (true) {}", "script"), "timeout");
      expect(err.message).to.equal("script timed out after 300 ms");
    } finally {
      clearInterval(interval);
    }
    const elapsed = Date.now() - started;
    expect(elapsed).to.be.within(280, 300 + 1000);
    expect(ticks).to.be.greaterThan(elapsed / 20 / 3);
    expect(iso.alive).to.equal(true);
    expect(await iso.call("add", [2, 3])).to.equal(5);
    const looping = await expectKind(
      iso.evalScript("function spin() { for (;;) {} }\nspin()", "script"),
      "timeout",
    );
    expect(looping.message).to.equal("script timed out after 300 ms");
    expect(await iso.call("add", [3, 4])).to.equal(7);
  });

  it("the watchdog ends a builtin loop that ignores the interrupt; other isolates keep working", async () => {
    const limits = { memoryLimitMb: 64, timeoutMs: 200 };
    const [stuck, other] = await Promise.all([isolate(recordingBridge(), limits), isolate()]);
    await other.evalScript(
      "function work(n) { let s = 0; for (let i = 0; i < n; i++) s += i % 7; return s; }",
      "script",
    );
    const started = Date.now();
    const stuckRun = stuck.evalScript(
      "let s = 'a'.repeat(1 << 20); for (;;) s = s.replaceAll('a', 'a');",
      "script",
    );
    const otherRuns = Promise.all([1, 2, 3].map(() => other.call("work", [100_000])));
    const err = await expectKind(stuckRun, "timeout");
    expect(err.message).to.equal("script timed out after 200 ms");
    expect(Date.now() - started).to.be.lessThan(200 + 1500);
    expect(stuck.alive).to.equal(false);
    await expectKind(stuck.call("anything", []), "terminated");
    const work = (n: number): number => {
      let s = 0;
      for (let i = 0; i < n; i++) s += i % 7;
      return s;
    };
    expect(await otherRuns).to.deep.equal([work(100_000), work(100_000), work(100_000)]);
    expect(await other.call("work", [10])).to.equal(work(10));
  });

  it("endless allocation hits the memory cap, RSS stays bounded, and the isolate can be disposed", async () => {
    const iso = await isolate(recordingBridge(), { memoryLimitMb: 32, timeoutMs: 5000 });
    await iso.evalScript("function ok() { return 'fine'; }", "script");
    const rssBefore = process.memoryUsage().rss;
    const local = await expectKind(
      iso.evalScript(
        "(function () { const a = []; for (;;) a.push('x'.repeat(1 << 20) + a.length); })()",
        "script",
      ),
      "memory",
    );
    expect(local.message).to.equal("script exceeded its memory limit of 32 MB");
    expect(await iso.call("ok", [])).to.equal("fine");
    // Now keep the garbage reachable from a global.
    await expectKind(
      iso.evalScript("var kept = []; for (;;) kept.push('y'.repeat(1 << 20) + kept.length);", "script"),
      "memory",
    );
    expect(process.memoryUsage().rss - rssBefore).to.be.lessThan(200 * 1024 * 1024);
    await iso.dispose();
    expect(iso.alive).to.equal(false);
  });

  it("deep recursion is a stack error", async () => {
    const iso = await isolate();
    const err = await expectKind(
      iso.evalScript("function f(n) { return f(n + 1) + 1; }\nf(0)", "script"),
      "stack",
    );
    expect(err.message).to.equal("script exceeded the stack limit (too much recursion)");
    expect(
      await iso.evalScript("function g(n) { return n === 0 ? 0 : 1 + g(n - 1); } g(1000)", "script"),
    ).to.equal(1000);
  });

  it("abort() ends a long loop promptly; with no entry running it fails the next one", async () => {
    const iso = await isolate(recordingBridge(), { memoryLimitMb: 32, timeoutMs: 10_000 });
    const started = Date.now();
    setTimeout(() => iso.abort(), 100);
    const err = await expectKind(iso.evalScript("for (;;) {}", "script"), "aborted");
    expect(Date.now() - started).to.be.lessThan(1000);
    expect(err.message).to.equal("script aborted");
    expect(await iso.evalScript("1 + 1", "script")).to.equal(2);
    iso.abort();
    await expectKind(iso.evalScript("1 + 1", "script"), "aborted");
    expect(await iso.evalScript("2 + 2", "script")).to.equal(4);
  });

  it("abort() ends an entry that waits for a host call that never answers", async () => {
    const iso = await isolate(recordingBridge(), { memoryLimitMb: 32, timeoutMs: 10_000 });
    setTimeout(() => iso.abort(), 100);
    const started = Date.now();
    await expectKind(iso.evalScript("__host.callSync('never')", "script"), "aborted");
    expect(Date.now() - started).to.be.lessThan(1000);
    expect(await iso.evalScript("'still here'", "script")).to.equal("still here");
  });

  it("20 isolates run concurrently with correct results", async () => {
    // Deadlines are wall-clock time, and 20 workers share the machine's cores: be generous.
    const limits = { memoryLimitMb: 32, timeoutMs: 5000 };
    const isolates = await Promise.all(Array.from({ length: 20 }, () => isolate(recordingBridge(), limits)));
    const results = await Promise.all(
      isolates.map(async (iso, i) => {
        await iso.evalScript(
          `var id = ${i}; function sum(n) { let s = 0; for (let k = 0; k <= n; k++) s += k; return s + id; }`,
          "script",
        );
        return iso.call("sum", [50_000]);
      }),
    );
    expect(results).to.deep.equal(Array.from({ length: 20 }, (_, i) => 1250025000 + i));
  });

  it("dispose() ends the worker and later calls fail with 'terminated'", async () => {
    const iso = await isolate();
    expect(await iso.evalScript("'up'", "script")).to.equal("up");
    let exited = false;
    void iso.exited.then(() => (exited = true));
    await iso.dispose();
    expect(exited).to.equal(true);
    expect(iso.alive).to.equal(false);
    await expectKind(iso.call("anything", []), "terminated");
    await iso.dispose();
  });
});
