import { expect } from "chai";
import { Cluster, Redis } from "ioredis";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";

const run = promisify(execFile);

describe("--cluster-emulation: the proxy as a one-node cluster", () => {
  let redis: RedisNode;
  let proxy: RunningProxy;
  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }], { clusterEmulation: true });
  });
  after(async () => {
    await proxy.close();
    await redis.stop();
  });

  it("answers CLUSTER SLOTS/INFO/KEYSLOT/MYID as a node owning every slot", async () => {
    const client = new Redis(proxy.port);
    try {
      const slots = (await client.call("CLUSTER", "SLOTS")) as [number, number, [string, number, string]][];
      expect(slots).to.have.length(1);
      expect(slots[0].slice(0, 2)).to.deep.equal([0, 16383]);
      expect(slots[0][2][1]).to.equal(proxy.port);
      expect(String(await client.cluster("INFO"))).to.contain("cluster_state:ok");
      expect(await client.cluster("KEYSLOT", "foo")).to.equal(12182);
      expect(await client.call("CLUSTER", "MYID")).to.equal(slots[0][2][2]);
      const nodes = String(await client.cluster("NODES"));
      expect(nodes).to.contain("myself,master").and.contain("0-16383");
    } finally {
      client.disconnect();
    }
  });

  it("serves an ioredis Cluster client, multi-key commands included", async () => {
    const cluster = new Cluster([{ host: "127.0.0.1", port: proxy.port }]);
    try {
      await cluster.mset("emu:a", "1", "emu:b", "2");
      expect(await cluster.mget("emu:a", "emu:b", "emu:none")).to.deep.equal(["1", "2", null]);
      expect(await redis.cli("GET", "emu:a")).to.equal("1");
    } finally {
      cluster.disconnect();
    }
  });

  it("serves redis-cli -c", async () => {
    const { stdout } = await run("redis-cli", ["-c", "-p", String(proxy.port), "SET", "emu:cli", "v"]);
    expect(stdout.trim()).to.equal("OK");
    expect(await redis.cli("GET", "emu:cli")).to.equal("v");
  });

  it("without the flag, CLUSTER goes to the server (cluster support disabled there)", async () => {
    const plain = await startProxy([{ port: redis.port }]);
    const client = new Redis(plain.port);
    try {
      const err = await client.cluster("SLOTS").catch((e: Error) => e);
      expect(String(err)).to.contain("cluster support disabled");
    } finally {
      client.disconnect();
      await plain.close();
    }
  });
});
