import { expect } from "chai";
import { BinaryWriter } from "../src/sandbox/bjson.js";

/**
 * The binary object format's writer (src/sandbox/bjson.ts): values and property names
 * written from UTF-8 bytes (as the readers write records straight from reply bytes) are the
 * same bytes as those written from the strings Buffer.toString() makes of them.
 */
describe("bjson: writing from bytes", () => {
  const texts = [
    "",
    "a",
    "movie:123",
    "Drama,Comedy",
    "x".repeat(63),
    "y".repeat(64),
    "z".repeat(65),
    "é",
    "naïve café",
    "ключ",
    "значение 😀",
    "a".repeat(60) + "ж",
    "\u0000\u007f",
  ];

  const whole = (w: BinaryWriter): Buffer => Buffer.concat([w.header(), w.body()]);

  it("stringBytes writes what string() writes, for short, long, ASCII and other texts", () => {
    for (const t of texts) {
      const bytes = Buffer.concat([Buffer.from("<<"), Buffer.from(t), Buffer.from(">>")]);
      const a = new BinaryWriter(4);
      a.stringBytes(bytes, 2, bytes.length - 2);
      const b = new BinaryWriter(4);
      b.string(bytes.toString("utf8", 2, bytes.length - 2));
      expect(whole(a).equals(whole(b)), JSON.stringify(t)).to.equal(true);
    }
  });

  it("string() writes a JSString: length and wideness, then Latin-1 bytes or UTF-16 units", () => {
    const cases: [string, number[]][] = [
      ["", [0x07, 0x00]],
      ["ab", [0x07, 0x04, 0x61, 0x62]],
      ["é\u00ff", [0x07, 0x04, 0xe9, 0xff]],
      ["ж", [0x07, 0x03, 0x36, 0x04]],
      ["a".repeat(63), [0x07, 126, ...Array<number>(63).fill(0x61)]],
      ["a".repeat(64), [0x07, 0x80, 0x01, ...Array<number>(64).fill(0x61)]],
    ];
    for (const [t, bytes] of cases) {
      const w = new BinaryWriter(4);
      w.string(t);
      expect([...w.body()], JSON.stringify(t)).to.deep.equal(bytes);
    }
  });

  it("atomBytes writes what atom() writes: new names, names met again, more names than it walks", () => {
    const names = [...texts, ...Array.from({ length: 30 }, (_, i) => `field${i}`), "title", "year"];
    const order = [...names, ...names.slice().reverse(), "title", "genres", "title"];
    const a = new BinaryWriter(4);
    const b = new BinaryWriter(4);
    for (const n of order) {
      const bytes = Buffer.from(n);
      a.atomBytes(bytes, 0, bytes.length);
      b.atom(n);
    }
    expect(whole(a).equals(whole(b))).to.equal(true);
  });
});
