import { expect } from "chai";
import { Isolate } from "../src/sandbox/isolate.js";
import { SandboxError, type HostBridge, type JsonValue } from "../src/sandbox/types.js";

/** A bridge whose callAsync answers each call with its first argument, after `delayMs`. */
function echoBridge(delayMs = 0): HostBridge & { rounds: number } {
  const bridge = {
    rounds: 0,
    callSync(name: string, args: JsonValue[]): Promise<JsonValue> {
      return Promise.resolve(args[0] ?? name);
    },
    async callAsync(calls: { name: string; args: JsonValue[] }[]) {
      bridge.rounds++;
      await new Promise((r) => (delayMs > 0 ? setTimeout(r, delayMs) : setImmediate(r)));
      return calls.map((c) => ({ ok: c.args[0] ?? null }));
    },
    notify(): void {},
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
  throw new Error("expected the call to fail");
}

/**
 * `count(n)` awaits n host calls one after the other and answers n; `now()` answers at once;
 * `stuck(n)` awaits n host calls, then a Promise nobody settles; `spin(n)` then loops forever;
 * `stuckInBuiltin()` loops in a builtin, which only the watchdog ends (with the worker).
 */
const SCRIPT = `
  async function count(n) { let i = 0; for (; i < n; i++) await __host.callAsync('x', i); return i; }
  function now(x) { return 'now ' + x; }
  async function stuck(n) { await count(n); await new Promise(() => {}); }
  async function spin(n) { await count(n); for (;;) {} }
  function stuckInBuiltin() { let s = 'a'.repeat(1 << 20); for (;;) s = s.replaceAll('a', 'a'); }
`;

describe("sandbox isolate: resumable calls (CallOptions.resumable)", function () {
  this.timeout(30_000);
  const LIMITS = { memoryLimitMb: 32, timeoutMs: 300 };
  const open: Isolate[] = [];

  async function isolate(bridge: HostBridge = echoBridge()): Promise<Isolate> {
    const iso = await Isolate.create(LIMITS, bridge);
    open.push(iso);
    await iso.evalScript(SCRIPT, "script");
    return iso;
  }

  afterEach(async () => {
    await Promise.all(open.splice(0).map((iso) => iso.dispose()));
  });

  it("an entry awaiting host calls ends once its budget is spent; later entries resume it and its call settles with its value", async () => {
    const iso = await isolate(echoBridge(1));
    let suspended = 0;
    const long = iso.call("count", [400], { resumable: { budgetMs: 20, onSuspended: () => suspended++ } });
    expect(await long).to.equal(400);
    expect(suspended).to.equal(1);
  });

  it("other entries run while a resumable call awaits host calls, and it still settles right", async () => {
    const iso = await isolate(echoBridge(1));
    let settled = false;
    const long = iso
      .call("count", [300], { resumable: { budgetMs: 10_000, onSuspended: () => {} } })
      .finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 30));
    // An entry that waits makes the resumable one stop waiting for its round (budget or not).
    for (let i = 0; i < 10; i++) expect(await iso.call("now", [i])).to.equal(`now ${i}`);
    expect(settled).to.equal(false);
    expect(await long).to.equal(300);
  });

  it("a resumable call that ends up awaiting a Promise nothing can settle fails with the sandbox's error", async () => {
    const iso = await isolate(echoBridge(1));
    const err = await failure(
      iso.call("stuck", [100], { resumable: { budgetMs: 5, onSuspended: () => {} } }),
    );
    expect(err.kind).to.equal("throw");
    expect(err.message).to.equal("Error: the script awaits a promise that can never settle");
    expect(await iso.call("now", ["after"])).to.equal("now after");
  });

  // Its pending jobs fail alone (as with jobsFailAlone): QuickJS rejects the one that overran.
  it("a resumable call that loops past the time limit in a resumed entry fails alone, its job interrupted", async () => {
    const iso = await isolate(echoBridge(1));
    const opts = { resumable: { budgetMs: 5, onSuspended: () => {} } };
    const spin = failure(iso.call("spin", [50], opts));
    const other = iso.call("count", [200], opts);
    const err = await spin;
    expect([err.kind, err.message]).to.deep.equal(["throw", "InternalError: interrupted"]);
    expect(await other).to.equal(200);
    expect(await iso.call("now", ["after"])).to.equal("now after");
  });

  it("dispose() while a resumable call is suspended rejects it as terminated", async () => {
    const iso = await isolate(echoBridge(2));
    let suspended = false;
    const long = failure(
      iso.call("count", [100_000], {
        resumable: { budgetMs: 5, onSuspended: () => (suspended = true) },
      }),
    );
    while (!suspended) await new Promise((r) => setTimeout(r, 5));
    await iso.dispose();
    expect((await long).kind).to.equal("terminated");
  });

  it("the worker ended by the watchdog (another entry stuck in a builtin) rejects a suspended call as terminated", async () => {
    const iso = await isolate(echoBridge(2));
    let suspended = false;
    const long = failure(
      iso.call("count", [100_000], {
        resumable: { budgetMs: 5, onSuspended: () => (suspended = true) },
      }),
    );
    while (!suspended) await new Promise((r) => setTimeout(r, 5));
    expect((await failure(iso.call("stuckInBuiltin", []))).kind).to.equal("timeout");
    expect(iso.alive).to.equal(false);
    expect((await long).kind).to.equal("terminated");
  });

  it("an isolate with a suspended call is not idle", async () => {
    const iso = await isolate(echoBridge(1));
    let suspended = false;
    const long = iso.call("count", [200], {
      resumable: { budgetMs: 5, onSuspended: () => (suspended = true) },
    });
    while (!suspended) await new Promise((r) => setTimeout(r, 2));
    expect(iso.idleSince).to.equal(null);
    expect(await long).to.equal(200);
    expect(iso.idleSince).to.be.a("number");
  });
});
