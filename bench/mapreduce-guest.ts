/**
 * The guest's share of a KeysReader map/reduce (issue 14, bench:mapreduce's (b)): N movie
 * records `{key, value: {title, year, genres}, type, event}` in QuickJS's binary format,
 * fed in batches of 1000 through the real sandbox prelude and gears library in QuickJS, in
 * this thread, then finished (`--execute`: (c), the keys only, with a stub host that answers
 * executeMany; its own CPU is not counted). Prints the CPU of decoding alone, of an empty pipeline and of
 * the script (min of the runs), per record. `--base DIR` measures another build's dist too.
 *   node dist/bench/mapreduce-guest.js [--movies 20000] [--runs 9] [--base /path/to/build] [--script S]
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { guestContext, loadGuestBuild, OWN_BUILD, type GuestBuild } from "./guest-builds.js";

const SCRIPT =
  "GB().map(r => r.value.genres).filter(Boolean).flatmap(g => g.split(',')).countby().run('movie:*')";
const EMPTY = "GB().count().run('movie:*')";
const SCRIPT_EXECUTE =
  "GB('KeysOnlyReader').map(k => execute('HGET', k, 'genres')).filter(g => g != null).flatmap(g => g.split(',')).countby().run('movie:*')";
const GENRES = [
  "Drama",
  "Comedy",
  "Action",
  "Thriller",
  "Romance",
  "Horror",
  "Sci-Fi",
  "Documentary",
  "Animation",
  "Crime",
];
const BATCH = 1000;

const { values } = parseArgs({
  options: {
    movies: { type: "string", default: "20000" },
    runs: { type: "string", default: "9" },
    base: { type: "string" },
    script: { type: "string" },
    /** bench:mapreduce's (c): KeysOnlyReader records (the keys), the stub host answers executeMany with the genres. */
    execute: { type: "boolean", default: false },
  },
});
const movies = Number(values.movies);
const runs = Number(values.runs);
const keysOnly = values.execute === true;
const script = values.script ?? (keysOnly ? SCRIPT_EXECUTE : SCRIPT);
/** Each movie's genres, for the stub host's executeMany. */
const genresOf = new Map<string, string>();

/** Deterministic movie records, as the readers write them (key order, fields in this order). */
function batches(build: GuestBuild): Buffer[] {
  let seed = 42;
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const out: Buffer[] = [];
  for (let start = 0; start < movies; start += BATCH) {
    const list: unknown[] = [];
    for (let i = start; i < Math.min(movies, start + BATCH); i++) {
      const picked = new Set<string>();
      const n = 1 + Math.floor(random() * 3);
      while (picked.size < n) picked.add(GENRES[Math.floor(random() * GENRES.length)]);
      const year = 1920 + Math.floor(random() * 105);
      genresOf.set(`movie:${i}`, [...picked].join(","));
      if (keysOnly) {
        list.push(`movie:${i}`);
        continue;
      }
      list.push({
        key: `movie:${i}`,
        value: { title: `Movie number ${i}`, year: String(year), genres: [...picked].join(",") },
        type: "hash",
        event: null,
      });
    }
    out.push(build.encodeBinary(list));
  }
  return out;
}

interface Sample {
  decodeMs: number;
  feedMs: number;
  out: string;
}

