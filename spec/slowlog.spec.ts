import { expect } from "chai";
import { Redis } from "ioredis";
import { startRedis, startProxy, sendCommand, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually } from "./support/polling.js";
import { RawClient } from "./support/raw-client.js";

describe("SLOWLOG answered by the proxy", function () {
  this.timeout(30_000);
  let redis: RedisNode;
  let proxy: RunningProxy;

  before(async () => {
    redis = await startRedis({ args: ["--enable-debug-command", "yes"] });
    proxy = await startProxy([redis], { slowlogLogSlowerThan: 100_000 });
  });
  after(async () => {
    await proxy.close();
    await redis.stop();
  });

  it("records DEBUG SLEEP 0.2 with Redis's entry layout, and only slow commands", async () => {
    expect(await sendCommand(proxy.port, ["SLOWLOG", "RESET"])).to.equal("OK");
    await sendCommand(proxy.port, ["SET", "fast", "1"]);
    await sendCommand(proxy.port, ["DEBUG", "SLEEP", "0.2"]);
    expect(await sendCommand(proxy.port, ["SLOWLOG", "LEN"])).to.equal(1);
    const entries = (await sendCommand(proxy.port, ["SLOWLOG", "GET"])) as unknown[];
    expect(entries).to.have.length(1);
    const [id, timestamp, duration, argv, addr, name] = entries[0] as [
      number,
      number,
      number,
      Buffer[],
      Buffer,
      Buffer,
    ];
    expect(id).to.be.a("number");
    expect(Math.abs(timestamp - Date.now() / 1000)).to.be.lessThan(5);
    expect(duration).to.be.at.least(200_000).and.below(5_000_000);
    expect(argv.map(String)).to.deep.equal(["DEBUG", "SLEEP", "0.2"]);
    expect(String(addr)).to.match(/^127\.0\.0\.1:\d+$/);
    expect(String(name)).to.equal("");
    expect(await sendCommand(proxy.port, ["SLOWLOG", "RESET"])).to.equal("OK");
    expect(await sendCommand(proxy.port, ["SLOWLOG", "LEN"])).to.equal(0);
  });

  it("logs what EXEC ran, not EXEC; a SLOWLOG RESET in MULTI resets the proxy's log", async () => {
    const everything = await startProxy([redis], { slowlogLogSlowerThan: 0 });
    const waiter = await RawClient.connect(everything.port);
    try {
      waiter.send("BLPOP", "slow:l", "0");
      await eventually(
        async () => String(await sendCommand(redis.port, ["INFO", "clients"])),
        (info) => /blocked_clients:1\r?\n/.test(info),
        "BLPOP waits",
      );
      const c = await RawClient.connect(everything.port);
      try {
        expect(await c.text("MULTI")).to.equal("OK");
        expect(await c.text("LPUSH", "slow:l", "foo")).to.equal("QUEUED");
        expect(await c.text("SLOWLOG", "RESET")).to.equal("QUEUED");
        expect(await c.text("EXEC")).to.deep.equal([1, "OK"]);
      } finally {
        c.close();
      }
      expect(((await waiter.next()) as Buffer[]).map(String)).to.deep.equal(["slow:l", "foo"]);
      const entries = (await sendCommand(everything.port, ["SLOWLOG", "GET"])) as unknown[][];
      expect(entries.map((e) => (e[3] as Buffer[]).map(String).join(" "))[0]).to.equal("BLPOP slow:l 0");
      expect(entries.map((e) => String((e[3] as Buffer[])[0]).toLowerCase())).to.not.include("exec");
    } finally {
      waiter.close();
      await everything.close();
    }
  });

  it("trims arguments as Redis does (every command logged at 0 µs)", async () => {
    const everything = await startProxy([redis], { slowlogLogSlowerThan: 0 });
    try {
      const many = Array.from({ length: 40 }, (_, i) => String(i));
      await sendCommand(everything.port, ["RPUSH", "trim:list", "x".repeat(200), ...many]);
      const entries = (await sendCommand(everything.port, ["SLOWLOG", "GET", "1"])) as unknown[];
      const argv = ((entries[0] as unknown[])[3] as Buffer[]).map(String);
      expect(argv).to.have.length(32);
      expect(argv[2]).to.equal(`${"x".repeat(128)}... (72 more bytes)`);
      expect(argv[31]).to.equal("... (12 more arguments)");
    } finally {
      await everything.close();
    }
  });

  it("shows secrets as (redacted), as Redis does: AUTH, HELLO AUTH, ACL SETUSER, CONFIG SET requirepass", async () => {
    const everything = await startProxy([redis], { slowlogLogSlowerThan: 0 });
    try {
      const run = async (...argv: string[]): Promise<string[]> => {
        await sendCommand(everything.port, argv).catch(() => null);
        const entries = (await sendCommand(everything.port, ["SLOWLOG", "GET", "2"])) as unknown[][];
        // The newest entry is the SLOWLOG GET before this one's; the command is the one before it.
        const own = entries.find((e) => String((e[3] as Buffer[])[0]).toUpperCase() !== "SLOWLOG")!;
        return (own[3] as Buffer[]).map(String);
      };
      expect(await run("AUTH", "someone", "hunter2")).to.deep.equal(["AUTH", "(redacted)", "(redacted)"]);
      expect(await run("HELLO", "2", "AUTH", "default", "hunter2", "SETNAME", "n")).to.deep.equal([
        "HELLO",
        "2",
        "AUTH",
        "(redacted)",
        "(redacted)",
        "SETNAME",
        "n",
      ]);
      expect(await run("ACL", "SETUSER", "slowlog-user", "on", ">hunter2")).to.deep.equal([
        "ACL",
        "SETUSER",
        "slowlog-user",
        "(redacted)",
        "(redacted)",
      ]);
      expect(
        await run("CONFIG", "SET", "maxmemory-policy", "noeviction", "masterauth", "hunter2"),
      ).to.deep.equal(["CONFIG", "SET", "maxmemory-policy", "noeviction", "masterauth", "(redacted)"]);
    } finally {
      await sendCommand(everything.port, ["ACL", "DELUSER", "slowlog-user"]).catch(() => null);
      await sendCommand(everything.port, ["CONFIG", "SET", "masterauth", ""]).catch(() => null);
      await everything.close();
    }
  });

  it("keeps the newest max-len entries, newest first, each with its own arguments", async () => {
    const own = await startProxy([redis], { slowlogLogSlowerThan: 0 });
    try {
      await sendCommand(own.port, ["CONFIG", "SET", "slowlog-max-len", "3"]);
      // Pipelined on one connection, so later requests arrive in the bytes earlier ones were read from.
      const client = new Redis({ port: own.port, lazyConnect: true });
      await client.connect();
      try {
        const pipeline = client.pipeline();
        for (let i = 0; i < 10; i++) pipeline.set(`ring:${i}`, `value-${i}`);
        await pipeline.exec();
      } finally {
        client.disconnect();
      }
      const entries = (await sendCommand(own.port, ["SLOWLOG", "GET", "-1"])) as unknown[][];
      expect(entries.map((e) => (e[3] as Buffer[]).map(String))).to.deep.equal([
        ["set", "ring:9", "value-9"],
        ["set", "ring:8", "value-8"],
        ["set", "ring:7", "value-7"],
      ]);
      const ids = entries.map((e) => Number(e[0]));
      expect(ids[0] - ids[1]).to.equal(1);
      expect(ids[1] - ids[2]).to.equal(1);
      expect(await sendCommand(own.port, ["SLOWLOG", "LEN"])).to.equal(3);
      await sendCommand(own.port, ["CONFIG", "SET", "slowlog-max-len", "1"]);
      expect(await sendCommand(own.port, ["SLOWLOG", "LEN"])).to.equal(1);
    } finally {
      await sendCommand(own.port, [
        "CONFIG",
        "SET",
        "slowlog-max-len",
        "128",
        "slowlog-log-slower-than",
        "10000",
      ]);
      await own.close();
    }
  });

  it("follows CONFIG SET slowlog-log-slower-than / slowlog-max-len sent through it", async () => {
    const own = await startProxy([redis], { slowlogLogSlowerThan: 100_000 });
    try {
      await sendCommand(own.port, ["CONFIG", "SET", "slowlog-log-slower-than", "0", "slowlog-max-len", "2"]);
      for (const key of ["a", "b", "c"]) await sendCommand(own.port, ["SET", `cfg:${key}`, "1"]);
      expect(await sendCommand(own.port, ["SLOWLOG", "LEN"])).to.equal(2);
    } finally {
      await sendCommand(own.port, [
        "CONFIG",
        "SET",
        "slowlog-log-slower-than",
        "10000",
        "slowlog-max-len",
        "128",
      ]);
      await own.close();
    }
  });
});
