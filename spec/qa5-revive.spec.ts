import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis } from "./harness/index.js";

async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A long builtin call (JSON.stringify of a big array) is not interrupted by the time limit:
 * the watchdog ends the worker. The session's isolate was then gone for good, and every later
 * event of its registrations failed with "the isolate is gone" until the proxy restarted.
 */
describe("qa5: a session whose isolate the watchdog ended", () => {
  it("runs its script again in a new isolate, with the same registration ids, and handles the next events", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }], { gearsConfig: { ScriptTimeoutMS: "1000" } });
    const client = new Redis(proxy.port);
    try {
      const script = `GB().foreach(x => {
        if (x.key === 'j:stuck') JSON.stringify(new Array(2e6).fill({a: [1, 2, 3]}));
        execute('SET', 'last', x.key);
      }).register('j:*')`;
      expect(await client.call("RG.EXECUTE", script, "ID", "stuck")).to.equal("OK");
      const ids = async (): Promise<string[]> =>
        ((await client.call("RG.DUMPREGISTRATIONS")) as unknown[][]).map((r) => String(r[1]));
      const before = await ids();
      await client.set("j:1", "v");
      await eventually("j:1 handled", async () => (await client.get("last")) === "j:1");
      await client.set("j:stuck", "v");
      // Until the watchdog has ended it, and after: each event is tried once more.
      await eventually(
        "a later event handled",
        async () => {
          await client.set("j:after", "v");
          return (await client.get("last")) === "j:after";
        },
        15_000,
      );
      expect(await ids()).to.deep.equal(before);
      // Its counters go on: the events before, the one that failed, and those after.
      const dump = ((await client.call("RG.DUMPREGISTRATIONS")) as unknown[][])[0].flat(3).map(String);
      const field = (name: string): string => dump[dump.indexOf(name) + 1];
      expect(Number(field("numTriggered")), dump.join(" ")).to.be.at.least(3);
      expect(Number(field("numFailures")), dump.join(" ")).to.be.at.least(1);
      expect(field("lastError"), dump.join(" ")).to.not.equal("");
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });

  it("a timer whose tick the watchdog ended goes on ticking in the new isolate", async () => {
    const redis = await startRedis();
    const proxy = await startProxy([{ port: redis.port }], { gearsConfig: { ScriptTimeoutMS: "1000" } });
    const client = new Redis(proxy.port);
    try {
      const script = `registerTimeEvent(0.2, () => {
        const n = execute('INCR', 'ticks');
        if (n == 2) JSON.stringify(new Array(2e6).fill({a: [1, 2, 3]}));
      })`;
      expect(await client.call("RG.EXECUTE", script, "ID", "stucktimer")).to.equal("OK");
      await eventually(
        "ticks past the stuck one",
        async () => Number(await client.get("ticks")) >= 6,
        20_000,
      );
    } finally {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    }
  });
});
