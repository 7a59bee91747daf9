/** Records out of the guest: copies of values, and the conversions of results for the host. */

export function deepCopy(v: unknown, depth: number): unknown {
  if (v === null || typeof v !== "object" || depth > 512) return v;
  if (Array.isArray(v)) return v.map((x) => deepCopy(x, depth + 1));
  if (v instanceof Map) {
    const m = new Map<unknown, unknown>();
    for (const [k, x] of v) m.set(k, deepCopy(x, depth + 1));
    return m;
  }
  if (v instanceof Set) {
    const s = new Set<unknown>();
    for (const x of v) s.add(deepCopy(x, depth + 1));
    return s;
  }
  if (v instanceof Date) return new Date(v.getTime());
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return v;
  const o = Object.create(proto as object | null) as Record<string, unknown>;
  for (const k of Object.keys(v)) o[k] = deepCopy((v as Record<string, unknown>)[k], depth + 1);
  return o;
}
type Fn = (...args: unknown[]) => unknown;

export function toStr(v: unknown): unknown {
  if (typeof v === "string") return v;
  if (v === null || v === undefined) return null;
  const t = typeof v;
  if (t === "number" || t === "boolean" || t === "bigint") return String(v);
  if (t === "object") {
    const s: unknown = JSON.stringify(v);
    return typeof s === "string" ? s : null;
  }
  return null;
}

export function toRaw(v: unknown, depth: number): unknown {
  if (depth > 256) throw new TypeError("result is nested too deeply (or cyclic)");
  if (typeof v === "string") return v;
  if (typeof v === "number") return Number.isSafeInteger(v) ? (v === 0 ? 0 : v) : String(v);
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "bigint") return String(v);
  if (v === null || typeof v !== "object") return null;
  if (Array.isArray(v)) return v.map((x) => toRaw(x, depth + 1));
  if (v instanceof Map) {
    const out: unknown[] = [];
    for (const [k, x] of v) out.push(toRaw(k, depth + 1), toRaw(x, depth + 1));
    return out;
  }
  if (v instanceof Set) return Array.from(v, (x) => toRaw(x, depth + 1));
  const toJSON = (v as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === "function") return toRaw((toJSON as Fn).call(v), depth + 1);
  const out: unknown[] = [];
  for (const k of Object.keys(v)) out.push(k, toRaw((v as Record<string, unknown>)[k], depth + 1));
  return out;
}
