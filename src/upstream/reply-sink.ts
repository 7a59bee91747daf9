import { decodeReply } from "../resp/decode.js";
import { inProtocol } from "../resp/convert.js";
import type { Protocol, RespValue } from "../resp/values.js";

/** Whoever waits for one reply on an upstream connection. */
export interface ReplySink {
  /** The whole reply, as the raw bytes the server sent. */
  reply(data: Buffer): void;
  /** No reply will come: `message` is a RESP error text such as "ERR upstream connection lost". */
  fail(message: string): void;
}

/** A sink that drops the reply: for commands the proxy sends on its own account (SELECT). */
export const DISCARD: ReplySink = { reply() {}, fail() {} };

/** Thrown by internal calls whose connection failed. */
export class UpstreamError extends Error {}

/** A sink that resolves a promise with the decoded reply, for the proxy's own requests. */
export class PromiseSink implements ReplySink {
  readonly promise: Promise<RespValue>;
  private resolve!: (v: RespValue) => void;
  private reject!: (e: Error) => void;

  constructor() {
    this.promise = new Promise<RespValue>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  reply(data: Buffer): void {
    this.resolve(decodeReply(data));
  }

  fail(message: string): void {
    this.reject(new UpstreamError(message));
  }
}

/** A sink that passes RESP2-built replies on in `proto` (see inProtocol). */
export function sinkInProtocol(sink: ReplySink, proto: Protocol): ReplySink {
  if (proto === 2) return sink;
  return { reply: (data) => sink.reply(inProtocol(data, proto)), fail: (message) => sink.fail(message) };
}
