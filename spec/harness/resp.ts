import net from "node:net";
import tls from "node:tls";

/** An error reply (`-ERR ...`) from the server. */
export class RespError extends Error {
  override name = "RespError";
}

/** A decoded RESP2 reply. Error replies are thrown as RespError, never returned. */
export type RespValue = string | number | null | RespValue[];

type Parsed = { value: RespValue | RespError; next: number } | undefined;

export function encodeCommand(args: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(arg);
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

/** Parses one reply starting at `offset`; undefined when the buffer does not hold a whole reply yet. */
export function parseReply(buf: Buffer, offset = 0): Parsed {
  const lineEnd = buf.indexOf("\r\n", offset);
  if (lineEnd < 0) return undefined;
  const line = buf.toString("utf8", offset + 1, lineEnd);
  const next = lineEnd + 2;
  switch (String.fromCharCode(buf[offset])) {
    case "+":
      return { value: line, next };
    case "-":
      return { value: new RespError(line), next };
    case ":":
      return { value: Number(line), next };
    case "$": {
      const len = Number(line);
      if (len < 0) return { value: null, next };
      if (buf.length < next + len + 2) return undefined;
      return { value: buf.toString("utf8", next, next + len), next: next + len + 2 };
    }
    case "*": {
      const count = Number(line);
      if (count < 0) return { value: null, next };
      const items: RespValue[] = [];
      let pos = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, pos);
        if (item === undefined) return undefined;
        if (item.value instanceof RespError) throw item.value;
        items.push(item.value);
        pos = item.next;
      }
      return { value: items, next: pos };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(String.fromCharCode(buf[offset]))}`);
  }
}

export interface CommandOptions {
  host?: string;
  password?: string;
  timeoutMs?: number;
  /** Connect over TLS with these settings. */
  tls?: tls.ConnectionOptions;
}

/**
 * Opens a connection, optionally AUTHs, sends one command, and resolves its reply.
 * Rejects on connection errors, timeouts, and error replies (as RespError).
 */
export function sendCommand(
  port: number,
  args: readonly string[],
  opts: CommandOptions = {},
): Promise<RespValue> {
  const commands = opts.password !== undefined ? [["AUTH", opts.password], args] : [args];
  return new Promise((resolve, reject) => {
    const host = opts.host ?? "127.0.0.1";
    const socket = opts.tls ? tls.connect({ ...opts.tls, port, host }) : net.connect({ port, host });
    let buf = Buffer.alloc(0);
    const replies: RespValue[] = [];
    const fail = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    socket.setTimeout(opts.timeoutMs ?? 2000, () =>
      fail(new Error(`timeout waiting for reply to ${args[0]}`)),
    );
    socket.once("error", fail);
    socket.once("close", () => reject(new Error(`connection to port ${port} closed before a reply`)));
    socket.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      try {
        let parsed = parseReply(buf);
        while (parsed !== undefined) {
          if (parsed.value instanceof RespError) return fail(parsed.value);
          replies.push(parsed.value);
          buf = buf.subarray(parsed.next);
          parsed = replies.length < commands.length ? parseReply(buf) : undefined;
        }
      } catch (err) {
        return fail(err instanceof Error ? err : new Error(String(err)));
      }
      if (replies.length === commands.length) {
        socket.destroy();
        resolve(replies[replies.length - 1]);
      }
    });
    socket.write(Buffer.concat(commands.map(encodeCommand)));
  });
}
