const CRC = new Uint16Array(256);
for (let i = 0; i < 256; i++) {
  let c = i << 8;
  for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
  CRC[i] = c;
}

/** Redis Cluster hash slot: CRC16-XMODEM of the UTF-8 bytes (of the {hashtag} if any) mod 16384. */
export function slotOf(key: string): number {
  let s = 0;
  let e = key.length;
  const open = key.indexOf("{");
  if (open >= 0) {
    const close = key.indexOf("}", open + 1);
    if (close > open + 1) {
      s = open + 1;
      e = close;
    }
  }
  let crc = 0;
  for (let i = s; i < e; i++) {
    const c = key.charCodeAt(i);
    if (c < 0x80) {
      crc = ((crc << 8) & 0xffff) ^ CRC[((crc >> 8) ^ c) & 0xff];
      continue;
    }
    let cp = c;
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < e ? key.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else {
        cp = 0xfffd; // a lone surrogate encodes as U+FFFD, like TextEncoder and Buffer
      }
    }
    let b0: number;
    let n: number;
    if (cp < 0x800) {
      b0 = 0xc0 | (cp >> 6);
      n = 1;
    } else if (cp < 0x10000) {
      b0 = 0xe0 | (cp >> 12);
      n = 2;
    } else {
      b0 = 0xf0 | (cp >> 18);
      n = 3;
    }
    crc = ((crc << 8) & 0xffff) ^ CRC[((crc >> 8) ^ b0) & 0xff];
    for (let k = n - 1; k >= 0; k--) {
      const b = 0x80 | ((cp >> (6 * k)) & 0x3f);
      crc = ((crc << 8) & 0xffff) ^ CRC[((crc >> 8) ^ b) & 0xff];
    }
  }
  return crc & 16383;
}