/** A context with the build's guest and the script, and a function that measures one run. */
async function prepare(build: GuestBuild, script: string): Promise<() => Sample> {
  let hostUs = 0;
  const flat = /\berrs\b/.test(build.guest);
  const guest = await guestContext(build, script, (name, argsJson) => {
    if (name !== "executeMany") return "0null";
    const h0 = process.cpuUsage();
    const keys = (JSON.parse(argsJson) as unknown[][])[3] as string[];
    const value = (k: string): string => JSON.stringify(genresOf.get(k) ?? null);
    // Builds before the flat answer (`[values, errors]`) read one `[0, value]` per key.
    const text = flat
      ? `0[[${keys.map(value).join(",")}],[]]`
      : `0[${keys.map((k) => `[0,${value(k)}]`).join(",")}]`;
    const h = process.cpuUsage(h0);
    hostUs += h.user + h.system;
    return text;
  });
  const { ctx, enter } = guest;
  const [call, callAt, start, finish] = ["call", "callAt", "start", "finish"].map(guest.internal);
  const callEntry = (name: string, args: unknown[]): string => {
    const p = ctx.newString(`${build.entry}.${name}`);
    const a = ctx.newString(JSON.stringify(args));
    const first = enter(call, p, a);
    p.dispose();
    a.dispose();
    const rec = enter(start, first);
    first.dispose();
    const f = enter(finish, rec);
    rec.dispose();
    const out = ctx.getString(f);
    f.dispose();
    return out;
  };
  const bytes = batches(build);
  const topology = {
    partitions: 3,
    slots: [
      [0, 5460, 0],
      [5461, 10922, 1],
      [10923, 16383, 2],
    ],
    readAhead: ["HGET"],
  };
  return () => {
    hostUs = 0;
    let c0 = process.cpuUsage();
    for (const b of bytes) {
      const h = ctx.newArrayBuffer(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
      ctx.decodeBinaryJSON(h).dispose();
      h.dispose();
    }
    let c = process.cpuUsage(c0);
    const decodeMs = (c.user + c.system) / 1000;
    const id = Number(callEntry("start", [0, topology, false, 0]).slice(1));
    c0 = process.cpuUsage();
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      const h = ctx.newArrayBuffer(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
      const v = ctx.decodeBinaryJSON(h);
      h.dispose();
      const p = ctx.newString(`${build.entry}.feed`);
      const a = ctx.newString(JSON.stringify([id, i % 3, null, 0]));
      const ix = ctx.newNumber(2);
      enter(callAt, p, a, ix, v).dispose();
      for (const x of [p, a, ix, v]) x.dispose();
    }
    const out = callEntry("finish", [id]);
    c = process.cpuUsage(c0);
    callEntry("drop", [id]);
    return { decodeMs, feedMs: (c.user + c.system - hostUs) / 1000, out };
  };
}

const builds = [...(values.base !== undefined ? [path.resolve(values.base)] : []), OWN_BUILD];
const prepared: {
  build: string;
  empty: () => Sample;
  script: () => Sample;
  best: Sample;
  bestEmpty: Sample;
}[] = [];
for (const build of builds) {
  const b = await loadGuestBuild(build);
  const none = { decodeMs: Infinity, feedMs: Infinity, out: "" };
  prepared.push({
    build,
    empty: await prepare(b, EMPTY),
    script: await prepare(b, script),
    best: none,
    bestEmpty: none,
  });
}
// The builds take turns, run after run, so that the machine's load weighs on each alike.
const ratios: number[] = [];
for (let run = 0; run < runs; run++) {
  const times: number[] = [];
  for (const p of prepared) {
    const e = p.empty();
    if (e.feedMs < p.bestEmpty.feedMs) p.bestEmpty = e;
    const r = p.script();
    if (r.decodeMs < p.best.decodeMs) p.best = { ...p.best, decodeMs: r.decodeMs };
    if (r.feedMs < p.best.feedMs) p.best = { ...p.best, feedMs: r.feedMs, out: r.out };
    times.push(r.feedMs);
  }
  if (times.length === 2) ratios.push(times[1] / times[0]);
}
const us = (ms: number): string => ((ms * 1000) / movies).toFixed(2);
for (const p of prepared) {
  console.log(
    `${p.build}: ${movies} records, min of ${runs} runs, µs per record: decode alone ${us(p.best.decodeMs)}, ` +
      `decode+feed+finish, empty pipeline ${us(p.bestEmpty.feedMs)}, the script ${us(p.best.feedMs)} ` +
      `(${p.best.feedMs.toFixed(0)} ms); results ${p.best.out.slice(0, 120)}`,
  );
}
if (ratios.length > 0) {
  ratios.sort((a, b) => a - b);
  console.log(
    `the script, this build / --base, median of the per-run ratios: ${ratios[ratios.length >> 1].toFixed(3)}`,
  );
}
