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
