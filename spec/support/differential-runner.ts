import net from "node:net";
import { connectSocket, encode } from "./raw-client.js";
import type { Burst, GenCommand, Norm } from "./command-generator.js";

// Runs a generated sequence (spec/support/command-generator.ts) on raw connections and records
// every reply's bytes, normalised only where two Redis servers legitimately differ, so that a
// run against Redis and a run through the proxy compare entry by entry.

/** One RESP2/RESP3 frame: its bytes, its first line, and its elements when it is an aggregate. */
interface Frame {
  type: number;
  raw: Buffer;
  header: Buffer;
  children: Frame[] | null;
}

/** The frame at `pos`, or null when `buf` does not hold all of it yet. */
function parseFrame(buf: Buffer, pos: number): { frame: Frame; next: number } | null {
  const end = buf.indexOf("\r\n", pos);
  if (end < 0) return null;
  const type = buf[pos];
  const headerEnd = end + 2;
  const header = buf.subarray(pos, headerEnd);
  const line = buf.toString("latin1", pos + 1, end);
  const simple = (next: number): { frame: Frame; next: number } => ({
    frame: { type, raw: buf.subarray(pos, next), header, children: null },
    next,
  });
  switch (type) {
    case 0x24 /* $ */:
    case 0x21 /* ! */:
    case 0x3d /* = */: {
      const len = Number(line);
      if (len < 0) return simple(headerEnd);
      if (buf.length < headerEnd + len + 2) return null;
      return simple(headerEnd + len + 2);
    }
    case 0x2a /* * */:
    case 0x7e /* ~ */:
    case 0x3e /* > */:
    case 0x25 /* % */:
    case 0x7c /* | */: {
      const count = Number(line) * (type === 0x25 || type === 0x7c ? 2 : 1);
      if (count < 0) return simple(headerEnd);
      const children: Frame[] = [];
      let at = headerEnd;
      for (let i = 0; i < count; i++) {
        const item = parseFrame(buf, at);
        if (item === null) return null;
        children.push(item.frame);
        at = item.next;
      }
      return { frame: { type, raw: buf.subarray(pos, at), header, children }, next: at };
    }
    default:
      return simple(headerEnd);
  }
}

function rebuild(frame: Frame, children: Frame[]): Frame {
  return { ...frame, children, raw: Buffer.concat([frame.header, ...children.map((c) => c.raw)]) };
}

function byRaw(a: Frame, b: Frame): number {
  return Buffer.compare(a.raw, b.raw);
}

/** The frame with its legitimately varying parts made equal (see Norm). */
export function normalise(frame: Frame, norm: Norm | undefined): Frame {
  if (norm === undefined || frame.children === null) {
    if (
      norm === "positive" &&
      frame.type === 0x3a &&
      Number(frame.raw.toString("latin1", 1, frame.raw.length - 2)) > 0
    )
      return { ...frame, raw: Buffer.from(":POSITIVE\r\n") };
    return frame;
  }
  if (norm === "sort") return rebuild(frame, [...frame.children].sort(byRaw));
  if (norm === "deep") return deepSorted(frame);
  if (norm === "pairs")
    // RESP3 HRANDFIELD/ZRANDMEMBER with values: an array of [field, value] arrays.
    return rebuild(
      frame,
      frame.children.every((c) => c.children !== null)
        ? [...frame.children].sort(byRaw)
        : sortPairs(frame.children),
    );
  if (typeof norm === "object" && frame.type === 0x2a) {
    const items = norm.exec;
    return rebuild(
      frame,
      frame.children.map((c, i) => normalise(c, items[i])),
    );
  }
  return frame;
}

/** Every aggregate's elements sorted, innermost first; a RESP3 map's (or set's) as pairs. */
function deepSorted(frame: Frame): Frame {
  if (frame.children === null) return frame;
  const children = frame.children.map(deepSorted);
  return rebuild(frame, frame.type === 0x25 ? sortPairs(children) : children.sort(byRaw));
}

