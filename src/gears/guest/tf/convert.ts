/**
 * T&F's value conversion (reference section 2.9) on the guest side: replies (tagged, from the
 * host) into JS values, and a function's JS result into a tagged value for the host.
 */
import type { Tagged } from "../entry.js";

const MAX_DEPTH = 100;

export function bytesToBuffer(latin1: string): ArrayBuffer {
  const out = new Uint8Array(latin1.length);
  for (let i = 0; i < latin1.length; i++) out[i] = latin1.charCodeAt(i);
  return out.buffer;
}

export function bufferToBytes(buf: ArrayBuffer | ArrayBufferView): string {
  const bytes =
    buf instanceof ArrayBuffer
      ? new Uint8Array(buf)
      : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    s += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return s;
}

function typed(text: string | ArrayBuffer, type: string, extra?: Record<string, string>): object {
  const o: Record<string, unknown> =
    typeof text === "string" ? (new String(text) as unknown as Record<string, unknown>) : (text as never);
  o.__reply_type = type;
  if (extra !== undefined) for (const k of Object.keys(extra)) o[k] = extra[k];
  return o;
}

/**
 * A reply as `call` (raw false) or `callRaw` (raw true) gives it. The host already sent
 * strings as bytes ({b}) for callRaw, and marked bytes that are not UTF-8 ({u}).
 */
export function fromReply(v: Tagged, raw: boolean): unknown {
  if (v === null || typeof v === "string") return v;
  if ("i" in v) return BigInt(v.i);
  if ("d" in v) {
    if (typeof v.d === "number") return v.d;
    return v.d === "inf" ? Infinity : v.d === "-inf" ? -Infinity : NaN;
  }
  if ("b" in v) return bytesToBuffer(v.b);
  if ("u" in v) {
    if (raw) return bytesToBuffer(v.u);
    throw new Error("Could not decode value as string");
  }
  if ("st" in v) return v.st;
  if ("t" in v) return v.t;
  if ("n" in v) return typed(v.n, "big_number");
  if ("v" in v) return typed(raw ? bytesToBuffer(v.v) : v.v, "verbatim", { __format: v.f });
  if ("e" in v) return new Error(v.e);
  if ("a" in v) return v.a.map((x) => fromReply(x, raw));
  if ("s" in v) return new Set(v.s.map((x) => fromReply(x, raw)));
  if ("m" in v) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of v.m) {
      if (typeof k === "string") o[k] = fromReply(x, raw);
      else if (k !== null && typeof k === "object" && "i" in k) o[k.i] = fromReply(x, raw);
      else throw new Error("Binary map key is not supported");
    }
    return o;
  }
  return null;
}

function isInt32(n: number): boolean {
  // (n | 0) === n holds for exactly the int32 values and -0; 1 / -0 is -Infinity.
  return (n | 0) === n && (n !== 0 || 1 / n > 0);
}

/** A function's result as the reply T&F sends. */
export function toReply(v: unknown, depth = 0): Tagged {
  if (depth > MAX_DEPTH) throw new Error("nesting level reached");
  switch (typeof v) {
    case "string":
      return v;
    case "bigint":
      return { i: v.toString() };
    case "number":
      if (isInt32(v)) return { i: String(v) };
      return { d: Number.isNaN(v) ? "nan" : v === Infinity ? "inf" : v === -Infinity ? "-inf" : v };
    case "boolean":
      return { t: v };
    case "undefined":
      return "undefined";
    case "object":
      break;
    default:
      return String(v);
  }
  if (v === null) return null;
  if (v instanceof String) {
    const type = (v as { __reply_type?: unknown }).__reply_type;
    if (type === "status") return { st: String(v) };
    if (type === "verbatim") {
      const f = (v as { __format?: unknown }).__format;
      return { v: String(v), f: typeof f === "string" ? f : "txt" };
    }
    if (type === "big_number") return { n: String(v) };
    return String(v);
  }
  if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) return { b: bufferToBytes(v) };
  if (Array.isArray(v)) return { a: v.map((x) => toReply(x, depth + 1)) };
  if (v instanceof Set) return { s: Array.from(v, (x) => toReply(x, depth + 1)) };
  if (v instanceof Map) {
    return {
      m: Array.from(v, ([k, x]) => [toReply(k, depth + 1), toReply(x, depth + 1)] as [Tagged, Tagged]),
    };
  }
  const o = v as Record<string, unknown>;
  return { m: Object.keys(o).map((k) => [k, toReply(o[k], depth + 1)] as [Tagged, Tagged]) };
}

/** An argument of call(): strings and ArrayBuffers only, as T&F requires. */
export function toArg(v: unknown): Tagged {
  if (typeof v === "string") return v;
  if (v instanceof String) return String(v);
  if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) return { b: bufferToBytes(v) };
  throw new Error("Can not convert value into bytes buffer");
}
