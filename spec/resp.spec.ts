import { expect } from "chai";
import { inProtocol } from "../src/resp/convert.js";
import { decodeReply } from "../src/resp/decode.js";
import { encodeCommand, encodeValue } from "../src/resp/encode.js";
import { commandName, ProtocolError, RequestParser, splitInlineArgs } from "../src/resp/request-parser.js";
import { findCrlf } from "../src/resp/byte-queue.js";
import { ReplyScanner } from "../src/resp/reply-scanner.js";
import { RespError } from "../src/resp/values.js";
import { isControl } from "../src/routing/control.js";

const LIMITS = { maxBulkLen: 512 * 1024 * 1024, maxArgs: 1024 * 1024 };

function parseAll(parser: RequestParser): string[][] {
  const out: string[][] = [];
  for (let r = parser.next(); r !== null; r = parser.next()) out.push(r.argv.map((a) => a.toString()));
  return out;
}

function parseAllNames(parser: RequestParser): string[] {
  const out: string[] = [];
  for (let r = parser.next(); r !== null; r = parser.next()) out.push(r.name);
  return out;
}

function protocolError(input: string | Buffer, authenticated = true): string {
  const parser = new RequestParser(LIMITS);
  parser.authenticated = authenticated;
  parser.push(Buffer.from(input));
  try {
    parseAll(parser);
  } catch (err) {
    if (err instanceof ProtocolError) return err.message;
    throw err;
  }
  return "no error";
}

