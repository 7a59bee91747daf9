/**
 * The commands the proxy answers itself (CLIENT, SLOWLOG, RESET, MONITOR, AUTH...) refuse bad
 * arguments as the server does: the server's arity for each command and subcommand, its
 * unknown-subcommand error, CLIENT LIST's filters, and for CLIENT subcommands the server does
 * not have (or HELP), the server's own reply. Each case runs on Redis directly and
 * through the proxy, and the replies must be the same.
 */
import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { RawClient, ReplyError, type Reply } from "./support/raw-client.js";

const CASES = [
  ["CLIENT", "ID", "x"],
  ["CLIENT", "GETNAME", "x"],
  ["CLIENT", "INFO", "x"],
  ["CLIENT", "SETNAME"],
  ["CLIENT", "REPLY"],
  ["CLIENT", "HELP", "x"],
  ["CLIENT", "NO-EVICT"],
  ["CLIENT", "LIST", "TYPE", "foo"],
  ["CLIENT", "LIST", "TYPE"],
  ["CLIENT", "LIST", "TYPE", "replica"],
  ["CLIENT", "LIST", "TYPE", "normal", "x"],
  ["CLIENT", "LIST", "ID"],
  ["CLIENT", "LIST", "ID", "abc"],
  ["CLIENT", "LIST", "ID", "1.5"],
  ["CLIENT", "LIST", "ID", "1", "2", "x"],
  ["CLIENT", "LIST", "ID", "999999"],
  ["CLIENT", "LIST", "ID", "9223372036854775808"],
  ["CLIENT", "LIST", "ID", "-0"],
  ["CLIENT", "NOSUCH"],
  ["CLIENT"],
  ["RESET", "x"],
  ["MONITOR", "x"],
  ["AUTH", "a", "b", "c"],
  ["SLOWLOG"],
  ["SLOWLOG", "LEN", "x"],
  ["SLOWLOG", "RESET", "x"],
  ["SLOWLOG", "NOSUCH"],
  ["SHUTDOWN", "nosuchoption"],
  ["READONLY", "x"],
  ["ECHO"],
  ["PING", "a", "b"],
  ["SELECT", "1", "2"],
];

/** A reply as comparable text: errors by message. */
function shown(reply: Reply): string {
  return reply instanceof ReplyError ? `error: ${reply.message}` : JSON.stringify(reply);
}

describe("commands the proxy answers itself refuse bad arguments as the server does", function () {
  this.timeout(30_000);
  let redis: RedisNode;
  let proxy: RunningProxy;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
  });
  after(async () => {
    await proxy?.close();
    await redis?.stop();
  });

  it("gives Redis' reply to each bad argument list", async () => {
    const direct = await RawClient.connect(redis.port);
    const through = await RawClient.connect(proxy.port);
    try {
      for (const argv of CASES) {
        expect(shown(await through.call(...argv)), argv.join(" ")).to.equal(
          shown(await direct.call(...argv)),
        );
      }
    } finally {
      direct.close();
      through.close();
    }
  });

  it("checks a command's arity before authentication, and inside MULTI aborts the transaction, as Redis orders its checks", async () => {
    const locked = await startProxy([{ port: redis.port }], { requirepass: "pw" });
    // A command that reaches the server: the proxy has the server's command table by then.
    const warm = await RawClient.connect(locked.port);
    expect(shown(await warm.call("AUTH", "pw"))).to.equal('"OK"');
    expect(shown(await warm.call("GET", "k"))).to.equal("null");
    warm.close();
    const anonymous = await RawClient.connect(locked.port);
    const direct = await RawClient.connect(redis.port);
    const through = await RawClient.connect(proxy.port);
    try {
      // The same before AUTH on a server with a password of its own.
      const lockedRedis = await startRedis({ password: "pw" });
      const lockedDirect = await RawClient.connect(lockedRedis.port);
      try {
        for (const argv of [
          ["PING", "a", "b"],
          ["GET"],
          ["GET", "k"],
          ["SLOWLOG", "LEN", "x"],
          ["CLIENT", "ID", "x"],
        ])
          expect(shown(await anonymous.call(...argv)), argv.join(" ")).to.equal(
            shown(await lockedDirect.call(...argv)),
          );
      } finally {
        lockedDirect.close();
        await lockedRedis.stop();
      }
      for (const c of [direct, through]) {
        expect(shown(await c.call("MULTI"))).to.equal('"OK"');
        expect(shown(await c.call("SLOWLOG", "LEN", "x"))).to.equal(
          "error: ERR wrong number of arguments for 'slowlog|len' command",
        );
        expect(shown(await c.call("GET"))).to.equal("error: ERR wrong number of arguments for 'get' command");
        expect(shown(await c.call("EXEC"))).to.equal(
          "error: EXECABORT Transaction discarded because of previous errors.",
        );
      }
      // EXEC and DISCARD with the wrong arity inside MULTI: the proxy must stay in step with
      // the server's transaction (a DISCARD x leaves it open and flagged; an EXEC x ends it).
      const steps = [
        ["MULTI"],
        ["SET", "a", "1"],
        ["DISCARD", "x"],
        ["EXEC"],
        ["MULTI"],
        ["EXEC", "x"],
        ["EXEC"],
      ];
      const replies = async (c: RawClient): Promise<string[]> => {
        const out: string[] = [];
        for (const argv of steps) out.push(shown(await c.call(...argv)));
        return out;
      };
      expect(await replies(through)).to.deep.equal(await replies(direct));
    } finally {
      for (const c of [anonymous, direct, through]) c.close();
      await locked.close();
    }
  });

  it("CLIENT HELP is the server's own text", async () => {
    const direct = await RawClient.connect(redis.port);
    const through = await RawClient.connect(proxy.port);
    try {
      const help = await through.call("CLIENT", "HELP");
      expect(Array.isArray(help)).to.equal(true);
      expect(shown(help)).to.equal(shown(await direct.call("CLIENT", "HELP")));
    } finally {
      direct.close();
      through.close();
    }
  });
});
