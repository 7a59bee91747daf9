/**
 * The guest's share of an event batch (issue 14): the all-keys registration's `once` entry
 * over one batch of N `set` records and N lazy `all_keys` records, through the real sandbox
 * prelude and gears library in QuickJS, in this thread, with a stub host that answers every
 * command. Prints the process CPU per batch (min of the runs) and the stub host's share.
 * `--base DIR` measures another build's dist too (before/after on the same machine).
 * `--no-own` leaves the `all_keys` records out, to see their share of the guest's work.
 * The batch enters as the worker enters it: its JSON encoded straight into the wasm heap; with
 * `--binary`, this build runs a second time with the batch in the binary format (bjson.ts),
 * as GearsGuest.once sends it now.
 *   node dist/bench/events-guest.js [--writes 10000] [--runs 9] [--base /path/to/build] [--form 0|1|2] [--rows [--refs]] [--no-own] [--binary] [--prefix key:]
 */
import path from "node:path";
import { parseArgs } from "node:util";
import {
  guestContext,
  heapBinary,
  heapText,
  loadGuestBuild,
  OWN_BUILD,
  type GuestBuild,
} from "./guest-builds.js";

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
    /**
     * With --rows, this build's `all_keys` rows after the first as references to it, as the
     * host sends a hot key's repeated rows now (execution.ts eventRows); a --base build gets
     * them whole (a build before references cannot read them).
     */
    refs: { type: "boolean", default: false },
    /** --refs for the --base build too (one that reads them). */
    "base-refs": { type: "boolean", default: false },
    /** The written keys' prefix (a non-ASCII one makes the batch's JSON a wide text in the guest). */
    prefix: { type: "string", default: "key:" },
    /** This build once more, the batch in the binary format. */
    binary: { type: "boolean", default: false },
  },
});
const writes = Number(values.writes);
const runs = Number(values.runs);

/**
 * The host's answer to a batch of async calls: every command succeeds (an executeEach says
 * so with no failures, as host-bridge.ts does; an execute() answers 1).
 */
function stubReplies(batch: string): string {
  const calls = JSON.parse(batch) as [string, unknown[]][];
  return `[${calls.map(([name]) => (name === "executeEach" ? `[0,{"failed":[]}]` : "[0,1]")).join(",")}]`;
}

const own = values["no-own"] !== true;

interface Run {
  cpuMs: number;
  hostMs: number;
  results: number;
  /** How the results came back (guest/entry.ts Outcome): as text, by reference, as values. */
  form: string;
}

/** A build's guest made ready: one call is one run of the batch. */
async function prepare(build: GuestBuild, refs: boolean, binary = false): Promise<() => Run> {
  const guest = await guestContext(build, values.script!, () => "0null");
  const { ctx, enter } = guest;
  const [call, start, state, finish, takeBatch, deliver] = [
    "call",
    "start",
    "state",
    "finish",
    "takeBatch",
    "deliver",
  ].map(guest.internal);
  const records: unknown[] = [];
  const recordValues: string[] = [];
  for (let i = 0; i < writes; i++) {
    recordValues.push("1");
    records.push({ key: `${values.prefix}${i}`, type: "string", event: "set", valueRef: i });
  }
  if (own)
    for (let i = 0; i < writes; i++)
      records.push({ key: "all_keys", type: "set", event: "sadd", lazyValue: true });
  const topology = { partitions: 1, slots: [[0, 16383, 0]], readAhead: ["GET"] };
  const rows: (string | number)[] = [];
  for (let i = 0; i < writes; i++) rows.push(`${values.prefix}${i}`, "string", "set", i);
  if (own) {
    const first = rows.length;
    rows.push("all_keys", "set", "sadd", -1);
    for (let i = 1; i < writes; i++) {
      if (refs) rows.push(first);
      else rows.push("all_keys", "set", "sadd", -1);
    }
  }
  const batch = values.rows ? { rows, values: recordValues } : { records, values: recordValues };
  const argsJson = JSON.stringify([0, topology, [[0, batch]], Number(values.form)]);
  const callAt = guest.internal("callAt");
  const restJson = JSON.stringify([0, topology, null, Number(values.form)]);
  const bytes = build.encodeBinary([[0, batch]]);
  return () => {
    let hostUs = 0;
    const c0 = process.cpuUsage();
    const p = ctx.newString(`${build.entry}.once`);
    let first;
    if (binary) {
      const a = heapText(ctx, restJson);
      const i = ctx.newNumber(2);
      const v = heapBinary(ctx, bytes);
      first = enter(callAt, p, a, i, v);
      for (const h of [a, i, v]) h.dispose();
    } else {
      const a = heapText(ctx, argsJson);
      first = enter(call, p, a);
      a.dispose();
    }
    p.dispose();
    const rec = enter(start, first);
    first.dispose();
    for (;;) {
      guest.runPendingJobs();
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
    const outcome = JSON.parse(out.slice(1)) as {
      results: unknown[];
      count?: number;
      json?: string;
      refs?: number[];
    };
    const results = outcome.count ?? outcome.results.length;
    const form =
      outcome.json !== undefined ? "as text" : outcome.refs !== undefined ? "by reference" : "as values";
    return { cpuMs, hostMs: hostUs / 1000, results, form };
  };
}

// The builds' runs alternate, so that a change in the machine's load falls on both.
const builds = [
  ...(values.base !== undefined ? [path.resolve(values.base)] : []),
  OWN_BUILD,
  ...(values.binary === true ? [`${OWN_BUILD} (binary)`] : []),
];
const runners = await Promise.all(
  builds.map(async (b) => {
    const binary = b.endsWith(" (binary)");
    const own = b === OWN_BUILD || binary;
    return prepare(
      await loadGuestBuild(own ? OWN_BUILD : b),
      values.refs === true && (own || values["base-refs"] === true),
      binary,
    );
  }),
);
const best: Run[] = builds.map(() => ({ cpuMs: Infinity, hostMs: 0, results: 0, form: "" }));
for (let run = 0; run < runs; run++) {
  runners.forEach((one, i) => {
    const r = one();
    if (r.cpuMs < best[i].cpuMs) best[i] = r;
  });
}
builds.forEach((build, i) => {
  const r = best[i];
  console.log(
    `${build}: ${r.cpuMs.toFixed(r.cpuMs < 10 ? 3 : 0)} ms CPU for ${(own ? 2 : 1) * writes} records (min of ${runs}, builds alternating; ` +
      `the stub host's share ${r.hostMs.toFixed(0)} ms, the guest ${(r.cpuMs - r.hostMs).toFixed(0)} ms), ${r.results} results (${r.form})`,
  );
});
