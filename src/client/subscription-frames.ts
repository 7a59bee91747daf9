import { decodeReply } from "../resp/decode.js";
import { encodeValue } from "../resp/encode.js";
import { RespPush, type Protocol } from "../resp/values.js";

const KINDS = new Set([
  "subscribe",
  "unsubscribe",
  "psubscribe",
  "punsubscribe",
  "ssubscribe",
  "sunsubscribe",
]);

/**
 * For a (un)subscribe confirmation frame, the number of subscriptions the connection
 * has left (the frame's third element); null for messages and other replies. Messages,
 * the bulk of the traffic, are told apart by their first bytes without decoding.
 */
export function subscriptionCount(frame: Buffer): number | null {
  // "*3\r\n$7\r\nmessage..." and "*4\r\n$8\r\npmessage..." are by far the most common frames.
  // "*" in RESP2, ">" (a push) in RESP3.
  if (frame.length < 12 || (frame[0] !== 42 && frame[0] !== 62) || frame[4] !== 36) return null;
  if (frame[5] === 55 /* 7: message */ || frame[5] === 56 /* 8: pmessage / smessage */) return null;
  const value = decodeReply(frame);
  if (!Array.isArray(value) || value.length !== 3) return null;
  const kind = value[0];
  const count = value[2];
  if (!Buffer.isBuffer(kind) || typeof count !== "number") return null;
  return KINDS.has(kind.toString()) ? count : null;
}

/** A (un)subscribe confirmation as the server would send it: [kind, channel, count]. */
export function confirmationFrame(
  kind: string,
  channel: string | null,
  count: number,
  proto: Protocol,
): Buffer {
  const name = channel === null ? null : Buffer.from(channel, "latin1");
  return encodeValue(new RespPush([Buffer.from(kind), name, count]), proto);
}

/** A confirmation frame with its count (the last element) replaced. */
export function withCount(frame: Buffer, count: number): Buffer {
  // The count is the frame's last line, ":<n>\r\n"; what precedes it ends with a CRLF.
  const at = frame.lastIndexOf("\r\n:", frame.length - 3);
  return Buffer.concat([frame.subarray(0, at + 2), Buffer.from(`:${count}\r\n`)]);
}

/** Kinds whose count is the connection's channels and patterns (not its shard channels). */
const MAIN_KINDS = new Set(["subscribe", "unsubscribe", "psubscribe", "punsubscribe"]);

function mainCount(value: unknown): number | null {
  if (!Array.isArray(value) || value.length !== 3) return null;
  const [kind, , count] = value as unknown[];
  return Buffer.isBuffer(kind) && typeof count === "number" && MAIN_KINDS.has(kind.toString()) ? count : null;
}

/**
 * The channels and patterns a connection is left with after the confirmations among
 * `frames`, which may be elements of a frame too (EXEC's reply); null when there is none.
 */
export function countAfter(frames: readonly Buffer[]): number | null {
  let last: number | null = null;
  for (const frame of frames) {
    const value = decodeReply(frame);
    const own = mainCount(value);
    if (own !== null) last = own;
    else if (Array.isArray(value))
      for (const element of value) {
        const count = mainCount(element);
        if (count !== null) last = count;
      }
  }
  return last;
}
