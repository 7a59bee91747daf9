import { expect } from "chai";
import { Cluster, Redis } from "ioredis";
import { createClient } from "redis";
import calculateSlot from "cluster-key-slot";
import {
  startCluster,
  startProxy,
  startRedis,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
} from "./harness/index.js";
import { eventually } from "./support/polling.js";

// WAIT is how a client makes sure its writes reached the replicas. Redis counts the replicas
// that acknowledged the writes of the connection WAIT comes on; through the proxy the
// client's writes and its WAIT travel on different upstream connections, and the answer must
// still be about the client's writes: 0 while the only replica is stopped, as Redis says.

/** Stops a replica (SIGSTOP) for the length of `body`: it receives nothing and acknowledges nothing. */
async function withReplicaStopped<T>(replica: RedisNode, body: () => Promise<T>): Promise<T> {
  process.kill(replica.pid, "SIGSTOP");
  try {
    return await body();
  } finally {
    process.kill(replica.pid, "SIGCONT");
  }
}

async function linked(replica: RedisNode): Promise<void> {
  await eventually(
    () => replica.cli("INFO", "replication"),
    (text) => text.includes("master_link_status:up"),
    `replica ${replica.port} linked`,
    20_000,
  );
}

describe("qa: WAIT through the proxy counts the replicas that have the client's writes", () => {
  describe("one master with one replica", () => {
    let master: RedisNode;
    let replica: RedisNode;
    let proxy: RunningProxy;

    before(async () => {
      master = await startRedis();
      replica = await startRedis({ args: ["--replicaof", "127.0.0.1", String(master.port)] });
      await linked(replica);
      proxy = await startProxy([{ port: master.port }]);
    });

    after(async () => {
      await proxy?.close();
      await replica?.stop();
      await master?.stop();
    });

    it("the proxy: a long WAIT for a stopped replica reads the master's INFO less and less often", async () => {
      const infoCalls = async (): Promise<number> => {
        const stats = await master.cli("INFO", "commandstats");
        return Number(/cmdstat_info:calls=(\d+)/.exec(stats)?.[1] ?? 0);
      };
      const c = new Redis({ port: proxy.port, lazyConnect: true });
      await c.connect();
      try {
        const answer = await withReplicaStopped(replica, async () => {
          await c.set("qa:wait:long", "v");
          const before = await infoCalls();
          const n = await c.wait(1, 1500);
          return { n, calls: (await infoCalls()) - before };
        });
        expect(answer.n).to.equal(0);
        // Every 2 ms for 1.5 s would be hundreds; backing off to 100 ms it is about twenty.
        expect(answer.calls).to.be.below(60);
      } finally {
        c.disconnect();
      }
    });

    for (const target of ["Redis", "the proxy"] as const) {
      const port = (): number => (target === "Redis" ? master.port : proxy.port);

      it(`${target}: ioredis, a write then WAIT 1 200 with the replica stopped answers 0; 1 once it runs`, async () => {
        const c = new Redis({ port: port(), lazyConnect: true });
        await c.connect();
        try {
          await c.set("qa:wait:k", "v0");
          expect(await c.wait(1, 0)).to.equal(1);
          const stopped = await withReplicaStopped(replica, async () => {
            await c.set("qa:wait:k", "v1");
            return c.wait(1, 200);
          });
          expect(stopped).to.equal(0);
          // The replica caught up: the same question now gets 1.
          expect(await c.wait(1, 0)).to.equal(1);
        } finally {
          c.disconnect();
        }
      });

      it(`${target}: node-redis, WAIT 1 0 blocked on a stopped replica returns 1 when it resumes; CLIENT UNBLOCK answers the count`, async () => {
        const c = createClient({ socket: { port: port() } });
        const other = createClient({ socket: { port: port() } });
        await c.connect();
        await other.connect();
        try {
          const id = await c.clientId();
          let answer: number | null = null;
          await withReplicaStopped(replica, async () => {
            await c.set("qa:wait:n", "1");
            const blocked = c.wait(1, 0).then((n) => (answer = n));
            await eventually(
              () => other.sendCommand(["CLIENT", "LIST"]),
              (list) => String(list).includes(`id=${id} `) && /flags=\S*b/.test(lineOf(String(list), id)),
              "the client blocked in WAIT",
            );
            expect(answer).to.equal(null);
            // Still blocked until the replica acknowledges: unblock it, and it says 0 replicas.
            expect(await other.sendCommand(["CLIENT", "UNBLOCK", String(id), "TIMEOUT"])).to.equal(1);
            await blocked;
            expect(answer).to.equal(0);
            await c.set("qa:wait:n", "2");
            const again = c.wait(1, 0);
            process.kill(replica.pid, "SIGCONT");
            expect(await again).to.equal(1);
          });
          expect(await c.get("qa:wait:n")).to.equal("2");
        } finally {
          await c.quit();
          await other.quit();
        }
      });
    }
  });

  describe("a 3-master cluster with replicas, through the cluster emulation", () => {
    let cluster: RedisCluster;
    let proxy: RunningProxy;

    before(async () => {
      cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
      proxy = await startProxy([{ port: cluster.nodes[0].port }]);
    });

    after(async () => {
      await proxy?.close();
      await cluster?.stop();
    });

    it("ioredis Cluster: a write then WAIT 1 200 with that key's replica stopped answers 0; 1 once it runs", async () => {
      const key = "qa:wait:cluster";
      const owner = await cluster.nodeForSlot(calculateSlot(key));
      const replicas = await cluster.replicas();
      const roles = await Promise.all(replicas.map((r) => r.call("ROLE")));
      const replica = replicas.find((_, i) => {
        const role = roles[i];
        return Array.isArray(role) && Number(role[2]) === owner.port;
      });
      expect(replica, "the key's replica").to.not.equal(undefined);

      const c = new Cluster([{ host: "127.0.0.1", port: proxy.port }]);
      try {
        await c.set(key, "v0");
        const waitOn = (n: number, ms: number): Promise<unknown> => c.nodes("master")[0].wait(n, ms);
        await eventually(
          () => waitOn(1, 0),
          (n) => n === 1,
          "every replica has the first write",
        );
        const stopped = await withReplicaStopped(replica!, async () => {
          await c.set(key, "v1");
          return waitOn(1, 200);
        });
        expect(stopped).to.equal(0);
        expect(await waitOn(1, 0)).to.equal(1);
      } finally {
        c.disconnect();
      }
    });
  });
});

/** The CLIENT LIST line of client `id`. */
function lineOf(list: string, id: number): string {
  return list.split("\n").find((line) => line.startsWith(`id=${id} `)) ?? "";
}
