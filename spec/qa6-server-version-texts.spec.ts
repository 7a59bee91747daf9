import { execFileSync } from "node:child_process";
import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { RawClient, ReplyError, type Reply } from "./support/raw-client.js";

// What the proxy answers itself reads as the server behind it would: SELECT's, SCRIPT DEBUG's
// and CLIENT's argument errors changed at Redis 6.2 (SELECT x: 'value is not an integer or out
// of range', SCRIPT DEBUG: YES/SYNC/NO, CLIENT's subcommand errors end with a period) and at 7.0
// (CLIENT's subcommand table: 'client|<sub>'). Runs against each server whose binary is here:
// redis6-server (6.0), a Redis 6.2 (GEARS_PROXY_REDIS62=<path to redis-server 6.2>, or
// redis62-server on PATH; built from redis/redis's 6.2.16 tag with `make MALLOC=libc`), and
// redis-server (7.0).

const COMMANDS: string[][] = [
  ["SELECT", "x"],
  ["SELECT", "99"],
  ["SCRIPT", "DEBUG", "bogus"],
  ["CLIENT", "SETNAME"],
  ["CLIENT", "SETNAME", "a", "b"],
  ["CLIENT", "GETNAME", "x"],
  ["CLIENT", "ID", "x"],
  ["CLIENT", "KILL"],
  ["CLIENT", "UNBLOCK"],
  ["CLIENT", "UNBLOCK", "1", "2", "3"],
  ["CLIENT", "REPLY"],
  ["CLIENT", "LIST", "x"],
  ["CLIENT", "PAUSE"],
  ["CLIENT", "TRACKING"],
  ["CLIENT", "CACHING"],
  ["CLIENT", "GETREDIR", "x"],
  ["CLIENT", "INFO", "x"],
  ["CLIENT", "TRACKINGINFO", "x"],
  ["CLIENT", "BOGUS"],
  ["CLIENT"],
];

const shown = (r: Reply): unknown =>
  r instanceof ReplyError ? `-${r.message}` : Buffer.isBuffer(r) ? r.toString() : r;

/** Whether `binary --version` runs. */
function runs(binary: string): boolean {
  try {
    execFileSync(binary, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const SERVERS: [label: string, binary: string][] = [
  ["Redis 6.0", "redis6-server"],
  ["Redis 6.2", process.env.GEARS_PROXY_REDIS62 ?? "redis62-server"],
  ["Redis 7.0", "redis-server"],
];

for (const [label, binary] of SERVERS) {
  describe(`qa6: the proxy's own argument errors in ${label}'s words`, function () {
    this.timeout(60_000);
    let server: RedisNode;
    let proxy: RunningProxy;
    const clients: RawClient[] = [];

    before(async function () {
      if (!runs(binary)) return this.skip();
      server = await startRedis({ binary });
      proxy = await startProxy([{ port: server.port }]);
    });
    after(async () => {
      for (const c of clients.splice(0)) c.close();
      await proxy?.close();
      await server?.stop();
    });

    it("every reply as the server's own", async () => {
      const direct = await RawClient.connect(server.port);
      const through = await RawClient.connect(proxy.port);
      clients.push(direct, through);
      for (const command of COMMANDS) {
        const want = shown(await direct.call(...command));
        expect(shown(await through.call(...command)), command.join(" ")).to.equal(want);
      }
    });
  });
}
