import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis } from "./harness/index.js";

describe("qa5: gears settings given at start", () => {
  // RedisGears took ExecutionThreads as a module argument only; --gears-config is the proxy's
  // module arguments, and it refused it as "not modifiable at runtime", so the proxy did not start.
  it("--gears-config ExecutionThreads=1 is taken at start; RG.CONFIGSET still refuses it afterwards", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }], { gearsConfig: { ExecutionThreads: "1" } });
    const client = new Redis(proxy.port);
    try {
      expect(await client.call("RG.CONFIGGET", "ExecutionThreads")).to.deep.equal([1]);
      const set = (await client.call("RG.CONFIGSET", "ExecutionThreads", "4")) as unknown[];
      expect(String(set[0])).to.contain("Config value ExecutionThreads not modifiable at runtime");
      // One execution at a time: the second waits as "created" while the first runs.
      const slow =
        "GB('ShardsIDReader').map(() => { const t = Date.now(); while (Date.now() - t < 1500) {} return 1 }).run()";
      const first = String(await client.call("RG.EXECUTE", slow, "UNBLOCKING"));
      const second = String(await client.call("RG.EXECUTE", slow, "UNBLOCKING"));
      await new Promise((r) => setTimeout(r, 300));
      const plan = (await client.call("RG.GETEXECUTION", second)) as unknown[][];
      const fields = plan[0][3] as unknown[];
      expect(fields[fields.indexOf("status") + 1]).to.equal("created");
      await client.call("RG.GETRESULTSBLOCKING", first);
      await client.call("RG.GETRESULTSBLOCKING", second);
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });
});