function sortPairs(items: Frame[]): Frame[] {
  const pairs: Frame[][] = [];
  for (let i = 0; i + 1 < items.length; i += 2) pairs.push([items[i], items[i + 1]]);
  pairs.sort((a, b) => byRaw(a[0], b[0]) || byRaw(a[1], b[1]));
  return pairs.flat();
}

/** One raw connection: frames as they come, pushes apart. */
class Conn {
  private buf: Buffer = Buffer.alloc(0);
  readonly frames: Frame[] = [];
  readonly pushes: Frame[] = [];
  closed = false;
  private waiter: (() => void) | null = null;

  constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      let pos = 0;
      for (;;) {
        const parsed = parseFrame(this.buf, pos);
        if (parsed === null) break;
        (parsed.frame.type === 0x3e ? this.pushes : this.frames).push(parsed.frame);
        pos = parsed.next;
      }
      // Copy what is kept: the frames hold slices of the old buffer.
      this.buf = Buffer.from(this.buf.subarray(pos));
      this.wake();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Whether the server closes the connection within `timeoutMs`. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    return this.closed;
  }

  /** The next frame; null when the connection closed or nothing came within `timeoutMs`. */
  async take(timeoutMs: number): Promise<Frame | "closed" | "timeout"> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.closed) return "closed";
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.frames.shift() as Frame;
  }
}

export interface RunOptions {
  /** How long a reply may take. */
  replyTimeoutMs?: number;
}

/** The bytes of one request. */
function requestBytes(c: GenCommand, argv: Buffer[] = c.argv): Buffer {
  return c.inline !== undefined && argv === c.argv ? Buffer.from(`${c.inline}\r\n`) : encode(argv);
}

/** What the client saw, as text: HELLO's id and a cluster's `mode` made equal. */
function text(frame: Frame | string): string {
  if (typeof frame === "string") return `<${frame}>`;
  return frame.raw
    .toString("latin1")
    .replace(/\$2\r\nid\r\n:\d+\r\n/g, "$2\r\nid\r\n:ID\r\n")
    .replaceAll("$4\r\nmode\r\n$7\r\ncluster\r\n", "$4\r\nmode\r\n$10\r\nstandalone\r\n");
}

/** A SCAN-family command run to cursor 0: what came, sorted (in pairs for HSCAN/ZSCAN). */
async function scanAll(conn: Conn, c: GenCommand, timeoutMs: number): Promise<string> {
  const scan = c.scan as NonNullable<GenCommand["scan"]>;
  const argv = [...c.argv];
  const items: Frame[] = [];
  for (let round = 0; round < 10_000; round++) {
    conn.socket.write(encode(argv));
    const reply = await conn.take(timeoutMs);
    if (typeof reply === "string" || reply.children === null || reply.children.length !== 2)
      return text(reply);
    const [cursor, page] = reply.children;
    items.push(...(page.children ?? []));
    const next = cursor.raw.toString("latin1").split("\r\n")[1];
    if (next === "0") {
      const sorted = scan.pairs ? sortPairs(items) : [...items].sort(byRaw);
      // A hash or set that shrank between pages may repeat an element: SCAN guarantees only "at least once".
      return `scan(${sorted.length}): ${dedupe(
        sorted.map((f) => f.raw.toString("latin1")),
        scan.pairs,
      ).join("")}`;
    }
    argv[scan.cursorAt] = Buffer.from(next);
  }
  return "<scan did not end>";
}

function dedupe(items: string[], pairs: boolean): string[] {
  const step = pairs ? 2 : 1;
  const out: string[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < items.length; i += step) {
    const key = items.slice(i, i + step).join("");
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(key);
  }
  return out;
}

