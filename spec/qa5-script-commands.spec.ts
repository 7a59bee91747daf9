import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis } from "./harness/index.js";

const LIBRARY = `#!js api_version=1.0 name=repl
redis.registerFunction('call', (c, ...argv) => { try { return String(c.call(...argv)); } catch (e) { return e.message; } });`;

/**
 * A script's command goes on a shared upstream connection. SYNC (or PSYNC) there made Redis
 * turn that connection into a replication link: the RDB came as the "reply", the proxy
 * dropped the connection ("upstream connection lost"), and the commands of other clients
 * pipelined on it failed with it.
 */
describe("qa5: scripts may not turn a shared connection into something else", () => {
  it("execute() and client.call() refuse SYNC, PSYNC, REPLCONF, READONLY, READWRITE and ASKING; other clients see nothing", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const client = new Redis(proxy.port);
    const other = new Redis(proxy.port);
    try {
      await other.set("k", "v");
      expect(await client.call("TFUNCTION", "LOAD", LIBRARY)).to.equal("OK");
      const commands = [
        ["SYNC"],
        ["PSYNC", "?", "-1"],
        ["REPLCONF", "listening-port", "1"],
        ["READONLY"],
        ["READWRITE"],
        ["ASKING"],
        // Redis closes a connection whose line starts as an HTTP request.
        ["POST", "/"],
        ["HOST:", "x"],
        // A debugger session on whatever shared connection the next EVAL takes.
        ["SCRIPT", "DEBUG", "YES"],
      ];
      for (const argv of commands) {
        const name = argv[0].toLowerCase();
        // Another client's reads in flight on the shared connections meanwhile.
        const reads = Array.from({ length: 200 }, () => other.get("k"));
        const args = argv.map((a) => `'${a}'`).join(", ");
        const script = `GB('ShardsIDReader').map(() => { try { return execute(${args}) } catch (e) { return e.message } }).run()`;
        expect(await client.call("RG.EXECUTE", script)).to.deep.equal([
          [`ERR '${name}' cannot be called from a gears script`],
          [],
        ]);
        expect(await client.call("TFCALL", "repl.call", "0", ...argv)).to.equal(
          `ERR command '${name}' is not allowed on script mode`,
        );
        expect(await Promise.all(reads)).to.deep.equal(Array.from({ length: 200 }, () => "v"));
      }
    } finally {
      client.disconnect();
      other.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });
});
