import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { pino } from "pino";
import {
  KeyspaceEventSource,
  mergeNotifyFlags,
  type KeyEvent,
  type KeyspaceStatus,
  type NotificationFilter,
} from "../src/gears/events/keyspace-source.js";
import type { Logger } from "../src/observability/log.js";
import type { Arg } from "../src/resp/encode.js";
import { RespError, type RespValue } from "../src/resp/values.js";
import { Router } from "../src/routing/router.js";
import { Shards } from "../src/routing/shards.js";
import { ClusterTopology } from "../src/upstream/cluster-topology.js";
import { UpstreamNode } from "../src/upstream/node.js";
import { StandaloneTopology, type Topology } from "../src/upstream/topology.js";
import { startCluster, startRedis, type RedisCluster, type RedisNode } from "./harness/index.js";

/*
 * KeyspaceEventSource against real redis-server processes: the events and their names,
 * binary keys, barrier ordering, notify-keyspace-events set or merged or refused, a server
 * restart, a cluster failover, and a clean stop.
 */

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const NODE_OPTIONS = { connectTimeoutMs: 2000, sharedConnections: 2 };
/** A key with CR LF, a NUL, and bytes that are not UTF-8. */
const BINARY_KEY = Buffer.from([0x62, 0x00, 0xff, 0x0d, 0x0a, 0x80, 0xfe, 0x7a]);

/** Rejects when `promise` has not settled within `ms` (a hang is a failure). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A logger whose JSON lines are kept for the test to read. */
function capturingLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: "debug" },
    {
      write(msg: string): void {
        lines.push(JSON.parse(msg) as Record<string, unknown>);
      },
    },
  );
  return { log, lines };
}

/** Everything onEvents received, and how many calls it took. */
class Collector {
  readonly events: KeyEvent[] = [];
  batches = 0;
  readonly onEvents = (events: KeyEvent[]): void => {
    this.batches++;
    for (const e of events) this.events.push(e);
  };

  /** Events whose key starts with `prefix`, as "event key" strings. */
  named(prefix: string): string[] {
    return this.events.filter((e) => e.key.toString("latin1").startsWith(prefix)).map(show);
  }

  async waitFor(match: (e: KeyEvent) => boolean, ms: number, what: string): Promise<KeyEvent> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const found = this.events.find(match);
      if (found !== undefined) return found;
      await sleep(20);
    }
    throw new Error(`no event ${what} within ${ms} ms; got ${this.events.slice(-10).map(show).join(", ")}`);
  }
}

function show(e: KeyEvent): string {
  return `${e.event} ${e.key.toString("latin1")}`;
}

/** The node's reply; an error reply fails the test. */
async function call(node: UpstreamNode, argv: Arg[]): Promise<RespValue> {
  const reply = await node.call(argv);
  if (reply instanceof RespError) throw new Error(`${argv.map(String).join(" ")}: ${reply.message}`);
  return reply;
}

async function notifyFlags(server: RedisNode): Promise<string> {
  const reply = await server.call("CONFIG", "GET", "notify-keyspace-events");
  if (!Array.isArray(reply)) throw new Error("CONFIG GET: unexpected reply");
  return String(reply[1]);
}

function standaloneTopology(server: RedisNode): StandaloneTopology {
  return new StandaloneTopology(new UpstreamNode({ host: server.host, port: server.port }, NODE_OPTIONS));
}

/** Sources and topologies a test opened, closed after it whatever happened. */
class Opened {
  private sources: KeyspaceEventSource[] = [];
  private topologies: Topology[] = [];

  async source(
    topology: Topology,
    collector: Collector,
    log?: Logger,
    handled: NotificationFilter | null = null,
  ): Promise<[KeyspaceEventSource, KeyspaceStatus]> {
    this.topologies.push(topology);
    const shards = new Shards(new Router(topology, null, 5000));
    const source = new KeyspaceEventSource(
      shards,
      log ?? pino({ level: "silent" }),
      collector.onEvents,
      null,
      handled,
    );
    this.sources.push(source);
    const status = await within(source.start(), 15_000, "start()");
    return [source, status];
  }

  async close(): Promise<void> {
    for (const s of this.sources.splice(0)) await s.stop();
    for (const t of this.topologies.splice(0)) t.close();
  }
}

