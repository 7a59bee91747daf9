import type net from "node:net";
import { expect } from "chai";
import { startProxy, startRedis, type RedisNode } from "./harness/index.js";
import { connectSocket, encode, RawClient, ReplyError, type Reply } from "./support/raw-client.js";
import { eventually } from "./support/polling.js";

// Redis lets MULTI through while a script keeps it busy. A client in another database than
// its transaction's fresh upstream connection used to get BUSY for MULTI, from the SELECT the
// proxy put in front of it (Redis's unit/multi "MULTI and script timeout").

const BUSY = /^BUSY /;

/** A reply as a comparable value: errors by their text. */
const shown = (r: Reply): unknown => (r instanceof ReplyError ? `-${r.message}` : r);

describe("qa: MULTI in a non-zero database while a script keeps the server busy", function () {
  this.timeout(60_000);
  let server: RedisNode;
  const clients: RawClient[] = [];
  const open = async (port: number): Promise<RawClient> => {
    const c = await RawClient.connect(port);
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await startRedis({ args: ["--busy-reply-threshold", "50"] });
  });
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    await server?.stop();
  });

  /** unit/multi's "MULTI and script timeout", from db 9: every reply, and the key after. */
  async function scriptTimeout(port: number): Promise<unknown[]> {
    const direct = await open(server.port);
    expect(await direct.call("FLUSHALL")).to.equal("OK");
    expect(await direct.call("SELECT", "9")).to.equal("OK");
    expect(await direct.call("SET", "xx", "1")).to.equal("OK");
    const r2 = await open(port);
    const out: unknown[] = [shown(await r2.call("SELECT", "9"))];
    const runner = await open(server.port);
    runner.send("EVAL", "while true do end", "0");
    await eventually(
      () => direct.call("PING"),
      (r) => r instanceof ReplyError && BUSY.test(r.message),
      "the server answers BUSY",
    );
    out.push(shown(await r2.call("MULTI")));
    out.push(shown(await r2.call("INCR", "xx")));
    expect(await direct.call("SCRIPT", "KILL")).to.equal("OK");
    await runner.next();
    out.push(shown(await r2.call("INCR", "xx")));
    out.push(shown(await r2.call("EXEC")));
    out.push(shown(await r2.call("PING", "asdf")));
    out.push(shown(await r2.call("GET", "xx")));
    return out;
  }

  it("the same replies as Redis: MULTI accepted, the INCR refused, EXEC aborted, nothing run", async () => {
    const expected = await scriptTimeout(server.port);
    expect(expected[1]).to.equal("OK");
    const proxy = await startProxy([{ port: server.port }]);
    try {
      expect(await scriptTimeout(proxy.port)).to.deep.equal(expected);
    } finally {
      await proxy.close();
    }
  });

  /** Everything a connection receives for commands sent in one write, as text. */
  async function pipelined(port: number, commands: string[][], bytes: number): Promise<string> {
    const socket: net.Socket = await connectSocket(port);
    let text = "";
    socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
    try {
      socket.write(Buffer.concat(commands.map((c) => encode(c))));
      await eventually(
        async () => text.length,
        (n) => n >= bytes,
        `${bytes} bytes`,
      );
      return text;
    } finally {
      socket.destroy();
    }
  }

  it("transactions in db 5 and 7, with a SELECT inside, DISCARD and commands pipelined behind EXEC: the same bytes", async () => {
    const commands = [
      ["SELECT", "5"],
      ["MULTI"],
      ["SET", "q", "1"],
      ["SELECT", "6"],
      ["SET", "q", "2"],
      ["EXEC"],
      ["GET", "q"],
      ["SELECT", "7"],
      ["MULTI"],
      ["SET", "w", "1"],
      ["EXEC"],
      ["GET", "w"],
      ["MULTI"],
      ["SET", "w", "2"],
      ["DISCARD"],
      ["GET", "w"],
      ["SELECT", "5"],
      ["GET", "q"],
    ];
    const direct = await open(server.port);
    expect(await direct.call("FLUSHALL")).to.equal("OK");
    const expected =
      "+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n+OK\r\n+OK\r\n$1\r\n2\r\n" +
      "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n$1\r\n1\r\n+OK\r\n+QUEUED\r\n+OK\r\n$1\r\n1\r\n+OK\r\n$1\r\n1\r\n";
    expect(await pipelined(server.port, commands, expected.length)).to.equal(expected);
    expect(await direct.call("FLUSHALL")).to.equal("OK");
    const proxy = await startProxy([{ port: server.port }]);
    try {
      expect(await pipelined(proxy.port, commands, expected.length)).to.equal(expected);
    } finally {
      await proxy.close();
    }
  });
});
