import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis, type RedisNode } from "./harness/index.js";

async function waitFor<T>(read: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function regIds(dump: unknown): string[] {
  return (dump as unknown[][]).map((entry) => String(entry[1]));
}

describe("gears: command hooks, time events and sessions that survive a restart", function () {
  this.timeout(30_000);
  let redis: RedisNode;
  beforeEach(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    await redis.stop();
  });

  it("a hook on HSET adds a field through callNext, only for its key prefix, and answers as convertToStr says (a string by default)", async () => {
    const proxy = await startProxy([{ port: redis.port }]);
    const c = new Redis(proxy.port);
    try {
      const hook =
        "GB('CommandReader').map(x => callNext(...x.slice(1), 'hooked', getCommand()[0])).register({hook: 'hset', keyprefix: 'h:'})";
      expect(await c.call("RG.EXECUTE", hook)).to.equal("OK");
      // The hook's result is converted to a string like any result (convertToStr), as RedisGears did.
      expect(await c.hset("h:1", "a", "1")).to.equal("2");
      expect(await redis.cli("HGETALL", "h:1")).to.equal("a\n1\nhooked\nhset");
      expect(await c.hset("other", "a", "1")).to.equal(1);
      expect(await redis.cli("HGETALL", "other")).to.equal("a\n1");
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });

  it("a trigger name already registered is refused, in another session or the same one; the first keeps working", async () => {
    const proxy = await startProxy([{ port: redis.port }]);
    const c = new Redis(proxy.port);
    try {
      const reg = "GB('CommandReader').map(x => 'first').register({trigger: 't1'})";
      expect(await c.call("RG.EXECUTE", reg)).to.equal("OK");
      const again = "GB('CommandReader').map(x => 'second').register({trigger: 't1'})";
      const err = await c.call("RG.EXECUTE", again).catch((e: Error) => e);
      expect(String(err)).to.contain("trigger already registered");
      const twice =
        "GB('CommandReader').register({trigger: 't2'}); GB('CommandReader').register({trigger: 't2'})";
      expect(String(await c.call("RG.EXECUTE", twice).catch((e: Error) => e))).to.contain(
        "trigger already registered in this session",
      );
      expect(await c.call("RG.TRIGGER", "t1")).to.deep.equal(["first"]);
      expect(await c.call("RG.DUMPREGISTRATIONS")).to.have.length(1);
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });

  it("a hook that produces no result answers the spec's error", async () => {
    const proxy = await startProxy([{ port: redis.port }]);
    const c = new Redis(proxy.port);
    try {
      await c.call("RG.EXECUTE", "GB('CommandReader').filter(() => false).register({hook: 'set'})");
      const err = await c.set("k", "v").catch((e: Error) => e);
      expect(String(err)).to.contain("Command hook must return exactly one result");
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });

  it("registerTimeEvent runs its callback periodically, and stops once its key is gone", async () => {
    const proxy = await startProxy([{ port: redis.port }]);
    const c = new Redis(proxy.port);
    try {
      await c.set("alive", "1");
      expect(
        await c.call(
          "RG.EXECUTE",
          "registerTimeEvent(0.1, () => execute('INCR', 'ticks')); registerTimeEvent(0.1, () => execute('INCR', 'keyed'), 'alive')",
          "ID",
          "timers",
        ),
      ).to.equal("OK");
      const ticks = await waitFor(
        () => c.get("ticks").then(Number),
        (n) => n >= 3,
      );
      expect(ticks).to.be.at.least(3);
      await waitFor(
        () => c.get("keyed").then(Number),
        (n) => n >= 2,
      );
      await c.del("alive");
      await new Promise((r) => setTimeout(r, 300));
      const stopped = Number(await c.get("keyed"));
      await new Promise((r) => setTimeout(r, 500));
      expect(Number(await c.get("keyed"))).to.equal(stopped);
      expect(Number(await c.get("ticks"))).to.be.greaterThan(ticks);
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });

  it("sessions come back with the same registration ids when a new proxy starts, and events resume", async () => {
    const first = await startProxy([{ port: redis.port }]);
    const a = new Redis(first.port);
    let ids: string[];
    try {
      await a.call(
        "RG.EXECUTE",
        "GB().foreach(x => execute('SADD', 'seen', x.key)).register('r:*')",
        "ID",
        "keep",
      );
      await a.call(
        "RG.EXECUTE",
        "GB('CommandReader').map(x => 'pong').register({trigger: 'ping'})",
        "ID",
        "gone",
      );
      await a.call("RG.UNREGISTER", regIds(await a.call("RG.DUMPREGISTRATIONS"))[1]);
      ids = regIds(await a.call("RG.DUMPREGISTRATIONS"));
      expect(ids).to.have.length(1);
    } finally {
      a.disconnect();
      await first.close();
    }
    const second = await startProxy([{ port: redis.port }]);
    const b = new Redis(second.port);
    try {
      expect(regIds(await b.call("RG.DUMPREGISTRATIONS"))).to.deep.equal(ids);
      const sessions = JSON.stringify(await b.call("RG.DUMPSESSIONS"));
      expect(sessions).to.contain("keep").and.not.contain("gone");
      await b.set("r:1", "x");
      expect(
        await waitFor(
          () => b.sismember("seen", "r:1"),
          (n) => n === 1,
        ),
      ).to.equal(1);
    } finally {
      b.disconnect();
      await second.close();
    }
  });
});
