/**
 * The order sort() gives without a comparator, and the identity distinct() keeps values by:
 * both must agree across value types without calling user code, so they go by type, then by
 * code point, then by JSON text.
 */
import { safeString } from "../core/errors.js";

export function distinctKey(v: unknown): string {
  if (typeof v === "string") return "s" + v;
  if (v === undefined) return "u";
  try {
    return "j" + String(JSON.stringify(v));
  } catch {
    return "x" + safeString(v);
  }
}

function compareStr(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    if (xs !== ys) return xs ? 1 : -1; // a surrogate pair is a code point above the BMP
    return x - y;
  }
  return a.length - b.length;
}

function typeRank(v: unknown): number {
  if (typeof v === "number") return 0;
  if (typeof v === "string") return 1;
  return 2;
}

/** Ascending: numbers numerically, then strings by code point, then the rest by their JSON. */
export function compareValues(a: unknown, b: unknown): number {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra - rb;
  if (ra === 0) {
    const x = a as number;
    const y = b as number;
    if (x < y) return -1;
    if (x > y) return 1;
    return Number.isNaN(x) ? (Number.isNaN(y) ? 0 : 1) : Number.isNaN(y) ? -1 : 0;
  }
  if (ra === 1) return compareStr(a as string, b as string);
  return compareStr(distinctKey(a), distinctKey(b));
}