describe("request parser", () => {
  it("parses pipelined RESP arrays and keeps their raw bytes", () => {
    const parser = new RequestParser(LIMITS);
    const a = encodeCommand(["SET", "k", "v"]);
    const b = encodeCommand(["GET", "k"]);
    parser.push(Buffer.concat([a, b]));
    const first = parser.next()!;
    expect(first.argv.map(String)).to.deep.equal(["SET", "k", "v"]);
    expect(first.raw!.equals(a)).to.equal(true);
    expect(parser.next()!.raw!.equals(b)).to.equal(true);
    expect(parser.next()).to.equal(null);
  });

  it("argHash reads each argument where it lies, for RESP arrays (pipelined) and inline commands alike", () => {
    const parser = new RequestParser(LIMITS);
    const args = ["MSET", "", "a-long-key-".repeat(20), Buffer.from([0, 13, 10, 36]), "x".repeat(10), "{t}k"];
    parser.push(Buffer.concat([encodeCommand(["PING"]), encodeCommand(args), Buffer.from("GET key\r\n")]));
    const text = (buf: Uint8Array, start: number, end: number): string =>
      Buffer.from(buf.subarray(start, end)).toString("latin1");
    const lengthOf = (_: Uint8Array, start: number, end: number): number => end - start;
    expect(parser.next()!.argHash(0, lengthOf)).to.equal(4);
    const request = parser.next()!;
    for (let i = 0; i < args.length; i++) {
      expect(request.argHash(i, text), `argument ${i}`).to.equal(Buffer.from(args[i]).toString("latin1"));
    }
    const inline = parser.next()!;
    expect(inline.argHash(1, text)).to.equal("key");
    expect(inline.argHash(0, lengthOf)).to.equal(3);
  });

  it("commonHash: the hash every key shares (every stride-th argument from the first), -1 when two differ", () => {
    const parser = new RequestParser(LIMITS);
    const lengthOf = (_: Uint8Array, start: number, end: number): number => end - start;
    const commands = [
      ["MSET", "aa", "x", "bb", "yyy", "cc", "z"],
      ["MSET", "aa", "x", "bbb", "y"],
      ["MGET", "k1", "k2", "k3"],
      ["MGET", "k1", "k22"],
    ];
    parser.push(Buffer.concat([...commands.map((c) => encodeCommand(c)), Buffer.from("MGET ab cd\r\n")]));
    const hashes = [2, 1, 1, 1, 1].map((stride) => parser.next()!.commonHash(1, stride, lengthOf));
    expect(hashes).to.deep.equal([2, -1, 2, -1, 2]);
  });

  it("reassembles a request split at every byte", () => {
    const bytes = encodeCommand(["SET", Buffer.from([0, 13, 10, 255]), "value"]);
    const parser = new RequestParser(LIMITS);
    const seen: Buffer[][] = [];
    for (const byte of bytes) {
      parser.push(Buffer.from([byte]));
      const r = parser.next();
      if (r) seen.push(r.argv);
    }
    expect(seen).to.have.length(1);
    expect(seen[0][1].equals(Buffer.from([0, 13, 10, 255]))).to.equal(true);
  });

  it("collects a 10 MB argument arriving in 64 KB chunks", () => {
    const value = Buffer.alloc(10 * 1024 * 1024, 7);
    const bytes = encodeCommand(["SET", "big", value]);
    const parser = new RequestParser(LIMITS);
    let got = null;
    for (let i = 0; i < bytes.length; i += 65536) {
      parser.push(bytes.subarray(i, i + 65536));
      got = parser.next() ?? got;
    }
    expect(got!.argv[2].equals(value)).to.equal(true);
  });

  it("parses inline commands with quotes and escapes", () => {
    const parser = new RequestParser(LIMITS);
    parser.push(Buffer.from('PING\r\nSET "a b" \'it\\\'s\' "\\x41\\n"\n\r\n'));
    expect(parseAll(parser)).to.deep.equal([["PING"], ["SET", "a b", "it's", "A\n"]]);
    expect(splitInlineArgs(Buffer.from('"unbalanced'))).to.equal(null);
  });

  it("skips empty arrays as Redis does", () => {
    const parser = new RequestParser(LIMITS);
    parser.push(Buffer.from("*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n"));
    expect(parseAll(parser)).to.deep.equal([["PING"]]);
  });

  it("reports malformed input with Redis' own messages", () => {
    expect(protocolError("*1\r\n$-5\r\n")).to.equal("invalid bulk length");
    expect(protocolError("*1\r\n$1000000000\r\n")).to.equal("invalid bulk length");
    expect(protocolError("*x\r\n")).to.equal("invalid multibulk length");
    expect(protocolError("*1\r\n+PING\r\n")).to.equal("expected '$', got '+'");
    expect(protocolError("*1\r\n$" + "9".repeat(70000))).to.equal("too big bulk count string");
    expect(protocolError("*" + "1".repeat(70000))).to.equal("too big mbulk count string");
    expect(protocolError("A".repeat(100 * 1024))).to.equal("too big inline request");
    expect(protocolError('SET "a\r\n')).to.equal("unbalanced quotes in request");
  });

  it("refuses counts with leading zeros, '-0' or a sign, as Redis' string2ll does", () => {
    expect(protocolError("*01\r\n$4\r\nPING\r\n")).to.equal("invalid multibulk length");
    expect(protocolError("*00\r\n")).to.equal("invalid multibulk length");
    expect(protocolError("*-0\r\n")).to.equal("invalid multibulk length");
    expect(protocolError("*1\r\n$04\r\nPING\r\n")).to.equal("invalid bulk length");
    expect(protocolError("*1\r\n$-0\r\n")).to.equal("invalid bulk length");
    expect(protocolError("*1\r\n$+4\r\nPING\r\n")).to.equal("invalid bulk length");
    expect(protocolError("*1\r\n$0\r\n\r\n*-3\r\n*10\r\n")).to.equal("no error");
  });

  it("hands out lazily split arguments equal to the bytes sent, whatever the chunking", () => {
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const commands: Buffer[][] = [];
    for (let i = 0; i < 300; i++) {
      const argc = 1 + random(5);
      const argv: Buffer[] = [];
      for (let j = 0; j < argc; j++) {
        const len = random(4) === 0 ? random(3000) : random(20);
        argv.push(Buffer.from(Array.from({ length: len }, () => random(256))));
      }
      commands.push(argv);
    }
    const encoded = commands.map((argv) => encodeCommand(argv));
    const stream = Buffer.concat(encoded);
    const parser = new RequestParser(LIMITS);
    const got: { argv: Buffer[]; raw: Buffer | null }[] = [];
    for (let at = 0; at < stream.length;) {
      const size = 1 + random(random(2) === 0 ? 10 : 5000);
      parser.push(stream.subarray(at, at + size));
      at += size;
      // Arguments are read only after later input arrived: views must stay valid.
      for (let r = parser.next(); r !== null; r = parser.next()) got.push(r);
    }
    expect(got).to.have.length(commands.length);
    got.forEach((r, i) => {
      expect(r.argv.length, `request ${i}`).to.equal(commands[i].length);
      r.argv.forEach((a, j) => expect(a.equals(commands[i][j]), `request ${i} argument ${j}`).to.equal(true));
      expect(r.raw!.equals(encoded[i]), `raw bytes of request ${i}`).to.equal(true);
    });
  });

  it("names commands in lower case, the same string for any spelling", () => {
    const parser = new RequestParser(LIMITS);
    parser.push(Buffer.from("*1\r\n$3\r\nGET\r\n*1\r\n$3\r\ngEt\r\nget\r\n*1\r\n$2\r\nrG\r\n"));
    const names = parseAllNames(parser);
    expect(names).to.deep.equal(["get", "get", "get", "rg"]);
    const long = "X".repeat(40);
    expect(commandName(Buffer.from(long), 0, 40)).to.equal(long.toLowerCase());
    // Latin-1 letters lower-case like String.toLowerCase, with or without the cache.
    for (let i = 0; i < 2; i++) expect(commandName(Buffer.from([0x41, 0xc0]), 0, 2)).to.equal("a\u00e0");
    expect(commandName(Buffer.from([0x61, 0xe0]), 0, 2)).to.equal("a\u00e0");
    expect(commandName(Buffer.from("xxSETyy"), 2, 5)).to.equal("set");
    expect(commandName(Buffer.alloc(0), 0, 0)).to.equal("");
  });

  it("accepts only small requests before authentication", () => {
    expect(protocolError("*11\r\n", false)).to.equal("invalid multibulk length");
    expect(protocolError("*1\r\n$20000\r\n", false)).to.equal("invalid bulk length");
    expect(protocolError("*11\r\n", true)).to.equal("no error");
    // The limit itself, by either path of readArguments (whole argument, or header first).
    expect(protocolError(`*1\r\n$16384\r\n${"x".repeat(16384)}\r\n`, false)).to.equal("no error");
    expect(protocolError(`*1\r\n$16385\r\n${"x".repeat(16385)}\r\n`, false)).to.equal("invalid bulk length");
    expect(protocolError("*1\r\n$16385\r\n", false)).to.equal("invalid bulk length");
    expect(protocolError("*2\r\n$1\r\nx\r\n$1000000000000000\r\n", true)).to.equal("invalid bulk length");
  });
});

