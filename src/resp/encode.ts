import { RespError, type RespValue } from "./values.js";

export type Arg = Buffer | string | number;

const CRLF = "\r\n";

/** Encodes a command as a RESP array of bulk strings, sized first and written into one buffer. */
export function encodeCommand(argv: readonly Arg[]): Buffer {
  const args: Buffer[] = new Array<Buffer>(argv.length);
  let size = 1 + decimalLength(argv.length) + 2;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    args[i] = b;
    size += 1 + decimalLength(b.length) + 2 + b.length + 2;
  }
  const out = Buffer.allocUnsafe(size);
  let at = out.write(`*${argv.length}\r\n`, 0, "latin1");
  for (const b of args) {
    at += out.write(`$${b.length}\r\n`, at, "latin1");
    at += b.copy(out, at);
    out[at++] = 13;
    out[at++] = 10;
  }
  return out;
}

function decimalLength(n: number): number {
  let digits = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    digits++;
  }
  return digits;
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
