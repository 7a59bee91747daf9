import type { AddressInfo } from "node:net";
import { expect } from "chai";
import {
  startCluster,
  startRedis,
  startProxy,
  sendCommand,
  type RedisCluster,
  type RedisNode,
  type RunningProxy,
} from "./harness/index.js";
import { eventually } from "./support/polling.js";
import { metricsPage, sample } from "./support/metrics.js";
import { RawClient, encode } from "./support/raw-client.js";

const MB = 1024 * 1024;

describe("metrics and health endpoints (--metrics-port)", function () {
  this.timeout(30_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let base: string;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([redis], { metricsPort: 0 });
    const address = proxy.server.metricsServer?.address() as AddressInfo;
    base = `http://127.0.0.1:${address.port}`;
  });
  after(async () => {
    await proxy.close();
    await redis.stop();
  });

  const page = async (): Promise<string> => (await fetch(`${base}/metrics`)).text();
  const status = async (path: string): Promise<number> => (await fetch(`${base}${path}`)).status;

  it("counts a known mix of commands and errors exactly, with moving histograms", async () => {
    const before = await page();
    for (let i = 0; i < 5; i++) await sendCommand(proxy.port, ["SET", `m:${i}`, "v"]);
    for (let i = 0; i < 3; i++) await sendCommand(proxy.port, ["GET", `m:${i}`]);
    await sendCommand(proxy.port, ["INCR", "m:0"]).catch(() => null);
    await sendCommand(proxy.port, ["LPUSH", "m:1", "x"]).catch(() => null);
    const after = await page();
    const delta = (series: string): number => sample(after, series) - sample(before, series);
    expect(delta('gears_proxy_commands_total{command="set"}')).to.equal(5);
    expect(delta('gears_proxy_commands_total{command="get"}')).to.equal(3);
    expect(delta('gears_proxy_commands_total{command="incr"}')).to.equal(1);
    expect(delta('gears_proxy_errors_total{kind="ERR"}')).to.equal(1);
    expect(delta('gears_proxy_errors_total{kind="WRONGTYPE"}')).to.equal(1);
    expect(delta('gears_proxy_command_duration_seconds_count{command="set"}')).to.equal(5);
    expect(delta('gears_proxy_command_duration_seconds_bucket{le="10",command="set"}')).to.equal(5);
    expect(delta('gears_proxy_command_duration_seconds_bucket{le="+Inf",command="get"}')).to.equal(3);
    expect(delta("gears_proxy_connections_total")).to.equal(10);
    expect(delta("gears_proxy_client_bytes_in_total")).to.be.greaterThan(0);
    expect(delta("gears_proxy_client_bytes_out_total")).to.be.greaterThan(0);
    expect(sample(after, 'gears_proxy_command_duration_seconds_sum{command="get"}')).to.be.greaterThan(0);
  });

  it("counts error codes past the 512th in one OTHER series, however many new codes come", async () => {
    const before = await page();
    const c = await RawClient.connect(proxy.port);
    try {
      // 1,000 error codes never seen before (a script's error_reply), in one pipeline.
      const n = 1000;
      c.write(
        Buffer.concat(
          Array.from({ length: n }, (_, i) =>
            encode(["EVAL", `return redis.error_reply('E${i}X${Date.now()} oops')`, "0"]),
          ),
        ),
      );
      for (let i = 0; i < n; i++) await c.next();
    } finally {
      c.close();
    }
    const after = await page();
    const kinds = after.split("\n").filter((l) => l.startsWith("gears_proxy_errors_total{"));
    expect(kinds.length, "error series").to.be.at.most(513);
    const other =
      sample(after, 'gears_proxy_errors_total{kind="OTHER"}') -
      sample(before, 'gears_proxy_errors_total{kind="OTHER"}');
    expect(other).to.be.at.least(1000 - 512);
  });

  it("answers /healthz with 200 and /readyz by whether the upstream answers", async () => {
    expect(await status("/healthz")).to.equal(200);
    expect(await status("/readyz")).to.equal(200);
    await redis.kill();
    const killedAt = Date.now();
    await eventually(
      () => status("/readyz"),
      (s) => s === 503,
      "readyz 503 after the upstream died",
      2000,
    );
    expect(Date.now() - killedAt).to.be.lessThan(2000);
    expect(await status("/healthz")).to.equal(200);
    await redis.restart();
    await eventually(
      () => status("/readyz"),
      (s) => s === 200,
      "readyz 200 after the upstream returned",
      10_000,
    );
  });
});

