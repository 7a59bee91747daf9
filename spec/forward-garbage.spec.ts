import { expect } from "chai";
import net from "node:net";
import { once } from "node:events";
import { Fifo } from "../src/io/fifo.js";
import { OutputBuffer } from "../src/io/output-buffer.js";
import { readBytes } from "../src/io/socket-reader.js";
import { ReplySlot, type SlotOwner } from "../src/client/reply-slot.js";
import { RequestRuns } from "../src/client/request-runs.js";
import { RequestParser } from "../src/resp/request-parser.js";
import { ReplyScanner } from "../src/resp/reply-scanner.js";
import type { Pipe, ReplySink } from "../src/routing/lease.js";

// Unit specs of what the forwarding path makes per request, cut down in session 21 (bench/RESULTS.md,
// "The forwarded request's garbage"): a reply slot's packed flags and rare fields, a read copied
// by a loop or by set(), a request or a reply handed on as its read's own buffer, the output
// buffer's single chunk. Each must behave as the fuller version did.

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(check()).to.equal(true);
}

describe("forwarding's per-request objects", () => {
  it("a reply slot's five flags are set and cleared each on its own", () => {
    const slot = new ReplySlot({ slotFilled: () => {} });
    const names = ["upstream", "silent", "closeAfter", "pushed", "inRun"] as const;
    for (const name of names) {
      slot[name] = true;
      for (const other of names)
        expect(slot[other], `${other} after setting ${name}`).to.equal(other === name);
      slot[name] = false;
      for (const other of names) expect(slot[other]).to.equal(false);
    }
    slot.upstream = true;
    slot.inRun = true;
    slot.silent = true;
    slot.inRun = false;
    expect([slot.upstream, slot.silent, slot.inRun, slot.pushed, slot.closeAfter]).to.deep.equal([
      true,
      true,
      false,
      false,
      false,
    ]);
  });

  it("a reply slot's rare fields read null until set, onReply runs once and may replace the reply, a gate holds it", async () => {
    const filled: string[] = [];
    const owner: SlotOwner = { slotFilled: (s) => filled.push(s.data!.toString()) };
    const plain = new ReplySlot(owner);
    expect([plain.rest, plain.onReply, plain.gate, plain.cause]).to.deep.equal([null, null, null, null]);
    plain.cause = null;
    plain.reply(Buffer.from("+a\r\n"));
    expect(filled).to.deep.equal(["+a\r\n"]);

    const hooked = new ReplySlot(owner);
    let calls = 0;
    hooked.onReply = (data) => {
      calls++;
      return Buffer.from(`+${data.toString().slice(1, -2)}!\r\n`);
    };
    let open: () => void = () => {};
    hooked.gate = () => new Promise<void>((resolve) => (open = resolve));
    hooked.reply(Buffer.from("+b\r\n"));
    expect(calls).to.equal(1);
    expect(filled).to.deep.equal(["+a\r\n"]);
    expect(hooked.gate).to.equal(null);
    expect(hooked.onReply).to.equal(null);
    open();
    await until(() => filled.length === 2);
    expect(filled[1]).to.equal("+b!\r\n");
    expect(calls).to.equal(1);

    const parts = new ReplySlot(owner);
    parts.replyParts([Buffer.from("*2\r\n"), Buffer.from("+x\r\n"), Buffer.from("+y\r\n")]);
    expect(parts.rest!.map(String)).to.deep.equal(["+x\r\n", "+y\r\n"]);
    parts.rest = null;
    expect(parts.rest).to.equal(null);
  });

  it("a run that is a whole read is sent as that buffer; part of a read, as the same bytes", () => {
    const sent: Buffer[] = [];
    const conn: Pipe = {
      send: (payload: Buffer) => sent.push(payload),
      sendMany: (payload: Buffer) => sent.push(payload),
    } as unknown as Pipe;
    const sink: ReplySink = { reply: () => {}, fail: () => {} };
    const parser = new RequestParser({ maxBulkLen: 512 * 1024 * 1024, maxArgs: 1024 });
    const whole = Buffer.from("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    parser.push(whole);
    const runs = new RequestRuns();
    runs.add(conn, parser.next()!, sink, 0);
    runs.flush();
    expect(sent[0]).to.equal(whole);

    const two = Buffer.from("*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n");
    parser.push(two);
    const first = parser.next()!;
    runs.add(conn, first, sink, 0);
    runs.flush();
    runs.add(conn, parser.next()!, sink, 0);
    runs.flush();
    expect(sent.slice(1).map(String)).to.deep.equal([
      "*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
      "*2\r\n$3\r\nGET\r\n$1\r\nb\r\n",
    ]);
    expect(sent[1]).to.not.equal(two);
  });

  it("a reply that is a whole read is handed out as that buffer; replies sharing a read, as views", () => {
    const scanner = new ReplyScanner();
    const whole = Buffer.from("*2\r\n$1\r\nx\r\n$1\r\ny\r\n");
    scanner.push(whole);
    expect(scanner.next()).to.equal(whole);
    expect(scanner.next()).to.equal(null);
    const shared = Buffer.from("+OK\r\n:1\r\n$2\r\nab");
    scanner.push(shared);
    expect(String(scanner.next())).to.equal("+OK\r\n");
    expect(String(scanner.next())).to.equal(":1\r\n");
    expect(scanner.next()).to.equal(null);
    scanner.push(Buffer.from("\r\n"));
    expect(String(scanner.next())).to.equal("$2\r\nab\r\n");
  });

  it("every read, short (copied by a loop) or long (by set), is the reader's own copy", async () => {
    const chunks: Buffer[] = [];
    const server = net.createServer({ pauseOnConnect: true }, (raw) => {
      readBytes(raw, (chunk) => chunks.push(chunk)).on("error", () => {});
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const client = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1");
    await once(client, "connect");
    client.setNoDelay(true);
    const sent: Buffer[] = [];
    let received = 0;
    // Each message waits for the last one's bytes, so that reads do not merge: sizes on both
    // sides of the loop's limit (128), each filled with its own byte.
    for (const size of [1, 2, 60, 127, 128, 129, 200, 4000, 3, 128]) {
      const message = Buffer.alloc(size, 33 + (sent.length % 90));
      sent.push(message);
      client.write(message);
      const total = received + size;
      await until(() => chunks.reduce((n, c) => n + c.length, 0) >= total);
      received = total;
    }
    expect(Buffer.concat(chunks).equals(Buffer.concat(sent))).to.equal(true);
    client.destroy();
    server.close();
  });

  it("the output buffer writes one chunk, several joined, and large ones in order; discard drops them", async () => {
    const got: Buffer[] = [];
    const server = net.createServer((s) => s.on("data", (d) => got.push(d)));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const socket = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1");
    await once(socket, "connect");
    const out = new OutputBuffer(socket);
    const expected: Buffer[] = [];
    const push = (b: Buffer): void => {
      expected.push(b);
      out.push(b);
    };
    push(Buffer.from("one;"));
    expect(out.pending).to.equal(4);
    await new Promise((r) => setImmediate(r));
    push(Buffer.from("two;"));
    push(Buffer.from("three;"));
    await new Promise((r) => setImmediate(r));
    push(Buffer.alloc(40_000, 97));
    push(Buffer.alloc(40_000, 98));
    push(Buffer.from(";end"));
    await new Promise((r) => setImmediate(r));
    out.push(Buffer.from("dropped"));
    out.discard();
    expect(out.pending).to.equal(socket.writableLength);
    push(Buffer.from(";after"));
    const want = Buffer.concat(expected).toString();
    await until(() => got.reduce((n, b) => n + b.length, 0) >= want.length);
    expect(Buffer.concat(got).toString()).to.equal(want);
    socket.destroy();
    server.close();
  });

  it("the reply fifo keeps order over wrap-arounds, growth, emptying and drain", () => {
    const fifo = new Fifo<number>();
    const model: number[] = [];
    let next = 0;
    let seed = 7;
    const random = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    // Bursts that outgrow the ring (and its 4096 kept slots) between stretches of short queues.
    for (let step = 0; step < 60_000; step++) {
      const burst = step % 20_000 < 6_000;
      if (random() < (burst ? 0.7 : 0.5)) {
        fifo.push(next);
        model.push(next++);
      } else {
        expect(fifo.shift()).to.equal(model.shift());
      }
      expect(fifo.length).to.equal(model.length);
      expect(fifo.peek()).to.equal(model[0]);
      if (step % 9_999 === 0) {
        expect(fifo.drain()).to.deep.equal(model.splice(0));
        expect(fifo.length).to.equal(0);
      }
    }
    while (model.length > 0) expect(fifo.shift()).to.equal(model.shift());
    expect(fifo.shift()).to.equal(undefined);
    expect(fifo.peek()).to.equal(undefined);
  });
});
