import {
  RespBigNumber,
  RespBoolean,
  RespDouble,
  RespError,
  RespMap,
  RespPush,
  RespSet,
  RespVerbatim,
  type Protocol,
  type RespValue,
} from "./values.js";

export type Arg = Buffer | string | number;

const CRLF = "\r\n";

/** Encodes a command as a RESP array of bulk strings, sized first and written into one buffer. */
export function encodeCommand(argv: readonly Arg[]): Buffer {
  const args: Buffer[] = new Array<Buffer>(argv.length);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    args[i] = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
  }
  const out = Buffer.allocUnsafe(commandSize(args));
  writeCommand(out, 0, args);
  return out;
}

/** Commands of bulk strings, encoded back to back into one buffer (a pipeline in one write). */
export function encodeMany(argvs: readonly (readonly Buffer[])[]): Buffer {
  let size = 0;
  for (const argv of argvs) size += commandSize(argv);
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const argv of argvs) at = writeCommand(out, at, argv);
  return out;
}

/** The bytes of `args` as one RESP array of bulk strings. */
function commandSize(args: readonly Buffer[]): number {
  let size = 1 + decimalLength(args.length) + 2;
  for (const b of args) size += 1 + decimalLength(b.length) + 2 + b.length + 2;
  return size;
}

/** Writes `args` as one RESP array of bulk strings into `out` at `at`; where it ends. */
function writeCommand(out: Buffer, at: number, args: readonly Buffer[]): number {
  at += out.write(`*${args.length}\r\n`, at, "latin1");
  for (const b of args) {
    at += out.write(`$${b.length}\r\n`, at, "latin1");
    at += b.copy(out, at);
    out[at++] = 13;
    out[at++] = 10;
  }
  return at;
}

/** How many decimal digits a non-negative integer has (RESP length headers). */
export function decimalLength(n: number): number {
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
/** RESP3's one null. */
export const RESP3_NULL = Buffer.from("_\r\n");

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

/**
 * Encodes a value in a client's protocol. RESP3-only types take their RESP2 forms for a
 * RESP2 client (maps flatten, doubles and big numbers become bulk strings, booleans 1/0).
 */
export function encodeValue(value: RespValue, proto: Protocol = 2): Buffer {
  const parts: Buffer[] = [];
  appendValue(value, parts, proto);
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/** Formats a double as Redis does on the wire (inf, -inf, nan, shortest round-trip digits). */
export function formatDouble(n: number): string {
  if (n === Infinity) return "inf";
  if (n === -Infinity) return "-inf";
  if (Number.isNaN(n)) return "nan";
  return String(n);
}

function appendBulk(data: Buffer, parts: Buffer[]): void {
  parts.push(Buffer.from(`$${data.length}\r\n`), data, Buffer.from(CRLF));
}

function appendItems(prefix: string, items: RespValue[], parts: Buffer[], proto: Protocol): void {
  parts.push(Buffer.from(`${prefix}${items.length}\r\n`));
  for (const item of items) appendValue(item, parts, proto);
}

function appendValue(value: RespValue, parts: Buffer[], proto: Protocol): void {
  if (value === null) parts.push(proto === 3 ? RESP3_NULL : NULL_BULK);
  else if (Buffer.isBuffer(value)) appendBulk(value, parts);
  else if (typeof value === "string") parts.push(encodeSimple(value));
  else if (typeof value === "number") parts.push(encodeInteger(value));
  else if (Array.isArray(value)) appendItems("*", value, parts, proto);
  else if (value instanceof RespError) parts.push(encodeError(value.message));
  else if (value instanceof RespMap) {
    if (proto === 3) {
      parts.push(Buffer.from(`%${value.entries.length}\r\n`));
      for (const [k, v] of value.entries) {
        appendValue(k, parts, proto);
        appendValue(v, parts, proto);
      }
    } else appendItems("*", value.entries.flat(), parts, proto);
  } else if (value instanceof RespSet) appendItems(proto === 3 ? "~" : "*", value.items, parts, proto);
  else if (value instanceof RespPush) appendItems(proto === 3 ? ">" : "*", value.items, parts, proto);
  else if (value instanceof RespDouble) {
    const text = formatDouble(value.value);
    if (proto === 3) parts.push(Buffer.from(`,${text}\r\n`));
    else appendBulk(Buffer.from(text), parts);
  } else if (value instanceof RespBoolean) {
    if (proto === 3) parts.push(Buffer.from(value.value ? "#t\r\n" : "#f\r\n"));
    else parts.push(encodeInteger(value.value ? 1 : 0));
  } else if (value instanceof RespBigNumber) {
    if (proto === 3) parts.push(Buffer.from(`(${value.digits}\r\n`));
    else appendBulk(Buffer.from(value.digits), parts);
  } else if (value instanceof RespVerbatim) {
    if (proto === 3) {
      parts.push(Buffer.from(`=${value.text.length + 4}\r\n${value.format}:`), value.text, Buffer.from(CRLF));
    } else appendBulk(value.text, parts);
  }
}
