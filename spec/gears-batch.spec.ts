import { expect } from "chai";
import { Redis, type RedisOptions } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES, Direct } from "./support/backend.js";
import { asArray, connect, execAll, rejection, run, str, type Reply } from "./support/gears.js";

/**
 * RG.EXECUTE batch executions against real redis-server, standalone and a 3-master cluster:
 * readers, operations, result conversion, execute()/executeAsync(), errors, the count-by-genre
 * example, concurrency. Expectations are computed from Redis directly (or plain JS), never
 * hard-coded.
 */

interface KeyRecord {
  key: string;
  value?: unknown;
  type?: string;
  event?: unknown;
}

interface Group {
  key: unknown;
  value: unknown;
}

/** The results of a script that must not produce errors. */
async function results(client: Redis, script: string): Promise<Reply[]> {
  const out = await run(client, script);
  expect(out.errors, `errors of ${script}`).to.deep.equal([]);
  return out.results;
}

/** Results as strings, parsed as JSON. */
async function parsed<T>(client: Redis, script: string): Promise<T[]> {
  return (await results(client, script)).map((r) => JSON.parse(str(r)) as T);
}

function numbers(list: Reply[]): number[] {
  return list.map((r) => Number(str(r)));
}

function byNumber(a: number, b: number): number {
  return a - b;
}

/** {key, value} records as a plain object key -> value (keys must be unique). */
function groups(list: Group[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const g of list) {
    expect(g.key, "group key").to.be.a("string");
    const key = g.key as string;
    expect(out, `group ${key} appears once`).not.to.have.property(key);
    out[key] = g.value;
  }
  return out;
}

