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

/** The value of one sample line (`name{labels} value`) in a Prometheus text page; 0 when absent. */
function sample(page: string, series: string): number {
  const line = page.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

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

describe("metrics in front of a cluster", function () {
  this.timeout(60_000);
  let cluster: RedisCluster;
  let proxy: RunningProxy;

  before(async () => {
    cluster = await startCluster({ masters: 3 });
    proxy = await startProxy([cluster.nodes[0]], { metricsPort: 0 });
  });
  after(async () => {
    await proxy.close();
    await cluster.stop();
  });

  it("counts an ASK redirect the proxy followed", async () => {
    const address = proxy.server.metricsServer?.address() as AddressInfo;
    const page = async (): Promise<string> =>
      (await fetch(`http://127.0.0.1:${address.port}/metrics`)).text();
    const slot = 12182; // the slot of "foo"
    const source = await cluster.nodeForSlot(slot);
    const target = (await cluster.masters()).find((n) => n.port !== source.port)!;
    const id = async (node: RedisNode): Promise<string> => String(await node.call("CLUSTER", "MYID"));
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
});
