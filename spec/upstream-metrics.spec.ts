/**
 * /metrics on the upstream side: the round trip to each node as a histogram, and whether each
 * node is reachable, against a real redis-server that is killed and restarted.
 */
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually } from "./support/polling.js";

/** The value of one sample line of the exposition text; undefined when absent. */
function sample(page: string, name: string, labels: string): number | undefined {
  const line = page.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

describe("upstream metrics", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let client: Redis;
  let page: () => Promise<string>;
  let node: string;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }], { metricsPort: 0 });
    const { port } = proxy.server.metricsServer!.address() as AddressInfo;
    page = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    client = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 0 });
    node = `127.0.0.1:${redis.port}`;
  });

  after(async () => {
    client.disconnect();
    await proxy.close();
    await redis.stop();
  });

  it("counts every request's round trip to the node, in latency buckets", async () => {
    const count = async (): Promise<number> =>
      sample(await page(), "gears_proxy_upstream_round_trip_seconds_count", `node="${node}"`) ?? 0;
    const before = await count();
    for (let i = 0; i < 25; i++) await client.set(`rt:${i}`, "v");
    const after = await count();
    // At least the 25 SETs (a SELECT or the proxy's own requests may add a few).
    expect(after - before).to.be.at.least(25);
    const text = await page();
    const inf = sample(text, "gears_proxy_upstream_round_trip_seconds_bucket", `le="+Inf",node="${node}"`);
    expect(inf).to.equal(sample(text, "gears_proxy_upstream_round_trip_seconds_count", `node="${node}"`));
    const tenSeconds = sample(
      text,
      "gears_proxy_upstream_round_trip_seconds_bucket",
      `le="10",node="${node}"`,
    );
    expect(tenSeconds).to.be.greaterThan(0);
    expect(sample(text, "gears_proxy_upstream_round_trip_seconds_sum", `node="${node}"`)).to.be.greaterThan(
      0,
    );
  });

  it("says whether the node is up: 0 once it is lost, 1 again once it is back", async () => {
    const up = async (): Promise<number | undefined> =>
      sample(await page(), "gears_proxy_upstream_up", `node="${node}"`);
    expect(await up()).to.equal(1);
    await redis.kill();
    await eventually(up, (v) => v === 0, "gears_proxy_upstream_up to drop to 0");
    await redis.restart();
    await eventually(
      () => client.ping().catch((err: Error) => err.message),
      (reply) => reply === "PONG",
      "PING through the proxy after the restart",
      20_000,
    );
    expect(await up()).to.equal(1);
  });
});
