/**
 * What the repository tells a user holds: the README's options table and the example config
 * cover every option, the README's gears examples give what they claim, and the image's
 * HEALTHCHECK command tells a ready proxy from one whose upstream is gone.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { Redis } from "ioredis";
import { parseArgs } from "../src/cli.js";
import { optionRows, parseTableRows } from "../src/config-docs.js";
import { OPTIONS } from "../src/config-file.js";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually } from "./support/polling.js";

/** dist/spec/docs.spec.js -> the repository root */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const read = (file: string): string => fs.readFileSync(path.join(ROOT, file), "utf8");

describe("docs", function () {
  this.timeout(30_000);

  it("the README's options table lists every option as the definitions have it", () => {
    const readme = read("README.md");
    const block = /<!-- options:start[^>]*-->([\s\S]*?)<!-- options:end -->/.exec(readme);
    expect(block, "the generated options block").to.not.equal(null);
    expect(parseTableRows(block![1])).to.deep.equal(optionRows());
  });

  it("the example config sets every option, and is accepted as it is", () => {
    const file = path.join(ROOT, "gears-proxy.example.json");
    const keys = Object.keys(JSON.parse(read("gears-proxy.example.json")) as Record<string, unknown>);
    expect([...keys].sort()).to.deep.equal(OPTIONS.map((o) => o.flag).sort());
    const config = parseArgs(["--config", file], {});
    expect(config).to.include({ tlsPort: 6381, upstreamTls: true, metricsPort: 9180, logFormat: "json" });
    expect(config.upstreams).to.have.length(2);
  });

  it("the README links no file outside the repository", () => {
    const readme = read("README.md");
    expect(readme).to.not.include("shared/spec");
    for (const [, target] of readme.matchAll(/\]\(((?!https?:)[^)#]+)\)/g)) {
      expect(fs.existsSync(path.join(ROOT, target)), target).to.equal(true);
    }
  });

  describe("examples against a real server", () => {
    let redis: RedisNode;
    let proxy: RunningProxy;
    let client: Redis;

    before(async () => {
      redis = await startRedis();
      proxy = await startProxy([{ port: redis.port }], { metricsPort: 0 });
      client = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 0 });
    });

    after(async () => {
      client.disconnect();
      await proxy.close();
      await redis.stop();
    });

    it("the README's batch examples count single genres", async () => {
      await client.hset("movie:1", { title: "A", genres: "Drama,Comedy" });
      await client.hset("movie:2", { title: "B", genres: "Comedy" });
      await client.hset("movie:3", { title: "C" });
      const examples = [
        ...read("README.md").matchAll(/RG\.EXECUTE "(GB\(.*?countby\(\)\.run\('movie:\*'\))"/g),
      ];
      expect(examples.map((m) => m[1])).to.have.length(2);
      for (const [, script] of examples) {
        const [results, errors] = (await client.call("RG.EXECUTE", script)) as [string[], string[]];
        expect(errors, script).to.deep.equal([]);
        const counts = Object.fromEntries(
          results.map((r) => JSON.parse(r) as { key: string; value: number }).map((r) => [r.key, r.value]),
        );
        expect(counts, script).to.deep.equal({ Drama: 1, Comedy: 2 });
      }
    });

    it("the Dockerfile's HEALTHCHECK passes while ready and fails once the upstream is gone", async () => {
      const dockerfile = read("Dockerfile");
      expect(dockerfile).to.match(/--metrics-port 9180 --metrics-bind 0\.0\.0\.0/);
      const command = /^\s*CMD (\[.*\])$/m.exec(dockerfile.slice(dockerfile.indexOf("HEALTHCHECK")));
      expect(command, "HEALTHCHECK CMD [...]").to.not.equal(null);
      const argv = JSON.parse(command![1]) as string[];
      expect(argv.join(" ")).to.include("/readyz");
      const port = (proxy.server.metricsServer!.address() as AddressInfo).port;
      const check = (): Promise<number> =>
        new Promise((resolve) => {
          const [program, ...args] = argv.map((a) => a.replace("9180", String(port)));
          execFile(program, args, { timeout: 10_000 }, (err) => resolve(err === null ? 0 : 1));
        });
      expect(await check()).to.equal(0);
      await redis.kill();
      try {
        await eventually(check, (code) => code === 1, "the health check failing");
      } finally {
        await redis.restart();
      }
      await eventually(check, (code) => code === 0, "the health check passing again");
    });
  });
});
