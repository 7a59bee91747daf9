import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { eventually, execute, registrations } from "./support/registrations.js";

/**
 * Issue 14: a batched foreach's execute() calls leave as one buffer per batch, each call's
 * arguments written straight into it. What reaches Redis must be what the handler passed,
 * byte for byte: non-ASCII text (UTF-8), numbers, empty and long strings, a command name
 * in any case; a refused command does not stop the others.
 */

/** Each event's key, as the handler wrote it with different arguments. */
const WRITE_EACH = `GB().foreach(x => {
  const k = x.key;
  execute('sAdd', 'seen:' + k, 'é' + k, '日本' + k, '', 42, 1.5, 'x'.repeat(40) + k, 'ü'.repeat(30));
  execute('HSET', 'h:' + k, 'f', true, 'g', k + '\\u00ff');
}).register('k:*')`;

const REFUSED = `GB().foreach(x => {
  if (x.key === 'r:refused') execute('MULTI');
  else execute('SET', 'done:' + x.key, x.key);
}).register('r:*')`;

describe("gears batched execute(): arguments reach Redis as the handler passed them", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  let io: Redis;
  let direct: Redis;

  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
    io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    direct = new Redis({ port: redis.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    await execute(io, WRITE_EACH);
    await execute(io, REFUSED);
  });

  after(async () => {
    for (const r of await registrations(io)) await io.call("RG.UNREGISTER", r.id);
    io.disconnect();
    direct.disconnect();
    await proxy?.close();
    await redis?.stop();
  });

  it("non-ASCII, numbers, empty, long strings and a mixed-case name, over a batch of many events", async () => {
    const keys = Array.from({ length: 300 }, (_, i) => `k:${i}`);
    const pipeline = io.pipeline();
    for (const k of keys) pipeline.set(k, "v");
    await pipeline.exec();
    await eventually(
      () => direct.exists(...keys.map((k) => `h:${k}`)),
      (n) => n === keys.length,
      "every event handled",
    );
    for (const k of [keys[0], keys[137], keys[299]]) {
      const members = (await direct.smembersBuffer(`seen:${k}`)).map((b) => b.toString("hex")).sort();
      const expected = ["é" + k, "日本" + k, "", "42", "1.5", "x".repeat(40) + k, "ü".repeat(30)]
        .map((s) => Buffer.from(s).toString("hex"))
        .sort();
      expect(members, k).to.deep.equal(expected);
      const hash = await direct.hgetallBuffer(`h:${k}`);
      expect(hash.f.toString("hex")).to.equal(Buffer.from("true").toString("hex"));
      expect(hash.g.toString("hex")).to.equal(Buffer.from(k + "\u00ff").toString("hex"));
    }
  });

  it("a refused command is reported; the other calls of the batch are written", async () => {
    const pipeline = io.pipeline();
    pipeline.set("r:a", "1");
    pipeline.set("r:refused", "1");
    pipeline.set("r:b", "1");
    await pipeline.exec();
    await eventually(
      () => direct.exists("done:r:a", "done:r:b"),
      (n) => n === 2,
      "the other records written",
    );
    await eventually(
      async () => (await registrations(io)).map((r) => r.stats.lastError ?? ""),
      (errors) => errors.some((e) => e.includes("cannot be called from a gears script")),
      "the refusal reported",
    );
  });
});
