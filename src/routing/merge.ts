import { decodeReply } from "../resp/decode.js";
import { encodeError, encodeInteger, encodeValue, OK } from "../resp/encode.js";
import type { RespValue } from "../resp/values.js";
import type { ReplySink } from "../upstream/reply-sink.js";

/**
 * Collects the replies of the sub-requests of one client command and merges them into
 * one reply once all are in. Each part is a sink of its own.
 */
export class Gather {
  private readonly replies: Buffer[];
  private remaining: number;

  constructor(
    count: number,
    private readonly done: (replies: Buffer[]) => Buffer,
    private readonly target: ReplySink,
  ) {
    this.replies = new Array<Buffer>(count);
    this.remaining = count;
    if (count === 0) target.reply(done([]));
  }

  part(index: number): ReplySink {
    return {
      reply: (data) => this.settle(index, data),
      fail: (message) => this.settle(index, encodeError(message)),
    };
  }

  private settle(index: number, data: Buffer): void {
    this.replies[index] = data;
    if (--this.remaining !== 0) return;
    let merged: Buffer;
    try {
      merged = this.done(this.replies);
    } catch (err) {
      // Thrown from inside a reply callback it would be lost, and the client left waiting.
      this.target.fail(`ERR the proxy could not merge the nodes' replies: ${(err as Error).message}`);
      return;
    }
    this.target.reply(merged);
  }
}

/** The first error among raw replies, if any. */
export function firstError(replies: Buffer[]): Buffer | undefined {
  return replies.find((r) => r[0] === 45 /* - */);
}

/** Counts added up (DEL, EXISTS, DBSIZE...). */
export function mergeSum(replies: Buffer[]): Buffer {
  const error = firstError(replies);
  if (error) return error;
  return encodeInteger(replies.reduce((sum, r) => sum + Number(decodeReply(r)), 0));
}

/** OK when every part said OK (MSET, FLUSHALL...). */
export function mergeAllOk(replies: Buffer[]): Buffer {
  return firstError(replies) ?? OK;
}

/** The smallest count (WAIT). */
export function mergeMin(replies: Buffer[]): Buffer {
  const error = firstError(replies);
  if (error) return error;
  return encodeInteger(Math.min(...replies.map((r) => Number(decodeReply(r)))));
}

/** Arrays concatenated (KEYS). */
export function mergeConcat(replies: Buffer[]): Buffer {
  const error = firstError(replies);
  if (error) return error;
  const all: RespValue[] = [];
  for (const r of replies) {
    const v = decodeReply(r);
    // Not push(...v): a reply of some 120,000 keys and more is too many arguments for one call.
    if (Array.isArray(v)) for (let i = 0; i < v.length; i++) all.push(v[i]);
  }
  return encodeValue(all);
}

/**
 * SCRIPT EXISTS from every master: 1 where all have the script, or where some have it and
 * `known[i]` (the proxy can load it on the others); else 0.
 */
export function mergeScriptExists(replies: Buffer[], known: readonly boolean[]): Buffer {
  const error = firstError(replies);
  if (error) return error;
  const arrays = replies.map((r) => decodeReply(r) as number[]);
  return encodeValue(
    arrays[0].map((_, i) =>
      arrays.every((a) => a[i] === 1) || (known[i] === true && arrays.some((a) => a[i] === 1)) ? 1 : 0,
    ),
  );
}

/** The same reply from every node (SCRIPT LOAD, FUNCTION LOAD): the first one, or an error. */
export function mergeFirst(replies: Buffer[]): Buffer {
  return firstError(replies) ?? replies[0];
}
