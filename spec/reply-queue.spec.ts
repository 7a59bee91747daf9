import { expect } from "chai";
import type { OutputBuffer } from "../src/io/output-buffer.js";
import { RequestParser, type Request } from "../src/resp/request-parser.js";
import type { Pipe, ReplySink } from "../src/routing/lease.js";
import { ServerPause } from "../src/routing/pause.js";
import { ReplyQueue, type QueueOwner } from "../src/client/reply-queue.js";
import { RequestRuns } from "../src/client/request-runs.js";

// Unit specs of the client's reply queue, request runs and the pause window: modules
// that hold no socket of their own, fed here with what a session would feed them.

class Written {
  readonly chunks: string[] = [];
  ended = false;
  flushes = 0;
  push(chunk: Buffer): void {
    this.chunks.push(chunk.toString());
  }
}

function queue(): { q: ReplyQueue; out: Written } {
  const out = new Written();
  const owner: QueueOwner = {
    countOut: () => {},
    meter: () => {},
    endAfterWrite: () => {
      out.ended = true;
    },
    flushed: () => {
      out.flushes++;
    },
    replyArrived: () => {},
  };
  return { q: new ReplyQueue(out as unknown as OutputBuffer, owner, false), out };
}

describe("ReplyQueue", () => {
  it("writes replies in request order whatever order they arrive in", () => {
    const { q, out } = queue();
    const a = q.appendAwaited();
    const b = q.appendAwaited();
    q.appendNow(Buffer.from("c"));
    expect(q.inFlight).to.equal(2);
    b.reply(Buffer.from("b"));
    expect(out.chunks).to.deep.equal([]);
    a.reply(Buffer.from("a"));
    expect(out.chunks).to.deep.equal(["a", "b", "c"]);
    expect(q.inFlight).to.equal(0);
    expect(q.empty).to.equal(true);
  });

  it("places a pushed frame after the last slot that matches, and first when none does", () => {
    const { q, out } = queue();
    const a = q.appendAwaited();
    const b = q.appendAwaited();
    q.insertPushed(Buffer.from("after-a"), (s) => s === a);
    q.insertPushed(Buffer.from("first"), () => false);
    expect(out.chunks).to.deep.equal(["first"]);
    b.reply(Buffer.from("b"));
    a.reply(Buffer.from("a"));
    expect(out.chunks).to.deep.equal(["first", "a", "after-a", "b"]);
  });

  it("keeps silent replies out, and ends after a closing reply without writing what follows", () => {
    const { q, out } = queue();
    const quiet = q.append();
    quiet.silent = true;
    q.appendNow(Buffer.from("x"), quiet);
    const last = q.append();
    last.closeAfter = true;
    const late = q.appendAwaited();
    q.appendNow(Buffer.from("bye"), last);
    late.reply(Buffer.from("never"));
    expect(out.chunks).to.deep.equal(["bye"]);
    expect(out.ended).to.equal(true);
  });

  it("counts the bytes held behind a reply still awaited", () => {
    const { q } = queue();
    q.appendAwaited();
    q.appendNow(Buffer.from("12345"));
    expect(q.held()).to.equal(5);
  });
});

class Recorder implements Pipe {
  readonly sent: { payload: string; sinks: number; db?: number }[] = [];
  send(payload: Buffer, _sink: ReplySink, db?: number): void {
    this.sent.push({ payload: payload.toString(), sinks: 1, db });
  }
  sendMany(payload: Buffer, sinks: readonly ReplySink[], db?: number): void {
    this.sent.push({ payload: payload.toString(), sinks: sinks.length, db });
  }
}

/** GET commands in RESP, one after another in one buffer, as a client pipelines them. */
const get = (key: string): string => `*2\r\n$3\r\nGET\r\n$${key.length}\r\n${key}\r\n`;

function requests(text: string): Request[] {
  const parser = new RequestParser({ maxBulkLen: 1 << 20, maxArgs: 1024 });
  parser.push(Buffer.from(text));
  const out: Request[] = [];
  for (let r = parser.next(); r !== null; r = parser.next()) out.push(r);
  return out;
}

describe("RequestRuns", () => {
  const sink: ReplySink = { reply() {}, fail() {} };

  it("sends back-to-back requests for one connection as one slice", () => {
    const pipe = new Recorder();
    const runs = new RequestRuns();
    for (const r of requests(get("a") + get("b") + get("c"))) runs.add(pipe, r, sink, 0);
    expect(pipe.sent).to.deep.equal([]);
    runs.flush();
    expect(pipe.sent).to.deep.equal([{ payload: get("a") + get("b") + get("c"), sinks: 3, db: 0 }]);
  });

  it("starts a new run for another connection or database", () => {
    const one = new Recorder();
    const two = new Recorder();
    const runs = new RequestRuns();
    const [a, b, c] = requests(get("a") + get("b") + get("c"));
    runs.add(one, a, sink, 0);
    runs.add(two, b, sink, 0);
    runs.add(two, c, sink, 1);
    runs.flush();
    expect(one.sent).to.deep.equal([{ payload: get("a"), sinks: 1, db: 0 }]);
    expect(two.sent).to.deep.equal([
      { payload: get("b"), sinks: 1, db: 0 },
      { payload: get("c"), sinks: 1, db: 1 },
    ]);
  });
});

describe("ServerPause", () => {
  const argv = (...words: string[]): Buffer[] => words.map((w) => Buffer.from(w));

  it("is on from a CLIENT PAUSE until CLIENT UNPAUSE", () => {
    const pause = new ServerPause();
    expect(pause.active).to.equal(false);
    pause.note(argv("CLIENT", "PAUSE", "60000", "WRITE"));
    expect(pause.active).to.equal(true);
    pause.note(argv("CLIENT", "UNPAUSE"));
    expect(pause.active).to.equal(false);
  });

  it("ends by itself once its time is over, and ignores a malformed timeout", () => {
    const pause = new ServerPause();
    pause.note(argv("CLIENT", "PAUSE", "0"));
    expect(pause.active).to.equal(false);
    pause.note(argv("CLIENT", "PAUSE", "soon"));
    expect(pause.active).to.equal(false);
  });
});
