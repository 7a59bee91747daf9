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
