import { findCrlf, parseIntAscii } from "./byte-queue.js";
import { RespError, type RespValue } from "./values.js";

/** Whether one whole reply, as raw bytes, is an error (RESP2 `-` or RESP3 `!`). */
export function isErrorReply(reply: Buffer): boolean {
  return reply[0] === 45 /* - */ || reply[0] === 33; /* ! */
}

/** Decodes one complete reply (as cut by ReplyScanner). Bulk strings are zero-copy views. */
export function decodeReply(buf: Buffer): RespValue {
  const out = decodeAt(buf, 0);
  return out.value;
}

interface Decoded {
  value: RespValue;
  next: number;
}

function decodeAt(buf: Buffer, at: number): Decoded {
  const cr = findCrlf(buf, at + 1, buf.length);
  if (cr === -1) throw new Error("incomplete reply");
  const type = buf[at];
  const line = (): string => buf.toString("utf8", at + 1, cr);
  switch (type) {
    case 43: // +
      return { value: line(), next: cr + 2 };
    case 45: // -
      return { value: new RespError(line()), next: cr + 2 };
    case 58: // :
    case 40: // (
      return { value: Number(line()), next: cr + 2 };
    case 44: // ,
      return { value: line(), next: cr + 2 };
    case 35: // #
      return { value: buf[at + 1] === 116 ? 1 : 0, next: cr + 2 };
    case 95: // _
      return { value: null, next: cr + 2 };
    case 36: // $
    case 61: // =
    case 33: {
      // !
      const len = parseIntAscii(buf, at + 1, cr);
      if (len < 0) return { value: null, next: cr + 2 };
      const data = buf.subarray(cr + 2, cr + 2 + len);
      const value = type === 33 ? new RespError(data.toString()) : data;
      return { value, next: cr + 2 + len + 2 };
    }
    default: {
      const n = parseIntAscii(buf, at + 1, cr);
      if (n < 0) return { value: null, next: cr + 2 };
      const count = type === 37 || type === 124 ? n * 2 : n;
      const items: RespValue[] = [];
      let next = cr + 2;
      for (let i = 0; i < count; i++) {
        const d = decodeAt(buf, next);
        items.push(d.value);
        next = d.next;
      }
      // An attribute describes the value that follows it; keep the value only.
      if (type === 124) return decodeAt(buf, next);
      return { value: items, next };
    }
  }
}