/** One entry per command (and per unasked push): "burst.command conn: reply". */
export async function runSequence(
  port: number,
  bursts: Burst[],
  options: RunOptions = {},
): Promise<string[]> {
  const timeoutMs = options.replyTimeoutMs ?? 5000;
  const conns = new Map<string, Conn>();
  const out: string[] = [];
  try {
    for (let b = 0; b < bursts.length; b++) {
      const burst = bursts[b];
      let conn = conns.get(burst.conn);
      if (conn === undefined || conn.closed) {
        conn = new Conn(await connectSocket(port));
        conns.set(burst.conn, conn);
      }
      const first = burst.commands[0];
      if (first.scan !== undefined) {
        out.push(`${b}.0 ${burst.conn}: ${await scanAll(conn, first, timeoutMs)}`);
        continue;
      }
      conn.socket.write(Buffer.concat(burst.commands.map((c) => requestBytes(c))));
      let protocolError = false;
      for (let i = 0; i < burst.commands.length; i++) {
        const reply = await conn.take(timeoutMs);
        const shown =
          typeof reply === "string" ? text(reply) : text(normalise(reply, burst.commands[i].norm));
        out.push(`${b}.${i} ${burst.conn}: ${shown}`);
        if (reply === "closed" || reply === "timeout") break;
        if (reply.raw.toString("latin1", 0, 19) === "-ERR Protocol error") protocolError = true;
      }
      // Redis closes the connection after a protocol error: wait for it, so that the next
      // burst on this connection name opens a new one on both sides, whichever closes sooner.
      if (protocolError)
        out.push(`${b} ${burst.conn}: ${(await conn.closedWithin(2000)) ? "<closed>" : "<left open>"}`);
      if (conn.pushes.length > 0)
        out.push(`${b} ${burst.conn} pushes: ${conn.pushes.splice(0).map(text).join("")}`);
    }
  } finally {
    for (const c of conns.values()) c.socket.destroy();
  }
  return out;
}

const CONFIG_DEFAULTS = [
  "hash-max-listpack-entries",
  "128",
  "set-max-intset-entries",
  "512",
  "zset-max-listpack-entries",
  "128",
  "list-max-listpack-size",
  "-2",
  "maxmemory-policy",
  "noeviction",
];

/** Everything a run leaves behind, removed (data in every database, scripts, functions). */
export async function resetServer(port: number): Promise<void> {
  const conn = new Conn(await connectSocket(port));
  try {
    conn.socket.write(
      Buffer.concat([
        encode(["FLUSHALL"]),
        encode(["SCRIPT", "FLUSH"]),
        encode(["FUNCTION", "FLUSH"]),
        encode(["ACL", "LOG", "RESET"]),
        // The settings a sequence may change (CONFIG SET in the generator), back to Redis' defaults.
        encode(["CONFIG", "SET", ...CONFIG_DEFAULTS]),
      ]),
    );
    for (let i = 0; i < 5; i++) {
      const reply = await conn.take(10_000);
      // Redis 6 has no functions, nor these settings (the sweep runs there too): only FLUSHALL must succeed.
      if (typeof reply === "string" || (reply.type !== 0x2b && i === 0))
        throw new Error(`reset of port ${port}: ${typeof reply === "string" ? reply : reply.raw.toString()}`);
    }
  } finally {
    conn.socket.destroy();
  }
}

export interface Divergence {
  index: number;
  direct: string;
  proxy: string;
}

/** The first entry where the two runs differ, or null. */
export function firstDivergence(direct: string[], proxy: string[]): Divergence | null {
  const n = Math.max(direct.length, proxy.length);
  for (let i = 0; i < n; i++)
    if (direct[i] !== proxy[i])
      return { index: i, direct: direct[i] ?? "<nothing>", proxy: proxy[i] ?? "<nothing>" };
  return null;
}

/** An entry shortened for a report. */
export function shorten(entry: string, max = 400): string {
  const json = JSON.stringify(entry);
  return json.length <= max ? json : `${json.slice(0, max)}... (${json.length} chars)`;
}
