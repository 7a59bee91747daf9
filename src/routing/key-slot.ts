/** CRC16-XMODEM, as Redis Cluster hashes keys. */
const TABLE = new Uint16Array(256);
for (let i = 0; i < 256; i++) {
  let crc = i << 8;
  for (let j = 0; j < 8; j++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  TABLE[i] = crc;
}

function crc16(buf: Uint8Array, start: number, end: number): number {
  return crc16From(0, buf, start, end);
}

/** The CRC of buf[start, end) continued from `crc`. */
function crc16From(crc: number, buf: Uint8Array, start: number, end: number): number {
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ buf[i]) & 0xff];
  return crc;
}

/**
 * The hash slot of a key, exactly as Redis computes it: only the part between the first
 * '{' and the first '}' after it, when that part is not empty. (cluster-key-slot differs
 * for keys like "a{}{b}", where Redis hashes the whole key.) One pass in JavaScript: keys
 * are short, and a native indexOf per key costs more than the loop.
 */
export function keySlot(key: Buffer | string): number {
  const buf = typeof key === "string" ? Buffer.from(key) : key;
  return keySlotIn(buf, 0, buf.length);
}

/** keySlot of the key in buf[start, end), without a view of it (a client's request, in place). */
export function keySlotIn(buf: Uint8Array, start: number, end: number): number {
  let crc = 0;
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c === 123 /* { */) {
      let close = i + 1;
      while (close < end && buf[close] !== 125 /* } */) close++;
      if (close < end && close > i + 1) return crc16(buf, i + 1, close) & 16383;
      // No tag: the whole key, and no later '{' counts.
      return crc16From(crc, buf, i, end) & 16383;
    }
    crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ c) & 0xff];
  }
  return crc & 16383;
}