describe("client output and evictions on /metrics", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([redis], {
      metricsPort: 0,
      maxmemoryClients: 0,
      clientOutputBufferLimit: 32 * MB,
    });
    expect(await sendCommand(proxy.port, ["SET", "big", "x".repeat(MB)])).to.equal("OK");
  });
  after(async () => {
    await proxy.close();
    await redis.stop();
  });

  /** A client that pipelines `n` GETs of the 1 MB value and stops reading. */
  async function stuckReader(n: number): Promise<RawClient> {
    const client = await RawClient.connect(proxy.port);
    client.socket.pause();
    client.write(Buffer.concat(Array.from({ length: n }, () => encode(["GET", "big"]))));
    return client;
  }

  it("shows the reply bytes held for clients at scrape time, and counts an output-limit eviction", async () => {
    const before = await metricsPage(proxy);
    // 20 MB under the 32 MB limit: kept, and most of it held in the proxy (the kernel takes a few MB).
    const slow = await stuckReader(20);
    await eventually(
      () => metricsPage(proxy),
      (p) => sample(p, "gears_proxy_clients_output_bytes") > 4 * MB,
      "the stuck client's replies counted",
    );
    // 60 MB: over the limit, disconnected.
    const over = await stuckReader(60);
    const after = await eventually(
      () => metricsPage(proxy),
      (p) =>
        sample(p, 'gears_proxy_client_evictions_total{reason="output-buffer-limit"}') >
        sample(before, 'gears_proxy_client_evictions_total{reason="output-buffer-limit"}'),
      "the eviction counted",
    );
    const delta = (series: string): number => sample(after, series) - sample(before, series);
    expect(delta('gears_proxy_client_evictions_total{reason="output-buffer-limit"}')).to.equal(1);
    expect(delta('gears_proxy_client_evictions_total{reason="maxmemory-clients"}')).to.equal(0);
    over.close();
    slow.close();
    await eventually(
      () => metricsPage(proxy),
      (p) => sample(p, "gears_proxy_clients_output_bytes") === 0,
      "nothing held once the clients left",
    );
  });
});