function countBy<T>(items: T[], keyOf: (item: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const item of items) {
    const k = keyOf(item);
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

/** A deterministic pseudo-random generator (no fixed expectations: only fixed data). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const N = 300;
const GENRES = [
  "Drama",
  "Comedy",
  "Action",
  "Thriller",
  "Horror",
  "Romance",
  "Sci-Fi",
  "Documentary",
  "Animation",
  "Western",
];
const MOVIES = 10_000;

for (const mode of BACKEND_MODES) {
  describe(`gears batch: ${Backend.label(mode)} behind the proxy`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let direct: Direct;
    let io: Redis;
    /** Direct ioredis connections to every master, in masters() order. */
    let masters: Redis[] = [];
    let masterPorts: number[] = [];
    const clients: Redis[] = [];

    function client(options: RedisOptions = {}): Redis {
      const c = connect(proxy.port, options);
      clients.push(c);
      return c;
    }

    /** Keys matching `pattern` on each master, scanned directly (one array per master). */
    async function keysPerMaster(pattern: string): Promise<string[][]> {
      const out: string[][] = [];
      for (const m of masters) {
        const keys = new Set<string>();
        let cursor = "0";
        do {
          const [next, batch] = await m.scan(cursor, "MATCH", pattern, "COUNT", 1000);
          cursor = next;
          for (const k of batch) keys.add(k);
        } while (cursor !== "0");
        out.push([...keys]);
      }
      return out;
    }

    /** The direct connection to the master that owns `key`. */
    async function connOf(key: string): Promise<Redis> {
      const port = await ownerPort(key);
      const i = masterPorts.indexOf(port);
      if (i < 0) throw new Error(`no master on port ${port}`);
      return masters[i];
    }

    /** The port of the master that owns `key`. */
    async function ownerPort(key: string): Promise<number> {
      return (await backend.nodeOf(key)).port;
    }

    before(async function () {
      this.timeout(90_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      direct = new Direct(backend);
      io = client();
      masterPorts = (await backend.masters()).map((n) => n.port);
      masters = masterPorts.map((port) => connect(port));
      const p = io.pipeline();
      for (let i = 0; i < N; i++) p.set(`num:${i}`, String(i));
      await execAll(p);
    });

    after(async () => {
      for (const c of [...clients, ...masters]) c.disconnect();
      await direct?.close();
      await proxy?.close();
      await backend?.stop();
    });

    it("the num:* data set covers every master (a precondition of the per-shard tests)", async () => {
      const perMaster = await keysPerMaster("num:*");
      expect(perMaster).to.have.length(mode === "cluster" ? 3 : 1);
      for (const keys of perMaster) expect(keys.length).to.be.greaterThan(5);
      expect(perMaster.flat()).to.have.length(N);
    });

    describe("readers", () => {
      const TYPED = ["kv:str", "kv:hash", "kv:list", "kv:set", "kv:zset", "kv:stream"];

      before(async () => {
        await io.set("kv:str", "hello");
        await io.hset("kv:hash", "f1", "v1", "f2", "v2", "f3", "3");
        await io.rpush("kv:list", "c", "a", "b", "a");
        await io.sadd("kv:set", "m1", "m2", "m3");
        await io.zadd("kv:zset", "1.5", "z1", "2", "z2", "-3", "z3", "10", "z10");
        await io.xadd("kv:stream", "*", "x", "1", "y", "2");
        await io.xadd("kv:stream", "*", "z", "3");
      });

      /** The value of `key` as KeysReader must give it, read directly from its shard. */
      async function expectedValue(key: string, type: string): Promise<unknown> {
        const conn = await connOf(key);
        switch (type) {
          case "string":
            return conn.get(key);
          case "hash":
            return conn.hgetall(key);
          case "list":
            return conn.lrange(key, 0, -1);
          case "set":
            return (await conn.smembers(key)).sort();
          case "zset": {
            // RESP3 (ioredis' default) nests [member, score] pairs; RESP2 is flat.
            const reply = asArray(await conn.call("ZRANGE", key, "0", "-1", "WITHSCORES"), "ZRANGE");
            const pairs: Reply[][] = Array.isArray(reply[0])
              ? reply.map((p) => asArray(p, "pair"))
              : reply.flatMap((_, i) => (i % 2 === 0 ? [[reply[i], reply[i + 1]]] : []));
            return pairs.map(([member, score]) => [str(member), Number(score)]);
          }
          case "stream":
            return (await conn.xrange(key, "-", "+")).map(([id, fields]) => {
              const value: Record<string, string> = {};
              for (let i = 0; i < fields.length; i += 2) value[fields[i]] = fields[i + 1];
              return { id, value };
            });
          default:
            throw new Error(`unexpected type ${type}`);
        }
      }

      it("KeysReader gives {key, value, type, event} with values of every type", async () => {
        const records = await parsed<KeyRecord>(io, "GB().run('kv:*')");
        expect(records.map((r) => r.key).sort()).to.deep.equal([...TYPED].sort());
        for (const r of records) {
          const type = await direct.text("TYPE", r.key);
          expect(r.type, r.key).to.equal(type);
          expect(r.event, r.key).to.equal(null);
          const value = r.type === "set" ? [...(r.value as string[])].sort() : r.value;
          expect(value, r.key).to.deep.equal(await expectedValue(r.key, str(type)));
        }
        const zset = records.find((r) => r.key === "kv:zset")!;
        for (const pair of zset.value as unknown[][]) expect(pair[1]).to.be.a("number");
      });

      it("KeysReader with readValue: false gives {key, event} only", async () => {
        const records = await parsed<KeyRecord>(io, "GB().run('kv:*', {readValue: false})");
        expect(records.map((r) => r.key).sort()).to.deep.equal([...TYPED].sort());
        for (const r of records) expect(r).to.deep.equal({ key: r.key, event: null });
      });

      it("KeysReader with noScan reads exactly one key; a missing key is one record of type 'empty'", async () => {
        const one = await parsed<KeyRecord>(io, "GB().run('kv:hash', {noScan: true})");
        expect(one).to.deep.equal([
          { key: "kv:hash", value: await io.hgetall("kv:hash"), type: "hash", event: null },
        ]);
        const missing = await parsed<KeyRecord>(io, "GB().run('kv:missing', {noScan: true})");
        expect(await io.exists("kv:missing")).to.equal(0);
        expect(missing).to.deep.equal([{ key: "kv:missing", value: null, type: "empty", event: null }]);
      });

      it("KeysReader's pattern is a glob (SCAN MATCH) over every shard; the builder's default arg is used", async () => {
        const all = (await keysPerMaster("num:1*")).flat().sort();
        const keys = (await results(io, "GB().map(r => r.key).run('num:1*')")).map(str).sort();
        expect(keys).to.deep.equal(all);
        const viaDefault = (await results(io, "GB('KeysReader', 'num:1*').map(r => r.key).run()"))
          .map(str)
          .sort();
        expect(viaDefault).to.deep.equal(all);
      });

      it("KeysOnlyReader gives key names (glob over every shard, or one key with noScan)", async () => {
        const expected = (await keysPerMaster("num:*")).flat().sort();
        const keys = (await results(io, "GB('KeysOnlyReader').run('num:*')")).map(str).sort();
        expect(keys).to.deep.equal(expected);
        const counted = (await results(io, "GB('KeysOnlyReader').run('num:*', {count: 7})")).map(str).sort();
        expect(counted).to.deep.equal(expected);
        expect(await results(io, "GB('KeysOnlyReader').run('kv:str', {noScan: true})")).to.deep.equal([
          "kv:str",
        ]);
      });

      it("StreamReader reads the entries after fromId, in order, as {key, id, value}", async () => {
        const key = "sr:stream";
        const p = io.pipeline();
        for (let i = 0; i < 2500; i++) p.xadd(key, "*", "n", String(i), "sq", String(i * i));
        await execAll(p);
        const entries = await io.xrange(key, "-", "+");
        const ids = entries.map((e) => e[0]);
        const all = await parsed<{ key: string; id: string; value: Record<string, string> }>(
          io,
          `GB('StreamReader').run('${key}')`,
        );
        expect(all.map((r) => r.id)).to.deep.equal(ids);
        expect(all[7]).to.deep.equal({
          key,
          id: ids[7],
          value: { n: entries[7][1][1], sq: entries[7][1][3] },
        });
        const from = ids[1199];
        const after = await results(
          io,
          `GB('StreamReader').map(r => r.id).run('${key}', {fromId: '${from}'})`,
        );
        expect(after).to.deep.equal(ids.slice(1200));
        const explicitZero = await results(
          io,
          `GB('StreamReader').map(r => r.value.n).run('${key}', {fromId: '0-0'})`,
        );
        expect(explicitZero).to.deep.equal(entries.map((e) => e[1][1]));
      });

      it("ShardsIDReader gives one record per shard (3 in the cluster), the shard ids", async () => {
        const ids = (await results(io, "GB('ShardsIDReader').run()")).map(str);
        expect(ids).to.have.length(masters.length);
        expect(new Set(ids).size).to.equal(ids.length);
        if (mode === "cluster") {
          const myIds = await Promise.all(masters.map((m) => m.call("CLUSTER", "MYID")));
          expect([...ids].sort()).to.deep.equal(myIds.map(str).sort());
        }
      });

      it("CommandReader cannot run; an unknown reader and a second run() are errors", async () => {
        expect(await rejection(io.call("RG.EXECUTE", "GB('CommandReader').run()"))).to.match(
          /^ERR reader do not support run/,
        );
        expect(await rejection(io.call("RG.EXECUTE", "GB('NoSuchReader').run()"))).to.match(
          /^ERR reader does not exists/,
        );
        expect(await rejection(io.call("RG.EXECUTE", "GB().run('num:1');\nGB().run('num:2');"))).to.match(
          /^ERR Can not run more then 1 executions in a single script/,
        );
      });
    });

    describe("operations", () => {
      /** num:* values per master, read directly. */
      let perMaster: number[][];
      const all = Array.from({ length: N }, (_, i) => i);
      const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

      before(async () => {
        const keys = await keysPerMaster("num:*");
        perMaster = keys.filter((ks) => ks.length > 0).map((ks) => ks.map((k) => Number(k.slice(4))));
      });

      it("map: one record out per record in", async () => {
        const out = (await results(io, "GB().map(r => r.key + '=' + r.value).run('num:*')")).map(str);
        expect(out.sort()).to.deep.equal(all.map((i) => `num:${i}=${i}`).sort());
      });

      it("flatmap: array elements in order, a non-array as itself, [] drops the record", async () => {
        const out = (
          await results(
            io,
            "GB().flatmap(r => [r.value + ':a', r.value + ':b', r.value + ':c']).run('num:*')",
          )
        ).map(str);
        expect(out).to.have.length(3 * N);
        for (let i = 0; i < N; i++) {
          const at = ["a", "b", "c"].map((s) => out.indexOf(`${i}:${s}`));
          expect(at[0], `num:${i}`).to.be.at.least(0);
          expect(at[1], `${i}:b right after ${i}:a`).to.equal(at[0] + 1);
          expect(at[2], `${i}:c right after ${i}:b`).to.equal(at[1] + 1);
        }
        const ordered = await results(
          io,
          "GB('ShardsIDReader').collect().limit(1).flatmap(() => ['z', 'y', 'x', 3, 1, 2]).run()",
        );
        expect(ordered).to.deep.equal(["z", "y", "x", "3", "1", "2"]);
        const odd = numbers(
          await results(io, "GB().flatmap(r => Number(r.value) % 2 === 0 ? [] : r.value).run('num:*')"),
        );
        expect(odd.sort(byNumber)).to.deep.equal(all.filter((i) => i % 2 === 1));
      });

      it("foreach: calls f(r) and passes r on unchanged", async () => {
        const out = (
          await results(
            io,
            "GB().foreach(r => execute('SET', 'fe:' + r.key, 'seen ' + r.value)).map(r => r.key).run('num:*')",
          )
        ).map(str);
        expect(out.sort()).to.deep.equal(all.map((i) => `num:${i}`).sort());
        for (const i of [0, 1, 17, N - 1])
          expect(await direct.text("GET", `fe:num:${i}`)).to.equal(`seen ${i}`);
        expect((await keysPerMaster("fe:*")).flat()).to.have.length(N);
      });

      it("filter: keeps the records for which f is truthy", async () => {
        const out = numbers(
          await results(io, "GB().filter(r => Number(r.value) % 3 === 0).map(r => r.value).run('num:*')"),
        );
        expect(out.sort(byNumber)).to.deep.equal(all.filter((i) => i % 3 === 0));
        const truthy = numbers(
          await results(io, "GB().map(r => Number(r.value) % 4).filter(x => x).run('num:*')"),
        );
        expect(truthy).to.have.length(all.filter((i) => i % 4 !== 0).length);
      });

      it("accumulate: one record per partition from a = undefined, not reset when falsy; none without input", async () => {
        const sums = numbers(
          await results(
            io,
            "GB().map(r => Number(r.value)).accumulate((a, x) => (a === undefined ? 0 : a) + x).run('num:*')",
          ),
        );
        expect(sums.sort(byNumber)).to.deep.equal(perMaster.map(sum).sort(byNumber));
        const counts = numbers(
          await results(io, "GB().accumulate((a, r) => (a === undefined ? 0 : a + 1)).run('num:*')"),
        );
        expect(counts.sort(byNumber)).to.deep.equal(perMaster.map((xs) => xs.length - 1).sort(byNumber));
        expect(await results(io, "GB().accumulate((a, r) => 1).run('nothing:*')")).to.deep.equal([]);
      });

      it("localgroupby: per partition and key, {key, value} with string keys", async () => {
        const out = await parsed<Group>(
          io,
          "GB().localgroupby(r => Number(r.value) % 3, (k, a, r) => (a === undefined ? 0 : a) + 1).run('num:*')",
        );
        for (const g of out) expect(g.key).to.be.a("string");
        const expected = perMaster
          .flatMap((xs) => Object.entries(countBy(xs, (x) => String(x % 3))))
          .map(([k, v]) => `${k}:${v}`)
          .sort();
        expect(out.map((g) => `${String(g.key)}:${String(g.value)}`).sort()).to.deep.equal(expected);
      });

      it("limit: per partition before collect(), global after it (with offset)", async () => {
        const perPartition = await results(io, "GB('KeysOnlyReader').limit(2).run('num:*')");
        expect(perPartition).to.have.length(2 * perMaster.length);
        const global = (await results(io, "GB('KeysOnlyReader').collect().limit(2).run('num:*')")).map(str);
        expect(global).to.have.length(2);
        expect(new Set(global).size).to.equal(2);
        for (const k of global) expect(k).to.match(/^num:\d+$/);
        expect(await results(io, "GB('KeysOnlyReader').collect().limit(5, 3).run('num:*')")).to.have.length(
          5,
        );
        expect(
          await results(io, `GB('KeysOnlyReader').collect().limit(5, ${N - 2}).run('num:*')`),
        ).to.have.length(2);
        const offsetPerPartition = await results(io, "GB('KeysOnlyReader').limit(3, 2).run('num:*')");
        expect(offsetPerPartition).to.have.length(3 * perMaster.length);
      });

      it("collect: all records end up in one partition", async () => {
        const before = (await results(io, "GB().map(r => hashtag()).distinct().run('num:*')")).map(str);
        expect(before).to.have.length(perMaster.length);
        const after = (await results(io, "GB().collect().map(r => hashtag()).run('num:*')")).map(str);
        expect(after).to.have.length(N);
        expect(new Set(after).size).to.equal(1);
      });

      it("repartition: each record moves to the partition owning the slot of extract(r)", async () => {
        const out = await parsed<{ k: string; target: string; from: string; to: string }>(
          io,
          "GB('KeysOnlyReader').map(k => ({k, target: 'target:' + k.slice(4), from: hashtag()}))" +
            ".repartition(r => r.target).map(r => ({...r, to: hashtag()})).run('num:*')",
        );
        expect(out).to.have.length(N);
        let moved = 0;
        for (const r of out) {
          expect(await ownerPort(`{${r.from}}`), `${r.k} read where it lives`).to.equal(await ownerPort(r.k));
          expect(await ownerPort(`{${r.to}}`), `${r.k} moved to the owner of ${r.target}`).to.equal(
            await ownerPort(r.target),
          );
          if ((await ownerPort(r.k)) !== (await ownerPort(r.target))) moved++;
        }
        if (mode === "cluster") expect(moved, "records that changed shard").to.be.greaterThan(0);
        const keyed = (
          await results(io, "GB().repartition(r => r.key).map(r => execute('GET', r.key)).run('num:*')")
        )
          .map(str)
          .sort();
        expect(keyed).to.deep.equal(all.map(String).sort());
      });

      it("groupby: per key over all shards, {key: String(k), value}", async () => {
        const out = await parsed<Group>(
          io,
          "GB().groupby(r => Number(r.value) % 7, (k, a, r) => (a === undefined ? 0 : a) + Number(r.value)).run('num:*')",
        );
        const expected: Record<string, number> = {};
        for (const i of all) expected[String(i % 7)] = (expected[String(i % 7)] ?? 0) + i;
        expect(groups(out)).to.deep.equal(expected);
        const withKey = await parsed<Group>(
          io,
          "GB().groupby(r => r.value.length, (k, a, r) => k + ':' + typeof k).run('num:*')",
        );
        const lengths = [...new Set(all.map((i) => String(i).length))];
        expect(groups(withKey)).to.deep.equal(
          Object.fromEntries(lengths.map((l) => [String(l), `${l}:string`])),
        );
      });

      it("batchgroupby: reduce(k, records[]) once per key", async () => {
        const out = await parsed<Group>(
          io,
          "GB().batchgroupby(r => Number(r.value) % 5, (k, recs) => recs.map(r => Number(r.value)).sort((a, b) => a - b)).run('num:*')",
        );
        const expected: Record<string, number[]> = {};
        for (const i of all) (expected[String(i % 5)] ??= []).push(i);
        expect(groups(out)).to.deep.equal(expected);
      });

      it("aggregate: seqOp per partition from a copy of zero, combOp over partitions from a copy of zero", async () => {
        const out = await parsed<{ sum: number; n: number; parts: number }>(
          io,
          "GB().aggregate({sum: 0, n: 0, parts: 0}, (a, r) => { a.sum += Number(r.value); a.n++; return a; }," +
            " (a, p) => { a.sum += p.sum; a.n += p.n; a.parts++; return a; }).run('num:*')",
        );
        expect(out).to.deep.equal([{ sum: sum(all), n: N, parts: perMaster.length }]);
        const empty = await parsed<unknown>(
          io,
          "GB().aggregate({sum: 0}, (a, r) => { a.sum += 1; return a; }, (a, p) => { a.sum += p.sum; return a; }).run('nothing:*')",
        );
        expect(empty).to.deep.equal([{ sum: 0 }]);
      });

      it("aggregateby: per key seqOp(k, a, r) and combOp(k, a, v) from copies of zero", async () => {
        const out = await parsed<Group>(
          io,
          "GB().aggregateby(r => Number(r.value) % 4, [], (k, a, r) => { a.push(Number(r.value)); return a; }," +
            " (k, a, v) => { a.push(...v); return a; }).map(g => ({key: g.key, value: g.value.sort((x, y) => x - y)})).run('num:*')",
        );
        const expected: Record<string, number[]> = {};
        for (const i of all) (expected[String(i % 4)] ??= []).push(i);
        expect(groups(out)).to.deep.equal(expected);
        const sums = await parsed<Group>(
          io,
          "GB().aggregateby(r => r.value.length, 0, (k, a, r) => a + Number(r.value), (k, a, v) => a + v).run('num:*')",
        );
        const expectedSums: Record<string, number> = {};
        for (const i of all) {
          const k = String(String(i).length);
          expectedSums[k] = (expectedSums[k] ?? 0) + i;
        }
        expect(groups(sums)).to.deep.equal(expectedSums);
      });

      it("count: the number of records; 0 when there are none", async () => {
        expect(await results(io, "GB().count().run('num:*')")).to.deep.equal([String(N)]);
        expect(
          await results(io, "GB().filter(r => Number(r.value) < 10).count().run('num:*')"),
        ).to.deep.equal([String(all.filter((i) => i < 10).length)]);
        expect(await results(io, "GB().count().run('nothing:*')")).to.deep.equal(["0"]);
      });

      it("countby: {key: String, value: count} per key, identity by default", async () => {
        const out = await parsed<Group>(io, "GB().countby(r => Number(r.value) % 6).run('num:*')");
        expect(groups(out)).to.deep.equal(countBy(all, (i) => String(i % 6)));
        const identity = await parsed<Group>(
          io,
          "GB('KeysOnlyReader').map(k => k.length).countby().run('num:*')",
        );
        expect(groups(identity)).to.deep.equal(countBy(all, (i) => String(`num:${i}`.length)));
      });

      it("avg: the mean (Number(x) by default); no record without input", async () => {
        expect(await results(io, "GB().avg(r => Number(r.value)).run('num:*')")).to.deep.equal([
          String(sum(all) / N),
        ]);
        const odd = all.filter((i) => i % 2 === 1);
        expect(
          await results(io, "GB().map(r => r.value).filter(v => Number(v) % 2 === 1).avg().run('num:*')"),
        ).to.deep.equal([String(sum(odd) / odd.length)]);
        expect(await results(io, "GB().avg().run('nothing:*')")).to.deep.equal([]);
      });

      it("distinct: each distinct record once, objects compared by JSON", async () => {
        const out = numbers(await results(io, "GB().map(r => Number(r.value) % 6).distinct().run('num:*')"));
        expect(out.sort(byNumber)).to.deep.equal([...new Set(all.map((i) => i % 6))].sort(byNumber));
        const objects = (
          await results(io, "GB().map(r => ({m: Number(r.value) % 3, t: 'x'})).distinct().run('num:*')")
        )
          .map(str)
          .sort();
        expect(objects).to.deep.equal(
          [...new Set(all.map((i) => JSON.stringify({ m: i % 3, t: "x" })))].sort(),
        );
      });

      it("sort: ascending by default (numbers numerically, strings by code point), descending with true", async () => {
        const asc = await results(io, "GB().map(r => Number(r.value)).sort().run('num:*')");
        expect(asc).to.deep.equal([...all].sort(byNumber).map(String));
        const desc = await results(io, "GB().map(r => Number(r.value)).sort(true).run('num:*')");
        expect(desc).to.deep.equal([...all].sort(byNumber).reverse().map(String));
        const keys = await results(io, "GB().map(r => r.key).sort().run('num:*')");
        expect(keys).to.deep.equal(all.map((i) => `num:${i}`).sort());
        const keysDesc = await results(io, "GB().map(r => r.key).sort(true).run('num:*')");
        expect(keysDesc).to.deep.equal(
          all
            .map((i) => `num:${i}`)
            .sort()
            .reverse(),
        );
      });

      it("every operation on an empty input", async () => {
        const cases: [string, Reply[]][] = [
          ["map(r => r)", []],
          ["flatmap(r => [r, r])", []],
          ["foreach(r => r)", []],
          ["filter(r => true)", []],
          ["accumulate((a, r) => 1)", []],
          ["localgroupby(r => 1, (k, a, r) => 1)", []],
          ["limit(5)", []],
          ["collect()", []],
          ["repartition(r => r.key)", []],
          ["groupby(r => 1, (k, a, r) => 1)", []],
          ["batchgroupby(r => 1, (k, rs) => rs.length)", []],
          // combOp starts from a copy of zero and gets no partition result: zero itself.
          ["aggregate(7, (a, r) => a + 1, (a, b) => a + b)", ["7"]],
          ["aggregateby(r => 1, 0, (k, a, r) => a + 1, (k, a, v) => a + v)", []],
          ["count()", ["0"]],
          ["countby()", []],
          ["avg()", []],
          ["distinct()", []],
          ["sort()", []],
        ];
        for (const [op, expected] of cases) {
          expect(await results(io, `GB().${op}.run('nothing:*')`), op).to.deep.equal(expected);
        }
      });
    });

    describe("results", () => {
      const VALUES =
        "['s', 5, 2.5, -3, null, undefined, {b: 1, a: [1, 'x', null]}, [1, {c: true}], true, false]";

      it("convert with JSON by default: strings as is, numbers as String(n), null/undefined as null", async () => {
        const out = await results(
          io,
          `GB('ShardsIDReader').collect().limit(1).flatmap(() => ${VALUES}).run()`,
        );
        const js: unknown[] = [
          "s",
          5,
          2.5,
          -3,
          null,
          undefined,
          { b: 1, a: [1, "x", null] },
          [1, { c: true }],
          true,
          false,
        ];
        expect(out).to.deep.equal(
          js.map((v) =>
            v === null || v === undefined ? null : typeof v === "object" ? JSON.stringify(v) : String(v),
          ),
        );
      });

      it("convertToStr: false: integers as integers, objects as flat arrays, booleans as 1/0", async () => {
        const out = await results(
          io,
          `GB('ShardsIDReader').collect().limit(1).flatmap(() => ${VALUES}).run({convertToStr: false})`,
        );
        expect(out).to.deep.equal([
          "s",
          5,
          "2.5",
          -3,
          null,
          null,
          ["b", 1, "a", [1, "x", null]],
          [1, ["c", 1]],
          1,
          0,
        ]);
        const grouped = await results(
          io,
          "GB().countby(r => Number(r.value) % 2).run('num:*', {convertToStr: false})",
        );
        const expected = countBy(
          Array.from({ length: N }, (_, i) => i),
          (i) => String(i % 2),
        );
        const asPairs = grouped.map((g) => {
          const a = asArray(g, "group");
          expect(a[0]).to.equal("key");
          expect(a[2]).to.equal("value");
          expect(a[1]).to.be.a("string");
          expect(a[3]).to.be.a("number");
          return [a[1], a[3]];
        });
        expect(Object.fromEntries(asPairs)).to.deep.equal(expected);
      });

      it("convertToStr: false: a plain object is a flat array for a RESP2 client", async () => {
        const script =
          "GB('ShardsIDReader').collect().limit(1).map(() => ({n: 1, s: 'x', o: {t: true}})).run({convertToStr: false})";
        const resp2 = client({ protocol: 2 });
        expect(await results(resp2, script)).to.deep.equal([["n", 1, "s", "x", "o", ["t", 1]]]);
      });
    });

    describe("execute() and executeAsync()", () => {
      const K = 60;

      before(async () => {
        const p = io.pipeline();
        for (let i = 0; i < K; i++) p.set(`ex:${i}`, `v${i * 7}`);
        await execAll(p);
      });

      it("reads and writes keys of every shard from one step", async () => {
        if (mode === "cluster") {
          const ports = new Set<number>();
          for (let i = 0; i < K; i++) ports.add(await ownerPort(`ex:${i}`));
          expect(ports.size, "ex:* keys span every master").to.equal(3);
        }
        const out = await results(
          io,
          `GB('ShardsIDReader').collect().limit(1).flatmap(() => {
            const out = [];
            for (let i = 0; i < ${K}; i++) {
              execute('SET', 'excopy:' + i, execute('GET', 'ex:' + i) + '!');
              out.push(execute('GET', 'excopy:' + i));
            }
            return out;
          }).run()`,
        );
        expect(out).to.deep.equal(Array.from({ length: K }, (_, i) => `v${i * 7}!`));
        for (let i = 0; i < K; i++) {
          // Read on the owning shard itself: the write went where the key lives.
          expect(await direct.text("GET", `excopy:${i}`), `excopy:${i}`).to.equal(`v${i * 7}!`);
        }
        const typed = await results(
          io,
          "GB('ShardsIDReader').collect().limit(1).map(() => [execute('INCRBY', 'excount', '5'), execute('GET', 'nokey:x'), execute('MGET', 'ex:1', 'ex:2')]).run({convertToStr: false})",
        );
        expect(typed).to.deep.equal([[Number(await direct.text("GET", "excount")), null, ["v7", "v14"]]]);
      });

      it("a keyless execute('DBSIZE') from a ShardsIDReader step counts each shard once", async () => {
        const out = numbers(await results(io, "GB('ShardsIDReader').map(() => execute('DBSIZE')).run()"));
        const perMaster = await Promise.all(masters.map((m) => m.dbsize()));
        expect(out.sort(byNumber)).to.deep.equal(perMaster.sort(byNumber));
        const total = await results(
          io,
          "GB('ShardsIDReader').map(() => execute('DBSIZE')).aggregate(0, (a, n) => a + n, (a, b) => a + b).run()",
        );
        expect(total).to.deep.equal([String(await io.dbsize())]);
      });

      it("hashtag() names a slot of the shard of the current partition", async () => {
        const out = await parsed<[string, string]>(
          io,
          "GB('ShardsIDReader').map(id => [id, hashtag()]).run()",
        );
        expect(out).to.have.length(masters.length);
        const owners = new Set<number>();
        for (const [id, tag] of out) {
          owners.add(await ownerPort(`{${tag}}`));
          if (mode === "cluster")
            expect(await (await connOf(`{${tag}}`)).call("CLUSTER", "MYID")).to.equal(id);
        }
        expect(owners.size).to.equal(masters.length);
      });

      it("executeAsync in an async map: many in flight, results correct", async () => {
        const out = await parsed<[number, number]>(
          io,
          `let inFlight = 0;
          let most = 0;
          GB('KeysOnlyReader')
            .map(async k => {
              inFlight++;
              most = Math.max(most, inFlight);
              const v = await executeAsync('GET', k);
              inFlight--;
              return v;
            })
            .map(v => Number(v))
            .aggregate(0, (a, x) => a + x, (a, b) => a + b)
            .map(total => [total, most])
            .run('num:*')`,
        );
        expect(out).to.have.length(1);
        const [total, most] = out[0];
        expect(total).to.equal((N * (N - 1)) / 2);
        expect(most, "GETs in flight at once").to.be.greaterThan(10);
        const values = (
          await results(io, "GB().map(async r => await executeAsync('GET', 'ex:' + r.value)).run('num:1?')")
        )
          .map(str)
          .sort();
        const expected = Array.from({ length: 10 }, (_, i) => `v${(10 + i) * 7}`);
        expect(values).to.deep.equal(expected.sort());
      });

      it("an error reply of execute() throws an Error: catchable, else in errors naming the step and line", async () => {
        await io.set("ex:str", "text");
        const caught = await results(
          io,
          "GB('ShardsIDReader').collect().limit(1).map(() => { try { return execute('HGET', 'ex:str', 'f'); } catch (e) { return (e instanceof Error) + ' ' + e.message; } }).run()",
        );
        const wrongType = await rejection(io.hget("ex:str", "f"));
        expect(caught).to.deep.equal([`true ${wrongType}`]);
        const caughtAsync = await results(
          io,
          "GB('ShardsIDReader').collect().limit(1).map(async () => { try { return await executeAsync('LPUSH', 'ex:str', 'x'); } catch (e) { return 'async ' + e.message; } }).run()",
        );
        expect(caughtAsync).to.deep.equal([`async ${await rejection(io.lpush("ex:str", "x"))}`]);
        const uncaught = await run(
          io,
          "GB('ShardsIDReader').collect().limit(1)\n  .map(() => 'before')\n  .map(() => execute('INCR', 'ex:str'))\n  .run()",
        );
        expect(uncaught.results).to.deep.equal([]);
        expect(uncaught.errors).to.have.length(1);
        expect(uncaught.errors[0]).to.include(await rejection(io.incr("ex:str")));
        expect(uncaught.errors[0]).to.match(/ in map at script:3$/);
      });
    });

    describe("errors", () => {
      it("a syntax error is the reply, naming the line", async () => {
        const message = await rejection(
          io.call("RG.EXECUTE", "GB()\n  .map((r) => r.key)\n  .map((r) => )\n  .run('num:*')"),
        );
        expect(message).to.match(/^ERR SyntaxError: .* at script:3$/);
      });

      it("a throw at the top level is the reply, naming the line", async () => {
        const message = await rejection(
          io.call("RG.EXECUTE", "const x = 1;\nthrow new Error('top level boom');"),
        );
        expect(message).to.match(/^ERR .*top level boom.* at script:2$/);
      });

      it("a throwing step's error is in the errors list with the step name and line", async () => {
        const out = await run(
          io,
          "GB()\n  .map(r => r.value)\n  .filter(v => { if (v === '13') throw new Error('bad record ' + v); return true; })\n  .run('num:*')",
        );
        expect(out.errors).to.deep.equal(["Error: bad record 13 in filter at script:3"]);
        expect(out.results).to.have.length(N - 1);
        const typeError = await run(
          io,
          "GB('ShardsIDReader').collect().limit(1)\n.map(r => r.no.such)\n.run()",
        );
        expect(typeError.results).to.deep.equal([]);
        expect(typeError.errors).to.have.length(1);
        expect(typeError.errors[0]).to.match(/^TypeError: .* in map at script:2$/);
      });

      it("150,000 records that each throw: all 150,000 errors in the reply", async function () {
        this.timeout(60_000);
        // Too many to spread into one call's arguments ("Maximum call stack size exceeded"
        // was the whole reply).
        const keys = Array.from({ length: 150_000 }, (_, i) => `{manyerr}:${i}`);
        try {
          for (let i = 0; i < keys.length; i += 10_000) {
            expect(await io.mset(...keys.slice(i, i + 10_000).flatMap((k) => [k, "v"]))).to.equal("OK");
          }
          const out = await run(io, "GB().map(r => { throw new Error('no ' + r.key) }).run('{manyerr}:*')");
          expect(out.results).to.deep.equal([]);
          expect(out.errors).to.have.length(keys.length);
          expect(new Set(out.errors)).to.deep.equal(
            new Set(keys.map((k) => `Error: no ${k} in map at script:1`)),
          );
        } finally {
          for (let i = 0; i < keys.length; i += 10_000) await io.unlink(...keys.slice(i, i + 10_000));
        }
      });

      it("RG.PYEXECUTE, with Python off (the default), says how to switch it on", async () => {
        const message = await rejection(io.call("RG.PYEXECUTE", "GB().run()"));
        expect(message).to.match(
          /^ERR RG\.PYEXECUTE needs Python, which is off: start the proxy with --python/,
        );
        expect(message).to.contain("RG.EXECUTE");
      });

      it("every RG command checks its arity", async () => {
        const cases: string[][] = [
          ["RG.EXECUTE"],
          ["RG.GETRESULTS"],
          ["RG.GETRESULTS", "a", "b"],
          ["RG.GETRESULTSBLOCKING"],
          ["RG.GETRESULTSBLOCKING", "a", "b"],
          ["RG.GETEXECUTION"],
          ["RG.GETEXECUTION", "a", "SHARD", "x"],
          ["RG.DUMPEXECUTIONS", "x"],
          ["RG.DROPEXECUTION"],
          ["RG.DROPEXECUTION", "a", "b"],
          ["RG.ABORTEXECUTION"],
          ["RG.ABORTEXECUTION", "a", "b"],
          ["RG.CONFIGGET"],
          ["RG.CONFIGSET"],
          ["RG.CONFIGSET", "MaxExecutions"],
          ["RG.CONFIGSET", "MaxExecutions", "10", "ScriptTimeoutMS"],
          ["RG.INFOCLUSTER", "x"],
          ["RG.REFRESHCLUSTER", "x"],
        ];
        for (const [name, ...args] of cases) {
          expect(await rejection(io.call(name, ...args)), [name, ...args].join(" ")).to.equal(
            `ERR wrong number of arguments for '${name.toLowerCase()}' command`,
          );
        }
        expect(await io.call("RG.CONFIGGET", "MaxExecutions")).to.deep.equal([1000]);
      });

      it("RG.PYEXECUTE without a script is an arity error, like every RG command", async () => {
        expect(await rejection(io.call("RG.PYEXECUTE"))).to.equal(
          "ERR wrong number of arguments for 'rg.pyexecute' command",
        );
      });

      it("unknown execution ids: 'execution plan does not exist'", async () => {
        for (const cmd of ["RG.GETRESULTS", "RG.GETRESULTSBLOCKING", "RG.GETEXECUTION", "RG.DROPEXECUTION"]) {
          expect(
            await rejection(io.call(cmd, "0000000000000000000000000000000000000000-999999")),
            cmd,
          ).to.include("execution plan does not exist");
        }
      });
    });

    describe("the count-by-genre example", () => {
      let expected: Record<string, number>;

      before(async function () {
        this.timeout(60_000);
        const random = lcg(20240531);
        const p = io.pipeline();
        for (let i = 0; i < MOVIES; i++) {
          if (i % 97 === 0) {
            p.hset(`movie:${i}`, "title", `Movie ${i}`);
            continue;
          }
          const n = 1 + Math.floor(random() * 3);
          const picked = new Set<string>();
          while (picked.size < n) picked.add(GENRES[Math.floor(random() * GENRES.length)]);
          p.hset(
            `movie:${i}`,
            "title",
            `Movie ${i}`,
            "genres",
            [...picked].join(","),
            "year",
            String(1950 + (i % 70)),
          );
        }
        await execAll(p);
        // The hand-written way: SCAN each master, HGET genres, count in Node.
        expected = {};
        let seen = 0;
        const perMaster = await keysPerMaster("movie:*");
        for (let m = 0; m < masters.length; m++) {
          const keys = perMaster[m];
          seen += keys.length;
          const q = masters[m].pipeline();
          for (const k of keys) q.hget(k, "genres");
          for (const [err, g] of (await q.exec()) ?? []) {
            if (err) throw err;
            if (typeof g !== "string") continue;
            for (const genre of g.split(",")) expected[genre] = (expected[genre] ?? 0) + 1;
          }
          if (mode === "cluster") expect(keys.length, "movies on every master").to.be.greaterThan(MOVIES / 5);
        }
        expect(seen).to.equal(MOVIES);
        expect(Object.keys(expected)).to.have.length(GENRES.length);
      });

      it("the execute() form gives the same counts as ioredis", async () => {
        const out = await parsed<Group>(
          io,
          "GB('KeysOnlyReader').map(k => execute('HGET', k, 'genres')).filter(g => g != null).flatmap(g => g.split(',')).countby().run('movie:*')",
        );
        expect(groups(out)).to.deep.equal(expected);
      });

      it("the KeysReader form gives the same counts as ioredis", async () => {
        const out = await parsed<Group>(
          io,
          "GB().map(r => r.value.genres).filter(Boolean).flatmap(g => g.split(',')).countby().run('movie:*')",
        );
        expect(groups(out)).to.deep.equal(expected);
      });
    });

    it("20 concurrent RG.EXECUTE calls from 20 clients all finish with correct results", async () => {
      const many = Array.from({ length: 20 }, () => client());
      const scripts = many.map(
        (_, i) =>
          `GB().map(r => Number(r.value) * ${i + 1}).filter(x => x % ${i + 2} !== 0).aggregate(0, (a, x) => a + x, (a, b) => a + b).run('num:*')`,
      );
      const outs = await Promise.all(many.map((c, i) => results(c, scripts[i])));
      outs.forEach((out, i) => {
        const expected = Array.from({ length: N }, (_, x) => x * (i + 1))
          .filter((x) => x % (i + 2) !== 0)
          .reduce((a, b) => a + b, 0);
        expect(out, scripts[i]).to.deep.equal([String(expected)]);
      });
    });
  });
}
