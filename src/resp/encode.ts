import { RespError, type RespValue } from "./values.js";

export type Arg = Buffer | string | number;

const CRLF = "\r\n";

/** Encodes a command as a RESP array of bulk strings. */
export function encodeCommand(argv: readonly Arg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${argv.length}\r\n`)];
  let small = "";
  for (const arg of argv) {
    if (Buffer.isBuffer(arg)) {
      parts.push(Buffer.from(`${small}$${arg.length}\r\n`), arg, Buffer.from(CRLF));
      small = "";
    } else {
      const s = String(arg);
      small += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
    }
  }
  if (small) parts.push(Buffer.from(small));
  return Buffer.concat(parts);
}

export const OK = Buffer.from("+OK\r\n");
export const NULL_BULK = Buffer.from("$-1\r\n");
export const NULL_ARRAY = Buffer.from("*-1\r\n");

export function encodeError(message: string): Buffer {
  return Buffer.from(`-${message.replace(/[\r\n]+/g, " ")}\r\n`);
}

export function encodeSimple(text: string): Buffer {
  return Buffer.from(`+${text}\r\n`);
}

export function encodeInteger(n: number): Buffer {
  return Buffer.from(`:${n}\r\n`);
}

export function encodeBulk(value: Buffer | string | null): Buffer {
  if (value === null) return NULL_BULK;
  const data = typeof value === "string" ? Buffer.from(value) : value;
  return Buffer.concat([Buffer.from(`$${data.length}\r\n`), data, Buffer.from(CRLF)]);
}

/** Encodes a decoded value back to RESP2 (strings as simple strings, Buffers as bulk). */
export function encodeValue(value: RespValue): Buffer {
  const parts: Buffer[] = [];
  appendValue(value, parts);
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

function appendValue(value: RespValue, parts: Buffer[]): void {
  if (value === null) parts.push(NULL_BULK);
  else if (Buffer.isBuffer(value)) parts.push(Buffer.from(`$${value.length}\r\n`), value, Buffer.from(CRLF));
  else if (typeof value === "string") parts.push(encodeSimple(value));
  else if (typeof value === "number") parts.push(encodeInteger(value));
  else if (value instanceof RespError) parts.push(encodeError(value.message));
  else {
    parts.push(Buffer.from(`*${value.length}\r\n`));
    for (const item of value) appendValue(item, parts);
  }
}
