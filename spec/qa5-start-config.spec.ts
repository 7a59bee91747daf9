import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { Redis } from "ioredis";
import { parseArgs } from "../src/cli.js";
import { startProxy, startRedis } from "./harness/index.js";

const CLI = path.join(fileURLToPath(new URL("../../", import.meta.url)), "dist/src/cli.js");

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

describe("qa5: --gears-config is checked as the command line is read", () => {
  // A bad value was found only once an upstream answered: with the upstream down, the proxy
  // waited for it, then stopped.
  it("a bad setting stops the proxy at once, before it looks for an upstream, with the setting's error", async () => {
    const run = (setting: string): Promise<{ code: number | null; stderr: string; ms: number }> =>
      new Promise((resolve) => {
        const started = Date.now();
        execFile(
          process.execPath,
          [CLI, "--port", "0", "--upstream", "127.0.0.1:1", "--gears-config", setting],
          { timeout: 10_000 },
          (err, _stdout, stderr) =>
            resolve({
              code: err === null ? 0 : ((err as { code?: number }).code ?? null),
              stderr,
              ms: Date.now() - started,
            }),
        );
      });
    const cases: [string, string][] = [
      ["ScriptTimeoutMS=abc", "Failed setting config value ScriptTimeoutMS"],
      ["redisgears_2.lock-redis-timeout=5", "argument must be between 100 and 1000000000 inclusive"],
      [
        "redisgears_2.nosuch=1",
        "Unknown option or number of arguments for CONFIG SET - 'redisgears_2.nosuch'",
      ],
    ];
    for (const [setting, error] of cases) {
      const { code, stderr, ms } = await run(setting);
      expect(code, setting).to.equal(2);
      expect(stderr, setting).to.contain(`--gears-config: ${setting}: `).and.to.contain(error);
      expect(ms, setting).to.be.below(5000);
    }
    expect(
      parseArgs(["--gears-config", "ExecutionThreads=2", "--gears-config", "Custom=x"]).gearsConfig,
    ).to.deep.equal({
      ExecutionThreads: "2",
      Custom: "x",
    });
  });

  // 5000 MB was taken, and then every RG.EXECUTE failed with "WebAssembly.Memory(): Property
  // 'maximum': value 80000 is above the upper bound 65536"; 3000000000 ms made every step time
  // out at once (a timer past 2^31-1 ms fires at once).
  it("RG.CONFIGSET refuses ScriptMemoryLimitMB above 2048 and ScriptTimeoutMS above 1,000,000,000, and scripts still run", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }]);
    const client = new Redis(proxy.port);
    try {
      const set = async (name: string, value: string): Promise<string> =>
        String(((await client.call("RG.CONFIGSET", name, value)) as unknown[])[0]);
      expect(await set("ScriptMemoryLimitMB", "5000")).to.contain(
        "Failed setting config value ScriptMemoryLimitMB",
      );
      expect(await set("ScriptTimeoutMS", "3000000000")).to.contain(
        "Failed setting config value ScriptTimeoutMS",
      );
      expect(await set("ScriptMemoryLimitMB", "2048")).to.equal("OK");
      expect(await set("ScriptTimeoutMS", "1000000000")).to.equal("OK");
      expect(await client.call("RG.EXECUTE", "GB('ShardsIDReader').map(() => 'ran').run()")).to.deep.equal([
        ["ran"],
        [],
      ]);
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });
});
