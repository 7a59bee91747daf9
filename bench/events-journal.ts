/**
 * The write journal's share of the main thread's work per write on the all-keys path (issue
 * 14), on its own, no Redis: per round, `--batch` distinct keys SET (each answered, then its
 * notification swallowed in place), then the handler's `--batch` SADDs of one set key, their
 * replies first (each leaves an expected event on the hot key), then their notifications (each
 * swallowed, `--lag` replies behind), as bench:events sees them. Prints CPU µs per write (SET + SADD), min of the runs;
 * `--base DIR` measures another build's journal in the same process.
 *   node dist/bench/events-journal.js [--writes 200000] [--batch 2000] [--runs 7] [--lag 500] [--base /path/to/build]
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";

interface Journal {
  watch(
    name: string,
    argv: readonly Buffer[],
    keys: Buffer[],
    db: number,
  ): ((reply: Buffer | null) => void) | null;
  handled(db: number, frame: Buffer, ks: number, ke: number, es: number, ee: number): boolean;
  flush(): void;
  readonly waiting: number;
}
type JournalClass = new (shardOf: (key: Buffer) => string, emit: (events: unknown[]) => void) => Journal;

const { values } = parseArgs({
  options: {
    writes: { type: "string", default: "200000" },
    batch: { type: "string", default: "2000" },
    runs: { type: "string", default: "7" },
    /** How many SADD replies come before the first SADD's notification. */
    lag: { type: "string", default: "500" },
    base: { type: "string" },
  },
});
const writes = Number(values.writes);
const batch = Number(values.batch);
const runs = Number(values.runs);
const lag = Number(values.lag);
const OWN_BUILD = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");

/** A notification frame as the subscriber reads it: the event and the key inside a larger buffer. */
function frame(event: string, key: string): [Buffer, number, number, number, number] {
  const buf = Buffer.from(
    `*4\r\n$8\r\npmessage\r\n$${event.length}\r\n${event}\r\n$${key.length}\r\n${key}\r\n`,
  );
  const es = buf.indexOf(event);
  const ks = buf.lastIndexOf(key);
  return [buf, ks, ks + key.length, es, es + event.length];
}

async function measure(build: string): Promise<number> {
  const mod = (await import(
    pathToFileURL(path.join(build, "dist/src/gears/events/write-journal.js")).href
  )) as {
    WriteJournal: JournalClass;
  };
  const ok = Buffer.from("+OK\r\n");
  const one = Buffer.from(":1\r\n");
  const value = Buffer.from("v");
  const sadd = Buffer.from("SADD");
  const set = Buffer.from("SET");
  const hot = Buffer.from("all_keys");
  const hotFrame = frame("sadd", "all_keys");
  let best = Infinity;
  for (let run = 0; run < runs; run++) {
    let emitted = 0;
    const j = new mod.WriteJournal(
      () => "shard-1",
      (e) => (emitted += e.length),
    );
    const c0 = process.cpuUsage();
    for (let from = 0; from < writes; from += batch) {
      const keys: Buffer[] = [];
      for (let i = from; i < from + batch; i++) keys.push(Buffer.from(`key:${i}`));
      for (const k of keys) j.watch("set", [set, k, value], [k], 0)!(ok);
      for (const k of keys) j.handled(0, ...frame("set", k.toString()));
      j.flush();
      const done = keys.map((k) => j.watch("sadd", [sadd, hot, k], [hot], 0)!);
      // The SADDs' notifications come `lag` behind their replies (another connection).
      for (let i = 0; i < batch; i++) {
        done[i](one);
        if (i >= lag) j.handled(0, ...hotFrame);
      }
      j.flush();
      for (let i = 0; i < Math.min(lag, batch); i++) j.handled(0, ...hotFrame);
    }
    const c = process.cpuUsage(c0);
    if (emitted !== 2 * writes || j.waiting !== 0)
      throw new Error(`emitted ${emitted}, waiting ${j.waiting}`);
    best = Math.min(best, (c.user + c.system) / writes);
  }
  return best;
}

for (const build of [...(values.base !== undefined ? [path.resolve(values.base)] : []), OWN_BUILD]) {
  console.log(
    `${build}: ${(await measure(build)).toFixed(2)} µs CPU per write (SET + its handler's SADD), min of ${runs}`,
  );
}
