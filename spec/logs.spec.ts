/**
 * The log lines an operator needs, read from a proxy run as a child process: an upstream lost
 * and back, the slot map changing, a failover followed, a registration failing repeatedly, a
 * lease taken, sessions restored at start, a client refused for --maxclients;
 * JSON lines off a terminal, readable lines with --log-format pretty.
 */
import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { Redis } from "ioredis";
import { sendCommand, startCluster, startRedis, type RedisCluster, type RedisNode } from "./harness/index.js";
import { ChildProxy } from "./support/child-proxy.js";
import { eventually } from "./support/polling.js";

interface LogLine {
  level: string;
  time: string;
  msg: string;
  [field: string]: unknown;
}

/** The JSON lines of the proxy's output so far (anything else is ignored). */
function jsonLines(proxy: ChildProxy): LogLine[] {
  return proxy
    .output()
    .split("\n")
    .filter((text) => text.startsWith("{"))
    .map((text) => JSON.parse(text) as LogLine);
}

function waitForLine(proxy: ChildProxy, what: string, match: (line: LogLine) => boolean): Promise<LogLine> {
  return eventually(
    () => Promise.resolve(jsonLines(proxy).find(match)),
    (line) => line !== undefined,
    `log line "${what}" (output so far:\n${proxy.output()})`,
    20_000,
  ) as Promise<LogLine>;
}

