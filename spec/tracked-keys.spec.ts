import net from "node:net";
import { expect } from "chai";
import { decodeReply } from "../src/resp/decode.js";
import { encodeCommand } from "../src/resp/encode.js";
import { ReplyScanner } from "../src/resp/reply-scanner.js";
import { CommandTable } from "../src/routing/command-table.js";
import { ScriptCache } from "../src/routing/script-cache.js";
import { readKeys, writtenKeys } from "../src/routing/tracked-keys.js";
import { startRedis, type RedisNode } from "./harness/index.js";

// Which keys client-side caching remembers for a command (what Redis tracks for its caller),
// and which a command may change, from a real server's COMMAND table.

/** The server's COMMAND reply, decoded as the proxy decodes it. */
async function commandTable(port: number): Promise<CommandTable> {
  const socket = net.connect({ host: "127.0.0.1", port });
  const scanner = new ReplyScanner();
  try {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      socket.on("data", (chunk: Buffer) => {
        scanner.push(chunk);
        const frame = scanner.next();
        if (frame !== null) resolve(Buffer.from(frame));
      });
      socket.once("error", reject);
      socket.write(encodeCommand(["COMMAND"]));
    });
    return new CommandTable(decodeReply(reply));
  } finally {
    socket.destroy();
  }
}

describe("tracked keys: what a command reads and writes, for client-side caching", () => {
  let server: RedisNode;
  let table: CommandTable;
  const scripts = new ScriptCache();
  const argv = (...args: string[]): Buffer[] => args.map((a) => Buffer.from(a));
  const reads = (...args: string[]): string[] =>
    readKeys(table, scripts, args[0].toLowerCase(), argv(...args)).map(String);
  const writes = (...args: string[]): string[] =>
    writtenKeys(table, args[0].toLowerCase(), argv(...args)).map(String);

  before(async () => {
    server = await startRedis();
    table = await commandTable(server.port);
  });

  after(async () => {
    await server?.stop();
  });

  it("read-only commands read their keys; writes read none, even those that return a value", () => {
    expect(reads("GET", "k")).to.deep.equal(["k"]);
    expect(reads("MGET", "a", "b")).to.deep.equal(["a", "b"]);
    expect(reads("HGETALL", "h")).to.deep.equal(["h"]);
    expect(reads("SET", "k", "v")).to.deep.equal([]);
    expect(reads("INCR", "k")).to.deep.equal([]);
    expect(reads("PING")).to.deep.equal([]);
  });

  it("a script's declared keys are read when its body names a read-only command or a call it cannot name", () => {
    expect(reads("EVAL", "return redis.call('get', KEYS[1])", "1", "k")).to.deep.equal(["k"]);
    expect(reads("EVAL", "return redis.pcall(\"GeT\", 'x')", "2", "a", "b")).to.deep.equal(["a", "b"]);
    expect(reads("EVAL", "local c = ARGV[1]; return redis.call(c, KEYS[1])", "1", "k")).to.deep.equal(["k"]);
    expect(reads("EVAL", "redis.call('set', 'key3', 'bar')", "2", "a", "b")).to.deep.equal([]);
    expect(reads("EVAL_RO", "redis.call('ping')", "1", "a")).to.deep.equal([]);
    // EVALSHA of a body the proxy has not seen, and FCALL: counted as reads.
    expect(reads("EVALSHA", "0".repeat(40), "1", "k")).to.deep.equal(["k"]);
    expect(reads("FCALL", "f", "1", "k")).to.deep.equal(["k"]);
    const sha = scripts.remember(Buffer.from("return redis.call('del', KEYS[1])"));
    expect(reads("EVALSHA", sha, "1", "k")).to.deep.equal([]);
  });

  it("writes change their keys; scripts may change their declared keys; reads change none", () => {
    expect(writes("SET", "k", "v")).to.deep.equal(["k"]);
    expect(writes("MSET", "a", "1", "b", "2")).to.deep.equal(["a", "b"]);
    expect(writes("DEL", "a", "b")).to.deep.equal(["a", "b"]);
    expect(writes("EVAL", "return 1", "1", "k")).to.deep.equal(["k"]);
    expect(writes("GET", "k")).to.deep.equal([]);
  });
});