describe("findCrlf", () => {
  it("finds the first CRLF before `end`, near or far, and never in spare capacity", () => {
    for (const at of [0, 1, 5, 31, 32, 33, 40, 100, 5000]) {
      const buf = Buffer.alloc(at + 10, 120);
      buf[at] = 13;
      buf[at + 1] = 10;
      expect(findCrlf(buf, 0, buf.length), `CRLF at ${at}`).to.equal(at);
      // The LF lies past `end`: not there yet.
      expect(findCrlf(buf, 0, at + 1), `CRLF at ${at} cut`).to.equal(-1);
      expect(findCrlf(buf, at + 1, buf.length)).to.equal(-1);
    }
    const lone = Buffer.from("ab\rcd\r\r\nxx");
    expect(findCrlf(lone, 0, lone.length)).to.equal(6);
    const far = Buffer.concat([Buffer.from("\r".repeat(50)), Buffer.from("\r\n")]);
    expect(findCrlf(far, 0, far.length)).to.equal(50);
  });
});

describe("reply scanner", () => {
  const replies = [
    "+OK\r\n",
    "-ERR bad\r\n",
    ":42\r\n",
    "$-1\r\n",
    "*-1\r\n",
    "$5\r\nhe\r\no\r\n",
    "*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n*0\r\n",
    "%1\r\n+k\r\n*1\r\n_\r\n",
    ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
    // Runs of bulk strings (skipped by skipBulks) broken by nulls, empties, nesting and maps.
    "*6\r\n$0\r\n\r\n$-1\r\n$3\r\nabc\r\n*2\r\n$1\r\nx\r\n$2\r\nyz\r\n$12\r\n$1\r\n$2\r\nabcd\r\n:7\r\n",
    "%2\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n*1\r\n$1\r\nd\r\n",
    "*2\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n*1\r\n$3\r\n\r\n$\r\n",
  ];

  it("cuts a stream into whole replies, whatever the chunking", () => {
    const stream = Buffer.from(replies.join(""));
    for (const step of [1, 2, 3, 7, stream.length]) {
      const scanner = new ReplyScanner();
      const got: string[] = [];
      for (let i = 0; i < stream.length; i += step) {
        scanner.push(stream.subarray(i, i + step));
        for (let r = scanner.next(); r !== null; r = scanner.next()) got.push(r.toString());
      }
      expect(got, `step ${step}`).to.deep.equal(replies);
    }
  });

  it("never counts bytes in the queue's spare capacity, even when they look like bulk strings", () => {
    const scanner = new ReplyScanner();
    scanner.push(Buffer.from("*2\r\n$1\r\na"));
    scanner.push(Buffer.from("\r\n"));
    // What a grown buffer's spare capacity may hold: the bytes the second element would be.
    const q = scanner.input;
    expect(q.buf.length - q.end).to.be.greaterThan(16);
    q.buf.write("$1\r\nb\r\n", q.end, "latin1");
    expect(scanner.next()).to.equal(null);
    scanner.push(Buffer.from("$1\r\nc\r\n"));
    expect(scanner.next()?.toString()).to.equal("*2\r\n$1\r\na\r\n$1\r\nc\r\n");
  });

  it("resumes inside a large array instead of rescanning it", () => {
    const items = Array.from({ length: 100000 }, (_, i) => `$${String(i).length}\r\n${i}\r\n`).join("");
    const stream = Buffer.from(`*100000\r\n${items}`);
    const scanner = new ReplyScanner();
    let whole: Buffer | null = null;
    for (let i = 0; i < stream.length; i += 1000) {
      scanner.push(stream.subarray(i, i + 1000));
      whole = scanner.next() ?? whole;
    }
    expect(whole!.length).to.equal(stream.length);
  });
});

