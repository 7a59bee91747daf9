/**
 * The guest's share of a batch of TFCALLs (issue 11): `__tf.callFunctions` of N calls of a
 * one-INCR function, through the real sandbox prelude and T&F library in QuickJS, in this
 * thread, with a stub host that answers each "calls" request at once (an integer per call).
 * Prints µs per TFCALL, the stub's own time left out (min and median of the runs): a figure
 * a loaded machine moves far less than the proxy's rates. `--base DIR` times another build's
 * dist too, the builds taking turns.
 * The batch enters as the worker enters it: its JSON encoded straight into the wasm heap; with
 * `--binary`, this build runs a second time with the batch in the binary format (bjson.ts),
 * as TfGuest.callFunctions sends it now.
 *   node dist/bench/tf-guest.js [--calls 62] [--runs 400] [--base /path/to/build] [--fn 'function(client, key){ ... }'] [--binary]
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { getQuickJS } from "quickjs-emscripten";
import type { JsonValue } from "../src/sandbox/types.js";
import { encodeBinary } from "../src/sandbox/bjson.js";
import { heapBinary, heapText } from "./guest-builds.js";
import { median } from "./support.js";

const { values } = parseArgs({
  options: {
    calls: { type: "string", default: "62" },
    runs: { type: "string", default: "400" },
    base: { type: "string" },
    /** The function's code (registered as 'incr'). */
    fn: { type: "string", default: "function(client, key){ return client.call('INCR', key); }" },
    /** This build once more, the batch in the binary format. */
    binary: { type: "boolean", default: false },
  },
});
const calls = Number(values.calls);
const runs = Number(values.runs);
const OWN_BUILD = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");

interface TfBuild {
  prelude: string;
  guest: string;
}

async function loadBuild(build: string): Promise<TfBuild> {
  const mod = async <T>(file: string): Promise<T> =>
    (await import(pathToFileURL(path.join(build, "dist/src", file)).href)) as T;
  const { PRELUDE_SOURCE } = await mod<{ PRELUDE_SOURCE: string }>("sandbox/prelude.js");
  const { tfGuestSource } = await mod<{ tfGuestSource: () => string }>("gears/guest-bundles.js");
  return { prelude: PRELUDE_SOURCE, guest: tfGuestSource() };
}

/** The host's answer to a "calls" request: CALLS_REPLIES, then an integer reply (FLAT_INTEGER) per call. */
function stubReplies(flat: unknown[]): string {
  const out: unknown[] = [0];
  for (let i = 0; i < flat.length;) {
    out.push(2, "1");
    i += 3 + Number(flat[i]);
  }
  return "0" + JSON.stringify(out);
}

/** A build's guest with the library loaded: one call runs one batch, its guest µs per TFCALL. */
async function prepare(build: TfBuild, binary = false): Promise<() => number> {
  const QuickJS = await getQuickJS();
  const rt = QuickJS.newRuntime();
  rt.setMaxStackSize(1 << 20);
  const ctx = rt.newContext();
  let stubNs = 0n;
  const rawSync = ctx.newFunction("callSync", (nameH, argsH) => {
    const t0 = process.hrtime.bigint();
    const name = ctx.getString(nameH);
    const args = JSON.parse(ctx.getString(argsH)) as unknown[];
    const text = name === "calls" ? stubReplies(args[0] as unknown[]) : '0{"i":"1"}';
    const h = ctx.newString(text);
    stubNs += process.hrtime.bigint() - t0;
    return h;
  });
  const rawNotify = ctx.newFunction("notify", () => {});
  const factory = ctx.unwrapResult(ctx.evalCode(build.prelude, "prelude"));
  const internal = ctx.unwrapResult(ctx.callFunction(factory, ctx.undefined, rawSync, rawNotify));
  ctx.unwrapResult(ctx.evalCode(build.guest, "tf-library")).dispose();
  const [call, callAt, start, finish] = ["call", "callAt", "start", "finish"].map((n) =>
    ctx.getProp(internal, n),
  );
  /** An entry of `path`; with `binary`, its first argument in the binary format. */
  const enter = (path: string, args: unknown[], binary = false): string => {
    const p = ctx.newString(path);
    const handles = [p];
    let first;
    if (binary) {
      const a = heapText(ctx, JSON.stringify([null, ...args.slice(1)]));
      const i = ctx.newNumber(0);
      const v = heapBinary(ctx, encodeBinary(args[0] as JsonValue, 64 + 32 * calls));
      handles.push(a, i, v);
      first = ctx.unwrapResult(ctx.callFunction(callAt, ctx.undefined, p, a, i, v));
    } else {
      const a = heapText(ctx, JSON.stringify(args));
      handles.push(a);
      first = ctx.unwrapResult(ctx.callFunction(call, ctx.undefined, p, a));
    }
    const rec = ctx.unwrapResult(ctx.callFunction(start, ctx.undefined, first));
    const out = ctx.unwrapResult(ctx.callFunction(finish, ctx.undefined, rec));
    const text = ctx.getString(out);
    for (const h of [...handles, first, rec, out]) h.dispose();
    return text;
  };
  enter("__tf.prepare", [null, "1.0"]);
  ctx.unwrapResult(ctx.evalCode(`redis.registerFunction('incr', ${values.fn});`, "script")).dispose();
  enter("__tf.loaded", []);
  const flat: unknown[] = [];
  for (let i = 0; i < calls; i++) flat.push("incr", 1, `bench:{k${i}}`, 1, (i * 97) % 16384);
  return () => {
    stubNs = 0n;
    const t0 = process.hrtime.bigint();
    const out = enter("__tf.callFunctions", [flat, 1000], binary);
    const ns = Number(process.hrtime.bigint() - t0 - stubNs);
    if (out[0] !== "0") throw new Error(`the batch failed: ${out.slice(1, 200)}`);
    return ns / calls / 1000;
  };
}

const builds: [string, () => number][] = [["this", await prepare(await loadBuild(OWN_BUILD))]];
if (values.binary === true) builds.push(["this, binary", await prepare(await loadBuild(OWN_BUILD), true)]);
if (values.base !== undefined) builds.push(["base", await prepare(await loadBuild(values.base))]);
const times = new Map<string, number[]>(builds.map(([name]) => [name, []]));
for (let r = 0; r < runs; r++) for (const [name, run] of builds) times.get(name)!.push(run());
for (const [name, list] of times) {
  list.sort((a, b) => a - b);
  process.stdout.write(
    `${name}: ${calls} calls an entry, guest µs per TFCALL: min ${list[0].toFixed(2)}, median ${median(list).toFixed(2)}\n`,
  );
}
