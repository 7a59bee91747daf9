/**
 * RG.PYEXECUTE: RedisGears 1.x's Python scripts, run by Pyodide on the same engine as
 * RG.EXECUTE's JavaScript (issue 15). Each Python run needs its own interpreter, which the
 * warm pool hands out at once and then reloads (seconds): these tests are slow by nature.
 */
import { expect } from "chai";
import type { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { connect, execAll, outcome, rejection, type Outcome } from "./support/gears.js";
import { asArray, eventually, fields, registrationsOf, str } from "./support/registrations.js";

const GENRES = ["Drama", "Comedy", "Action", "Thriller", "Horror", "Romance", "Sci-Fi", "Western"];
const MOVIES = 20_000;
const TWINS = 40;

async function py(c: Redis, script: string, ...options: string[]): Promise<Outcome> {
  return outcome(await c.call("RG.PYEXECUTE", script, ...options), "RG.PYEXECUTE");
}

async function js(c: Redis, script: string): Promise<Outcome> {
  return outcome(await c.call("RG.EXECUTE", script), "RG.EXECUTE");
}

/** A result list in a canonical order, for results whose order the engine does not fix. */
function sorted(results: unknown[]): string[] {
  return results.map((r) => JSON.stringify(r)).sort();
}

/** `{'key': 'Drama', 'value': 12}`, Python's str() of countby's records, as a map. */
function pythonGroups(results: unknown[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of results) {
    const m = /^\{'key': '(.*)', 'value': (\d+)\}$/.exec(String(r));
    if (m === null) throw new Error(`not a countby record: ${String(r)}`);
    out[m[1]] = Number(m[2]);
  }
  return out;
}

/** [Python, JavaScript] forms of the same plan, results without conversion to strings. */
const TWIN_PLANS: [string, string, string, boolean][] = [
  ["map", "GB().map(lambda r: r['value'])", "GB().map(r => r.value)", false],
  [
    "filter",
    "GB().filter(lambda r: int(r['value']) % 3 == 0)",
    "GB().filter(r => Number(r.value) % 3 === 0)",
    false,
  ],
  ["flatmap", "GB().flatmap(lambda r: [r['key'], r['value']])", "GB().flatmap(r => [r.key, r.value])", false],
  [
    "foreach",
    "GB().foreach(lambda r: r.update({'seen': 1})).map(lambda r: r['seen'])",
    "GB().foreach(r => { r.seen = 1; }).map(r => r.seen)",
    false,
  ],
  [
    "accumulate",
    "GB().map(lambda r: int(r['value'])).accumulate(lambda a, x: (a or 0) + x).collect().accumulate(lambda a, x: (a or 0) + x)",
    "GB().map(r => Number(r.value)).accumulate((a, x) => (a ?? 0) + x).collect().accumulate((a, x) => (a ?? 0) + x)",
    false,
  ],
  [
    "localgroupby",
    "GB().localgroupby(lambda r: str(int(r['value']) % 4), lambda k, a, r: (a or 0) + 1)",
    "GB().localgroupby(r => String(Number(r.value) % 4), (k, a) => (a ?? 0) + 1)",
    false,
  ],
  [
    "groupby",
    "GB().groupby(lambda r: str(int(r['value']) % 4), lambda k, a, r: (a or 0) + 1)",
    "GB().groupby(r => String(Number(r.value) % 4), (k, a) => (a ?? 0) + 1)",
    false,
  ],
  [
    "batchgroupby",
    "GB().batchgroupby(lambda r: str(int(r['value']) % 4), lambda k, rs: len(rs))",
    "GB().batchgroupby(r => String(Number(r.value) % 4), (k, rs) => rs.length)",
    false,
  ],
  [
    "aggregate",
    "GB().map(lambda r: int(r['value'])).aggregate(0, lambda a, x: a + x, lambda a, x: a + x)",
    "GB().map(r => Number(r.value)).aggregate(0, (a, x) => a + x, (a, x) => a + x)",
    false,
  ],
  [
    "aggregateby",
    "GB().aggregateby(lambda r: str(int(r['value']) % 5), 0, lambda k, a, r: a + 1, lambda k, a, r: a + r)",
    "GB().aggregateby(r => String(Number(r.value) % 5), 0, (k, a) => a + 1, (k, a, v) => a + v)",
    false,
  ],
  ["count", "GB().count()", "GB().count()", false],
  [
    "countby",
    "GB().countby(lambda r: str(int(r['value']) % 3))",
    "GB().countby(r => String(Number(r.value) % 3))",
    false,
  ],
  ["avg", "GB().map(lambda r: int(r['value'])).avg()", "GB().map(r => Number(r.value)).avg()", false],
  [
    "distinct",
    "GB().map(lambda r: str(int(r['value']) % 7)).distinct()",
    "GB().map(r => String(Number(r.value) % 7)).distinct()",
    false,
  ],
  ["sort", "GB().map(lambda r: int(r['value'])).sort()", "GB().map(r => Number(r.value)).sort()", true],
  [
    "limit",
    "GB().map(lambda r: int(r['value'])).sort().limit(5, 2)",
    "GB().map(r => Number(r.value)).sort().limit(5, 2)",
    true,
  ],
  [
    "repartition",
    "GB().repartition(lambda r: r['value']).map(lambda r: r['key'])",
    "GB().repartition(r => r.value).map(r => r.key)",
    false,
  ],
  ["collect", "GB().map(lambda r: r['key']).collect()", "GB().map(r => r.key).collect()", false],
];

/** Reader twins: [name, Python, JavaScript], run on their own argument. */
const TWIN_READERS: [string, string, string][] = [
  [
    "KeysReader",
    "GB('KeysReader').map(lambda r: [r['key'], r['type']]).run('tw:*', convertToStr=False)",
    "GB('KeysReader').map(r => [r.key, r.type]).run('tw:*', {convertToStr: false})",
  ],
  [
    "KeysOnlyReader",
    "GB('KeysOnlyReader').run('tw:*', convertToStr=False)",
    "GB('KeysOnlyReader').run('tw:*', {convertToStr: false})",
  ],
  [
    "ShardsIDReader",
    "GB('ShardsIDReader').count().run(convertToStr=False)",
    "GB('ShardsIDReader').count().run({convertToStr: false})",
  ],
  [
    "StreamReader",
    "GB('StreamReader').map(lambda r: [r['id'], r['value']['n']]).run('twstream', convertToStr=False)",
    "GB('StreamReader').map(r => [r.id, r.value.n]).run('twstream', {convertToStr: false})",
  ],
];

for (const mode of BACKEND_MODES) {
  describe(`RG.PYEXECUTE: ${Backend.label(mode)} behind the proxy`, function () {
    this.timeout(600_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let io: Redis;
    let masters: Redis[] = [];
    const clients: Redis[] = [];

    before(async () => {
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }], { python: true });
      io = connect(proxy.port);
      clients.push(io);
      masters = (await backend.masters()).map((m) => connect(m.port));
      clients.push(...masters);
    });

    after(async () => {
      for (const c of clients) c.disconnect();
      await proxy?.close();
      await backend?.stop();
    });

    describe("count movies by genre over 20,000 hashes with KeysOnlyReader", () => {
      let expected: Record<string, number>;

      before(async () => {
        const p = io.pipeline();
        for (let i = 0; i < MOVIES; i++) {
          p.hset(`movie:${i}`, "title", `Movie ${i}`, "genre", GENRES[(i * 7 + (i >> 3)) % GENRES.length]);
        }
        await execAll(p);
        // The direct count: every master scanned and read without the proxy.
        expected = {};
        for (const m of masters) {
          let cursor = "0";
          do {
            const [next, keys] = await m.scan(cursor, "MATCH", "movie:*", "COUNT", 1000);
            cursor = next;
            const q = m.pipeline();
            for (const k of keys) q.hget(k, "genre");
            for (const g of await execAll(q)) expected[String(g)] = (expected[String(g)] ?? 0) + 1;
          } while (cursor !== "0");
        }
        expect(Object.values(expected).reduce((a, b) => a + b, 0)).to.equal(MOVIES);
      });

      it("equals the direct count", async () => {
        const out = await py(
          io,
          "GB('KeysOnlyReader').map(lambda x: execute('hget', x, 'genre')).countby().run('movie:*')",
        );
        expect(out.errors).to.deep.equal([]);
        expect(pythonGroups(out.results)).to.deep.equal(expected);
      });
    });

    describe("every operation gives what its JavaScript twin gives on the same data", () => {
      before(async () => {
        const p = io.pipeline();
        for (let i = 0; i < TWINS; i++) p.set(`tw:${i}`, String(i));
        for (let i = 0; i < 5; i++) p.xadd("twstream", "*", "n", String(i));
        await execAll(p);
      });

      for (const [op, python, javascript, ordered] of TWIN_PLANS) {
        it(op, async () => {
          const a = await py(io, `${python}.run('tw:*', convertToStr=False)`);
          const b = await js(io, `${javascript}.run('tw:*', {convertToStr: false})`);
          expect(a.errors).to.deep.equal([]);
          expect(b.errors).to.deep.equal([]);
          expect(a.results.length).to.be.greaterThan(0);
          if (ordered) expect(a.results).to.deep.equal(b.results);
          else expect(sorted(a.results)).to.deep.equal(sorted(b.results));
        });
      }

      for (const [reader, python, javascript] of TWIN_READERS) {
        it(reader, async () => {
          const a = await py(io, python);
          const b = await js(io, javascript);
          expect(a.errors).to.deep.equal([]);
          expect(a.results.length).to.be.greaterThan(0);
          expect(sorted(a.results)).to.deep.equal(sorted(b.results));
        });
      }

      it("hashtag() names a slot of each shard, as its JavaScript twin does", async () => {
        const a = await py(io, "GB('ShardsIDReader').map(lambda x: [x, hashtag()]).run(convertToStr=False)");
        const b = await js(io, "GB('ShardsIDReader').map(x => [x, hashtag()]).run({convertToStr: false})");
        expect(a.results).to.have.length(masters.length);
        expect(sorted(a.results)).to.deep.equal(sorted(b.results));
      });

      it("PythonReader runs the generator on every shard (RedisGears' reader, no JavaScript twin)", async () => {
        const out = await py(
          io,
          "def gen():\n    yield 'a'\n    yield hashtag()\nGB('PythonReader').run(gen, convertToStr=False)",
        );
        expect(out.errors).to.deep.equal([]);
        const tags = outcome(
          await io.call("RG.EXECUTE", "GB('ShardsIDReader').map(x => hashtag()).run({convertToStr: false})"),
        ).results;
        expect(sorted(out.results)).to.deep.equal(sorted([...masters.map(() => "a"), ...tags]));
        expect(await rejection(io.call("RG.PYEXECUTE", "GB('PythonReader').run()"))).to.contain(
          "python reader function is not given",
        );
        expect(await rejection(io.call("RG.PYEXECUTE", "GB('PythonReader').run(3)"))).to.contain(
          "pyreader argument must be a function",
        );
        expect(await rejection(io.call("RG.PYEXECUTE", "GB('PythonReader').register()"))).to.contain(
          "reader do not support register",
        );
      });

      it("a foreach lambda that only calls execute() (sent in the batch's pipeline) writes what its twin writes; an error reply fails its record", async () => {
        const a = await py(
          io,
          "GB().foreach(lambda x: execute('sadd', 'pyset:tw', x['key'])).count().run('tw:*')",
        );
        const b = await js(io, "GB().foreach(x => execute('SADD', 'jsset:tw', x.key)).count().run('tw:*')");
        expect(a).to.deep.equal(b);
        expect((await io.smembers("pyset:tw")).sort()).to.deep.equal((await io.smembers("jsset:tw")).sort());
        await io.lpush("list:tw", "x");
        const failed = await py(
          io,
          "GB().foreach(lambda x: execute('sadd', 'list:tw', x['key'])).count().run('tw:1')",
        );
        expect(failed.results).to.deep.equal(["0"]);
        expect(failed.errors).to.have.length(1);
        expect(failed.errors[0]).to.match(/^Exception: WRONGTYPE/);
        await io.del("pyset:tw", "jsset:tw", "list:tw");
      });

      it("records come back as RedisGears gave them: Python's str() of each", async () => {
        const out = await py(
          io,
          "GB().map(lambda r: {'k': r['key'], 'n': None, 't': [1, True, 2.5]}).run('tw:1')",
        );
        expect(out.results).to.deep.equal(["{'k': 'tw:1', 'n': None, 't': [1, True, 2.5]}"]);
      });

      it("a Python error in a step lands in the errors list with Python's text", async () => {
        const out = await py(io, "GB().map(lambda r: 1 / 0).run('tw:1')");
        expect(out.results).to.deep.equal([]);
        expect(out.errors).to.have.length(1);
        expect(out.errors[0]).to.contain("ZeroDivisionError");
      });
    });

    it("the stream recipe in its 1.x form turns 5,000 entries into keys on the right shards", async () => {
      const p = io.pipeline();
      for (let i = 0; i < 5000; i++) p.xadd("recipe-stream", "*", `sk:${i}`, `v${i}`);
      await execAll(p);
      const out = await py(
        io,
        "GB('StreamReader').flatmap(lambda x: [(k, v) for k, v in x['value'].items()]).repartition(lambda x: x[0]).foreach(lambda x: execute('set', x[0], x[1])).count().run('recipe-stream')",
      );
      expect(out.errors).to.deep.equal([]);
      expect(out.results).to.deep.equal(["5000"]);
      for (const i of [0, 1234, 4999]) {
        const node = await backend.nodeOf(`sk:${i}`);
        const m = connect(node.port);
        try {
          expect(await m.get(`sk:${i}`)).to.equal(`v${i}`);
        } finally {
          m.disconnect();
        }
      }
      let total = 0;
      for (const m of masters) total += (await m.keys("sk:*")).length;
      expect(total).to.equal(5000);
    });

    it("the pre-1.0 stream recipe, verbatim, writes the keys key, id and value, as RedisGears 1.2 does", async () => {
      // The recipe was written for pre-1.0 records, whose fields sat beside streamId; a 1.x
      // record is {'key', 'id', 'value'}, so its x.items() are those three.
      expect(
        await io.call(
          "RG.PYEXECUTE",
          "GearsBuilder('StreamReader').flatmap(lambda x: [(k, v) for k, v in x.items() if k != 'streamId']).repartition(lambda x: x[0]).foreach(lambda x: execute('set', x[0], x[1])).register('old-stream')",
          "ID",
          "old-recipe",
        ),
      ).to.equal("OK");
      const id = await io.xadd("old-stream", "*", "f1", "v1", "f2", "v2");
      const got = await eventually(
        () => Promise.all(["key", "id", "value"].map((k) => io.get(k))),
        (values) => values[1] === id,
        "the recipe's keys",
        20_000,
      );
      // execute() sends str() of each argument: the entry's fields as Python's dict repr.
      expect(got).to.deep.equal(["old-stream", id, "{'f1': 'v1', 'f2': 'v2'}"]);
      expect(await io.exists("f1", "f2")).to.equal(0);
      for (const k of ["key", "id", "value"]) {
        const node = await backend.nodeOf(k);
        const m = connect(node.port);
        try {
          expect(await m.exists(k), `${k} on its own shard`).to.equal(1);
        } finally {
          m.disconnect();
        }
      }
      for (const r of await registrationsOf(io, "old-recipe")) await io.call("RG.UNREGISTER", r.id);
      await io.del("key", "id", "value");
    });

    describe("the all-keys registration, verbatim", () => {
      it("puts every key written through the proxy or directly on a shard in all_keys", async () => {
        const reply = await io.call(
          "RG.PYEXECUTE",
          "GearsBuilder().filter(lambda x: x['key'] != 'all_keys').foreach(lambda x: execute('sadd', 'all_keys', x['key'])).register()",
          "ID",
          "allkeys",
        );
        expect(reply).to.equal("OK");
        const written: string[] = [];
        for (let i = 0; i < 30; i++) {
          await io.set(`via-proxy:${i}`, "x");
          written.push(`via-proxy:${i}`);
        }
        for (let i = 0; i < 30; i++) {
          const key = `direct:${i}`;
          const node = await backend.nodeOf(key);
          const m = connect(node.port);
          await m.set(key, "x");
          m.disconnect();
          written.push(key);
        }
        const missing = await eventually(
          async () => {
            const members = new Set(await io.smembers("all_keys"));
            return written.filter((k) => !members.has(k));
          },
          (left) => left.length === 0,
          "every key in all_keys",
          20_000,
        );
        expect(missing).to.deep.equal([]);
      });

      it("RG.DUMPSESSIONS and RG.DUMPREGISTRATIONS show each one's language", async () => {
        expect(
          await io.call("RG.EXECUTE", "GB('CommandReader').register({trigger: 'jstrig'})", "ID", "jsside"),
        ).to.equal("OK");
        const sessions = asArray(await io.call("RG.DUMPSESSIONS"), "sessions").map((s) =>
          fields(s, "session"),
        );
        const lang = (id: string): string => str(sessions.find((s) => s.get("ID") === id)?.get("language"));
        expect(lang("allkeys")).to.equal("python");
        expect(lang("jsside")).to.equal("javascript");
        const regs = asArray(await io.call("RG.DUMPREGISTRATIONS"), "registrations").map((r) =>
          fields(r, "reg"),
        );
        const regLang = (session: string): string =>
          str(regs.find((r) => r.get("session") === session)?.get("language"));
        expect(regLang("allkeys")).to.equal("python");
        expect(regLang("jsside")).to.equal("javascript");
        for (const r of regs) await io.call("RG.UNREGISTER", str(r.get("id")));
      });
    });
  });
}