describe("logs", function () {
  this.timeout(90_000);

  describe("in front of one server", () => {
    let redis: RedisNode;
    let proxy: ChildProxy;

    before(async () => {
      redis = await startRedis();
      proxy = await ChildProxy.start({ upstreams: [{ port: redis.port }], args: ["--log-level", "info"] });
    });

    after(async () => {
      await proxy.stop();
      await redis.stop();
    });

    it("are JSON lines with level names and ISO times when stderr is not a terminal", async () => {
      const line = await waitForLine(proxy, "listening", (l) => l.msg.includes("listening on"));
      expect(line.level).to.equal("info");
      expect(new Date(line.time).toISOString()).to.equal(line.time);
    });

    it("say when the upstream is lost (warn) and when it is back (info)", async () => {
      const client = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 0 });
      try {
        expect(await client.set("logs:k", "1")).to.equal("OK");
        await redis.kill();
        const lost = await waitForLine(proxy, "upstream lost", (l) => / lost$/.test(l.msg));
        expect(lost.level).to.equal("warn");
        expect(lost.upstream).to.equal(`127.0.0.1:${redis.port}`);
        expect(jsonLines(proxy).some((l) => / back$/.test(l.msg))).to.equal(false);
        await redis.restart();
        // The proxy reconnects on the next command that needs the node.
        await eventually(
          () => client.ping().catch((err: Error) => err.message),
          (reply) => reply === "PONG",
          "PING through the proxy after the restart",
          20_000,
        );
        const back = await waitForLine(proxy, "upstream back", (l) => / back$/.test(l.msg));
        expect(back.level).to.equal("info");
        expect(back.upstream).to.equal(`127.0.0.1:${redis.port}`);
        // One outage, one pair of lines.
        expect(jsonLines(proxy).filter((l) => / lost$/.test(l.msg))).to.have.length(1);
      } finally {
        client.disconnect();
      }
    });

    it("warn once a registration fails three times in a row", async () => {
      const client = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 0 });
      try {
        const script =
          "GB().foreach(() => { throw new Error('handler broke'); }).register('fail:*', {mode: 'sync'})";
        expect(await client.call("RG.EXECUTE", script)).to.equal("OK");
        await client.set("fail:1", "x");
        await client.set("fail:2", "x");
        expect(jsonLines(proxy).some((l) => l.msg === "registration failing repeatedly")).to.equal(false);
        await client.set("fail:3", "x");
        const line = await waitForLine(
          proxy,
          "failing repeatedly",
          (l) => l.msg === "registration failing repeatedly",
        );
        expect(line.level).to.equal("warn");
        expect(line.failures).to.equal(3);
        expect(String(line.err)).to.include("handler broke");
      } finally {
        client.disconnect();
      }
    });

    it("say when an event lease is taken, and how many sessions a starting proxy restored", async () => {
      // The registration above made this proxy take the shard's event lease.
      const taken = await waitForLine(
        proxy,
        "lease taken",
        (l) => l.msg === "took the event lease of a shard",
      );
      expect(taken.level).to.equal("info");
      const second = await ChildProxy.start({
        upstreams: [{ port: redis.port }],
        args: ["--log-level", "info"],
      });
      try {
        const line = await waitForLine(second, "sessions restored", (l) =>
          /^restored \d+ gears sessions at start$/.test(l.msg),
        );
        expect(line.level).to.equal("info");
        expect(line.sessions).to.equal(1);
      } finally {
        await second.stop();
      }
    });

    it("warn when a client is refused for --maxclients", async () => {
      const limited = await ChildProxy.start({
        upstreams: [{ port: redis.port }],
        args: ["--log-level", "info", "--maxclients", "1"],
      });
      // The start-up probe's own connection may still hold the one place for a moment.
      const admitted = async (): Promise<Redis | null> => {
        const c = new Redis({ host: "127.0.0.1", port: limited.port, maxRetriesPerRequest: 0 });
        if ((await c.ping().catch(() => null)) === "PONG") return c;
        c.disconnect();
        return null;
      };
      const first = (await eventually(admitted, (c) => c !== null, "a first client admitted"))!;
      try {
        const refused = await sendCommand(limited.port, ["PING"]).catch((err: Error) => err.message);
        expect(refused).to.include("max number of clients reached");
        const line = await waitForLine(limited, "max clients", (l) =>
          l.msg.startsWith("client refused: max number of clients"),
        );
        expect(line.level).to.equal("warn");
        expect(line.maxclients).to.equal(1);
      } finally {
        first.disconnect();
        await limited.stop();
      }
    });
  });

  it("are readable text, not JSON, with --log-format pretty", async () => {
    const redis = await startRedis();
    const proxy = await ChildProxy.start({
      upstreams: [{ port: redis.port }],
      args: ["--log-level", "info", "--log-format", "pretty"],
    });
    try {
      const text = await eventually(
        () => Promise.resolve(proxy.output()),
        (out) => out.includes("listening on"),
        "the listening line",
      );
      const line = text.split("\n").find((l) => l.includes("listening on"))!;
      expect(() => JSON.parse(line) as unknown).to.throw();
      expect(line).to.match(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: gears-proxy listening on/);
    } finally {
      await proxy.stop();
      await redis.stop();
    }
  });

  describe("in front of a cluster", () => {
    let cluster: RedisCluster;
    let proxy: ChildProxy;
    let client: Redis;

    before(async () => {
      cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
      const masters = await cluster.masters();
      proxy = await ChildProxy.start({
        upstreams: masters.map((n) => ({ port: n.port })),
        args: ["--log-level", "info", "--no-cluster-emulation"],
      });
      client = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 0 });
    });

    after(async () => {
      client.disconnect();
      await proxy.stop();
      await cluster.stop();
    });

    it("say when the slot map changed", async () => {
      // Two empty slots of one master change hands; a command to the first meets a MOVED,
      // and the refresh it starts finds the second.
      const key = "logs:moved";
      const slot = calculateSlot(key);
      const source = await cluster.nodeForSlot(slot);
      const other = slot === 0 ? 1 : slot - 1;
      expect(await cluster.nodeForSlot(other)).to.equal(source);
      const masters = await cluster.masters();
      const target = masters.find((n) => n !== source)!;
      await cluster.assignSlots([slot, other], target);
      expect(await client.set(key, "v")).to.equal("OK");
      const line = await waitForLine(proxy, "slot map changed", (l) =>
        l.msg.startsWith("cluster slot map changed"),
      );
      expect(line.level).to.equal("info");
      expect(line.slots).to.be.a("number").at.least(1);
    });

    it("say when a failover was followed", async () => {
      const key = "logs:failover";
      const master = await cluster.nodeForSlot(calculateSlot(key));
      let replica: RedisNode | undefined;
      for (const node of await cluster.replicas()) {
        const text = String(await node.call("INFO", "replication"));
        if (new RegExp(`^master_port:${master.port}\\r?$`, "m").test(text)) replica = node;
      }
      expect(replica, "a replica of the key's master").to.not.equal(undefined);
      expect(await replica!.call("CLUSTER", "FAILOVER")).to.equal("OK");
      await eventually(
        () => replica!.call("ROLE").then((r) => (Array.isArray(r) ? String(r[0]) : "")),
        (role) => role === "master",
        "the replica took over",
      );
      await eventually(
        () => client.set(key, "v").catch((err: Error) => err.message),
        (reply) => reply === "OK",
        "SET through the proxy after the failover",
        20_000,
      );
      const line = await waitForLine(proxy, "failover followed", (l) =>
        l.msg.startsWith("failover followed"),
      );
      expect(line.level).to.equal("warn");
      expect(line).to.include({ from: `127.0.0.1:${master.port}`, to: `127.0.0.1:${replica!.port}` });
    });
  });
});
