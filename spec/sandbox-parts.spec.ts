import { expect } from "chai";
import { Isolate } from "../src/sandbox/isolate.js";
import type { AsyncPart, AsyncResult, HostBridge, JsonValue } from "../src/sandbox/types.js";

/**
 * A bridge that answers a round in parts (HostBridge.callAsyncParts): a call named "slow"
 * is answered later, when the test calls release(its first argument); every other call at
 * once with its first argument.
 */
function partsBridge(): HostBridge & {
  release(id: string, value: JsonValue): void;
  waiting(): string[];
  rounds: number;
} {
  const slow = new Map<string, (r: AsyncResult) => void>();
  const bridge = {
    rounds: 0,
    callSync(name: string, args: JsonValue[]): Promise<JsonValue> {
      return Promise.resolve(args[0] ?? name);
    },
    callAsyncParts(calls: { name: string; args: JsonValue[] }[], _mayWait: boolean): Promise<AsyncPart[]> {
      bridge.rounds++;
      return Promise.resolve(
        calls.map((c): AsyncPart => {
          if (c.name !== "slow") return { ok: c.args[0] ?? null };
          return { later: new Promise<AsyncResult>((resolve) => slow.set(String(c.args[0]), resolve)) };
        }),
      );
    },
    async callAsync(calls: { name: string; args: JsonValue[] }[]): Promise<AsyncResult[]> {
      const parts = await bridge.callAsyncParts(calls, true);
      return Promise.all(parts.map((p) => ("later" in p ? p.later : p)));
    },
    notify(): void {},
    release(id: string, value: JsonValue): void {
      slow.get(id)?.({ ok: value });
      slow.delete(id);
    },
    waiting(): string[] {
      return [...slow.keys()];
    },
  };
  return bridge;
}

/**
 * `pair(id)` awaits a slow call and a quick one sent in the same pass, noting when the quick
 * one's answer came (`quickSeen`); `both(id)` is Promise.all of the two; `fire(id)` sends a
 * slow call it never awaits.
 */
const SCRIPT = `
  var quickSeen = [];
  async function pair(id) {
    const slow = __host.callAsync('slow', id);
    const quick = __host.callAsync('quick', 'q' + id).then((v) => { quickSeen.push(v); return v; });
    return [await quick, await slow];
  }
  function seen() { return quickSeen; }
  async function fire(id) { __host.callAsync('slow', id); return 'fired ' + id; }
  function fireNow(id) { __host.callAsync('slow', id); return 'fired now ' + id; }
`;

describe("sandbox isolate: a round's answer in parts (HostBridge.callAsyncParts)", function () {
  this.timeout(30_000);
  const LIMITS = { memoryLimitMb: 32, timeoutMs: 300 };
  const open: Isolate[] = [];

  async function isolate(bridge: HostBridge): Promise<Isolate> {
    const iso = await Isolate.create(LIMITS, bridge);
    open.push(iso);
    await iso.evalScript(SCRIPT, "script");
    return iso;
  }

  afterEach(async () => {
    await Promise.all(open.splice(0).map((iso) => iso.dispose()));
  });

  const resumable = { resumable: { budgetMs: 1000, onSuspended: () => {} } };

  it("a resumable call gets the quick call's answer while the slow one of its round waits; the slow one's answer resumes it", async () => {
    const bridge = partsBridge();
    const iso = await isolate(bridge);
    let settled = false;
    const pair = iso.call("pair", ["a"], resumable).finally(() => (settled = true));
    while (bridge.waiting().length === 0) await new Promise((r) => setTimeout(r, 2));
    // The quick answer reached the guest: another entry sees it.
    while (JSON.stringify(await iso.call("seen", [])) !== '["qa"]')
      await new Promise((r) => setTimeout(r, 2));
    expect(settled).to.equal(false);
    expect(bridge.rounds).to.equal(1);
    bridge.release("a", "slow a");
    expect(await pair).to.deep.equal(["qa", "slow a"]);
    expect(iso.idleSince).to.be.a("number");
  });

  it("two calls, each waiting for a slow answer of one round, resume each when its own answer comes", async () => {
    const bridge = partsBridge();
    const iso = await isolate(bridge);
    const first = iso.call("pair", ["1"], resumable);
    const second = iso.call("pair", ["2"], resumable);
    while (bridge.waiting().length < 2) await new Promise((r) => setTimeout(r, 2));
    bridge.release("2", "slow 2");
    expect(await second).to.deep.equal(["q2", "slow 2"]);
    bridge.release("1", "slow 1");
    expect(await first).to.deep.equal(["q1", "slow 1"]);
  });

  it("an entry that is not resumable ends once its result is in, and its slow call is answered later: the isolate is not idle until then", async () => {
    const bridge = partsBridge();
    const iso = await isolate(bridge);
    expect(await iso.call("fireNow", ["x"])).to.equal("fired now x");
    expect(await iso.call("fire", ["y"])).to.equal("fired y");
    expect(bridge.waiting().sort()).to.deep.equal(["x", "y"]);
    expect(iso.idleSince).to.equal(null);
    bridge.release("x", "late");
    bridge.release("y", "late");
    while (iso.idleSince === null) await new Promise((r) => setTimeout(r, 2));
    expect(await iso.call("seen", [])).to.deep.equal([]);
  });

  it("an entry that is not resumable and awaits a slow call gets the whole answer, as before", async () => {
    const bridge = partsBridge();
    const iso = await isolate(bridge);
    const pair = iso.call("pair", ["w"]);
    while (bridge.waiting().length === 0) await new Promise((r) => setTimeout(r, 2));
    setTimeout(() => bridge.release("w", "slow w"), 20);
    expect(await pair).to.deep.equal(["qw", "slow w"]);
  });
});
