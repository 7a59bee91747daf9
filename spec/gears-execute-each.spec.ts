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

/**
 * Batched foreaches (one execute() of plain arguments): consecutive calls that differ only in
 * their last argument cross as that argument alone; any other difference, or a number among
 * the others, writes the call whole. Events of two kinds interleave in one batch.
 */
const BY_EVENT = "GB().foreach(x => execute('SADD', 'by:' + x.event, x.key)).register('c:*')";
const BY_LENGTH = "GB().foreach(x => execute('ZADD', 'len', x.key.length, x.key)).register('c:*')";
const LAST_NUMBER = "GB().foreach(x => execute('SADD', 'lens', x.key.length)).register('c:*')";

/**
 * Consecutive calls whose other arguments are equal strings (long, non-ASCII) share those
 * arguments' views on the host; each call's bytes are still whole.
 */
const REPEATED_KEY = "rep:é" + "ü".repeat(40);
const REPEATED = `GB().foreach(x => execute('SADD', '${REPEATED_KEY}', '${"ö".repeat(50)}', '日', x.key)).register('p:*')`;

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
    for (const script of [BY_EVENT, BY_LENGTH, LAST_NUMBER, REPEATED]) await execute(io, script);
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

  it("consecutive calls alike but for their last argument, and calls that differ, over interleaved events", async () => {
    const keys = Array.from({ length: 600 }, (_, i) => `c:${"x".repeat(i % 7)}${i}`);
    const pipeline = io.pipeline();
    // Runs of a few SETs then a few HSETs: calls to 'by:set' and 'by:hset' alternate in runs.
    keys.forEach((k, i) => (Math.floor(i / 3) % 2 === 0 ? pipeline.set(k, "v") : pipeline.hset(k, "f", "v")));
    await pipeline.exec();
    await eventually(
      () => direct.zcard("len"),
      (n) => n === keys.length,
      "every event handled",
    );
    await eventually(
      async () => (await direct.scard("by:set")) + (await direct.scard("by:hset")),
      (n) => n === keys.length,
      "every event handled",
    );
    const sets = keys.filter((_, i) => Math.floor(i / 3) % 2 === 0);
    const hashes = keys.filter((_, i) => Math.floor(i / 3) % 2 === 1);
    expect((await direct.smembers("by:set")).sort()).to.deep.equal(sets.sort());
    expect((await direct.smembers("by:hset")).sort()).to.deep.equal(hashes.sort());
    const scores = await direct.zrange("len", "0", "-1", "WITHSCORES");
    const byKey = new Map<string, string>();
    for (let i = 0; i < scores.length; i += 2) byKey.set(scores[i], scores[i + 1]);
    for (const k of keys) expect(byKey.get(k), k).to.equal(String(k.length));
    expect((await direct.smembers("lens")).sort()).to.deep.equal(
      [...new Set(keys.map((k) => String(k.length)))].sort(),
    );
  });

  it("consecutive calls equal but for their last argument, with long non-ASCII arguments: every call's bytes whole", async () => {
    const keys = Array.from({ length: 400 }, (_, i) => `p:${"é".repeat(i % 5)}${i}`);
    const pipeline = io.pipeline();
    for (const k of keys) pipeline.set(k, "v");
    await pipeline.exec();
    await eventually(
      () => direct.scard(REPEATED_KEY),
      (n) => n === keys.length + 2,
      "every event handled",
    );
    const members = (await direct.smembersBuffer(REPEATED_KEY)).map((b) => b.toString("hex")).sort();
    const expected = [...keys, "ö".repeat(50), "日"].map((m) => Buffer.from(m).toString("hex")).sort();
    expect(members).to.deep.equal(expected);
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