describe("metrics and the shards' slow logs in front of a cluster", function () {
  this.timeout(60_000);
  let cluster: RedisCluster;
  let proxy: RunningProxy;
  const page = (): Promise<string> => metricsPage(proxy);
  const id = async (node: RedisNode): Promise<string> => String(await node.call("CLUSTER", "MYID"));
  const slot = 12182; // the slot of "foo" and of every "{foo}..." key

  before(async () => {
    cluster = await startCluster({ masters: 3, args: ["--enable-debug-command", "yes"] });
    proxy = await startProxy([cluster.nodes[0]], { metricsPort: 0 });
  });
  after(async () => {
    await proxy.close();
    await cluster.stop();
  });

  it("counts an ASK redirect the proxy followed", async () => {
    const source = await cluster.nodeForSlot(slot);
    const target = (await cluster.masters()).find((n) => n.port !== source.port)!;
    await target.call("CLUSTER", "SETSLOT", String(slot), "IMPORTING", await id(source));
    await source.call("CLUSTER", "SETSLOT", String(slot), "MIGRATING", await id(target));
    const before = sample(await page(), 'gears_proxy_upstream_redirects_total{kind="ASK"}');
    try {
      // Not on the source any more: the source answers ASK and the proxy asks the target.
      expect(await sendCommand(proxy.port, ["GET", "foo"])).to.equal(null);
    } finally {
      for (const node of [source, target]) await node.call("CLUSTER", "SETSLOT", String(slot), "STABLE");
    }
    const after = sample(await page(), 'gears_proxy_upstream_redirects_total{kind="ASK"}');
    expect(after - before).to.equal(1);
  });

  it("counts each TRYAGAIN and each retry it caused", async () => {
    const source = await cluster.nodeForSlot(slot);
    const target = (await cluster.masters()).find((n) => n.port !== source.port)!;
    expect(await sendCommand(proxy.port, ["SET", "{foo}here", "1"])).to.equal("OK");
    await target.call("CLUSTER", "SETSLOT", String(slot), "IMPORTING", await id(source));
    await source.call("CLUSTER", "SETSLOT", String(slot), "MIGRATING", await id(target));
    const before = await page();
    const tryagain = 'gears_proxy_upstream_redirects_total{kind="TRYAGAIN"}';
    const retries = 'gears_proxy_upstream_retries_total{reason="TRYAGAIN"}';
    let reply: Promise<unknown>;
    try {
      // One key there, one not, in a migrating slot: the source answers TRYAGAIN until the slot settles.
      reply = sendCommand(proxy.port, ["MGET", "{foo}here", "{foo}gone"], { timeoutMs: 20_000 });
      await eventually(page, (p) => sample(p, retries) > sample(before, retries), "a TRYAGAIN retried");
    } finally {
      for (const node of [source, target]) await node.call("CLUSTER", "SETSLOT", String(slot), "STABLE");
    }
    expect(await reply).to.deep.equal(["1", null]);
    const after = await page();
    const delta = (series: string): number => sample(after, series) - sample(before, series);
    // Every TRYAGAIN was retried (the command did not give up), at least once.
    expect(delta(tryagain)).to.be.at.least(1);
    expect(delta(retries)).to.equal(delta(tryagain));
    expect(delta('gears_proxy_errors_total{kind="TRYAGAIN"}')).to.equal(0);
  });

  it("counts the slot map reads asked for, apart from the periodic ones", async () => {
    const before = await page();
    for (let i = 0; i < 2; i++) expect(await sendCommand(proxy.port, ["RG.REFRESHCLUSTER"])).to.equal("OK");
    const after = await page();
    const delta = (cause: string): number =>
      sample(after, `gears_proxy_topology_refreshes_total{cause="${cause}"}`) -
      sample(before, `gears_proxy_topology_refreshes_total{cause="${cause}"}`);
    // A request that finds a periodic read running joins it instead of starting its own.
    expect(delta("requested")).to.be.at.most(2);
    expect(delta("requested") + delta("periodic")).to.be.at.least(2);
    if (delta("periodic") === 0) expect(delta("requested")).to.equal(2);
  });

  it("reads the requests in flight per node at scrape time", async () => {
    const owner = await cluster.nodeForSlot(slot);
    const series = `gears_proxy_upstream_in_flight{node="127.0.0.1:${owner.port}"}`;
    expect(sample(await page(), series)).to.equal(0);
    const blocked = sendCommand(proxy.port, ["BLPOP", "{foo}queue", "0"], { timeoutMs: 20_000 });
    await eventually(page, (p) => sample(p, series) === 1, "the BLPOP in flight on its node");
    const others = (await cluster.masters()).filter((n) => n.port !== owner.port);
    const during = await page();
    for (const n of others)
      expect(sample(during, `gears_proxy_upstream_in_flight{node="127.0.0.1:${n.port}"}`)).to.equal(0);
    expect(await sendCommand(proxy.port, ["LPUSH", "{foo}queue", "x"])).to.equal(1);
    expect(await blocked).to.deep.equal(["{foo}queue", "x"]);
    await eventually(page, (p) => sample(p, series) === 0, "nothing in flight once answered");
  });

  it("SLOWLOG SHARDS returns every master's slow log, each entry tagged with its node", async () => {
    const masters = await cluster.masters();
    for (const m of masters) {
      await m.call("CONFIG", "SET", "slowlog-log-slower-than", "100000");
      await m.call("SLOWLOG", "RESET");
    }
    try {
      const sleeper = masters[0];
      await sleeper.call("DEBUG", "SLEEP", "0.2");
      // A slow script through the proxy, on the node that owns its key.
      const owner = await cluster.nodeForSlot(slot);
      const script =
        "local t0 = redis.call('TIME') repeat local t = redis.call('TIME') until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 200000 return 1";
      expect(await sendCommand(proxy.port, ["EVAL", script, "1", "{foo}k"], { timeoutMs: 10_000 })).to.equal(
        1,
      );
      const entries = (await sendCommand(proxy.port, ["SLOWLOG", "SHARDS"])) as unknown[][];
      const tagged = entries.map((e) => ({
        node: String(e[6]),
        argv: (e[3] as unknown[]).map(String),
        us: Number(e[2]),
      }));
      const debug = tagged.filter((e) => e.argv[0].toUpperCase() === "DEBUG");
      expect(debug).to.have.length(1);
      expect(debug[0].node).to.equal(`127.0.0.1:${sleeper.port}`);
      expect(debug[0].argv).to.deep.equal(["DEBUG", "SLEEP", "0.2"]);
      expect(debug[0].us).to.be.at.least(200_000);
      const evals = tagged.filter((e) => e.argv[0].toUpperCase() === "EVAL");
      expect(evals).to.have.length(1);
      expect(evals[0].node).to.equal(`127.0.0.1:${owner.port}`);
      for (const e of entries) expect(e).to.have.length(7);
      // The count applies per node, as each node's SLOWLOG GET count.
      expect(((await sendCommand(proxy.port, ["SLOWLOG", "SHARDS", "0"])) as unknown[]).length).to.equal(0);
      // SLOWLOG GET stays the proxy's own: Redis's six fields, no node.
      const own = (await sendCommand(proxy.port, ["SLOWLOG", "GET"])) as unknown[][];
      for (const e of own) expect(e).to.have.length(6);
      expect(own.some((e) => String((e[3] as unknown[])[0]).toUpperCase() === "EVAL")).to.equal(true);
      const help = ((await sendCommand(proxy.port, ["SLOWLOG", "HELP"])) as unknown[]).map(String);
      expect(help[0]).to.match(/^SLOWLOG <subcommand>/);
      expect(help).to.include("SHARDS [<count>]");
      await expectError(["SLOWLOG", "SHARDS", "many"], "ERR count should be greater than or equal to -1");
      await expectError(
        ["SLOWLOG", "SHARDS", "1", "2"],
        "ERR unknown subcommand or wrong number of arguments",
      );
    } finally {
      for (const m of masters) await m.call("CONFIG", "SET", "slowlog-log-slower-than", "10000");
    }
  });

  async function expectError(argv: string[], start: string): Promise<void> {
    const err = await sendCommand(proxy.port, argv).then(
      () => null,
      (e: Error) => e.message,
    );
    expect(err).to.be.a("string");
    expect(err!.startsWith(start), err!).to.equal(true);
  }
});
