import { expect } from "chai";
import { startProxy, startRedis, type RedisNode } from "./harness/index.js";
import { RawClient, type Reply } from "./support/raw-client.js";

// MONITOR shows each command in its client's database. Commands that run the same in every
// database (TIME, PING, SCRIPT EXISTS...) used to go without a SELECT in front, in whatever
// database the shared connection was left in by another client.

/** Commands of a client in db 9 and one in db 0, one at a time; what MONITOR shows of them. */
async function monitored(port: number): Promise<string[]> {
  const [monitor, nine, zero] = await Promise.all([1, 2, 3].map(() => RawClient.connect(port)));
  try {
    expect(await monitor.call("MONITOR")).to.equal("OK");
    expect(await nine.call("SELECT", "9")).to.equal("OK");
    const steps: [RawClient, string[]][] = [
      [zero, ["GET", "qa:zero"]],
      [nine, ["TIME"]],
      [zero, ["GET", "qa:zero"]],
      [nine, ["PING"]],
      [zero, ["GET", "qa:zero"]],
      [nine, ["LASTSAVE"]],
      [nine, ["GET", "qa:nine"]],
      [zero, ["GET", "qa:zero"]],
      [nine, ["SCRIPT", "EXISTS", "qa"]],
      [nine, ["COMMAND", "COUNT"]],
      [zero, ["PING"]],
      [zero, ["GET", "qa:end"]],
    ];
    for (const [client, command] of steps) await client.call(...command);
    const lines: string[] = [];
    for (;;) {
      const line: Reply = await monitor.next();
      const m = /^\d+\.\d+ \[(\d+) [^\]]+\] (.*)$/.exec(String(line));
      // The proxy's own keys (the gears engine's) are not the clients' commands.
      if (m === null || m[2].includes("{gears-proxy}")) continue;
      lines.push(`${m[1]} ${m[2]}`);
      if (m[2] === '"GET" "qa:end"') return lines;
    }
  } finally {
    for (const c of [monitor, nine, zero]) c.close();
  }
}

describe("qa: MONITOR shows the client's database", function () {
  this.timeout(60_000);
  let server: RedisNode;
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await server?.stop();
  });

  it("for commands that run in any database too, as Redis shows them", async () => {
    const direct = await monitored(server.port);
    expect(direct).to.include('9 "TIME"');
    // One shared connection: the clients of both databases take it in turn.
    const proxy = await startProxy([{ port: server.port }], { upstreamConnections: 1 });
    try {
      expect(await monitored(proxy.port)).to.deep.equal(direct);
    } finally {
      await proxy.close();
    }
  });
});
