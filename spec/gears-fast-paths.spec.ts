import { expect } from "chai";
import type { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { connect, execAll, run, str, type Reply } from "./support/gears.js";
import { replyToJson } from "../src/gears/json-values.js";
import { decodeReply } from "../src/resp/decode.js";
import { encodeValue } from "../src/resp/encode.js";
import { RespCursor, replyOutcomeJson } from "../src/resp/json-text.js";
import { RespError, type RespValue } from "../src/resp/values.js";
import { encodeBinary } from "../src/sandbox/bjson.js";
import { Isolate } from "../src/sandbox/isolate.js";
import type { HostBridge, JsonValue } from "../src/sandbox/types.js";

/**
 * The map/reduce fast paths, against real redis-server (standalone and a 3-master cluster):
 * KeysReader/KeysOnlyReader records written in QuickJS's binary format straight from the
 * reply bytes (pipelined reads by the batch's common type, the script for the others), and
 * the read-ahead of execute() calls within a fed batch. Expectations come from the data the
 * test wrote, never from the proxy.
 */

const TYPES = ["string", "list", "set", "zset", "stream"] as const;
/** More keys than one SCAN batch per shard, so later batches read by the guessed type. */
const MIXED = 4000;
const RA = 2500;

function mixedType(i: number): string {
  const t = i % 40;
  return t < TYPES.length ? TYPES[t] : "hash";
}

/** The hash of key i, with fields whose names look like array indexes and non-ASCII text. */
function mixedHash(i: number): Record<string, string> {
  return { title: `Titre n°${i} é`, "10": "x", "2": "", ключ: "значение 😀", f: String(i) };
}

describe("fast paths: RESP to JSON text, and the binary object format", () => {
  const replies: [string, RespValue][] = [
    ["bulk", Buffer.from('héllo "q" \\ \n\u0001')],
    ["null", null],
    ["integer", -42],
    ["simple", "OK"],
    ["nested", [Buffer.from("a"), 1, null, [Buffer.from("ж"), Buffer.alloc(0)]]],
    ["empty array", []],
  ];
  for (const [what, value] of replies) {
    it(`RespCursor.value() gives the JSON of replyToJson(decodeReply()) for a ${what} reply`, () => {
      const bytes = encodeValue(value);
      expect(new RespCursor(bytes).value()).to.equal(JSON.stringify(replyToJson(decodeReply(bytes))));
    });
  }

  it("RESP3 values (double, boolean, map, big number, attribute) read as decodeReply reads them", () => {
    const resp3 = [",1.5\r\n", "#t\r\n", "%1\r\n$1\r\nk\r\n:2\r\n", "(12345678901234567890\r\n", "_\r\n"];
    for (const text of resp3) {
      const bytes = Buffer.from(text);
      expect(new RespCursor(bytes).value(), text).to.equal(JSON.stringify(replyToJson(decodeReply(bytes))));
    }
    const attributed = Buffer.from("|1\r\n+a\r\n:1\r\n$2\r\nhi\r\n");
    expect(new RespCursor(attributed).value()).to.equal('"hi"');
  });

  it("an error reply is [1, message], also when nested; a value is [0, value]", () => {
    expect(replyOutcomeJson(encodeValue(new RespError("WRONGTYPE no")))).to.equal('[1,"WRONGTYPE no"]');
    expect(replyOutcomeJson(encodeValue([Buffer.from("a"), new RespError("ERR inner")]))).to.equal(
      '[1,"ERR inner"]',
    );
    expect(replyOutcomeJson(encodeValue(Buffer.from("v")))).to.equal('[0,"v"]');
  });

  it("values written in the binary format decode in the isolate to the same values as their JSON", async () => {
    const bridge: HostBridge = {
      callSync: () => Promise.resolve(null),
      callAsync: (calls) => Promise.resolve(calls.map(() => ({ ok: null }))),
      notify: () => {},
    };
    const isolate = await Isolate.create({ memoryLimitMb: 32, timeoutMs: 5000 }, bridge);
    try {
      expect(isolate.binary, "this QuickJS reads the format").to.equal(true);
      await isolate.evalScript(
        "globalThis.show = (a, v) => JSON.stringify([a, v, Object.keys(v[0]), typeof v[1][2]]); 0",
        "probe",
      );
      const value: JsonValue = [
        { b: "Été", "10": "ten", "2": "two", "01": "lead", ж: "😀", e: "", n: null },
        ["x", true, 2.5, -7, 0, false, [], {}],
        "\u0000\u00ff\u0100",
      ];
      const out = await isolate.callBinary("show", JSON.stringify(["a", null]), 1, encodeBinary(value));
      const [a, decoded, keys, numberType] = JSON.parse(String(out)) as [string, JsonValue, string[], string];
      expect(a).to.equal("a");
      expect(decoded).to.deep.equal(value);
      expect(keys).to.deep.equal(Object.keys(value[0] as object));
      expect(numberType).to.equal("number");
    } finally {
      await isolate.dispose();
    }
  });
});

for (const mode of BACKEND_MODES) {
  describe(`fast paths: ${Backend.label(mode)} behind the proxy`, function () {
    this.timeout(120_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let io: Redis;
    const streams = new Map<string, [string, string[]][]>();

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      io = connect(proxy.port);
      const p = io.pipeline();
      for (let i = 0; i < MIXED; i++) {
        const key = i % 7 === 0 ? `mix:é:${i}` : `mix:${i}`;
        switch (mixedType(i)) {
          case "string":
            p.set(key, `s${i}`);
            break;
          case "list":
            p.rpush(key, "b", "a", `${i}`);
            break;
          case "set":
            p.sadd(key, "only");
            break;
          case "zset":
            p.zadd(key, "1.5", "m1", "+inf", "m2");
            break;
          case "stream":
            p.xadd(key, "*", "x", `${i}`);
            break;
          default:
            p.hset(key, mixedHash(i));
        }
      }
      for (let i = 0; i < RA; i++) p.hset(`ra:${i}`, "n", String(i), "genres", i % 3 === 0 ? "A,B" : "C");
      p.set("ra:s", "a string");
      for (let i = 0; i < 200; i++) p.set(`rw:${i}`, "orig");
      await execAll(p);
      for (let i = 0; i < MIXED; i++) {
        if (mixedType(i) !== "stream") continue;
        const key = i % 7 === 0 ? `mix:é:${i}` : `mix:${i}`;
        streams.set(key, await io.xrange(key, "-", "+"));
      }
    });

    after(async () => {
      io?.disconnect();
      await proxy?.close();
      await backend?.stop();
    });

    /** What KeysReader must give for key i of the mixed set. */
    function expectedRecord(i: number): JsonValue {
      const key = i % 7 === 0 ? `mix:é:${i}` : `mix:${i}`;
      const type = mixedType(i);
      let value: JsonValue;
      switch (type) {
        case "string":
          value = `s${i}`;
          break;
        case "list":
          value = ["b", "a", `${i}`];
          break;
        case "set":
          value = ["only"];
          break;
        case "zset":
          value = [
            ["m1", 1.5],
            ["m2", null],
          ];
          break;
        case "stream":
          value = streams.get(key)!.map(([id, fields]) => ({ id, value: { [fields[0]]: fields[1] } }));
          break;
        default:
          value = mixedHash(i);
      }
      return { key, value, type, event: null };
    }

    async function ok(script: string): Promise<Reply[]> {
      const out = await run(io, script);
      expect(out.errors, script).to.deep.equal([]);
      return out.results;
    }

    it("KeysReader gives every type's record, many batches of mixed types per shard", async () => {
      const results = await ok(
        "GB().map(r => JSON.stringify([r, Object.keys(r), typeof r.value === 'object' ? Object.keys(r.value) : []])).run('mix:*')",
      );
      expect(results).to.have.length(MIXED);
      const got = new Map<string, [JsonValue, string[], string[]]>();
      for (const r of results) {
        const [record, keys, valueKeys] = JSON.parse(str(r)) as [{ key: string }, string[], string[]];
        got.set(record.key, [record, keys, valueKeys]);
      }
      for (let i = 0; i < MIXED; i++) {
        const want = expectedRecord(i) as { key: string; value: JsonValue };
        const entry = got.get(want.key);
        expect(entry, want.key).not.to.equal(undefined);
        const [record, keys, valueKeys] = entry!;
        expect(record, want.key).to.deep.equal(want);
        expect(keys).to.deep.equal(["key", "value", "type", "event"]);
        const v = want.value;
        const objectKeys = v !== null && typeof v === "object" && !Array.isArray(v) ? Object.keys(v) : [];
        expect(valueKeys, want.key).to.deep.equal(Array.isArray(v) ? Object.keys(v) : objectKeys);
      }
    });

    it("KeysReader with readValue: false and KeysOnlyReader give the keys, non-ASCII ones too", async () => {
      const expected = Array.from({ length: MIXED }, (_, i) =>
        i % 7 === 0 ? `mix:é:${i}` : `mix:${i}`,
      ).sort();
      const records = (await ok("GB().map(r => JSON.stringify(r)).run('mix:*', {readValue: false})")).map(
        (r) => JSON.parse(str(r)) as { key: string; event: null },
      );
      expect(records.map((r) => r.key).sort()).to.deep.equal(expected);
      for (const r of records) expect(Object.keys(r)).to.deep.equal(["key", "event"]);
      const keys = (await ok("GB('KeysOnlyReader').run('mix:*')")).map(str);
      expect(keys.sort()).to.deep.equal(expected);
    });

    it("a batch fed in several guest entries (the time budget) gives every record once", async () => {
      await io.call("RG.CONFIGSET", "ScriptTimeoutMS", "60");
      try {
        const busy = "const t = Date.now(); while (Date.now() - t < 2) {}";
        const keys = (await ok(`GB('KeysOnlyReader').map(k => { ${busy} return k; }).run('rw:*')`)).map(str);
        const records = (
          await ok(`GB().map(r => { ${busy} return r.key + '=' + r.value; }).run('rw:*')`)
        ).map(str);
        const all = Array.from({ length: 200 }, (_, i) => `rw:${i}`).sort();
        expect(keys.sort()).to.deep.equal(all);
        expect(records.sort()).to.deep.equal(all.map((k) => `${k}=orig`).sort());
      } finally {
        await io.call("RG.CONFIGSET", "ScriptTimeoutMS", "5000");
      }
    });

    it("execute() reads ahead: every record gets its own key's reply, in both readers", async () => {
      const only = await ok(
        "GB('KeysOnlyReader').filter(k => k !== 'ra:s').map(k => k + '=' + execute('HGET', k, 'n')).run('ra:*')",
      );
      const keyed = await ok(
        "GB().filter(r => r.type === 'hash').map(r => r.key + '=' + execute('HGET', r.key, 'n')).run('ra:*')",
      );
      const expected = Array.from({ length: RA }, (_, i) => `ra:${i}=${i}`).sort();
      expect(only.map(str).sort()).to.deep.equal(expected);
      expect(keyed.map(str).sort()).to.deep.equal(expected);
    });

    it("an error reply among those read ahead is thrown to the record that asked for it only", async () => {
      const caught = (
        await ok(
          "GB('KeysOnlyReader').map(k => { try { return k + '=' + execute('HGET', k, 'n') } catch (e) { return k + '!' + e.message } }).run('ra:*')",
        )
      ).map(str);
      expect(caught).to.have.length(RA + 1);
      const failed = caught.filter((r) => r.includes("!"));
      expect(failed).to.deep.equal([
        "ra:s!WRONGTYPE Operation against a key holding the wrong kind of value",
      ]);
      const out = await run(io, "GB('KeysOnlyReader').map(k => execute('HGET', k, 'n')).run('ra:*')");
      expect(out.results).to.have.length(RA);
      expect(out.errors).to.have.length(1);
      expect(out.errors[0]).to.match(
        /^Error: WRONGTYPE Operation against a key holding the wrong kind of value in map/,
      );
    });

    it("a record that writes then reads its key sees its write", async () => {
      const results = await ok(
        "GB('KeysOnlyReader').filter(k => k !== 'ra:s').map(k => { execute('HSET', k, 'w', 'yes:' + k); return k + '=' + execute('HGET', k, 'w'); }).run('ra:*')",
      );
      expect(results.map(str).sort()).to.deep.equal(
        Array.from({ length: RA }, (_, i) => `ra:${i}=yes:ra:${i}`).sort(),
      );
    });

    it("a write by one record is seen by the reads of the records after it", async () => {
      const keys = Array.from({ length: 200 }, (_, i) => `rw:${i}`);
      const mset = JSON.stringify(keys.flatMap((k) => [k, "written"]));
      const results = (
        await ok(
          `GB('KeysOnlyReader').map(k => { const v = execute('GET', k); execute('MSET', ...${mset}); return v; }).run('rw:*')`,
        )
      ).map(str);
      expect(results).to.have.length(200);
      // Only the first record read before any write.
      expect(results.filter((v) => v === "orig")).to.have.length(1);
    });

    it("a write by a step is seen by the reads after it in later batches, whose replies were read early", async () => {
      // The step's reads over the batches after the first are read when each batch comes
      // (read-ahead.ts, PrefetchingBridge): a write, once the next batch's were read (the
      // pause), must leave none of them in use. The step keeps reading ahead after a write in
      // the second half of a batch only: the write comes at several points, one per run.
      for (const at of [1000, 1150, 1300, 1450]) {
        const script =
          `let n = 0; GB('KeysOnlyReader').filter(k => k !== 'ra:s').map(k => { if (++n === ${at}) { ` +
          `const t = Date.now(); while (Date.now() - t < 50) {} for (let i = 0; i < ${RA}; i++) execute('HSET', 'ra:' + i, 'late', 'yes'); } ` +
          "return String(execute('HGET', k, 'late')); }).countby(v => v).run('ra:*')";
        try {
          const counts = (await ok(script)).map((r) => JSON.parse(str(r)) as { key: string; value: number });
          counts.sort((a, b) => a.key.localeCompare(b.key));
          expect(counts, `written at record ${at}`).to.deep.equal([
            { key: "null", value: at - 1 },
            { key: "yes", value: RA - at + 1 },
          ]);
        } finally {
          const pipeline = io.pipeline();
          for (let i = 0; i < RA; i++) pipeline.hdel(`ra:${i}`, "late");
          await pipeline.exec();
        }
      }
    });

    it("a foreach that only calls execute() pipelines it: every write lands, an error reply fails its record only", async () => {
      const { results, errors } = await run(
        io,
        "GB('KeysOnlyReader').filter(k => k !== 'ra:s').foreach(k => execute(k === 'ra:7' ? 'LPUSH' : 'HSET', k, 'p', 'yes')).map(k => k + '=' + execute('HGET', k, 'p')).run('ra:*')",
      );
      expect(errors).to.have.length(1);
      expect(errors[0]).to.match(/^Error: WRONGTYPE .* in foreach at script:1/);
      expect(results.map(str).sort()).to.deep.equal(
        Array.from({ length: RA }, (_, i) => `ra:${i}=yes`)
          .filter((r) => r !== "ra:7=yes")
          .sort(),
      );
    });

    it("a foreach whose execute() arguments call execute() stays synchronous and sees real replies", async () => {
      const { results, errors } = await run(
        io,
        "GB('KeysOnlyReader').foreach(k => execute('SET', k + ':copy', execute('GET', k))).map(k => execute('GET', k + ':copy')).run('rw:*')",
      );
      expect(errors).to.deep.equal([]);
      expect(new Set(results.map(str))).to.have.length.at.most(2);
      expect(results.map(str).some((v) => v.includes("Promise") || v.includes("object"))).to.equal(false);
    });

    it("calls that miss what was read ahead go to Redis and get the right replies", async () => {
      const results = (
        await ok(
          "let i = 0; GB('KeysOnlyReader').filter(k => k !== 'ra:s').map(k => { const f = i++ % 2 ? 'n' : 'genres'; return [k, f, execute('HGET', k, f)].join('|'); }).run('ra:*')",
        )
      ).map(str);
      expect(results).to.have.length(RA);
      for (const r of results) {
        const [key, field, value] = r.split("|");
        const i = Number(key.slice(3));
        expect(value, r).to.equal(field === "n" ? String(i) : i % 3 === 0 ? "A,B" : "C");
      }
    });

    it("the execute() form of count-by-genre counts as the KeysReader form does", async () => {
      const byExecute = await ok(
        "GB('KeysOnlyReader').filter(k => k !== 'ra:s').map(k => execute('HGET', k, 'genres')).filter(g => g != null).flatmap(g => g.split(',')).countby().run('ra:*')",
      );
      const byReader = await ok(
        "GB().filter(r => r.type === 'hash').map(r => r.value.genres).filter(Boolean).flatmap(g => g.split(',')).countby().run('ra:*')",
      );
      const counts = (list: Reply[]): Record<string, number> =>
        Object.fromEntries(
          list.map((r) => {
            const g = JSON.parse(str(r)) as { key: string; value: number };
            return [g.key, g.value];
          }),
        );
      const a = Math.ceil(RA / 3);
      expect(counts(byExecute)).to.deep.equal({ A: a, B: a, C: RA - a });
      expect(counts(byReader)).to.deep.equal({ A: a, B: a, C: RA - a });
    });
  });
}
