/**
 * The guest's share of an event batch (issue 14): the all-keys registration's `once` entry
 * over one batch of N `set` records and N lazy `all_keys` records, through the real sandbox
 * prelude and gears library in QuickJS, in this thread, with a stub host that answers every
 * command. Prints the process CPU per batch (min of the runs) and the stub host's share.
 * `--base DIR` measures another build's dist too (before/after on the same machine).
 * `--no-own` leaves the `all_keys` records out, to see their share of the guest's work.
 *   node dist/bench/events-guest.js [--writes 10000] [--runs 9] [--base /path/to/build] [--form 0|1|2] [--rows] [--no-own]
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { getQuickJS, type QuickJSHandle } from "quickjs-emscripten";

const REGISTRATION =
  "GB().filter(x => x.key !== 'all_keys').foreach(x => execute('SADD', 'all_keys', x.key)).register()";

const { values } = parseArgs({
  options: {
    writes: { type: "string", default: "10000" },
    runs: { type: "string", default: "9" },
    base: { type: "string" },
    script: { type: "string", default: REGISTRATION },
    /** How the results come back (guest/entry.ts ResultForm): 0 values, 1 one JSON text (a registration's default), 2 none. */
    form: { type: "string", default: "1" },
    /** Send the records as rows (guest/entry.ts EventRows), as the host does now; a build before them cannot read them. */
    rows: { type: "boolean", default: false },
    /** Without the handler's own `all_keys` records. */
    "no-own": { type: "boolean", default: false },
  },
});
const writes = Number(values.writes);
const runs = Number(values.runs);

/** The build this file belongs to: dist/bench/.. */
const OWN_BUILD = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");

interface Built {
  prelude: string;
  guest: string;
  entry: string;
}

async function load(build: string): Promise<Built> {
  const mod = async <T>(file: string): Promise<T> =>
    (await import(pathToFileURL(path.join(build, "dist/src", file)).href)) as T;
  const { PRELUDE_SOURCE } = await mod<{ PRELUDE_SOURCE: string }>("sandbox/prelude.js");
  const { gearsGuestSource } = await mod<{ gearsGuestSource: () => string }>("gears/guest-bundles.js");
  const { GEARS_ENTRY } = await mod<{ GEARS_ENTRY: string }>("gears/guest/entry.js");
  return { prelude: PRELUDE_SOURCE, guest: gearsGuestSource(), entry: GEARS_ENTRY };
}

/**
 * The host's answer to a batch of async calls: every command succeeds (an executeEach says
 * so with no failures, as host-bridge.ts does; an execute() answers 1).
 */
function stubReplies(batch: string): string {
  const calls = JSON.parse(batch) as [string, unknown[]][];
  return `[${calls.map(([name]) => (name === "executeEach" ? `[0,{"failed":[]}]` : "[0,1]")).join(",")}]`;
}

const own = values["no-own"] !== true;

async function measure(build: Built): Promise<{ cpuMs: number; hostMs: number; results: number }> {
  const QuickJS = await getQuickJS();
  const rt = QuickJS.newRuntime();
  rt.setMaxStackSize(1 << 20);
  const ctx = rt.newContext();
  const rawSync = ctx.newFunction("callSync", () => ctx.newString("0null"));
  const rawNotify = ctx.newFunction("notify", () => {});
  const factory = ctx.unwrapResult(ctx.evalCode(build.prelude, "prelude"));
  const internal = ctx.unwrapResult(ctx.callFunction(factory, ctx.undefined, rawSync, rawNotify));
  const fn = (name: string): QuickJSHandle => ctx.getProp(internal, name);
  const [call, start, state, finish, takeBatch, deliver] = [
    "call",
    "start",
    "state",
    "finish",
    "takeBatch",
    "deliver",
  ].map(fn);
  ctx.unwrapResult(ctx.evalCode(build.guest, "gears-guest.js")).dispose();
  ctx.unwrapResult(ctx.evalCode(values.script!, "script")).dispose();
  const records: unknown[] = [];
  const recordValues: string[] = [];
  for (let i = 0; i < writes; i++) {
    recordValues.push("1");
    records.push({ key: `key:${i}`, type: "string", event: "set", valueRef: i });
  }
  if (own)
    for (let i = 0; i < writes; i++)
      records.push({ key: "all_keys", type: "set", event: "sadd", lazyValue: true });
  const topology = { partitions: 1, slots: [[0, 16383, 0]], readAhead: ["GET"] };
  const rows: (string | number)[] = [];
  for (let i = 0; i < writes; i++) rows.push(`key:${i}`, "string", "set", i);
  if (own) for (let i = 0; i < writes; i++) rows.push("all_keys", "set", "sadd", -1);
  const batch = values.rows ? { rows, values: recordValues } : { records, values: recordValues };
  const argsJson = JSON.stringify([0, topology, [[0, batch]], Number(values.form)]);
  const enter = (f: QuickJSHandle, ...args: QuickJSHandle[]): QuickJSHandle =>
    ctx.unwrapResult(ctx.callFunction(f, ctx.undefined, ...args));
  let best = { cpuMs: Infinity, hostMs: 0, results: 0 };
  for (let run = 0; run < runs; run++) {
    let hostUs = 0;
    const c0 = process.cpuUsage();
    const p = ctx.newString(`${build.entry}.once`);
    const a = ctx.newString(argsJson);
    const first = enter(call, p, a);
    p.dispose();
    a.dispose();
    const rec = enter(start, first);
    first.dispose();
    for (;;) {
      const jobs = rt.executePendingJobs(-1);
      if (jobs.error) throw new Error(String(ctx.dump(jobs.error)));
      const b = enter(takeBatch);
      const batch = ctx.getString(b);
      b.dispose();
      if (batch !== "") {
        const h0 = process.cpuUsage();
        const replies = stubReplies(batch);
        const h = process.cpuUsage(h0);
        hostUs += h.user + h.system;
        const r = ctx.newString(replies);
        enter(deliver, r).dispose();
        r.dispose();
        continue;
      }
      const s = enter(state, rec);
      const settled = ctx.getNumber(s);
      s.dispose();
      if (settled !== 0) break;
      throw new Error("the batch awaits a promise that never settles");
    }
    const f = enter(finish, rec);
    const out = ctx.getString(f);
    f.dispose();
    rec.dispose();
    const c = process.cpuUsage(c0);
    const cpuMs = (c.user + c.system) / 1000;
    const outcome = JSON.parse(out.slice(1)) as { results: unknown[]; count?: number };
    const results = outcome.count ?? outcome.results.length;
    if (cpuMs < best.cpuMs) best = { cpuMs, hostMs: hostUs / 1000, results };
  }
  return best;
}

for (const build of [...(values.base !== undefined ? [path.resolve(values.base)] : []), OWN_BUILD]) {
  const r = await measure(await load(build));
  console.log(
    `${build}: ${r.cpuMs.toFixed(0)} ms CPU for ${(own ? 2 : 1) * writes} records (min of ${runs}; ` +
      `the stub host's share ${r.hostMs.toFixed(0)} ms, the guest ${(r.cpuMs - r.hostMs).toFixed(0)} ms), ${r.results} results`,
  );
}
