/**
 * INFO through the proxy in front of a 3-master cluster: the keyspace and the figures that add
 * up are the cluster's sums (db0 equals DBSIZE through the proxy), the rest is per shard and
 * names its node.
 */
import { expect } from "chai";
import { Redis } from "ioredis";
import { parseInfo } from "../src/observability/cluster-info.js";
import { startCluster, startProxy, type RedisCluster, type RunningProxy } from "./harness/index.js";

type Fields = Record<string, string>;

/** The fields of every section named `name`, in order. */
function sections(info: string, name: string): Fields[] {
  return parseInfo(info)
    .filter((s) => s.name === name)
    .map((s) => Object.fromEntries(s.fields));
}

describe("INFO in front of a cluster", function () {
  this.timeout(60_000);
  let cluster: RedisCluster;
  let proxy: RunningProxy;
  let client: Redis;

  before(async () => {
    cluster = await startCluster({ masters: 3 });
    proxy = await startProxy(cluster.nodes.map((n) => ({ port: n.port })));
    client = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 1 });
    for (let i = 0; i < 90; i++) await client.set(`inf:${i}`, "v");
    for (let i = 0; i < 12; i++) await client.set(`inf:ttl:${i}`, "v", "EX", 3600);
    // A stored gears session: one of the proxy's own keys, which DBSIZE leaves out.
    const script = "GB().foreach(() => {}).register('nothing-here:*', {mode: 'async'})";
    expect(await client.call("RG.EXECUTE", script, "ID", "info-session")).to.equal("OK");
  });

  after(async () => {
    client.disconnect();
    await proxy.close();
    await cluster.stop();
  });

  it("db0:keys= equals DBSIZE through the proxy (the proxy's own keys left out), expires summed", async () => {
    const info = String(await client.info("keyspace"));
    const dbsize = await client.dbsize();
    expect(dbsize).to.equal(102);
    const [keyspace] = sections(info, "Keyspace");
    const db0 = /^keys=(\d+),expires=(\d+),avg_ttl=(\d+)$/.exec(keyspace.db0);
    expect(db0, keyspace.db0).to.not.equal(null);
    expect(Number(db0![1])).to.equal(dbsize);
    // expires also counts the proxy's own expiring keys (its event leases).
    expect(Number(db0![2])).to.be.at.least(12);
    expect(Number(db0![3])).to.be.greaterThan(3_000_000).and.at.most(3_600_000);
    // The shards hold more: the proxy's session key is among them.
    const raw = await Promise.all((await cluster.masters()).map(async (m) => Number(await m.call("DBSIZE"))));
    expect(raw.reduce((a, b) => a + b, 0)).to.be.greaterThan(dbsize);
  });

  it("sums memory, clients and stats counters, and labels every per-shard figure with its node", async () => {
    const info = String(await client.info());
    const masters = (await cluster.masters()).map((m) => `127.0.0.1:${m.port}`).sort();
    const [shards] = sections(info, "Shards");
    const shardLines = Object.values(shards);
    expect(shardLines.map((l) => /addr=([^,]+)/.exec(l)![1]).sort()).to.deep.equal(masters);
    // used_memory is the sum of the shards' figures of the same reply.
    const perShard = shardLines.map((l) => Number(/used_memory=(\d+)/.exec(l)![1]));
    const [memory] = sections(info, "Memory");
    expect(Number(memory.used_memory)).to.equal(perShard.reduce((a, b) => a + b, 0));
    expect(memory).to.not.have.property("used_memory_human");
    const keysPerShard = shardLines.map((l) => Number(/keys=(\d+)/.exec(l)![1]));
    expect(keysPerShard.every((n) => n > 0)).to.equal(true);

    // Clients and stats: one summed section each, at least the figure of any one shard.
    const [clients] = sections(info, "Clients");
    const [stats] = sections(info, "Stats");
    for (const m of await cluster.masters()) {
      const own = String(await m.call("INFO", "stats"));
      const commands = Number(/total_commands_processed:(\d+)/.exec(own)![1]);
      expect(Number(stats.total_commands_processed)).to.be.greaterThan(commands);
    }
    expect(Number(clients.connected_clients)).to.be.at.least(3);
    expect(sections(info, "Stats").filter((s) => s.shard_addr === undefined)).to.have.length(1);

    // What does not add up comes once per shard, its first field naming the node.
    const servers = sections(info, "Server");
    expect(servers.map((s) => s.shard_addr).sort()).to.deep.equal(masters);
    expect(servers.every((s) => s.redis_version === servers[0].redis_version)).to.equal(true);
    const replication = sections(info, "Replication");
    expect(replication.map((s) => s.shard_addr).sort()).to.deep.equal(masters);
    expect(replication.every((s) => s.role === "master")).to.equal(true);
  });

  it("INFO server gives each shard's section, none presented as the cluster's", async () => {
    const info = String(await client.info("server"));
    const servers = sections(info, "Server");
    expect(servers).to.have.length(3);
    expect(new Set(servers.map((s) => s.run_id)).size).to.equal(3);
    expect(sections(info, "Keyspace")).to.have.length(0);
  });
});
