import { decodeReply } from "./decode.js";
import { encodeValue } from "./encode.js";
import type { Protocol } from "./values.js";

const NULL_BULK_TEXT = Buffer.from("$-1\r\n");
const NULL_ARRAY_TEXT = Buffer.from("*-1\r\n");

/**
 * A reply built in RESP2 (merged fan-outs, gears results), in the client's protocol.
 * Arrays, bulk strings, integers and errors read the same in RESP3; only the RESP2 nulls
 * differ, so a reply without one is passed on as it is, and one with a null is re-encoded.
 */
export function inProtocol(reply: Buffer, proto: Protocol): Buffer {
  if (proto === 2) return reply;
  if (reply.indexOf(NULL_BULK_TEXT) === -1 && reply.indexOf(NULL_ARRAY_TEXT) === -1) return reply;
  return encodeValue(decodeReply(reply), 3);
}

/**
 * inProtocol for a reply written as several buffers (a large gears result): passed on as
 * they are unless one holds a RESP2 null, then joined and re-encoded.
 */
export function partsInProtocol(parts: Buffer[], proto: Protocol): Buffer[] {
  if (proto === 2) return parts;
  if (!parts.some((p) => p.indexOf(NULL_BULK_TEXT) !== -1 || p.indexOf(NULL_ARRAY_TEXT) !== -1)) return parts;
  return [inProtocol(Buffer.concat(parts), proto)];
}

/** The first bytes of the RESP2 types: + - : $ * */
const RESP2_TYPES = new Set([43, 45, 58, 36, 42]);

/**
 * A reply the server sent in RESP3, as RESP2, for merging with the RESP2 code (fan-out parts
 * that went on a RESP3 client's own connections). A reply of RESP2's types (the keyless
 * commands that fan out answer arrays, integers, bulk strings and OK) is passed on as it is,
 * a null is RESP2's null bulk, and anything else is re-encoded.
 */
export function inResp2(reply: Buffer): Buffer {
  if (RESP2_TYPES.has(reply[0])) return reply;
  if (reply[0] === 95 /* _ */) return NULL_BULK_TEXT;
  return encodeValue(decodeReply(reply), 2);
}
