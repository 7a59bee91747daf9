import { expect } from "chai";
import { Redis } from "ioredis";
import { startCluster, startProxy, type RedisCluster, type RedisNode } from "./harness/index.js";
import { eventually } from "./support/polling.js";

/** How many GET calls a node has served, from INFO commandstats. */
async function getCalls(node: RedisNode): Promise<number> {
  const stats = await node.cli("INFO", "commandstats");
  return Number(/cmdstat_get:calls=(\d+)/.exec(stats)?.[1] ?? 0);
}

async function totalGets(nodes: RedisNode[]): Promise<number> {
  const counts = await Promise.all(nodes.map(getCalls));
  return counts.reduce((a, b) => a + b, 0);
}

describe("cluster with replicas: --read-from-replicas", function () {
  this.timeout(60_000);
  let cluster: RedisCluster;
  let masters: RedisNode[];
  let replicas: RedisNode[];

  before(async () => {
    cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
    masters = await cluster.masters();
    replicas = await cluster.replicas();
  });

  after(async () => {
    await cluster.stop();
  });

  async function writeAndRead(readFromReplicas: boolean): Promise<{ master: number; replica: number }> {
    const proxy = await startProxy([{ port: cluster.nodes[0].port }], { readFromReplicas });
    const client = new Redis(proxy.port);
    try {
      const keys = Array.from({ length: 200 }, (_, i) => `replica-read:${readFromReplicas}:${i}`);
      for (const key of keys) await client.set(key, key);
      // Replication is asynchronous: wait until every replica has caught up.
      for (const m of masters) await m.cli("WAIT", "1", "5000");
      const [masterBefore, replicaBefore] = [await totalGets(masters), await totalGets(replicas)];
      const values = await Promise.all(keys.map((k) => client.get(k)));
      expect(values).to.deep.equal(keys);
      // Writes still go to masters whatever the flag.
      expect(await client.incr(`replica-read:${readFromReplicas}:counter`)).to.equal(1);
      return {
        master: (await totalGets(masters)) - masterBefore,
        replica: (await totalGets(replicas)) - replicaBefore,
      };
    } finally {
      client.disconnect();
      await proxy.close();
    }
  }

  it("reads from masters by default", async () => {
    const served = await writeAndRead(false);
    expect(served.replica).to.equal(0);
    expect(served.master).to.be.at.least(200);
  });

  it("sends read-only commands to replicas with the flag, and writes to masters", async () => {
    const served = await writeAndRead(true);
    expect(served.master).to.equal(0);
    expect(served.replica).to.be.at.least(200);
  });

  it("CONFIG SET through the proxy reaches the replicas too, so a promoted one keeps the setting", async () => {
    const proxy = await startProxy([{ port: cluster.nodes[0].port }]);
    const client = new Redis(proxy.port);
    try {
      expect(await client.config("SET", "notify-keyspace-events", "KEA")).to.equal("OK");
      await eventually(
        async () =>
          Promise.all(
            replicas.map(
              async (r) => (await r.cli("CONFIG", "GET", "notify-keyspace-events")).split("\n")[1],
            ),
          ),
        (flags) => flags.every((f) => f === "AKE"),
        "every replica's notify-keyspace-events",
      );
    } finally {
      client.disconnect();
      await proxy.close();
    }
  });
});
