/** An error reply: `-CODE message`. */
export class RespError {
  constructor(readonly message: string) {}
  /** The first word, such as MOVED, ASK, NOSCRIPT or ERR. */
  get code(): string {
    const space = this.message.indexOf(" ");
    return space === -1 ? this.message : this.message.slice(0, space);
  }
}

/**
 * A decoded reply. Simple strings are JS strings and bulk strings are Buffers, so a value
 * can be encoded back exactly; RESP3 maps decode to flat arrays, as RESP2 would send them.
 */
export type RespValue = string | Buffer | number | null | RespError | RespValue[];
