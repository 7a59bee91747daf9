import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis } from "./harness/index.js";

async function dumpText(port: number, script: string): Promise<string> {
  const client = new Redis(port);
  try {
    expect(await client.call("RG.EXECUTE", script)).to.equal("OK");
    return JSON.stringify(await client.call("RG.DUMPREGISTRATIONS"));
  } finally {
    client.disconnect();
  }
}

describe("gears: keyspace notifications that cannot be enabled", () => {
  it("says so in RG.DUMPREGISTRATIONS when CONFIG is refused, and not otherwise", async () => {
    const locked = await startRedis({ args: ["--rename-command", "CONFIG", ""] });
    const open = await startRedis();
    const lockedProxy = await startProxy([{ port: locked.port }]);
    const openProxy = await startProxy([{ port: open.port }]);
    try {
      const script = "GB().foreach(x => execute('INCR', 'n')).register('k:*')";
      expect(await dumpText(lockedProxy.port, script)).to.contain("keyspaceNotifications");
      expect(await dumpText(openProxy.port, script)).not.to.contain("keyspaceNotifications");
    } finally {
      await lockedProxy.close();
      await openProxy.close();
      await locked.stop();
      await open.stop();
    }
  });
});
