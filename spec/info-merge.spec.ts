import { expect } from "chai";
import { Redis } from "ioredis";
import { mergeInfo } from "../src/routing/info-merge.js";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { BACKEND_MODES, Backend } from "./support/backend.js";

/** field -> value of one INFO section (or of the whole text when `section` is undefined). */
function fields(text: string, section?: string): Map<string, string> {
  const out = new Map<string, string>();
  let inside = section === undefined;
  for (const line of text.split("\r\n")) {
    if (line.startsWith("# ")) {
      inside = section === undefined || line.slice(2) === section;
      continue;
    }
    const colon = line.indexOf(":");
    if (inside && colon > 0) out.set(line.slice(0, colon), line.slice(colon + 1));
  }
  return out;
}

for (const mode of BACKEND_MODES) {
  describe(`INFO through the proxy: ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let io: Redis;

    before(async () => {
      backend = await Backend.start(mode);
      proxy = await startProxy([backend.seed]);
      io = new Redis({ port: proxy.port, host: "127.0.0.1" });
      // A registration makes the proxy keep keys of its own in db 0 (its stored session, a lease).
      await io.call(
        "RG.EXECUTE",
        "GB().foreach(x => execute('SET', 'seen', x.key)).register('user:*')",
        "ID",
        "r",
      );
      for (let i = 0; i < 40; i++) {
        if (i % 4 === 0) await io.set(`k:${i}`, "v", "EX", 100);
        else await io.set(`k:${i}`, "v");
      }
    });
    after(async () => {
      io.disconnect();
      await proxy.close();
      await backend.stop();
    });

    it("db0:keys= equals DBSIZE through the proxy (the proxy's own keys left out of both)", async () => {
      const dbsize = await io.dbsize();
      expect(dbsize).to.equal(40);
      const keyspace = fields(String(await io.info("keyspace")), "Keyspace");
      expect(keyspace.get("db0")).to.match(new RegExp(`^keys=${dbsize},expires=10,avg_ttl=\\d+$`));
      // Also in the full INFO.
      expect(fields(String(await io.info()), "Keyspace").get("db0")).to.match(new RegExp(`^keys=${dbsize},`));
    });

    it("sums what adds up and labels with its node what differs, never one shard's figures for all", async () => {
      const text = String(await io.info("everything"));
      const masters = await backend.masters();
      expect(fields(text, "Server").get("redis_version")).to.equal("7.0.15");
      if (masters.length === 1) {
        expect(text).to.not.include("# Shard ");
        return;
      }
      // run_id differs per master: it appears only in each master's labelled section.
      expect(fields(text, "Server").has("run_id")).to.equal(false);
      for (const m of masters) {
        const own = fields(text, `Shard 127.0.0.1:${m.port}`);
        expect(own.get("run_id"), `run_id of ${m.port}`).to.match(/^[0-9a-f]{40}$/);
        expect(own.get("tcp_port")).to.equal(String(m.port));
      }
      const total = Number(fields(text, "Stats").get("total_commands_processed"));
      let separately = 0;
      for (const m of masters)
        separately += Number(
          fields(String(await m.call("INFO", "stats")), "Stats").get("total_commands_processed"),
        );
      // Counted after the proxy's INFO: the shards' own figures have only grown since.
      expect(total).to.be.above(0).and.at.most(separately);
      expect(total).to.be.above(separately / masters.length);
    });
  });
}

describe("mergeInfo (routing/info-merge.ts) on real servers' INFO", function () {
  this.timeout(60_000);
  let backend: Backend;

  before(async () => {
    backend = await Backend.start("cluster");
  });
  after(async () => backend.stop());

  it("adds up memory, clients, counters and keyspaces, keeps what all agree on once, and recomputes _human", async () => {
    const masters = await backend.masters();
    for (let k = 0; k < 30; k++)
      await (await backend.nodeOf(`n:${k}`)).call("SET", `n:${k}`, "x".repeat(100));
    const texts = await Promise.all(masters.map(async (m) => String(await m.call("INFO", "everything"))));
    const merged = mergeInfo(texts.map((text, i) => ({ node: `127.0.0.1:${masters[i].port}`, text })));
    const each = texts.map((t) => fields(t));
    const sumOf = (name: string): number => each.reduce((acc, f) => acc + Number(f.get(name)), 0);
    const all = fields(merged);
    for (const name of ["used_memory", "connected_clients", "total_commands_processed", "keyspace_hits"]) {
      expect(Number(all.get(name)), name).to.equal(sumOf(name));
    }
    expect(all.get("maxclients")).to.equal(each[0].get("maxclients"));
    expect(all.get("used_memory_human")).to.match(/^\d+\.\d\dM$/);
    expect(Number(all.get("used_memory_human")!.slice(0, -1))).to.be.closeTo(
      sumOf("used_memory") / 2 ** 20,
      0.01,
    );
    expect(fields(merged, "Keyspace").get("db0")).to.match(/^keys=30,expires=0,avg_ttl=0$/);
    expect(fields(merged, "Server").has("run_id")).to.equal(false);
    // Subtracting the proxy's own keys; a database left empty is dropped as Redis drops it.
    const less = mergeInfo(
      texts.map((text, i) => ({ node: `n${i}`, text })),
      { keys: 30, expires: 0 },
    );
    expect(fields(less, "Keyspace").has("db0")).to.equal(false);
  });
});
