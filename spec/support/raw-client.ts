import net from "node:net";
import { eventually } from "./polling.js";

// A binary-safe RESP2 client that keeps bulk strings as Buffers, shared by the client specs.

export class ReplyError extends Error {
  override name = "ReplyError";
}

export type Reply = string | Buffer | number | null | ReplyError | Reply[];
/** A reply with bulk strings decoded as UTF-8 (what the client libraries give for text). */
export type Value = string | number | null | Value[];

type Parsed = { value: Reply; next: number } | { need: number };

export function parseReply(buf: Buffer, pos: number): Parsed {
  const end = buf.indexOf("\r\n", pos);
  if (end < 0) return { need: buf.length + 1 };
  const line = buf.toString("utf8", pos + 1, end);
  const next = end + 2;
  switch (buf[pos]) {
    case 0x2b /* + */:
      return { value: line, next };
    case 0x2d /* - */:
      return { value: new ReplyError(line), next };
    case 0x3a /* : */:
      return { value: Number(line), next };
    case 0x24 /* $ */: {
      const len = Number(line);
      if (len < 0) return { value: null, next };
      if (buf.length < next + len + 2) return { need: next + len + 2 };
      return { value: Buffer.from(buf.subarray(next, next + len)), next: next + len + 2 };
    }
    case 0x2a /* * */: {
      const count = Number(line);
      if (count < 0) return { value: null, next };
      const items: Reply[] = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, at);
        if ("need" in item) return item;
        items.push(item.value);
        at = item.next;
      }
      return { value: items, next: at };
    }
    default:
      throw new Error(`unexpected RESP type byte 0x${buf[pos].toString(16)} at ${pos}`);
  }
}

export function encode(args: readonly (string | Buffer)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = typeof arg === "string" ? Buffer.from(arg) : arg;
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

export function encodeBulk(s: string): Buffer {
  return Buffer.from(`$${Buffer.byteLength(s)}\r\n${s}\r\n`);
}

export function toText(reply: Reply): Value {
  if (reply instanceof ReplyError) throw reply;
  if (Buffer.isBuffer(reply)) return reply.toString("utf8");
  if (Array.isArray(reply)) return reply.map(toText);
  return reply;
}

/** A TCP connection to 127.0.0.1:port, resolved once connected. */
export function connectSocket(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(socket);
    });
  });
}

export class RawClient {
  private pending: Buffer[] = [];
  private pendingSize = 0;
  private need = 0;
  private readonly replies: Reply[] = [];
  private waiter: (() => void) | null = null;
  private readonly received: Buffer[] = [];
  readonly closed: Promise<void>;
  isClosed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await connectSocket(port));
  }

  /** Every byte received so far. */
  bytes(): Buffer {
    return Buffer.concat(this.received);
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  private onData(chunk: Buffer): void {
    this.received.push(chunk);
    this.pending.push(chunk);
    this.pendingSize += chunk.length;
    if (this.pendingSize < this.need) return;
    let buf = Buffer.concat(this.pending);
    let pos = 0;
    while (pos < buf.length) {
      const parsed = parseReply(buf, pos);
      if ("need" in parsed) {
        this.need = parsed.need - pos;
        break;
      }
      this.replies.push(parsed.value);
      pos = parsed.next;
      this.need = 0;
    }
    buf = buf.subarray(pos);
    this.pending = buf.length > 0 ? [buf] : [];
    this.pendingSize = buf.length;
    if (this.replies.length > 0) this.wake();
  }

  write(data: Buffer | string): void {
    this.socket.write(data);
  }

  send(...args: (string | Buffer)[]): void {
    this.socket.write(encode(args));
  }

  async next(timeoutMs = 5000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.isClosed) throw new Error("connection closed before a reply");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no reply within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.replies.shift() as Reply;
  }

  async call(...args: (string | Buffer)[]): Promise<Reply> {
    this.send(...args);
    return this.next();
  }

  async text(...args: string[]): Promise<Value> {
    return toText(await this.call(...args));
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Everything a raw connection receives, as text: for specs that compare exact bytes and order. */
export class ReceivedText {
  text = "";
  constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => (this.text += chunk.toString("latin1")));
  }

  static async open(port: number): Promise<ReceivedText> {
    return new ReceivedText(await connectSocket(port));
  }

  /** Sends the commands in one write and waits until `bytes` more have come. */
  async exchange(commands: string[][], bytes: number): Promise<string> {
    const start = this.text.length;
    this.socket.write(Buffer.concat(commands.map((c) => encode(c))));
    return this.wait(start, bytes, `${bytes} bytes of replies to ${commands.map((c) => c[0]).join(", ")}`);
  }

  /** Waits until `bytes` have come since `start`. */
  async wait(start: number, bytes: number, what = `${bytes} bytes`): Promise<string> {
    await eventually(
      async () => this.text.length - start,
      (n) => n >= bytes,
      what,
    );
    return this.text.slice(start);
  }
}

/**
 * A raw connection in MONITOR mode, collecting the lines it receives. Not ioredis' `monitor()`:
 * it marks the connection "monitoring" a microtask after MONITOR's +OK, so a busy server's first
 * line, read in the same chunk as the +OK, fails with "Command queue state error".
 */
export async function startRawMonitor(port: number): Promise<{ lines: string[]; close(): void }> {
  const socket = await connectSocket(port);
  const lines: string[] = [];
  let pending = "";
  socket.on("data", (chunk: Buffer) => {
    pending += chunk.toString("latin1");
    const parts = pending.split("\r\n");
    pending = parts.pop() ?? "";
    lines.push(...parts);
  });
  socket.write(encode(["MONITOR"]));
  await eventually(
    async () => lines[0],
    (first) => first === "+OK",
    "MONITOR's OK",
  );
  return { lines, close: () => socket.destroy() };
}
