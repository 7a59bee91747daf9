import { isUtf8 } from "node:buffer";
import {
  RespBigNumber,
  RespBoolean,
  RespDouble,
  RespError,
  RespMap,
  RespPush,
  RespSet,
  RespVerbatim,
  type RespValue,
} from "../../resp/values.js";
import type { Tagged } from "../guest/entry.js";

/** The bytes as a string when they are UTF-8; null when not (T&F then gives null or an error). */
export function utf8Text(buf: Buffer): string | null {
  return isUtf8(buf) ? buf.toString("utf8") : null;
}

/** Bytes as text for the guest: UTF-8 decoded, or marked when they are not UTF-8. */
function text(buf: Buffer, raw: boolean): Tagged {
  if (raw) return { b: buf.toString("latin1") };
  return utf8Text(buf) ?? { u: buf.toString("latin1") };
}

function double(n: number): Tagged {
  if (Number.isNaN(n)) return { d: "nan" };
  if (!Number.isFinite(n)) return { d: n > 0 ? "inf" : "-inf" };
  return { d: n };
}

/**
 * A reply from Redis as the guest's `call` (raw false) or `callRaw` (raw true) sees it.
 * The shared connections speak RESP2, so replies that are maps in RESP3 are rebuilt for the
 * commands that T&F's RESP3 calls answered with maps.
 */
export function replyToTagged(reply: RespValue, raw: boolean, mapReply = false): Tagged {
  if (reply === null) return null;
  if (Buffer.isBuffer(reply)) return text(reply, raw);
  if (typeof reply === "string") return raw ? { b: Buffer.from(reply).toString("latin1") } : { st: reply };
  if (typeof reply === "number") return { i: String(reply) };
  if (reply instanceof RespError) return { e: reply.message };
  if (Array.isArray(reply)) {
    if (mapReply && reply.length % 2 === 0) {
      const m: [Tagged, Tagged][] = [];
      for (let i = 0; i < reply.length; i += 2) {
        m.push([replyToTagged(reply[i], false), replyToTagged(reply[i + 1], raw)]);
      }
      return { m };
    }
    return { a: reply.map((r) => replyToTagged(r, raw)) };
  }
  if (reply instanceof RespMap) {
    return {
      m: reply.entries.map(([k, v]) => [replyToTagged(k, false), replyToTagged(v, raw)] as [Tagged, Tagged]),
    };
  }
  if (reply instanceof RespSet) return { s: reply.items.map((r) => replyToTagged(r, raw)) };
  if (reply instanceof RespDouble) return double(reply.value);
  if (reply instanceof RespBoolean) return { t: reply.value };
  if (reply instanceof RespBigNumber) return { n: reply.digits };
  if (reply instanceof RespVerbatim) {
    return { v: raw ? reply.text.toString("latin1") : reply.text.toString("utf8"), f: reply.format };
  }
  if (reply instanceof RespPush) return { a: reply.items.map((r) => replyToTagged(r, raw)) };
  return null;
}

/** A function's result (tagged by the guest) as the reply to send. */
export function taggedToResp(v: Tagged): RespValue {
  if (v === null) return null;
  if (typeof v === "string") return Buffer.from(v);
  if ("i" in v) {
    const n = Number(v.i);
    // Integers past 2^53 keep their digits (a big number, a bulk string in RESP2).
    return Number.isSafeInteger(n) ? n : new RespBigNumber(v.i);
  }
  if ("d" in v) {
    const d = typeof v.d === "number" ? v.d : v.d === "inf" ? Infinity : v.d === "-inf" ? -Infinity : NaN;
    return new RespDouble(d);
  }
  if ("b" in v) return Buffer.from(v.b, "latin1");
  if ("u" in v) return Buffer.from(v.u, "latin1");
  if ("st" in v) return v.st;
  if ("t" in v) return new RespBoolean(v.t);
  if ("n" in v) return new RespBigNumber(v.n);
  if ("v" in v) return new RespVerbatim(v.f, Buffer.from(v.v));
  if ("e" in v) return new RespError(v.e);
  if ("a" in v) return v.a.map(taggedToResp);
  if ("s" in v) return new RespSet(v.s.map(taggedToResp));
  return new RespMap(v.m.map(([k, x]) => [taggedToResp(k), taggedToResp(x)]));
}

/** A TFCALL argument for the guest: bytes for RAW_ARGUMENTS, else a string (null when not UTF-8). */
export function argToTagged(arg: Buffer, raw: boolean): Tagged | undefined {
  const t = text(arg, raw);
  return typeof t === "object" && t !== null && "u" in t ? undefined : t;
}
