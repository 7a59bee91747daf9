import type { Protocol } from "../../resp/values.js";

const PUSH_HEAD = Buffer.from(">2\r\n$10\r\ninvalidate\r\n");
const MESSAGE_HEAD = Buffer.from("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n");
const NULLS: Record<Protocol, Buffer> = { 2: Buffer.from("$-1\r\n"), 3: Buffer.from("_\r\n") };

/** The keys part of an invalidation: an array of bulk strings. */
export function keysValue(keys: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${keys.length}\r\n`)];
  for (const key of keys) parts.push(Buffer.from(`$${key.length}\r\n`), key, Buffer.from("\r\n"));
  return Buffer.concat(parts);
}

/** The "every key" value of a flush, in the protocol of the client that tracks (as Redis picks it). */
export function flushValue(proto: Protocol): Buffer {
  return NULLS[proto];
}

/** An invalidation as a RESP3 push: `>2 invalidate <value>`. */
export function invalidatePush(value: Buffer): Buffer {
  return Buffer.concat([PUSH_HEAD, value]);
}

/** An invalidation as a RESP2 Pub/Sub message on `__redis__:invalidate`, for a REDIRECT client. */
export function invalidateMessage(value: Buffer): Buffer {
  return Buffer.concat([MESSAGE_HEAD, value]);
}

/** Told to a RESP3 client whose REDIRECT client has gone. */
export function redirBrokenPush(redirect: number): Buffer {
  return Buffer.from(`>2\r\n$21\r\ntracking-redir-broken\r\n:${redirect}\r\n`);
}
