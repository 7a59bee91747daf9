/**
 * An execution's results handed to the host: converted to strings (or raw values), and in
 * the cheapest form the host can take them, one text for many results where that is exact.
 */
import { formatError, isFatal } from "../core/errors.js";
import { toRaw, toStr } from "../core/values.js";
import { RESULTS_NONE, RESULTS_VALUES, type Streamed } from "../entry.js";
import type { Exec, Result } from "./types.js";

/** A partition's results as the host receives them (strings, or raw values with convertToStr off). */
function converted(ex: Exec, list: unknown[]): unknown[] {
  const str = ex.action.options.convertToStr !== false;
  const out: unknown[] = [];
  for (const r of list) {
    try {
      out.push(str ? toStr(r) : toRaw(r, 0));
    } catch (e) {
      if (isFatal(e)) throw e;
      ex.errors.push(formatError(e, "results", ex.action.line));
    }
  }
  return out;
}

/** Any character past ASCII (a regular expression runs natively in QuickJS, a loop does not). */
const NON_ASCII = /[\u0080-\uffff]/;

/** The bytes of `s` in UTF-8, as the host's Buffer.from writes it (a lone surrogate: 3). */
function utf8Length(s: string): number {
  if (!NON_ASCII.test(s)) return s.length;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/**
 * Results converted to strings (the default), as RESP bulk strings back to back: one text per
 * batch crosses to the host, which keeps it as bytes without making a value of each result.
 */
function respText(list: unknown[]): string {
  let text = "";
  for (const v of list) {
    if (typeof v === "string") text += "$" + utf8Length(v) + "\r\n" + v + "\r\n";
    else text += "$-1\r\n";
  }
  return text;
}

/**
 * The results made since the last call, by partition, and forgotten here: a streaming
 * execution's. [partition, values], or [partition, RESP text, count] for strings.
 */
export function takeResults(ex: Exec): Streamed[] {
  const out: Streamed[] = [];
  const str = ex.action.options.convertToStr !== false;
  for (let p = 0; p < ex.results.length; p++) {
    const list = ex.results[p];
    if (list.length === 0) continue;
    ex.results[p] = [];
    const values = converted(ex, list);
    out.push(str ? [p, respText(values), values.length] : [p, values]);
  }
  return out;
}

const getPrototypeOf = Object.getPrototypeOf;
const isArray = Array.isArray;
const objectPrototype = Object.prototype;

/**
 * The results as one JSON text of the list: one native JSON.stringify instead of one per
 * result, and one string for the host to keep (it makes each result's string only when
 * they are asked for). Only when each result's string is, unambiguously, the element itself
 * (a string) or its JSON text (plain objects and arrays without toJSON) or String() of it
 * (finite numbers, booleans): null otherwise, and the results go the per-result way, with
 * the errors that may give.
 */
function jsonText(list: unknown[]): string | null {
  for (let i = 0; i < list.length; i++) {
    const r = list[i];
    const t = typeof r;
    if (t === "string" || t === "boolean" || r === null || r === undefined) continue;
    if (t === "number") {
      if (Number.isFinite(r)) continue;
      return null;
    }
    if (t !== "object") return null;
    const proto: unknown = getPrototypeOf(r);
    if (proto !== objectPrototype && proto !== null && !isArray(r)) return null;
    if (typeof (r as { toJSON?: unknown }).toJSON === "function") return null;
  }
  try {
    const text: unknown = JSON.stringify(list);
    return typeof text === "string" ? text : null;
  } catch (e) {
    if (isFatal(e)) throw e;
    return null;
  }
}

const objectKeys = Object.keys;

/**
 * The results named by the places of the host's records they are, when every one is a
 * record fed as rows to its own partition, in feed order, and unchanged: its own enumerable
 * fields exactly key, type, event and value, in that order, holding its row's strings and
 * its value (a string or null: nothing inside to change), and no toJSON (its own or
 * inherited). Its string (JSON.stringify of it, by either of the guest's ways) is then the
 * JSON text the host makes of its own record, as the same strings crossed, and the host
 * makes it only if RG.GETRESULTS asks. A lazy value (the row's -1) is never read here:
 * JSON.stringify would read it from Redis. For each partition with results: its number, how
 * many, then each one's place among the records the host fed it (over all its feeds). Null
 * otherwise: the results go as text. Making the text of 10,000 event records was about a
 * fifth of the all-keys registration's guest time, for results that RG.GETRESULTS seldom
 * asks for (bench/RESULTS.md, "evperf"); this check costs about two thirds of that
 * (Object.keys most of it), and the text no longer crosses, is no longer escaped in the
 * answer, parsed on the main thread nor kept there.
 */
function refsOf(ex: Exec): number[] | null {
  const fed = ex.fed;
  if (fed === null) return null;
  const refs: number[] = [];
  for (let p = 0; p < ex.results.length; p++) {
    const list = ex.results[p];
    if (list.length === 0) continue;
    const feeds = fed[p];
    refs.push(p, list.length);
    // Where the search for the next result starts: feed c, its record j; base = records before feed c.
    let c = 0;
    let j = 0;
    let base = 0;
    let f = feeds[0];
    for (let i = 0; i < list.length; i++) {
      const r = list[i] as { key: unknown; type: unknown; event: unknown; value: unknown; toJSON?: unknown };
      for (;;) {
        if (f === undefined) return null;
        if (j >= f.taken) {
          base += f.taken;
          f = feeds[++c];
          j = 0;
        } else if (f.records[j] === r) break;
        else j++;
      }
      // Spelled out, not a call per result (QuickJS inlines nothing).
      const rows = f.rows;
      const row = f.from[j];
      const ref = rows[row + 3] as number;
      if (ref < 0) return null;
      const value = f.values[ref];
      if (typeof value !== "string" && value !== null) return null;
      if (r.toJSON !== undefined) return null;
      const keys = objectKeys(r);
      if (
        keys.length !== 4 ||
        keys[0] !== "key" ||
        keys[1] !== "type" ||
        keys[2] !== "event" ||
        keys[3] !== "value" ||
        r.key !== rows[row] ||
        r.type !== rows[row + 1] ||
        r.event !== rows[row + 2] ||
        r.value !== value
      )
        return null;
      refs.push(base + j);
      j++;
    }
  }
  return refs;
}

/**
 * An execution over given records that hands its results over as RESULTS_JSON or
 * RESULTS_NONE: null when they must go as values (the per-result way) after all. Results
 * that are the fed records unchanged go as their places (refsOf), not as text.
 */
function completeAsText(ex: Exec): Result | null {
  const refs = refsOf(ex);
  if (refs !== null) {
    let count = 0;
    for (const list of ex.results) count += list.length;
    ex.results = [];
    return ex.form === RESULTS_NONE
      ? { results: [], errors: ex.errors, count }
      : { results: [], errors: ex.errors, refs, count };
  }
  const list = ex.results.length === 1 ? ex.results[0] : ([] as unknown[]).concat(...ex.results);
  const text = jsonText(list);
  if (text === null) return null;
  ex.results = [];
  // RESULTS_NONE: nothing can fetch them, yet the list was made into text, for the errors that could give.
  return ex.form === RESULTS_NONE
    ? { results: [], errors: ex.errors, count: list.length }
    : { results: [], errors: ex.errors, json: text, count: list.length };
}

export function complete(ex: Exec): Result {
  if (ex.stream) {
    ex.done = { results: [], errors: ex.errors, out: takeResults(ex) };
    return ex.done;
  }
  if (
    ex.form !== RESULTS_VALUES &&
    ex.action.options.convertToStr !== false &&
    ex.action.options.collect !== false
  ) {
    const done = completeAsText(ex);
    if (done !== null) {
      ex.done = done;
      return done;
    }
  }
  const perPartition = ex.results.map((list) => converted(ex, list));
  const results =
    ex.action.options.collect === false ? perPartition : ([] as unknown[]).concat(...perPartition);
  ex.done = { results, errors: ex.errors };
  ex.results = [];
  return ex.done;
}
