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

/** A (un)subscribe confirmation: its kind, the channel or pattern (null: none to leave), the count left. */
export type Confirmation = [kind: string, name: Buffer | null, count: number];

function asConfirmation(value: unknown): Confirmation | null {
  if (!Array.isArray(value) || value.length !== 3) return null;
  const [kind, name, count] = value as unknown[];
  if (!Buffer.isBuffer(kind) || typeof count !== "number" || !KINDS.has(kind.toString())) return null;
  return [kind.toString(), Buffer.isBuffer(name) ? name : null, count];
}

/**
 * A frame, if it is an (un)subscribe confirmation; null for messages and other replies.
 * Messages, the bulk of the traffic, are told apart by their first bytes without decoding.
 */
export function confirmationOf(frame: Buffer): Confirmation | null {
  // "*3\r\n$7\r\nmessage..." and "*4\r\n$8\r\npmessage..." are by far the most common frames.
  // "*" in RESP2, ">" (a push) in RESP3.
  if (frame.length < 12 || (frame[0] !== 42 && frame[0] !== 62) || frame[4] !== 36) return null;
  if (frame[5] === 55 /* 7: message */ || frame[5] === 56 /* 8: pmessage / smessage */) return null;
  return asConfirmation(decodeReply(frame));
}

/** The confirmations among `frames`, which may be elements of a frame too (EXEC's reply), in order. */
function confirmationsIn(frames: readonly Buffer[]): Confirmation[] {
  const found: Confirmation[] = [];
  for (const frame of frames) {
    const value = decodeReply(frame);
    const own = asConfirmation(value);
    if (own !== null) found.push(own);
    else if (Array.isArray(value))
      for (const element of value) {
        const c = asConfirmation(element);
        if (c !== null) found.push(c);
      }
  }
  return found;
}

/**
 * The channels, patterns and shard channels a client's confirmations left it with: what
 * CLIENT LIST shows as sub, psub and ssub (the confirmations' counts mix channels and patterns).
 */
export class SubscriptionNames {
  readonly channels = new Set<string>();
  readonly patterns = new Set<string>();
  readonly shardChannels = new Set<string>();

  follow([kind, name]: Confirmation): void {
    if (name === null) return;
    const key = name.toString("latin1");
    if (kind === "subscribe") this.channels.add(key);
    else if (kind === "unsubscribe") this.channels.delete(key);
    else if (kind === "psubscribe") this.patterns.add(key);
    else if (kind === "punsubscribe") this.patterns.delete(key);
    else if (kind === "ssubscribe") this.shardChannels.add(key);
    else this.shardChannels.delete(key);
  }

  /** The confirmations among `frames`, which may be elements of a frame too (EXEC's reply). */
  followAll(frames: readonly Buffer[]): void {
    for (const c of confirmationsIn(frames)) this.follow(c);
  }

  clear(): void {
    this.channels.clear();
    this.patterns.clear();
    this.shardChannels.clear();
  }
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

/**
 * The channels and patterns a connection is left with after the confirmations among
 * `frames`, which may be elements of a frame too (EXEC's reply); null when there is none.
 */
export function countAfter(frames: readonly Buffer[]): number | null {
  let last: number | null = null;
  for (const [kind, , count] of confirmationsIn(frames)) if (MAIN_KINDS.has(kind)) last = count;
  return last;
}
