import { execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { expect } from "chai";
import { freeClusterPort, freePort, MAX_CLUSTER_PORT } from "./harness/ports.js";
import { startRedis, type RedisNode } from "./harness/redis.js";
import { startCluster, SLOT_COUNT, type RedisCluster } from "./harness/cluster.js";
import { RespError, sendCommand, type RespValue } from "./harness/resp.js";
import { fromSpare, type SpareKind } from "./harness/spares.js";

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** True while the process exists and is not a zombie (an orphan may wait a while for init to reap it). */
function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function slotsCovered(reply: RespValue): number {
  if (!Array.isArray(reply)) throw new Error("CLUSTER SLOTS reply is not an array");
  return reply.reduce<number>(
    (sum, range) => (Array.isArray(range) ? sum + Number(range[1]) - Number(range[0]) + 1 : sum),
    0,
  );
}

describe("harness: ports", () => {
  it("hands out distinct free ports, cluster ports with a free bus port", async () => {
    const a = await freePort();
    const b = await freePort();
    expect(a).to.not.equal(b);
    expect(await canBind(a)).to.equal(true);
    const c = await freeClusterPort();
    expect(c).to.be.at.most(MAX_CLUSTER_PORT);
    expect(await canBind(c)).to.equal(true);
    expect(await canBind(c + 10000)).to.equal(true);
  });
});

describe("harness: standalone redis", () => {
  let node: RedisNode;

  before(async () => {
    node = await startRedis();
  });

  after(async () => {
    await node.stop();
  });

  it("starts on 127.0.0.1 in a temp dir and answers SET/GET via redis-cli", async () => {
    expect(node.host).to.equal("127.0.0.1");
    expect(node.running).to.equal(true);
    expect(isAlive(node.pid)).to.equal(true);
    expect(fs.existsSync(node.dir)).to.equal(true);
    expect(await node.cli("SET", "greeting", "hello world")).to.equal("OK");
    expect(await node.cli("GET", "greeting")).to.equal("hello world");
    expect(await node.call("CONFIG", "GET", "save")).to.deep.equal(["save", ""]);
  });

  it("restart brings a new process up on the same port", async () => {
    const oldPid = node.pid;
    const port = node.port;
    await node.restart();
    expect(node.port).to.equal(port);
    expect(node.pid).to.not.equal(oldPid);
    expect(isAlive(oldPid)).to.equal(false);
    expect(await node.cli("PING")).to.equal("PONG");
  });

  it("kill makes PING fail, restart recovers", async () => {
    const pid = node.pid;
    await node.kill();
    expect(node.running).to.equal(false);
    expect(isAlive(pid)).to.equal(false);
    let error: unknown;
    await node.cli("PING").catch((err: unknown) => (error = err));
    expect(String(error)).to.match(/Could not connect|Connection refused/);
    await node.restart();
    expect(await node.cli("PING")).to.equal("PONG");
  });

  it("stop ends the process and removes the temp dir", async () => {
    const other = await startRedis();
    await other.stop();
    expect(isAlive(other.pid)).to.equal(false);
    expect(fs.existsSync(other.dir)).to.equal(false);
    await other.stop(); // idempotent
  });

  it("supports a password", async () => {
    const secured = await startRedis({ password: "s3cret pass" });
    try {
      expect(await secured.cli("PING")).to.equal("PONG");
      let error: unknown;
      await sendCommand(secured.port, ["PING"]).catch((err: unknown) => (error = err));
      expect(error).to.be.instanceOf(RespError);
      expect(String(error)).to.match(/NOAUTH/);
    } finally {
      await secured.stop();
    }
  });

  it("reports the server output when redis-server cannot start", async () => {
    let error: unknown;
    await startRedis({ args: ["--no-such-directive", "1"] }).catch((err: unknown) => (error = err));
    expect(String(error)).to.match(/before ready/);
    expect(String(error)).to.match(/no-such-directive/);
  });

  it("SIGKILLs leftover servers when the process exits", async () => {
    const redisUrl = new URL("./harness/redis.js", import.meta.url).href;
    const script = `import { startRedis } from ${JSON.stringify(redisUrl)};
      const n = await startRedis();
      console.log(JSON.stringify({ pid: n.pid, dir: n.dir }));
      process.exit(3);`;
    const stdout = await new Promise<string>((resolve) => {
      execFile(process.execPath, ["--input-type=module", "-e", script], { timeout: 15_000 }, (_err, out) =>
        resolve(out),
      );
    });
    const leaked = JSON.parse(stdout) as { pid: number; dir: string };
    const deadline = Date.now() + 2000;
    while (isAlive(leaked.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(isAlive(leaked.pid)).to.equal(false);
    expect(fs.existsSync(leaked.dir)).to.equal(false);
  });
});

describe("harness: cluster with 3 masters", () => {
  let cluster: RedisCluster;

  before(async function () {
    this.timeout(30_000);
    cluster = await startCluster({ masters: 3 });
  });

  after(async () => {
    await cluster.stop();
  });

  it("has 3 masters that all see 16384 slots covered", async () => {
    expect(cluster.nodes).to.have.length(3);
    expect(await cluster.masters()).to.have.length(3);
    expect(await cluster.replicas()).to.have.length(0);
    for (const node of cluster.nodes) {
      expect(await node.cli("CLUSTER", "INFO")).to.match(/cluster_state:ok/);
      expect(slotsCovered(await node.call("CLUSTER", "SLOTS"))).to.equal(SLOT_COUNT);
    }
  });

  it("nodeForSlot returns the master that serves the slot", async () => {
    // "foo" hashes to slot 12182.
    const owner = await cluster.nodeForSlot(12182);
    expect(await owner.cli("SET", "foo", "bar")).to.equal("OK");
    expect(await owner.cli("GET", "foo")).to.equal("bar");
    const other = cluster.nodes.find((n) => n !== owner);
    expect(await other?.cli("GET", "foo")).to.match(/^MOVED 12182 127\.0\.0\.1:/);
  });
});

describe("harness: cluster with 3 masters and 1 replica each", () => {
  let cluster: RedisCluster;

  before(async function () {
    this.timeout(30_000);
    cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
  });

  after(async () => {
    await cluster.stop();
  });

  it("has 3 masters and 3 replicas whose master link is up", async () => {
    expect(cluster.nodes).to.have.length(6);
    expect(await cluster.masters()).to.have.length(3);
    const replicas = await cluster.replicas();
    expect(replicas).to.have.length(3);
    for (const replica of replicas) {
      expect(await replica.cli("INFO", "replication")).to.match(/master_link_status:up/);
    }
  });

  it("waitForState follows a failover after a master is killed", async function () {
    this.timeout(20_000);
    const oldOwner = await cluster.nodeForSlot(0);
    await oldOwner.kill();
    await cluster.waitForState(true, 15_000);
    const newOwner = await cluster.nodeForSlot(0);
    expect(newOwner).to.not.equal(oldOwner);
    expect(newOwner.running).to.equal(true);
    expect(await cluster.masters()).to.have.length(3);
  });
});

describe("harness: spares started ahead", () => {
  it("fromSpare gives the spare the kind's last call started, starts the next once the caller's is ready, and replaces an unusable one", async () => {
    let started = 0;
    const discarded: number[] = [];
    let usable = true;
    const kind: SpareKind<number> = {
      key: `counter-${Math.random()}`,
      start: () => Promise.resolve(++started),
      usable: () => Promise.resolve(usable),
      discard: (n) => {
        discarded.push(n);
        return Promise.resolve();
      },
    };
    expect(await fromSpare(kind), "no spare yet: a fresh one (then 2 starts, the spare)").to.equal(1);
    expect(await fromSpare(kind), "the spare").to.equal(2);
    usable = false;
    expect(await fromSpare(kind), "the spare unusable: a fresh one").to.equal(4);
    expect(discarded).to.deep.equal([3]);
    expect(started, "and the next spare").to.equal(5);
  });

  it("a cluster's spare outlives stopAll until taken, and every spare dies with the process", async function () {
    this.timeout(60_000);
    const harnessUrl = new URL("./harness/index.js", import.meta.url).href;
    const sparesUrl = new URL("./harness/spares.js", import.meta.url).href;
    const script = `import { execFileSync } from "node:child_process";
      import { startCluster, stopAll } from ${JSON.stringify(harnessUrl)};
      import { settleSpares } from ${JSON.stringify(sparesUrl)};
      const servers = () => execFileSync("pgrep", ["-P", String(process.pid), "redis-server"]).toString().split("\\n").filter(Boolean).map(Number);
      const first = await startCluster({ masters: 3 });
      await settleSpares();
      const beforeStopAll = servers();
      await stopAll();
      const second = await startCluster({ masters: 3 });
      await settleSpares();
      console.log(JSON.stringify({ first: first.nodes.map((n) => n.pid), beforeStopAll,
        second: second.nodes.map((n) => n.pid), running: second.nodes.every((n) => n.running), atExit: servers() }));
      process.exit(3);`;
    const stdout = await new Promise<string>((resolve) => {
      execFile(process.execPath, ["--input-type=module", "-e", script], { timeout: 50_000 }, (_err, out) =>
        resolve(out),
      );
    });
    const seen = JSON.parse(stdout) as Record<"first" | "beforeStopAll" | "second" | "atExit", number[]> & {
      running: boolean;
    };
    expect(seen.beforeStopAll, "the first cluster and its spare").to.have.length(6);
    expect(
      seen.second.every((pid) => seen.beforeStopAll.includes(pid) && !seen.first.includes(pid)),
    ).to.equal(true);
    expect(seen.running, "the spare's servers outlived stopAll").to.equal(true);
    expect(seen.atExit, "the second cluster and the next spare").to.have.length(6);
    const deadline = Date.now() + 2000;
    while (seen.atExit.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(seen.atExit.filter(isAlive), "servers left running after the process exited").to.deep.equal([]);
  });
});
