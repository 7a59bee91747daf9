import { expect } from "chai";
import { Isolate } from "../src/sandbox/isolate.js";
import type { HostBridge } from "../src/sandbox/types.js";

const bridge: HostBridge = {
  callSync: () => Promise.resolve(null),
  callAsync: (calls) => Promise.resolve(calls.map(() => ({ ok: null }))),
  notify: () => undefined,
};

describe("sandbox: texts a result marks with __bytes() cross as bytes", function () {
  this.timeout(20_000);
  let iso: Isolate;

  before(async () => {
    iso = await Isolate.create({ memoryLimitMb: 32, timeoutMs: 1000 }, bridge);
    await iso.evalScript(
      'function marked() { return { out: [[0, __bytes("h\\u00e9llo\\u0000 \\ud800!"), 2]], empty: __bytes(""), plain: "h\\u00e9llo" }; }',
      "script",
    );
  });

  after(async () => {
    await iso.dispose();
  });

  it("a marked text arrives as a Buffer of its UTF-8 (NUL kept, a lone surrogate as U+FFFD) in a buffer of its own", async () => {
    const value = (await iso.call("marked", [])) as unknown as {
      out: [number, Buffer, number][];
      empty: Buffer;
      plain: string;
    };
    const text = value.out[0][1];
    expect(Buffer.isBuffer(text)).to.equal(true);
    expect(text.equals(Buffer.from("h\u00e9llo\u0000 \ufffd!"))).to.equal(true);
    // Transferred whole from the worker, not a slice of a shared pool.
    expect(text.byteOffset).to.equal(0);
    expect(text.buffer.byteLength).to.equal(text.length);
    expect(value.out[0][0]).to.equal(0);
    expect(value.out[0][2]).to.equal(2);
    expect(Buffer.isBuffer(value.empty) && value.empty.length === 0).to.equal(true);
    expect(value.plain).to.equal("h\u00e9llo");
  });

  it("results without marks stay plain JSON, also after a marked one", async () => {
    await iso.call("marked", []);
    expect(await iso.evalScript('({ a: ["x", 1, null] })', "plain")).to.deep.equal({ a: ["x", 1, null] });
    await iso.evalScript("var again = () => marked();", "again");
    const value = (await iso.call("again", [])) as unknown as { out: [number, Buffer, number][] };
    expect(Buffer.isBuffer(value.out[0][1])).to.equal(true);
  });

  it("a Pyodide isolate's JavaScript marks texts the same way", async function () {
    this.timeout(60_000);
    const py = await Isolate.create({ memoryLimitMb: 256, timeoutMs: 5000 }, bridge, "pyodide");
    try {
      const value = (await py.evalScript(
        '({ out: [[1, __bytes("h\\u00e9llo\\u0000!"), 1]], plain: "x" })',
        "script",
      )) as unknown as { out: [number, Buffer, number][]; plain: string };
      const text = value.out[0][1];
      expect(Buffer.isBuffer(text) && text.equals(Buffer.from("h\u00e9llo\u0000!"))).to.equal(true);
      expect(text.buffer.byteLength).to.equal(text.length);
      expect(value.plain).to.equal("x");
    } finally {
      await py.dispose();
    }
  });
});
