import { encodeValue } from "../resp/encode.js";
import {
  RespBigNumber,
  RespBoolean,
  RespDouble,
  RespError,
  RespMap,
  RespVerbatim,
  type RespValue,
} from "../resp/values.js";
import type { JsonValue } from "../sandbox/types.js";

/** A Redis reply as the guest sees it: strings, numbers, null and arrays. Errors throw. */
export function replyToJson(reply: RespValue): JsonValue {
  if (reply === null || typeof reply === "number" || typeof reply === "string") return reply;
  if (Buffer.isBuffer(reply)) return reply.toString();
  if (reply instanceof RespError) throw new Error(reply.message);
  if (Array.isArray(reply)) return reply.map(replyToJson);
  // RESP3 types as a RESP2 client would see them: what RedisGears scripts were written against.
  if (reply instanceof RespMap) return reply.entries.flat().map(replyToJson);
  if (reply instanceof RespDouble) return String(reply.value);
  if (reply instanceof RespBoolean) return reply.value ? 1 : 0;
  if (reply instanceof RespBigNumber) return reply.digits;
  if (reply instanceof RespVerbatim) return reply.text.toString();
  return reply.items.map(replyToJson);
}

/**
 * A guest result as RESP: a string is a bulk string, an integer an integer reply, null a
 * null bulk, an array an array; {"+": text} a status and {"-": text} an error reply.
 */
export function jsonToResp(value: JsonValue): RespValue {
  if (value === null) return null;
  if (typeof value === "string") return Buffer.from(value);
  if (typeof value === "number") return Number.isInteger(value) ? value : Buffer.from(String(value));
  if (typeof value === "boolean") return value ? 1 : 0;
  if (Array.isArray(value)) return value.map(jsonToResp);
  if (typeof value["+"] === "string") return value["+"];
  if (typeof value["-"] === "string") return new RespError(value["-"]);
  return Buffer.from(JSON.stringify(value));
}

/** A trigger's or hook's result as a reply: "+text" is a status and "-text" an error reply. */
export function replyValueToResp(value: JsonValue): RespValue {
  if (typeof value === "string" && value.length > 1 && value[0] === "+") return value.slice(1);
  if (typeof value === "string" && value.length > 1 && value[0] === "-") return new RespError(value.slice(1));
  return jsonToResp(value);
}

/** `[results, errors]`, the reply of a finished execution. */
export function encodeResults(results: JsonValue[], errors: string[]): Buffer {
  return encodeValue([results.map(jsonToResp), errors.map((e) => Buffer.from(e))]);
}

/**
 * Results back to back, each as encodeResults writes it, without the array's header: one
 * batch of a streamed result set. Strings (nearly every result) are written as one text.
 */
export function encodeResultItems(values: readonly JsonValue[]): Buffer {
  const parts: Buffer[] = [];
  let text = "";
  for (const v of values) {
    if (typeof v === "string") text += `$${Buffer.byteLength(v)}\r\n${v}\r\n`;
    else if (v === null) text += "$-1\r\n";
    else {
      if (text !== "") parts.push(Buffer.from(text));
      text = "";
      parts.push(encodeValue(jsonToResp(v)));
    }
  }
  if (text !== "") parts.push(Buffer.from(text));
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/**
 * Results the guest handed over as one JSON text (RESULTS_JSON, guest/entry.ts): each one's
 * string, as the guest would have made it (a string itself; an object or array its JSON
 * text; a number or boolean String() of it; null null).
 */
export function resultsOfJson(text: string): JsonValue[] {
  const list = JSON.parse(text) as unknown[];
  const out: JsonValue[] = new Array<JsonValue>(list.length);
  for (let i = 0; i < list.length; i++) {
    const v = list[i];
    if (typeof v === "string" || v === null) out[i] = v;
    else if (typeof v === "object") out[i] = JSON.stringify(v);
    else out[i] = String(v);
  }
  return out;
}
