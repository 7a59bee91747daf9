import { expect } from "chai";
import { execFile } from "node:child_process";
import { createClient } from "redis";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";

type NodeRedis = ReturnType<typeof createClient>;

/** Wrong and odd arguments to RG.* and TFUNCTION/TFCALL, as a user's node-redis 6 sends them. */
describe("qa5: arguments of the gears commands", () => {
  let redis: RedisNode;
  let proxy: RunningProxy;
  let client: NodeRedis;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
    client = createClient({ socket: { port: proxy.port, host: "127.0.0.1" } });
    await client.connect();
  });

  after(async () => {
    await client.quit();
    await proxy.close();
    await redis.stop();
  });

  async function error(argv: string[]): Promise<string> {
    try {
      const reply = await client.sendCommand(argv);
      throw new Error(`no error: ${JSON.stringify(reply)}`);
    } catch (e) {
      return (e as Error).message;
    }
  }

  it("RG.DUMPSESSIONS: unknown options are refused, unknown sessions answered by name (RedisGears 1.2)", async () => {
    expect(
      await client.sendCommand(["RG.EXECUTE", "GB('CommandReader').register({trigger: 't1'})", "ID", "s1"]),
    ).to.equal("OK");
    expect(await error(["RG.DUMPSESSIONS", "VERBOSEE"])).to.equal("Unknown option VERBOSEE");
    expect(await error(["RG.PYDUMPSESSIONS", "s1"])).to.equal("Unknown option s1");
    const named = (await client.sendCommand(["RG.DUMPSESSIONS", "SESSIONS", "nope", "s1"])) as unknown[];
    expect(named).to.have.length(2);
    expect(named[0]).to.equal("Session nope does not exists");
    expect((named[1] as unknown[]).slice(0, 2)).to.deep.equal(["ID", "s1"]);
    const verbose = (await client.sendCommand(["RG.DUMPSESSIONS", "DEAD", "VERBOSE"])) as unknown[][];
    expect(verbose.map((s) => s[1])).to.deep.equal(["s1"]);
    expect((verbose[0][5] as unknown[][])[0].slice(2)).to.deep.equal(["reader", "CommandReader"]);
  });
});

describe("qa5: register() options that cannot work are refused (redis-cli)", () => {
  let redis: RedisNode;
  let proxy: RunningProxy;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
  });

  after(async () => {
    await proxy.close();
    await redis.stop();
  });

  const cli = (...args: string[]): Promise<string> =>
    new Promise((resolve) =>
      execFile("redis-cli", ["-p", String(proxy.port), ...args], { timeout: 5000 }, (_err, stdout) =>
        resolve(stdout.trim()),
      ),
    );

  it("answers RedisGears' errors, and registers nothing", async () => {
    const cases: [string, string][] = [
      // A string for a list: it registered for every event.
      ["GB().register('x:*', {eventTypes: 'set'})", "ERR eventTypes argument must be a list"],
      ["GB().register('x:*', {keyTypes: 'hash'})", "ERR keyTypes argument must be a list"],
      ["GB().register('x:*', {keyTypes: ['hash', 'bogus']})", "ERR unknown key type"],
      ["GB('CommandReader').register({})", "ERR no trigger or hook argument was given"],
      ["GB('CommandReader').register({trigger: 5})", "ERR trigger argument is not string"],
      [
        "GB('CommandReader').register({trigger: 't', hook: 'set'})",
        "ERR trigger argument can not be given with keyprefix or hook",
      ],
    ];
    for (const [script, error] of cases) expect(await cli("RG.EXECUTE", script), script).to.equal(error);
    expect(await cli("RG.DUMPREGISTRATIONS")).to.equal("");
    expect(
      await cli("RG.EXECUTE", "GB().register('x:*', {eventTypes: ['set'], keyTypes: ['string', 'empty']})"),
    ).to.equal("OK");
  });
});