describe("reply decoding and encoding", () => {
  it("round-trips nested values", () => {
    const value = [Buffer.from("a"), 1, null, [Buffer.from("b"), "OK"], new RespError("ERR x")];
    const decoded = decodeReply(encodeValue(value));
    expect(encodeValue(decoded).toString()).to.equal(encodeValue(value).toString());
  });
});

describe("inProtocol: replies built in RESP2, passed on in the client's protocol", () => {
  const bytes = (text: string): Buffer => Buffer.from(text);

  it("leaves RESP2 clients' replies and null-free replies as they are (the same buffer)", () => {
    const withNull = bytes("*2\r\n$1\r\na\r\n$-1\r\n");
    expect(inProtocol(withNull, 2)).to.equal(withNull);
    const plain = bytes("*2\r\n$1\r\na\r\n:3\r\n");
    expect(inProtocol(plain, 3)).to.equal(plain);
  });

  it("turns RESP2 nulls into RESP3's one null, at any depth, and keeps errors", () => {
    expect(inProtocol(bytes("$-1\r\n"), 3).toString()).to.equal("_\r\n");
    expect(inProtocol(bytes("*-1\r\n"), 3).toString()).to.equal("_\r\n");
    expect(inProtocol(bytes("*3\r\n$1\r\na\r\n$-1\r\n*1\r\n$-1\r\n"), 3).toString()).to.equal(
      "*3\r\n$1\r\na\r\n_\r\n*1\r\n_\r\n",
    );
    expect(inProtocol(bytes("-ERR no\r\n"), 3).toString()).to.equal("-ERR no\r\n");
  });

  it("re-encodes exactly when a bulk string merely contains the text of a null", () => {
    const tricky = bytes("*1\r\n$5\r\n$-1\r\n\r\n");
    expect(inProtocol(tricky, 3).toString()).to.equal(tricky.toString());
  });
});

describe("isControl: the commands that go on a node's control connection", () => {
  const argv = (...words: string[]): Buffer[] => words.map((w) => Buffer.from(w));

  it("SCRIPT KILL, FUNCTION KILL and CLIENT PAUSE/UNPAUSE, in any case; nothing else", () => {
    expect(isControl("script", argv("SCRIPT", "KILL"))).to.equal(true);
    expect(isControl("function", argv("function", "Kill"))).to.equal(true);
    expect(isControl("client", argv("CLIENT", "PAUSE", "100", "WRITE"))).to.equal(true);
    expect(isControl("client", argv("CLIENT", "unpause"))).to.equal(true);
    expect(isControl("script", argv("SCRIPT", "LOAD", "return 1"))).to.equal(false);
    expect(isControl("script", argv("SCRIPT", "KILL", "extra"))).to.equal(false);
    expect(isControl("eval", argv("EVAL", "kill", "0"))).to.equal(false);
    expect(isControl("script", argv("SCRIPT"))).to.equal(false);
  });
});
