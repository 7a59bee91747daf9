/** The protocol a client speaks, chosen with HELLO: 2 (the default) or 3. */
export type Protocol = 2 | 3;

/** An error reply: `-CODE message` (or a RESP3 blob error). */
export class RespError {
  constructor(readonly message: string) {}
  /** The first word, such as MOVED, ASK, NOSCRIPT or ERR. */
  get code(): string {
    const space = this.message.indexOf(" ");
    return space === -1 ? this.message : this.message.slice(0, space);
  }
}

/** A RESP3 map (`%`); a flat array of key, value, key, value in RESP2. */
export class RespMap {
  constructor(readonly entries: Array<[RespValue, RespValue]>) {}
}

/** A RESP3 set (`~`); an array in RESP2. */
export class RespSet {
  constructor(readonly items: RespValue[]) {}
}

/** A RESP3 double (`,`); a bulk string in RESP2, as Redis sends it. */
export class RespDouble {
  constructor(readonly value: number) {}
}

/** A RESP3 boolean (`#t`/`#f`); the integer 1 or 0 in RESP2. */
export class RespBoolean {
  constructor(readonly value: boolean) {}
}

/** A RESP3 big number (`(`), kept as its digits; a bulk string in RESP2. */
export class RespBigNumber {
  constructor(readonly digits: string) {}
}

/** A RESP3 verbatim string (`=`) with its three-letter format; a bulk string in RESP2. */
export class RespVerbatim {
  constructor(
    readonly format: string,
    readonly text: Buffer,
  ) {}
}

/** A RESP3 push (`>`), out of band; an array in RESP2 (pub/sub messages). */
export class RespPush {
  constructor(readonly items: RespValue[]) {}
}

/**
 * A reply value. Simple strings are JS strings and bulk strings are Buffers, so a value
 * can be encoded back exactly; RESP3-only types are classes that encode to their RESP2
 * forms for a RESP2 client.
 */
export type RespValue =
  | string
  | Buffer
  | number
  | null
  | RespError
  | RespValue[]
  | RespMap
  | RespSet
  | RespDouble
  | RespBoolean
  | RespBigNumber
  | RespVerbatim
  | RespPush;
