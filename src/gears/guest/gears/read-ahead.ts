/**
 * Read-ahead of execute() within a fed batch: a step's execute() of a read-only command
 * with the record's key is asked for all the batch's keys in one host call (executeMany),
 * and its later calls are answered from those replies (the host side: src/gears/read-ahead.ts).
 */
import { host } from "../core/host.js";
import { isFatal } from "../core/errors.js";
import { at } from "./state.js";
import type { Round } from "./types.js";

/** Commands that may be read ahead (upper case), from the host at start(). */
let raNames: Record<string, boolean> = {};
/** The batch being fed, and the index of the record the pipeline is at (null outside feed). */
let feedList: unknown[] | null = null;
let feedAt = 0;
let feedSerial = 0;
/** Read-aheads of the current feed. */
let rounds: Round[] = [];
const MAX_ROUND = 2048;

/** The key a record stands for: the record itself (KeysOnlyReader) or its `key`. */
function keyOf(r: unknown): string | null {
  if (typeof r === "string") return r;
  if (r !== null && typeof r === "object") {
    const k = (r as { key?: unknown }).key;
    if (typeof k === "string") return k;
  }
  return null;
}

/** Any command that may write makes every reply read ahead unusable. */
export function dropRounds(): void {
  for (let i = 0; i < rounds.length; i++) rounds[i].live = false;
}

function sameCall(rd: Round, name: string, argv: string[], key: string): boolean {
  if (rd.name !== name || rd.argv.length !== argv.length) return false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] !== (rd.at[i] ? key : rd.argv[i])) return false;
  }
  return true;
}

/** A reply read ahead that was used: a second identical call asks Redis again. */
const USED = {};
/** readAhead(): no reply read ahead, the host must be asked. */
export const MISS = {};

/** The reply for record j of a round (USED/MISS aside); an error reply is thrown. */
function take(rd: Round, j: number): unknown {
  const v = rd.out[j];
  rd.out[j] = USED;
  rd.used++;
  const e = rd.errs === null ? undefined : rd.errs[j];
  if (e !== undefined) throw new Error(e);
  return v;
}

/**
 * The reply of execute(name, ...argv) from a read-ahead, issuing one when this is the
 * step's first keyed read of the batch; MISS when the host must be asked.
 */
function readAheadIn(list: unknown[], name: string, argv: string[]): unknown {
  // Scripts mostly spell the name in capitals: no new string then.
  if (raNames[name] !== true && raNames[name.toUpperCase()] !== true) {
    dropRounds();
    return MISS;
  }
  for (let i = 0; i < rounds.length; i++) {
    const rd = rounds[i];
    const j = feedAt - rd.from;
    if (!rd.live || j < 0 || j >= rd.out.length) continue;
    if (rd.out[j] === USED || !sameCall(rd, name, argv, rd.keys[j])) continue;
    // Used once: a second identical call asks Redis again, as it always did.
    return take(rd, j);
  }
  const w = at.step;
  if (w === null || w.raOff === true) return MISS;
  if (w.raFeed === feedSerial) {
    // One round per step and batch, unless the last one was used up record after record.
    const last = w.raLast!;
    if (!last.live || feedAt < last.from + last.out.length || last.used * 2 < last.out.length) {
      return MISS;
    }
  }
  const key = keyOf(list[feedAt]);
  if (key === null) return MISS;
  const keyAt: boolean[] = [];
  const positions: number[] = [];
  for (let i = 0; i < argv.length; i++) {
    keyAt.push(argv[i] === key);
    if (argv[i] === key) positions.push(i + 1);
  }
  if (positions.length === 0) return MISS;
  const keys: string[] = [];
  const end = Math.min(list.length, feedAt + MAX_ROUND);
  for (let j = feedAt; j < end; j++) {
    const k = keyOf(list[j]);
    if (k === null) break;
    keys.push(k);
  }
  let out: unknown;
  try {
    out = host.callSync("executeMany", at.part, [name, ...argv], positions, keys);
  } catch (e) {
    if (isFatal(e)) throw e;
    w.raOff = true;
    return MISS;
  }
  const vals = Array.isArray(out) ? (out[0] as unknown) : undefined;
  const failed = Array.isArray(out) ? (out[1] as unknown) : undefined;
  if (!Array.isArray(vals) || vals.length !== keys.length || !Array.isArray(failed)) {
    w.raOff = true;
    return MISS;
  }
  let errs: Record<number, string> | null = null;
  for (const f of failed) {
    if (errs === null) errs = {};
    const [index, message] = f as [number, string];
    errs[index] = message;
  }
  const rd: Round = {
    name,
    argv,
    at: keyAt,
    keys,
    from: feedAt,
    out: vals,
    errs,
    used: 0,
    live: true,
    where: w,
  };
  rounds.push(rd);
  w.raFeed = feedSerial;
  w.raLast = rd;
  return take(rd, 0);
}

/** After a feed: a step whose read-ahead was mostly not used stops reading ahead. */
function endRounds(taken: number): void {
  for (let i = 0; i < rounds.length; i++) {
    const rd = rounds[i];
    const fed = Math.min(taken - rd.from, rd.out.length);
    if (rd.used * 2 < fed) rd.where.raOff = true;
  }
  rounds = [];
}

/** A batch is being fed: execute() may be answered from read-aheads of it. */
export function beginFeed(list: unknown[]): void {
  feedList = list;
  feedSerial++;
}

/** The record of the fed batch the pipeline is at. */
export function feedRecord(index: number): void {
  feedAt = index;
}

/** The batch is done (`taken` records of it ran): read-aheads mostly unused are turned off. */
export function endFeed(taken: number): void {
  feedList = null;
  endRounds(taken);
}

/** The commands that may be read ahead (from the host at start()). */
export function setReadAheadNames(names: unknown[]): void {
  raNames = {};
  for (const n of names) if (typeof n === "string") raNames[n.toUpperCase()] = true;
}

/**
 * readAhead() for the usual call: one round in the feed, and the step's arguments strings
 * that are that round's, the record's key in its place. Same answer, without building the
 * call's argv (QuickJS takes microseconds over a loop and an array per record); MISS when
 * the call is not that, and readAhead() decides.
 */
export function readAheadSame(name: unknown, args: unknown[]): unknown {
  if (rounds.length !== 1 || feedList === null) return MISS;
  const rd = rounds[0];
  const j = feedAt - rd.from;
  if (!rd.live || name !== rd.name || j < 0 || j >= rd.out.length || rd.out[j] === USED) return MISS;
  const argv = rd.argv;
  const n = argv.length;
  if (args.length !== n) return MISS;
  const key = rd.keys[j];
  const keyAt = rd.at;
  if (n === 2) {
    if (args[0] !== (keyAt[0] ? key : argv[0]) || args[1] !== (keyAt[1] ? key : argv[1])) return MISS;
  } else {
    for (let i = 0; i < n; i++) if (args[i] !== (keyAt[i] ? key : argv[i])) return MISS;
  }
  return take(rd, j);
}

/** execute()'s reply from a read-ahead (an error reply is thrown); MISS: ask the host. */
export function readAhead(name: string, argv: string[]): unknown {
  return feedList === null ? MISS : readAheadIn(feedList, name, argv);
}

/** A command that is not read ahead may write: replies read ahead are stale after it. */
export function dropUnlessReadAhead(name: string): void {
  if (rounds.length > 0 && raNames[name] !== true && raNames[name.toUpperCase()] !== true) dropRounds();
}