describe("keyspace event source", function () {
  this.timeout(60_000);
  const opened = new Opened();
  afterEach(() => opened.close());

  describe("mergeNotifyFlags", () => {
    it("adds E and A to what is set, and changes nothing when they are there", () => {
      expect(mergeNotifyFlags("")).to.equal("AE");
      expect(mergeNotifyFlags("Kx")).to.equal("KxAE");
      expect(mergeNotifyFlags("AKE")).to.equal("AKE");
      expect(mergeNotifyFlags("KA")).to.equal("KAE");
      expect(mergeNotifyFlags("Eg$lshzxet")).to.equal("Eg$lshzxet");
    });
  });

  describe("one redis-server", () => {
    let server: RedisNode;
    before(async () => {
      server = await startRedis();
    });
    after(() => server.stop());

    it("turns keyevent notifications on when they were off", async () => {
      await server.call("CONFIG", "SET", "notify-keyspace-events", "");
      const [, status] = await opened.source(standaloneTopology(server), new Collector());
      const flags = await notifyFlags(server);
      expect(flags).to.include("E").and.to.include("A");
      expect(status).to.deep.equal({
        configured: true,
        shards: [{ node: `${server.host}:${server.port}`, notifications: flags, configured: true }],
      });
    });

    it("delivers set, hset, lpush, del, expire and expired with their keys, binary ones too", async () => {
      const topology = standaloneTopology(server);
      const collector = new Collector();
      const [source] = await opened.source(topology, collector);
      const node = topology.node;
      await call(node, ["SET", "ev:str", "v"]);
      await call(node, ["HSET", "ev:hash", "f", "v"]);
      await call(node, ["LPUSH", "ev:list", "a", "b"]);
      await call(node, ["DEL", "ev:str"]);
      await call(node, ["SET", BINARY_KEY, "v"]);
      await call(node, ["SET", "ev:exp", "v"]);
      await call(node, ["PEXPIRE", "ev:exp", "50"]);
      await within(source.barrier(), 5000, "barrier()");
      expect(collector.named("ev:")).to.deep.equal([
        "set ev:str",
        "hset ev:hash",
        "lpush ev:list",
        "del ev:str",
        "set ev:exp",
        "expire ev:exp",
      ]);
      const binary = collector.events.filter((e) => e.key.equals(BINARY_KEY));
      expect(binary.map((e) => e.event)).to.deep.equal(["set"]);
      expect(binary[0].shard).to.equal(node.id);
      // Active expiry (hz 10) removes the key without anyone reading it.
      const expired = await collector.waitFor(
        (e) => e.event === "expired" && e.key.toString() === "ev:exp",
        5000,
        "expired ev:exp",
      );
      expect(expired.shard).to.equal(node.id);
    });

    it("a notification its filter says is handled is dropped before it is read; the filter sees db, key and event in place", async () => {
      const topology = standaloneTopology(server);
      const collector = new Collector();
      const asked: string[] = [];
      const handled: NotificationFilter = (db, frame, keyStart, keyEnd, eventStart, eventEnd) => {
        const key = frame.toString("latin1", keyStart, keyEnd);
        const event = frame.toString("latin1", eventStart, eventEnd);
        if (key.startsWith("flt:")) asked.push(`${db} ${event} ${key}`);
        return key.startsWith("flt:drop") && event === "set";
      };
      const [source] = await opened.source(topology, collector, undefined, handled);
      const node = topology.node;
      await call(node, ["SET", "flt:drop:1", "v"]);
      await call(node, ["SET", "flt:keep:1", "v"]);
      await call(node, ["HSET", "flt:drop:2", "f", "v"]);
      await call(node, ["SELECT", "3"]);
      await call(node, ["SET", "flt:keep:3", "v"]);
      await call(node, ["SET", "flt:drop:3", "v"]);
      await call(node, ["SELECT", "0"]);
      await within(source.barrier(), 5000, "barrier()");
      expect(collector.named("flt:")).to.deep.equal(["set flt:keep:1", "hset flt:drop:2", "set flt:keep:3"]);
      expect(collector.events.find((e) => e.key.toString() === "flt:keep:3")?.db).to.equal(3);
      expect(asked).to.deep.equal([
        "0 set flt:drop:1",
        "0 set flt:keep:1",
        "0 hset flt:drop:2",
        "3 set flt:keep:3",
        "3 set flt:drop:3",
      ]);
    });

    it("barrier() resolves only after the events of acknowledged writes were delivered, in order", async () => {
      const topology = standaloneTopology(server);
      const collector = new Collector();
      const [source] = await opened.source(topology, collector);
      const node = topology.node;
      // One write at a time: the barrier after it sees its event, last.
      for (let i = 0; i < 500; i++) {
        await call(node, ["SET", `one:${i}`, "v"]);
        await source.barrier(i % 2 === 0 ? node.id : undefined);
        const last = collector.events[collector.events.length - 1];
        expect(last === undefined ? "nothing" : show(last)).to.equal(`set one:${i}`);
      }
      // Many pipelined writes: every one of them is there at the barrier, in write order. Long
      // keys make megabytes of notifications, still streaming in when the PING goes out, so
      // the pong shares a socket read with the last of them.
      let total = 0;
      const padding = "p".repeat(500);
      for (let round = 0; round < 8; round++) {
        const keys: string[] = [];
        const writes: Promise<RespValue>[] = [];
        for (let i = 0; i < 4000; i++) {
          keys.push(`many:${round}:${i}:${padding}`);
          writes.push(call(node, ["SET", keys[i], "v"]));
        }
        await Promise.all(writes);
        await within(source.barrier(node.id), 5000, "barrier(node)");
        expect(collector.named(`many:${round}:`)).to.deep.equal(keys.map((k) => `set ${k}`));
        total += keys.length;
      }
      // Delivered in batches (one call per event-loop turn), not one call per event.
      expect(collector.batches).to.be.below(total / 4);
    });

    it("stops cleanly: unsubscribed, nothing delivered afterwards, and a process using it exits", async () => {
      const topology = standaloneTopology(server);
      const collector = new Collector();
      const [source] = await opened.source(topology, collector);
      expect(await server.call("PUBSUB", "NUMPAT")).to.equal(1);
      await call(topology.node, ["SET", "stop:before", "v"]);
      await source.barrier();
      await source.stop();
      const count = collector.events.length;
      expect(await source.barrier()).to.equal(undefined);
      await call(topology.node, ["SET", "stop:after", "v"]);
      await sleep(1500); // longer than the topology re-check period
      expect(await server.call("PUBSUB", "NUMPAT")).to.equal(0);
      expect(collector.events.length).to.equal(count);
      expect(collector.named("stop:")).to.deep.equal(["set stop:before"]);

      // A process that starts and stops a source exits by itself: no handle is left open.
      const moduleUrl = (rel: string): string => new URL(rel, import.meta.url).href;
      const script = `
        import { pino } from "pino";
        import { KeyspaceEventSource } from ${JSON.stringify(moduleUrl("../src/gears/events/keyspace-source.js"))};
        import { StandaloneTopology } from ${JSON.stringify(moduleUrl("../src/upstream/topology.js"))};
        import { UpstreamNode } from ${JSON.stringify(moduleUrl("../src/upstream/node.js"))};
        import { Router } from ${JSON.stringify(moduleUrl("../src/routing/router.js"))};
        import { Shards } from ${JSON.stringify(moduleUrl("../src/routing/shards.js"))};
        const topology = new StandaloneTopology(new UpstreamNode({ host: "${server.host}", port: ${server.port} },
          { connectTimeoutMs: 2000, sharedConnections: 1 }));
        let got = 0;
        const source = new KeyspaceEventSource(new Shards(new Router(topology, null, 5000)), pino({ level: "silent" }), (e) => { got += e.length; });
        await source.start();
        await topology.node.call(["SET", "child:k", "v"]);
        await source.barrier();
        await source.stop();
        topology.close();
        console.log(JSON.stringify({ got }));
      `;
      const repo = fileURLToPath(new URL("../..", import.meta.url));
      const started = Date.now();
      const stdout = await new Promise<string>((resolve, reject) => {
        execFile(
          process.execPath,
          ["--input-type=module", "-e", script],
          { cwd: repo, timeout: 10_000, killSignal: "SIGKILL" },
          (err, out, errOut) =>
            err ? reject(new Error(`child: ${err.message}\n${out}${errOut}`)) : resolve(out),
        );
      });
      expect(JSON.parse(stdout)).to.deep.equal({ got: 1 });
      expect(Date.now() - started).to.be.below(8000);
    });
  });

  describe("notify-keyspace-events already set", () => {
    it("merges keyevents into other flags (Kx -> K, E and every class)", async () => {
      const server = await startRedis({ args: ["--notify-keyspace-events", "Kx"] });
      try {
        expect([...(await notifyFlags(server))].sort()).to.deep.equal(["K", "x"]);
        const [, status] = await opened.source(standaloneTopology(server), new Collector());
        const flags = await notifyFlags(server);
        expect([...flags].sort()).to.include.members(["A", "E", "K"]);
        expect(status.configured).to.equal(true);
        expect(status.shards[0].notifications).to.equal(flags);
        // Keyspace notifications (K) still flow to whoever else listens.
        expect(flags).to.include("K");
      } finally {
        await opened.close();
        await server.stop();
      }
    });

    it("leaves a complete setting alone (no CONFIG SET)", async () => {
      const server = await startRedis({ args: ["--notify-keyspace-events", "KEA"] });
      try {
        const [, status] = await opened.source(standaloneTopology(server), new Collector());
        expect(status.configured).to.equal(true);
        expect(await notifyFlags(server)).to.equal("AKE");
        const stats = String(await server.call("INFO", "commandstats"));
        expect(stats).to.include("cmdstat_config|get");
        expect(stats).not.to.include("cmdstat_config|set");
      } finally {
        await opened.close();
        await server.stop();
      }
    });
  });

  describe("CONFIG refused (renamed away, as on managed Redis)", () => {
    it("reports configured false with the error, warns, and still subscribes", async () => {
      // The operator enabled notifications in the server config; the proxy cannot check.
      const server = await startRedis({
        args: ["--rename-command", "CONFIG", "", "--notify-keyspace-events", "EA"],
      });
      try {
        const { log, lines } = capturingLogger();
        const collector = new Collector();
        const topology = standaloneTopology(server);
        const [source, status] = await opened.source(topology, collector, log);
        const id = `${server.host}:${server.port}`;
        expect(status.configured).to.equal(false);
        expect(status.shards).to.have.length(1);
        expect(status.shards[0].node).to.equal(id);
        expect(status.shards[0].configured).to.equal(false);
        expect(status.shards[0].error)
          .to.match(/unknown command/i)
          .and.to.include("CONFIG");
        const warnings = lines.filter((l) => l.level === 40 && l.node === id);
        expect(warnings).to.have.length(1);
        expect(String(warnings[0].msg)).to.include("notify-keyspace-events");
        await call(topology.node, ["SET", "refused:k", "v"]);
        await source.barrier();
        expect(collector.named("refused:")).to.deep.equal(["set refused:k"]);
      } finally {
        await opened.close();
        await server.stop();
      }
    });
  });

  describe("a server restart", () => {
    it("resubscribes (and re-enables notifications) after the server comes back", async () => {
      const server = await startRedis();
      try {
        const topology = standaloneTopology(server);
        const collector = new Collector();
        const [source] = await opened.source(topology, collector);
        await call(topology.node, ["SET", "restart:before", "v"]);
        await source.barrier();
        expect(collector.named("restart:")).to.deep.equal(["set restart:before"]);

        await server.kill();
        // While the shard is down a barrier does not hang: there is nothing to wait for.
        await within(source.barrier(), 2000, "barrier() while the server is down");
        // The server comes back without notifications (a CONFIG SET does not survive a restart,
        // and its arguments set none): whatever flags it has below, the source set them again.
        // (Checking "" here raced the source, which may have re-enabled them already.)
        await server.restart();

        let resumed: string | null = null;
        const deadline = Date.now() + 20_000;
        for (let i = 0; resumed === null && Date.now() < deadline; i++) {
          await server.call("SET", `restart:after:${i}`, "v");
          await sleep(200);
          const found = collector.events.find((e) => e.key.toString().startsWith("restart:after:"));
          if (found !== undefined) resumed = found.key.toString();
        }
        expect(resumed, "events after the restart").to.not.equal(null);
        expect(await notifyFlags(server)).to.include("E");
        expect(source.status().configured).to.equal(true);
        await call(topology.node, ["HSET", "restart:last", "f", "v"]);
        await source.barrier();
        expect(collector.named("restart:last")).to.deep.equal(["hset restart:last"]);
      } finally {
        await opened.close();
        await server.stop();
      }
    });
  });

  describe("a 3-master Redis Cluster", () => {
    let cluster: RedisCluster;
    before(async function () {
      this.timeout(60_000);
      cluster = await startCluster({ masters: 3 });
    });
    after(() => cluster.stop());

    async function clusterTopology(): Promise<ClusterTopology> {
      const topology = new ClusterTopology(
        cluster.nodes.map((n) => ({ host: n.host, port: n.port })),
        NODE_OPTIONS,
        pino({ level: "silent" }),
      );
      await topology.refresh();
      return topology;
    }

    /** A key named `${prefix}${i}` for the first i that lands on `node`. */
    function keyOn(topology: Topology, node: UpstreamNode, prefix: string): string {
      for (let i = 0; ; i++) {
        const key = `${prefix}${i}`;
        if (topology.nodeForSlot(calculateSlot(key)) === node) return key;
      }
    }

    it("configures and subscribes every master; events of every shard arrive, tagged with it", async () => {
      const topology = await clusterTopology();
      const collector = new Collector();
      const [source, status] = await opened.source(topology, collector);
      const masters = topology.masters();
      expect(masters).to.have.length(3);
      expect(status.configured).to.equal(true);
      expect(status.shards.map((s) => s.node).sort()).to.deep.equal(masters.map((m) => m.id).sort());
      for (const m of await cluster.masters())
        expect(await notifyFlags(m))
          .to.include("E")
          .and.include("A");

      for (const node of masters) {
        const key = keyOn(topology, node, "shard:");
        await call(node, ["SET", key, "v"]);
        await call(node, ["HSET", `{${key}}:h`, "f", "v"]);
      }
      const binaryNode = topology.nodeForSlot(calculateSlot(BINARY_KEY));
      await call(binaryNode, ["LPUSH", BINARY_KEY, "x"]);
      await within(source.barrier(), 5000, "barrier()");
      for (const node of masters) {
        const key = keyOn(topology, node, "shard:");
        const mine = collector.events.filter((e) => e.shard === node.id).map(show);
        expect(mine).to.include.members([`set ${key}`, `hset {${key}}:h`]);
      }
      const binary = collector.events.filter((e) => e.key.equals(BINARY_KEY));
      expect(binary.map((e) => [e.event, e.shard])).to.deep.equal([["lpush", binaryNode.id]]);
      for (const e of collector.events) {
        expect(e.shard, show(e)).to.equal(topology.nodeForSlot(calculateSlot(e.key)).id);
      }
    });

    it("barrier() covers every shard's acknowledged writes, and barrier(node) that node's", async () => {
      const topology = await clusterTopology();
      const collector = new Collector();
      const [source] = await opened.source(topology, collector);
      const perShard = new Map<string, string[]>();
      const writes: Promise<RespValue>[] = [];
      for (let i = 0; i < 3000; i++) {
        const key = `spread:${i}`;
        const node = topology.nodeForSlot(calculateSlot(key));
        perShard.set(node.id, [...(perShard.get(node.id) ?? []), `set ${key}`]);
        writes.push(call(node, ["SET", key, "v"]));
      }
      await Promise.all(writes);
      await within(source.barrier(), 5000, "barrier()");
      expect(perShard.size).to.equal(3);
      for (const [id, expected] of perShard) {
        const got = collector.events.filter((e) => e.shard === id).map(show);
        expect(got, id).to.deep.equal(expected);
      }
      for (const node of topology.masters()) {
        const key = keyOn(topology, node, "single:");
        await call(node, ["INCR", key]);
        await source.barrier(node.id);
        const last = collector.events[collector.events.length - 1];
        expect(show(last)).to.equal(`incrby ${key}`);
      }
    });
  });

  describe("a Redis Cluster with replicas, failing over", () => {
    let cluster: RedisCluster;
    before(async function () {
      this.timeout(90_000);
      cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
    });
    after(() => cluster.stop());

    it("subscribes to the promoted replica and drops the dead master", async function () {
      this.timeout(90_000);
      const topology = new ClusterTopology(
        cluster.nodes.map((n) => ({ host: n.host, port: n.port })),
        NODE_OPTIONS,
        pino({ level: "silent" }),
      );
      await topology.refresh();
      const collector = new Collector();
      const [source, status] = await opened.source(topology, collector);
      expect(status.shards).to.have.length(3);
      const key = "failover:key";
      const slot = calculateSlot(key);
      const oldMaster = await cluster.nodeForSlot(slot);
      const oldId = `${oldMaster.host}:${oldMaster.port}`;
      await oldMaster.call("SET", key, "before");
      await collector.waitFor((e) => e.key.toString() === key && e.shard === oldId, 5000, "before failover");

      await oldMaster.kill();
      let newMaster: RedisNode = oldMaster;
      const deadline = Date.now() + 30_000;
      while (newMaster.port === oldMaster.port) {
        if (Date.now() > deadline) throw new Error("no replica was promoted");
        await sleep(200);
        newMaster = await cluster.nodeForSlot(slot).catch(() => oldMaster);
      }
      await cluster.waitForState(true, 30_000);
      const newId = `${newMaster.host}:${newMaster.port}`;

      let seen = false;
      for (let i = 0; !seen && Date.now() < deadline + 20_000; i++) {
        await newMaster.call("SET", `${key}`, `after:${i}`);
        await sleep(200);
        seen = collector.events.some((e) => e.key.toString() === key && e.shard === newId);
      }
      expect(seen, `an event from the promoted master ${newId}`).to.equal(true);
      expect(await notifyFlags(newMaster)).to.include("E");
      const shards = source.status().shards.map((s) => s.node);
      expect(shards).to.include(newId);
      expect(shards).not.to.include(oldId);
      expect(shards).to.have.length(3);
    });
  });
});
