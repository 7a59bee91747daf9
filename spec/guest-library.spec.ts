import vm from "node:vm";
import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { getQuickJS, shouldInterruptAfterDeadline } from "quickjs-emscripten";
import { gearsGuestSource } from "../src/gears/guest-bundles.js";
import { GEARS_ENTRY } from "../src/gears/guest/entry.js";

/** A batched foreach's executeEach list (`partition, n, name, ...args` per call) as `[partition, name, ...args]` lists. */
function callsOfFlat(flat: unknown[]): unknown[][] {
  const calls: unknown[][] = [];
  for (let i = 0; i < flat.length;) {
    if (flat[i] === -1) {
      // The call before with its last string replaced.
      calls.push([...calls[calls.length - 1].slice(0, -1), flat[i + 1]]);
      i += 2;
      continue;
    }
    const n = flat[i + 1] as number;
    calls.push([flat[i], ...flat.slice(i + 2, i + 2 + n)]);
    i += 2 + n;
  }
  return calls;
}

interface HostCall {
  kind: "sync" | "async" | "notify";
  name: string;
  args: unknown[];
}

interface Topology {
  partitions: number;
  slots: [number, number, number][];
}

interface Outcome {
  results: unknown[];
  errors: string[];
}

interface StepInfo {
  type: string;
  name: string;
  arg: string;
  line: number | null;
}

interface ActionInfo {
  kind: string;
  reader: string;
  arg: string;
  options: Record<string, unknown>;
  desc: string | null;
  steps: StepInfo[];
}

/** `__gears` as the host sees it. */
interface GearsApi {
  actions(): unknown;
  start(actionIndex: number, topology: Topology): number;
  feed(execId: number, partition: number, records: unknown, budgetMs?: number): unknown;
  wants(execId: number, partition: number): boolean;
  finish(execId: number): unknown;
  progress(execId: number): unknown;
  current(): unknown;
  drop(execId: number): boolean;
  slot(key: string): number;
  onRegistered(actionIndex: number): unknown;
}

const STANDALONE: Topology = { partitions: 1, slots: [[0, 16383, 0]] };
const CLUSTER3: Topology = {
  partitions: 3,
  slots: [
    [0, 5460, 0],
    [5461, 10922, 1],
    [10923, 16383, 2],
  ],
};

/** Values leave the guest as JSON, as they do from a real isolate. */
function plain<T>(v: unknown): T {
  return (v === undefined ? undefined : JSON.parse(JSON.stringify(v))) as T;
}

function partitionOf(key: string, topology: Topology = CLUSTER3): number {
  const slot = calculateSlot(Buffer.from(key));
  for (const [start, end, p] of topology.slots) if (slot >= start && slot <= end) return p;
  return 0;
}

/** Records spread over the partitions by the slot of keyOf(record). */
function spread<T>(records: T[], keyOf: (r: T) => string, topology: Topology = CLUSTER3): T[][] {
  const out: T[][] = Array.from({ length: topology.partitions }, () => []);
  for (const r of records) out[partitionOf(keyOf(r), topology)].push(r);
  return out;
}

/** Reference CRC16-XMODEM slot over UTF-8 bytes with Redis' {hashtag} rule. */
function referenceSlot(key: string): number {
  let bytes = Buffer.from(key);
  const open = bytes.indexOf(0x7b);
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc & 16383;
}

/** A guest library in a Node vm context with a fake host that records every call. */
class Guest {
  readonly calls: HostCall[] = [];
  onSync: (name: string, args: unknown[]) => unknown = (name) => (name === "register" ? "reg-1" : null);
  onAsync: (name: string, args: unknown[]) => Promise<unknown> = async () => null;
  readonly ctx: vm.Context;
  readonly gears: GearsApi;

  constructor() {
    const host = {
      callSync: (name: string, ...args: unknown[]): unknown => {
        const a = plain<unknown[]>(args);
        this.calls.push({ kind: "sync", name, args: a });
        return this.onSync(name, a);
      },
      callAsync: (name: string, ...args: unknown[]): Promise<unknown> => {
        const a = plain<unknown[]>(args);
        this.calls.push({ kind: "async", name, args: a });
        return this.onAsync(name, a);
      },
      notify: (name: string, ...args: unknown[]): void => {
        this.calls.push({ kind: "notify", name, args: plain<unknown[]>(args) });
      },
    };
    this.ctx = vm.createContext({ __host: host });
    vm.runInContext(gearsGuestSource(), this.ctx, { filename: "gears-guest.js" });
    this.gears = vm.runInContext(GEARS_ENTRY, this.ctx) as GearsApi;
  }

  script(source: string): unknown {
    return vm.runInContext(source, this.ctx, { filename: "script" });
  }

  global<T>(name: string): T {
    return plain<T>(vm.runInContext(name, this.ctx));
  }

  actions(): ActionInfo[] {
    return plain<ActionInfo[]>(this.gears.actions());
  }

  /** start + feed every partition in batches + finish + drop. */
  async execute(
    perPartition: unknown[][],
    topology: Topology = STANDALONE,
    actionIndex = 0,
  ): Promise<Outcome> {
    const id = this.gears.start(actionIndex, topology);
    for (let p = 0; p < perPartition.length; p++) {
      const records = perPartition[p];
      for (let i = 0; i < records.length; i += 1000) {
        await this.gears.feed(id, p, JSON.stringify(records.slice(i, i + 1000)));
      }
    }
    const out = plain<Outcome>(await this.gears.finish(id));
    this.gears.drop(id);
    return out;
  }

  calledWith(name: string): HostCall[] {
    return this.calls.filter((c) => c.name === name);
  }
}

/** Runs `script` (which must call run()) over the records; one partition unless given more. */
async function pipeline(
  script: string,
  input: unknown[] | unknown[][],
  topology?: Topology,
): Promise<Outcome> {
  const guest = new Guest();
  guest.script(script);
  const parts = topology === undefined ? [input] : (input as unknown[][]);
  return guest.execute(parts, topology ?? STANDALONE);
}

async function results(
  script: string,
  input: unknown[] | unknown[][],
  topology?: Topology,
): Promise<unknown[]> {
  const out = await pipeline(script, input, topology);
  expect(out.errors).to.deep.equal([]);
  return out.results;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("guest library", () => {
  describe("hash slots", () => {
    const guest = new Guest();

    it("matches the known CRC16 vectors", () => {
      expect(guest.gears.slot("foo")).to.equal(12182);
      expect(guest.gears.slot("123456789")).to.equal(12739);
      expect(guest.gears.slot("")).to.equal(0);
      expect(guest.gears.slot("{user1000}.following")).to.equal(guest.gears.slot("{user1000}.followers"));
      expect(guest.gears.slot("{user1000}.following")).to.equal(guest.gears.slot("user1000"));
    });

    it("applies the hashtag rule and hashes UTF-8 bytes like Redis", () => {
      const keys = [
        "foo{bar}{zap}",
        "{}foo",
        "foo{}{bar}",
        "{bar",
        "bar}",
        "a{b}c",
        "{{b}}",
        "é",
        "日本語キー",
        "😀{x}",
        "{😀}tail",
        "lone\uD800surrogate",
        "\uDC00",
      ];
      for (let i = 0; i < 2000; i++) {
        let k = "";
        const n = i % 17;
        for (let j = 0; j < n; j++) {
          const c = (i * 7919 + j * 104729) % 0x2fff;
          k += j % 5 === 0 ? "{" : j % 7 === 0 ? "}" : String.fromCharCode(c < 32 ? c + 32 : c);
        }
        keys.push(k);
      }
      for (const k of keys) {
        expect(guest.gears.slot(k), JSON.stringify(k)).to.equal(referenceSlot(k));
        // cluster-key-slot disagrees with Redis when "{}" comes before another "}" (see below)
        if (!k.includes("{}"))
          expect(guest.gears.slot(k), JSON.stringify(k)).to.equal(calculateSlot(Buffer.from(k)));
      }
    });

    it("treats an empty {} like Redis does (values from CLUSTER KEYSLOT of redis-server 7.0)", () => {
      expect(guest.gears.slot("foo{}{bar}")).to.equal(8363);
      expect(guest.gears.slot("x{}}")).to.equal(15984);
      expect(guest.gears.slot("{}{bar}")).to.equal(11272);
      expect(guest.gears.slot("a{}{b}")).to.equal(15033);
    });
  });

  describe("local operations", () => {
    it("map, filter and foreach keep order and pass records on", async () => {
      const guest = new Guest();
      guest.script(`
        var seen = [];
        GB().map(r => r * 10).filter(r => r !== 20).foreach(r => { seen.push(r); return 'ignored'; }).run();
      `);
      const out = await guest.execute([[1, 2, 3, 4]]);
      expect(out).to.deep.equal({ results: ["10", "30", "40"], errors: [] });
      expect(guest.global<number[]>("seen")).to.deep.equal([10, 30, 40]);
    });

    it("flatmap emits array elements in order and other values as they are", async () => {
      expect(await results("GB().flatmap(r => r).run()", [[1, 2, 3], 4, [], [5, [6]], "s"])).to.deep.equal([
        "1",
        "2",
        "3",
        "4",
        "5",
        "[6]",
        "s",
      ]);
    });

    it("accumulate gives one record per partition that had input, without resetting falsy values", async () => {
      const sum =
        "GB().accumulate((a, r) => (a === undefined ? 0 : a) + r).run(undefined, {convertToStr: false})";
      expect(await results(sum, [[1, 2, 3], [], [10]], CLUSTER3)).to.deep.equal([6, 10]);
      expect(await results(sum, [])).to.deep.equal([]);
      const minus =
        "GB().accumulate((a, r) => a === undefined ? r : a - r).run(undefined, {convertToStr: false})";
      expect(await results(minus, [1, 1, 5])).to.deep.equal([-5]);
    });

    it("localgroupby groups per partition", async () => {
      const out = await results(
        `GB().localgroupby(r => r % 2, (k, a, r) => (a ?? 0) + r).run(undefined, {convertToStr: false, collect: false})`,
        [[1, 2, 3], [4, 5], []],
        CLUSTER3,
      );
      expect(out).to.deep.equal([
        [
          ["key", "1", "value", 4],
          ["key", "0", "value", 2],
        ],
        [
          ["key", "0", "value", 4],
          ["key", "1", "value", 5],
        ],
        [],
      ]);
    });

    it("limit is per partition before collect() and global after it", async () => {
      const input = [
        [1, 2, 3, 4],
        [5, 6, 7, 8],
        [9, 10, 11, 12],
      ];
      const opts = "{convertToStr: false}";
      expect(await results(`GB().limit(2).run(undefined, ${opts})`, input, CLUSTER3)).to.deep.equal([
        1, 2, 5, 6, 9, 10,
      ]);
      expect(await results(`GB().limit(2, 1).run(undefined, ${opts})`, input, CLUSTER3)).to.deep.equal([
        2, 3, 6, 7, 10, 11,
      ]);
      expect(await results(`GB().collect().limit(3).run(undefined, ${opts})`, input, CLUSTER3)).to.deep.equal(
        [1, 2, 3],
      );
      expect(
        await results(`GB().collect().limit(2, 5).run(undefined, ${opts})`, input, CLUSTER3),
      ).to.deep.equal([6, 7]);
      expect(await results(`GB().limit(0).run()`, input, CLUSTER3)).to.deep.equal([]);
    });

    it("a first-stage limit stops the partition's reading", async () => {
      const guest = new Guest();
      guest.script("var n = 0; GB().foreach(() => n++).limit(2).run()");
      const id = guest.gears.start(0, STANDALONE);
      expect(guest.gears.wants(id, 0)).to.equal(true);
      await guest.gears.feed(id, 0, [1, 2, 3, 4, 5]);
      expect(guest.gears.wants(id, 0)).to.equal(false);
      expect(guest.global<number>("n")).to.equal(2);
      expect(plain<Outcome>(guest.gears.finish(id)).results).to.deep.equal(["1", "2"]);
    });
  });

  describe("global operations", () => {
    it("collect() moves every record to one partition", async () => {
      const out = await results(
        "GB().collect().run(undefined, {collect: false})",
        [["a"], ["b", "c"], ["d"]],
        CLUSTER3,
      );
      expect(out).to.deep.equal([["a", "b", "c", "d"], [], []]);
    });

    it("repartition() sends each record to the partition owning the slot of extract(r), where later steps run", async () => {
      const guest = new Guest();
      guest.onSync = (name, args) => (name === "execute" ? `${String(args[2])}@${String(args[0])}` : null);
      guest.script(
        "GB().repartition(r => r.key).map(r => execute('ECHO', r.key)).run(undefined, {collect: false})",
      );
      const keys = Array.from({ length: 60 }, (_, i) => `user:${i}`);
      // fed to the "wrong" partitions on purpose
      const input: unknown[][] = [[], [], []];
      keys.forEach((key, i) => input[i % 3].push({ key }));
      const out = await guest.execute(input, CLUSTER3);
      expect(out.errors).to.deep.equal([]);
      const parts = out.results as string[][];
      for (let p = 0; p < 3; p++) {
        for (const r of parts[p]) {
          const [key, where] = r.split("@");
          expect(partitionOf(key), key).to.equal(p);
          expect(where).to.equal(String(p));
        }
      }
      expect(parts.flat().length).to.equal(60);
    });

    it("groupby() reduces per key over all partitions, in the partition owning the key", async () => {
      const guest = new Guest();
      guest.onSync = (name, args) => (name === "hashtag" ? `tag${String(args[0])}` : null);
      guest.script(`
        GB().groupby(r => r.word, (k, a, r) => ({ n: (a ? a.n : 0) + 1, tag: hashtag() }))
          .run(undefined, { convertToStr: false, collect: false });
      `);
      const words = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "yuzu"];
      const records = Array.from({ length: 400 }, (_, i) => ({
        key: `k${i}`,
        word: words[(i * 7) % words.length],
      }));
      const out = await guest.execute(
        spread(records, (r) => r.key),
        CLUSTER3,
      );
      expect(out.errors).to.deep.equal([]);
      const parts = out.results as unknown[][][];
      const seen: Record<string, number> = {};
      for (let p = 0; p < 3; p++) {
        for (const rec of parts[p]) {
          const [, key, , value] = rec as [string, string, string, unknown[]];
          expect(partitionOf(key), key).to.equal(p);
          expect(value).to.deep.equal(["n", 50, "tag", `tag${p}`]);
          seen[key] = 1;
        }
      }
      expect(Object.keys(seen).sort()).to.deep.equal([...words].sort());
    });

    it("group keys are strings", async () => {
      const out = await results("GB().groupby(r => r, (k, a) => typeof k).run()", [1, null, true, "x", 1]);
      expect(out.sort()).to.deep.equal([
        '{"key":"1","value":"string"}',
        '{"key":"null","value":"string"}',
        '{"key":"true","value":"string"}',
        '{"key":"x","value":"string"}',
      ]);
    });

    it("batchgroupby() gives reduce(key, records) per key", async () => {
      const out = await results(
        "GB().batchgroupby(r => r % 3, (k, list) => list.slice().sort((a, b) => a - b)).run(undefined, {convertToStr: false})",
        [
          [1, 2, 3],
          [4, 5, 6],
          [7, 8, 9],
        ],
        CLUSTER3,
      );
      const byKey = new Map((out as [string, string, string, number[]][]).map((r) => [r[1], r[3]]));
      expect(Object.fromEntries(byKey)).to.deep.equal({ "0": [3, 6, 9], "1": [1, 4, 7], "2": [2, 5, 8] });
    });

    it("aggregate() folds per partition from a copy of zero, then combines; nothing gives zero", async () => {
      const script =
        "GB().aggregate([], (a, r) => { a.push(r); return a; }, (a, part) => a.concat(part)).run(undefined, {convertToStr: false})";
      const out = (await results(script, [[1, 2], [3], [4, 5]], CLUSTER3)) as number[][];
      expect(out).to.have.length(1);
      expect(out[0].slice().sort()).to.deep.equal([1, 2, 3, 4, 5]);
      expect(await results(script, [[], [], []], CLUSTER3)).to.deep.equal([[]]);
      expect(await results("GB().aggregate(7, (a, r) => a + r, (a, b) => a + b).run()", [])).to.deep.equal([
        "7",
      ]);
    });

    it("aggregateby() folds per key and partition, then combines per key", async () => {
      const script = `GB().aggregateby(r => r.k, 0, (k, a, r) => a + r.v, (k, a, v) => a + v)
        .run(undefined, {convertToStr: false})`;
      const input = [
        [
          { k: "a", v: 1 },
          { k: "b", v: 2 },
        ],
        [{ k: "a", v: 10 }],
        [
          { k: "b", v: 20 },
          { k: "c", v: 5 },
        ],
      ];
      const out = (await results(script, input, CLUSTER3)) as [string, string, string, number][];
      expect(Object.fromEntries(out.map((r) => [r[1], r[3]]))).to.deep.equal({ a: 11, b: 22, c: 5 });
    });

    it("count() counts over all partitions, 0 for nothing", async () => {
      expect(await results("GB().count().run()", [[1, 2], [3], [4, 5, 6]], CLUSTER3)).to.deep.equal(["6"]);
      expect(await results("GB().count().run(undefined, {convertToStr: false})", [])).to.deep.equal([0]);
    });

    it("countby() counts per String(key)", async () => {
      const out = (await results("GB().countby().run(undefined, {convertToStr: false})", [
        "a",
        "b",
        "a",
        1,
        "1",
      ])) as [string, string, string, number][];
      expect(Object.fromEntries(out.map((r) => [r[1], r[3]]))).to.deep.equal({ a: 2, b: 1, "1": 2 });
    });

    it("avg() gives the mean, nothing for no input", async () => {
      expect(await results("GB().avg().run()", [[1, "2"], [3], [4]], CLUSTER3)).to.deep.equal(["2.5"]);
      expect(await results("GB().avg(r => r.v).run()", [{ v: 1 }, { v: 2 }])).to.deep.equal(["1.5"]);
      expect(await results("GB().avg().run()", [])).to.deep.equal([]);
    });

    it("distinct() keeps each record once, objects compared by JSON", async () => {
      const out = await results(
        "GB().distinct().run(undefined, {convertToStr: false})",
        [
          [{ a: 1 }, 1, "1"],
          [{ a: 1 }, { a: 2 }, 1],
          ["1", [1, 2], [1, 2]],
        ],
        CLUSTER3,
      );
      expect(out).to.deep.equal([["a", 1], 1, "1", ["a", 2], [1, 2]]);
    });

    it("sort() orders numbers numerically and strings by code point, ascending or descending", async () => {
      const nums = [10, 9, 100, 1, 2.5, -3];
      const opts = "{convertToStr: false}";
      expect(
        await results(`GB().sort().run(undefined, ${opts})`, [nums.slice(0, 3), nums.slice(3), []], CLUSTER3),
      ).to.deep.equal([-3, 1, "2.5", 9, 10, 100]);
      expect(await results(`GB().sort(true).run(undefined, ${opts})`, nums)).to.deep.equal([
        100,
        10,
        9,
        "2.5",
        1,
        -3,
      ]);
      const strs = ["b", "a", "B", "10", "9", "é", "😀", "\uffff"];
      expect(await results(`GB().sort().run()`, strs)).to.deep.equal([
        "10",
        "9",
        "B",
        "a",
        "b",
        "é",
        "\uffff",
        "😀",
      ]);
      expect(await results(`GB().sort(true).run()`, strs)).to.deep.equal([
        "😀",
        "\uffff",
        "é",
        "b",
        "a",
        "B",
        "9",
        "10",
      ]);
      expect(await results(`GB().sort().run(undefined, ${opts})`, ["b", 2, "a", 1])).to.deep.equal([
        1,
        2,
        "a",
        "b",
      ]);
      expect(
        await results(`GB().sort((a, b) => b.length - a.length).run()`, ["aa", "a", "aaa"]),
      ).to.deep.equal(["aaa", "aa", "a"]);
    });

    it("steps after a global step run where the records are", async () => {
      const guest = new Guest();
      guest.onSync = (name, args) => (name === "execute" ? args[0] : null);
      guest.script("GB().count().map(n => [n, execute('DBSIZE')]).run(undefined, {convertToStr: false})");
      const out = await guest.execute([[1], [2], [3]], CLUSTER3);
      expect(out).to.deep.equal({ results: [[3, 0]], errors: [] });
    });

    it("chains several global steps", async () => {
      const out = await results(
        `GB().flatmap(r => r.split(' ')).countby().filter(r => r.value > 1).map(r => r.key).sort().run()`,
        [["a b c a"], ["b d"], ["a e e"]],
        CLUSTER3,
      );
      expect(out).to.deep.equal(["a", "b", "e"]);
    });
  });

  describe("host calls", () => {
    it("execute() passes the current partition (null at top level) and string arguments", async () => {
      const guest = new Guest();
      guest.onSync = (name, args) =>
        name === "execute" ? (args[0] === null ? "top" : Number(args[0]) * 10) : null;
      guest.script(
        "var top = execute('SET', 'k', 1); GB('ShardsIDReader').map(() => execute('DBSIZE')).run()",
      );
      expect(guest.global<string>("top")).to.equal("top");
      const out = await guest.execute([["s0"], ["s1"], ["s2"]], CLUSTER3);
      expect(out).to.deep.equal({ results: ["0", "10", "20"], errors: [] });
      expect(guest.calledWith("execute").map((c) => c.args)).to.deep.equal([
        [null, "SET", "k", "1"],
        [0, "DBSIZE"],
        [1, "DBSIZE"],
        [2, "DBSIZE"],
      ]);
    });

    it("log, configGet, gearsConfigGet and hashtag", () => {
      const guest = new Guest();
      guest.onSync = (name, args) =>
        name === "configGet" ? (args[0] === "known" ? "v" : null) : name === "hashtag" ? "06S" : null;
      guest.script(`
        log('hello');
        log(42, 'warning');
        var got = [configGet('known'), configGet('unknown'), gearsConfigGet('unknown', 'dflt'), gearsConfigGet('known', 'dflt'), hashtag()];
      `);
      expect(guest.global<unknown[]>("got")).to.deep.equal(["v", null, "dflt", "v", "06S"]);
      expect(guest.calledWith("log")).to.deep.equal([
        { kind: "notify", name: "log", args: ["notice", "hello"] },
        { kind: "notify", name: "log", args: ["warning", "42"] },
      ]);
      expect(guest.calledWith("hashtag")[0].args).to.deep.equal([null]);
    });

    it("register() asks the host with the action index and returns its answer", () => {
      const guest = new Guest();
      let n = 0;
      guest.onSync = (name) => (name === "register" ? `reg-${++n}` : null);
      guest.script(`
        var ids = [
          GB('KeysReader').map(r => r.key).register('user:*', { mode: 'sync', eventTypes: ['set'], onRegistered: () => 'ready' }),
          GB('StreamReader', 's1', 'my desc').register({ batch: 10 }),
          GB('CommandReader').register({ trigger: 't1' }),
        ];
      `);
      expect(guest.global<string[]>("ids")).to.deep.equal(["reg-1", "reg-2", "reg-3"]);
      expect(guest.calledWith("register").map((c) => c.args)).to.deep.equal([[0], [1], [2]]);
      const actions = guest.actions();
      expect(actions.map((a) => [a.kind, a.reader, a.arg, a.desc])).to.deep.equal([
        ["register", "KeysReader", "user:*", null],
        ["register", "StreamReader", "s1", "my desc"],
        ["register", "CommandReader", "*", null],
      ]);
      expect(actions[0].options).to.deep.equal({ mode: "sync", eventTypes: ["set"] });
      expect(actions[1].options).to.deep.equal({ batch: 10 });
      expect(actions[2].options).to.deep.equal({ trigger: "t1" });
      expect(guest.gears.onRegistered(0)).to.equal("ready");
      expect(guest.gears.onRegistered(1)).to.equal(undefined);
    });

    it("actions() describes each step with its type, function name, source and line", () => {
      const guest = new Guest();
      guest.script(
        [
          "function double(r) { return r * 2 }",
          "GB('KeysOnlyReader', 'user:*')",
          "  .map(double)",
          "  .filter(r => { /* " + "x".repeat(120) + " */ return r > 1; })",
          "  .limit(5)",
          "  .groupby(function byKey(r) { return r }, (k, a) => a)",
          "  .count()",
          "  .run(undefined, { count: 10 });",
        ].join("\n"),
      );
      const [action] = guest.actions();
      expect(action).to.deep.include({
        kind: "run",
        reader: "KeysOnlyReader",
        arg: "user:*",
        options: { count: 10 },
        desc: null,
      });
      expect(action.steps.map((s) => [s.type, s.name, s.line])).to.deep.equal([
        ["map", "double", 3],
        ["filter", "", 4],
        ["limit", "", 5],
        ["groupby", "byKey", 6],
        ["count", "", 7],
      ]);
      expect(action.steps[0].arg).to.equal("function double(r) { return r * 2 }");
      expect(action.steps[1].arg).to.have.length(100);
      expect(action.steps[2].arg).to.equal("5, 0");
    });

    it("current() names the step and line while user code runs", async () => {
      const guest = new Guest();
      const seen: unknown[] = [];
      guest.onSync = () => {
        seen.push(plain(guest.gears.current()));
        return 1;
      };
      guest.script(
        "GB()\n  .map(r => execute('GET', r))\n  .groupby(r => r, (k, a, r) => execute('GET', k))\n  .run()",
      );
      expect(guest.gears.current()).to.equal(null);
      await guest.execute([["a"]]);
      expect(seen).to.deep.equal([
        { step: "map", line: 2 },
        { step: "groupby", line: 3 },
      ]);
      expect(guest.gears.current()).to.equal(null);
    });

    it("progress() reports records in and out", async () => {
      const guest = new Guest();
      guest.script("GB().filter(r => r > 1).run()");
      const id = guest.gears.start(0, STANDALONE);
      await guest.gears.feed(id, 0, [1, 2, 3]);
      expect(plain(guest.gears.progress(id))).to.deep.include({
        recordsIn: 3,
        recordsOut: 2,
        stage: 0,
        done: false,
      });
      guest.gears.finish(id);
      expect(plain(guest.gears.progress(id))).to.deep.include({ done: true });
      expect(guest.gears.drop(id)).to.equal(true);
      expect(() => guest.gears.progress(id)).to.throw("execution plan does not exist");
    });
  });

  describe("async steps", () => {
    function asyncGuest(): { guest: Guest; maxInFlight: () => number } {
      const guest = new Guest();
      let inFlight = 0;
      let max = 0;
      guest.onAsync = async (_name, args) => {
        inFlight++;
        max = Math.max(max, inFlight);
        await sleep(1 + ((Number(args[2]) * 7) % 5));
        inFlight--;
        if (args[1] === "FAIL") throw new Error(`no such thing ${String(args[2])}`);
        return `v${String(args[2])}@${String(args[0])}`;
      };
      return { guest, maxInFlight: () => max };
    }

    it("keeps many executeAsync() calls in flight and waits for all of them", async () => {
      const { guest, maxInFlight } = asyncGuest();
      guest.script(
        "GB().map(async r => await executeAsync('GET', r)).filter(async v => !v.startsWith('v3')).run()",
      );
      const input = [Array.from({ length: 30 }, (_, i) => i), [100, 101], [200]];
      const out = await guest.execute(input, CLUSTER3);
      expect(out.errors).to.deep.equal([]);
      const expected = [
        ...input[0].filter((i) => !String(i).startsWith("3")).map((i) => `v${i}@0`),
        "v100@1",
        "v101@1",
        "v200@2",
      ];
      expect((out.results as string[]).slice().sort()).to.deep.equal(expected.sort());
      expect(maxInFlight()).to.be.greaterThan(10);
    });

    it("a foreach that only calls execute() sends a fed batch's commands in one host call; an error fails its record only", async () => {
      const guest = new Guest();
      guest.onAsync = async (name, args) =>
        name === "executeEach"
          ? callsOfFlat(args[0] as unknown[]).map((c) =>
              c[3] === "r7" ? [1, "WRONGTYPE not a set"] : [0, 1],
            )
          : null;
      guest.script("GB().foreach(r => execute('SADD', 'all', r)).run()");
      const input = Array.from({ length: 1500 }, (_, i) => `r${i}`);
      const out = await guest.execute([input]);
      // Fed as two batches (1000 + 500 records): two host calls, none per record.
      const sent = guest.calledWith("executeEach");
      // Each call back to back in one flat list: partition, how many strings, the strings; a
      // call that is the one before but for its last argument as -1 and that argument.
      expect(sent.map((c) => callsOfFlat(c.args[0] as unknown[]).length)).to.deep.equal([1000, 500]);
      expect(sent.map((c) => c.args[0] as unknown[])).to.deep.equal([
        [0, 3, "SADD", "all", "r0", ...input.slice(1, 1000).flatMap((r) => [-1, r])],
        [0, 3, "SADD", "all", "r1000", ...input.slice(1001).flatMap((r) => [-1, r])],
      ]);
      expect(guest.calls.filter((c) => c.name === "execute")).to.deep.equal([]);
      expect(out.results).to.deep.equal(input.filter((r) => r !== "r7"));
      expect(out.errors).to.have.length(1);
      expect(out.errors[0]).to.match(/^Error: WRONGTYPE not a set in foreach at script:1/);
    });

    it("a batched foreach whose arguments throw drops that record with the error; the others' calls go in one host call", async () => {
      const guest = new Guest();
      guest.onAsync = async (name, args) =>
        name === "executeEach" && Array.isArray(args[0]) ? { failed: [] } : null;
      guest.script("GB().foreach(r => execute('SADD', 'all', r.k.x)).map(r => r.k.x).run()");
      const own: unknown = vm.runInContext("execute", guest.ctx);
      const out = await guest.execute([[{ k: { x: "A" } }, {}, { k: { x: "B" } }]]);
      expect(out.results).to.deep.equal(["A", "B"]);
      expect(out.errors).to.have.length(1);
      expect(out.errors[0]).to.match(/^TypeError: .* in foreach at script:1/);
      expect(guest.calledWith("executeEach").map((c) => c.args[0])).to.deep.equal([
        [0, 3, "SADD", "all", "A", -1, "B"],
      ]);
      // The library's own execute() is the global one again after the step.
      expect(vm.runInContext("execute", guest.ctx)).to.equal(own);
    });

    it("event rows: a row given as an earlier row's position is a record of its own with that row's fields", async () => {
      const guest = new Guest();
      guest.onSync = (name, args) => (name === "readValue" ? `big:${String(args[0])}` : null);
      guest.script("GB().map(r => { r.seen = (r.seen || 0) + 1; return JSON.stringify(r); }).run()");
      const id = guest.gears.start(0, STANDALONE);
      // Row 0 (at 0) and row 1 (at 4) in full, then references to them.
      const rows = ["hot", "set", "sadd", -1, "k1", "string", "set", 0, 0, 4, 0, "k2", "string", "set", 1, 4];
      expect(guest.gears.feed(id, 0, JSON.stringify({ rows, values: ["v1", "v2"] }))).to.equal(7);
      const out = plain<Outcome>(await guest.gears.finish(id));
      expect(out.errors).to.deep.equal([]);
      const hot = { key: "hot", type: "set", event: "sadd", value: "big:hot", seen: 1 };
      const k1 = { key: "k1", type: "string", event: "set", value: "v1", seen: 1 };
      const k2 = { key: "k2", type: "string", event: "set", value: "v2", seen: 1 };
      // Each record is an object of its own (each saw the map once), the same fields in the same order.
      expect((out.results as string[]).map((r) => JSON.parse(r) as unknown)).to.deep.equal([
        hot,
        k1,
        hot,
        k1,
        hot,
        k2,
        k1,
      ]);
      expect(out.results.map((r) => Object.keys(JSON.parse(r as string) as object))).to.deep.equal(
        Array.from({ length: 7 }, () => ["key", "type", "event", "value", "seen"]),
      );
      // The lazy value was read once per record that touched it.
      expect(guest.calledWith("readValue").map((c) => c.args)).to.deep.equal([["hot"], ["hot"], ["hot"]]);
      expect(() => guest.gears.feed(guest.gears.start(0, STANDALONE), 0, { rows: [3], values: [] })).to.throw(
        /bad event row reference/,
      );
    });

    it("feed() returns a Promise only while something is in flight, resolving to the records taken", async () => {
      const { guest } = asyncGuest();
      guest.script("GB().map(r => r > 1 ? executeAsync('GET', r) : r).run()");
      const id = guest.gears.start(0, STANDALONE);
      expect(guest.gears.feed(id, 0, [1])).to.equal(1);
      const p = guest.gears.feed(id, 0, [2, 3]);
      expect(p).to.be.an.instanceof(vm.runInContext("Promise", guest.ctx) as PromiseConstructor);
      expect(plain(guest.gears.progress(id))).to.deep.include({ pending: 2 });
      expect(await p).to.equal(2);
      expect(plain(guest.gears.progress(id))).to.deep.include({ pending: 0 });
      expect(
        plain<Outcome>(await guest.gears.finish(id))
          .results.slice()
          .sort(),
      ).to.deep.equal(["1", "v2@0", "v3@0"]);
    });

    it("feed() with a time budget stops starting records once it is spent", () => {
      const { guest } = asyncGuest();
      guest.script("GB().map(r => { const t = Date.now(); while (Date.now() - t < 5) {} return r; }).run()");
      const id = guest.gears.start(0, STANDALONE);
      const taken = guest.gears.feed(
        id,
        0,
        Array.from({ length: 100 }, (_, i) => i),
        20,
      ) as number;
      expect(taken).to.be.within(1, 20);
      expect(guest.gears.feed(id, 0, [1, 2, 3])).to.equal(3);
    });

    it("async foreach, flatmap and filter", async () => {
      const { guest } = asyncGuest();
      guest.script(`
        var n = 0;
        GB().foreach(async r => { await executeAsync('PING', r); n++; })
          .flatmap(async r => [r, await executeAsync('GET', r)])
          .filter(async r => typeof r === 'number' || r.endsWith('@0'))
          .run();
      `);
      const out = await guest.execute([[1, 2, 3]]);
      expect(out.errors).to.deep.equal([]);
      expect((out.results as string[]).slice().sort()).to.deep.equal(["1", "2", "3", "v1@0", "v2@0", "v3@0"]);
      expect(guest.global<number>("n")).to.equal(3);
    });

    it("async reducers are applied one record at a time per state", async () => {
      const { guest } = asyncGuest();
      guest.script(`
        GB().accumulate(async (a, r) => {
          const v = await executeAsync('GET', r);
          return (a ?? []).concat([v]);
        }).map(l => l.length).run();
      `);
      expect(await guest.execute([Array.from({ length: 20 }, (_, i) => i)])).to.deep.equal({
        results: ["20"],
        errors: [],
      });

      const g2 = asyncGuest().guest;
      g2.script(`
        GB().groupby(r => r % 2, async (k, a, r) => { await executeAsync('PING', r); return (a ?? 0) + r; })
          .aggregate(0, async (a, r) => a + r.value, async (a, b) => { await executeAsync('PING', 1); return a + b; })
          .run();
      `);
      const input = Array.from({ length: 40 }, (_, i) => i);
      expect(
        await g2.execute([input.slice(0, 10), input.slice(10, 25), input.slice(25)], CLUSTER3),
      ).to.deep.equal({
        results: [String(input.reduce((a, b) => a + b, 0))],
        errors: [],
      });
    });

    it("executeAsync() made inside a step gets the record's partition", async () => {
      const { guest } = asyncGuest();
      guest.script("GB().map(r => executeAsync('GET', r)).run()");
      const out = await guest.execute([[1], [2], [3]], CLUSTER3);
      expect(out.results).to.deep.equal(["v1@0", "v2@1", "v3@2"]);
    });

    it("a rejected Promise drops its record with an error naming the step and line", async () => {
      const { guest } = asyncGuest();
      guest.script("GB()\n  .map(r => executeAsync(r === 2 ? 'FAIL' : 'GET', r))\n  .run()");
      const out = await guest.execute([[1, 2, 3]]);
      expect((out.results as string[]).slice().sort()).to.deep.equal(["v1@0", "v3@0"]);
      expect(out.errors).to.have.length(1);
      expect(out.errors[0]).to.equal("Error: no such thing 2 in map at script:2");
    });
  });

  describe("errors", () => {
    it("a throwing step drops the record, names the error, the step and the line, and the execution goes on", async () => {
      const out = await pipeline(
        [
          "GB()",
          "  .map(r => {",
          "    if (r === 2) throw new Error('boom');",
          "    return r;",
          "  })",
          "  .filter(r => r.missing.field)",
          "  .run()",
        ].join("\n"),
        [1, 2, 3],
      );
      expect(out.results).to.deep.equal([]);
      expect(out.errors).to.have.length(3);
      expect(out.errors[1]).to.equal("Error: boom in map at script:3");
      expect(out.errors[0]).to.match(/^TypeError: .* in filter at script:6$/);
      expect(out.errors[2]).to.match(/^TypeError: .* in filter at script:6$/);
    });

    it("non-Error throws and host errors", async () => {
      const guest = new Guest();
      guest.onSync = (_name, args) => {
        if (args[1] === "BAD")
          throw new Error("WRONGTYPE Operation against a key holding the wrong kind of value");
        return "ok";
      };
      guest.script(
        "GB()\n  .map(r => { if (r === 1) throw 'plain'; return r; })\n  .map(r => execute(r === 2 ? 'BAD' : 'GET', r))\n  .run()",
      );
      const out = await guest.execute([[1, 2, 3]]);
      expect(out.results).to.deep.equal(["ok"]);
      expect(out.errors).to.deep.equal([
        "Error: plain in map at script:2",
        "Error: WRONGTYPE Operation against a key holding the wrong kind of value in map at script:3",
      ]);
    });

    it("errors of steps that run at the end name their step", async () => {
      const out = await pipeline(
        "GB()\n  .batchgroupby(r => r, (k, list) => { throw new RangeError('nope ' + k); })\n  .run()",
        [1, 1, 2],
      );
      expect(out.results).to.deep.equal([]);
      expect(out.errors.sort()).to.deep.equal([
        "RangeError: nope 1 in batchgroupby at script:2",
        "RangeError: nope 2 in batchgroupby at script:2",
      ]);
    });

    it("rejects unknown readers, a second run(), run() on CommandReader and register() on run-only readers", () => {
      const guest = new Guest();
      expect(() => guest.script("GB('NoSuchReader')")).to.throw("reader does not exists");
      expect(() => guest.script("GB(42)")).to.throw("reader argument must be a string");
      expect(() => guest.script("GB('CommandReader').run()")).to.throw("reader do not support run");
      expect(() => guest.script("GB('KeysOnlyReader').register()")).to.throw(
        "reader do not support register",
      );
      expect(() => guest.script("GB('ShardsIDReader').register()")).to.throw(
        "reader do not support register",
      );
      expect(() => guest.script("GB().map(1)")).to.throw("map argument must be a function");
      expect(() => guest.script("GB().limit('x')")).to.throw("limit argument must be a number");
      guest.script("GB().run()");
      expect(() => guest.script("GB().count().run()")).to.throw(
        "Can not run more then 1 executions in a single script",
      );
      expect(guest.actions()).to.have.length(1);
      expect(guest.calledWith("register")).to.deep.equal([]);
    });

    it("new GearsBuilder() works like GB()", () => {
      const guest = new Guest();
      guest.script(
        "new GearsBuilder('StreamReader', 'mystream').map(r => r).run('other', { fromId: '1-0' })",
      );
      expect(guest.actions()[0]).to.deep.include({
        reader: "StreamReader",
        arg: "other",
        options: { fromId: "1-0" },
      });
    });
  });

  describe("results conversion", () => {
    const values =
      "[ 'str', 42, -0, 1.5, 2 ** 60, null, undefined, true, false, [1, 'x', [true, null]], { a: 1, b: { c: 2.5 } }, new Map([['m', 1]]) ]";

    it("convertToStr (the default) makes each result a string or null", async () => {
      const guest = new Guest();
      guest.script(`GB().flatmap(() => ${values}).run()`);
      expect((await guest.execute([[0]])).results).to.deep.equal([
        "str",
        "42",
        "0",
        "1.5",
        "1152921504606847000",
        null,
        null,
        "true",
        "false",
        '[1,"x",[true,null]]',
        '{"a":1,"b":{"c":2.5}}',
        "{}",
      ]);
    });

    it("convertToStr: false keeps strings and integers, flattens objects and turns booleans into 1/0", async () => {
      const guest = new Guest();
      guest.script(`GB().flatmap(() => ${values}).run(undefined, { convertToStr: false })`);
      expect((await guest.execute([[0]])).results).to.deep.equal([
        "str",
        42,
        0,
        "1.5",
        "1152921504606847000",
        null,
        null,
        1,
        0,
        [1, "x", [1, null]],
        ["a", 1, "b", ["c", "2.5"]],
        ["m", 1],
      ]);
    });

    it("a result that cannot be converted becomes an error", async () => {
      const out = await pipeline("const o = {}; o.self = o;\nGB().map(() => o).run()", [1]);
      expect(out.results).to.deep.equal([]);
      expect(out.errors).to.have.length(1);
      expect(out.errors[0]).to.match(/^TypeError: [^]* in results at script:2$/);
    });

    it("collect: false leaves the results per partition", async () => {
      const out = await results(
        "GB().map(r => r + 1).run(undefined, {collect: false})",
        [[1], [], [2, 3]],
        CLUSTER3,
      );
      expect(out).to.deep.equal([["2"], [], ["3", "4"]]);
    });
  });

  describe("count by genre on 10,000 movies", () => {
    const genres = [
      "drama",
      "comedy",
      "action",
      "horror",
      "documentary",
      "animation",
      "thriller",
      "romance",
      "sci-fi",
    ];
    let seed = 12345;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const movies = Array.from({ length: 10_000 }, (_, i) => ({
      key: `movie:${i}`,
      value: {
        title: `Title ${i}`,
        genre: genres[Math.floor(random() * random() * genres.length)],
        year: String(1950 + Math.floor(random() * 75)),
      },
      type: "hash",
      event: null,
    }));
    const expected: Record<string, number> = {};
    for (const m of movies) expected[m.value.genre] = (expected[m.value.genre] ?? 0) + 1;
    const script = "GB('KeysReader', 'movie:*').countby(r => r.value.genre).run()";

    function counts(out: Outcome): Record<string, number> {
      expect(out.errors).to.deep.equal([]);
      const got: Record<string, number> = {};
      for (const r of out.results as string[]) {
        const { key, value } = JSON.parse(r) as { key: string; value: number };
        expect(got[key]).to.equal(undefined);
        got[key] = value;
      }
      return got;
    }

    it("in one partition", async () => {
      expect(counts(await pipeline(script, movies))).to.deep.equal(expected);
    });

    it("over 3 partitions", async () => {
      expect(
        counts(
          await pipeline(
            script,
            spread(movies, (m) => m.key),
            CLUSTER3,
          ),
        ),
      ).to.deep.equal(expected);
    });

    it("with groupby and aggregateby, the same counts", async () => {
      const viaGroupby = "GB().groupby(r => r.value.genre, (k, a) => (a ?? 0) + 1).run()";
      const viaAggregateby =
        "GB().aggregateby(r => r.value.genre, 0, (k, a) => a + 1, (k, a, v) => a + v).run()";
      const parts = spread(movies, (m) => m.key);
      expect(counts(await pipeline(viaGroupby, parts, CLUSTER3))).to.deep.equal(expected);
      expect(counts(await pipeline(viaAggregateby, parts, CLUSTER3))).to.deep.equal(expected);
    });
  });

  describe("throughput", () => {
    it("feeds 100,000 records through map/filter/countby (prints the rate)", async () => {
      const guest = new Guest();
      guest.script("GB().map(r => r.value).filter(v => v.n % 10 !== 0).countby(v => v.tag).run()");
      const batches: string[] = [];
      for (let i = 0; i < 100_000; i += 1000) {
        const batch = [];
        for (let j = i; j < i + 1000; j++) batch.push({ key: `k:${j}`, value: { n: j, tag: `t${j % 50}` } });
        batches.push(JSON.stringify(batch));
      }
      const t0 = process.hrtime.bigint();
      const id = guest.gears.start(0, CLUSTER3);
      batches.forEach((b, i) => guest.gears.feed(id, i % 3, b));
      const out = plain<Outcome>(guest.gears.finish(id));
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      expect(out.results).to.have.length(45); // tags t0, t10, ... t40 are all filtered out
      const total = (out.results as string[]).reduce(
        (s, r) => s + (JSON.parse(r) as { value: number }).value,
        0,
      );
      expect(total).to.equal(90_000);
      console.log(
        `      guest pipeline in Node vm: 100,000 records in ${ms.toFixed(1)} ms (${Math.round(100_000 / (ms / 1000)).toLocaleString("en-US")} records/s, JSON.parse included)`,
      );
    });
  });

  describe("in QuickJS", () => {
    it("the compiled library runs in a QuickJS context: pipeline, host calls, errors with lines, slots", async () => {
      const QuickJS = await getQuickJS();
      const rt = QuickJS.newRuntime();
      rt.setMaxStackSize(32 * 1024);
      const ctx = rt.newContext();
      const calls: unknown[][] = [];
      try {
        const hostCall = ctx.newFunction("hostCall", (nameH, argsH) => {
          const name = ctx.getString(nameH);
          const args = JSON.parse(ctx.getString(argsH)) as unknown[];
          calls.push([name, ...args]);
          if (name === "execute" && args[1] === "BAD") return { error: ctx.newError("WRONGTYPE bad") };
          return ctx.newString(JSON.stringify(name === "execute" ? `p${String(args[0])}` : null));
        });
        ctx.setProp(ctx.global, "hostCall", hostCall);
        hostCall.dispose();
        const evalOk = (code: string, filename: string): unknown => {
          const r = ctx.evalCode(code, filename);
          if (r.error) {
            const e = ctx.dump(r.error) as { name: string; message: string };
            r.error.dispose();
            throw new Error(`${e.name}: ${e.message}`);
          }
          const v: unknown = ctx.dump(r.value);
          r.value.dispose();
          return v;
        };
        evalOk(
          `globalThis.__host = {
            callSync(name, ...args) { return JSON.parse(hostCall(name, JSON.stringify(args))); },
            callAsync(name, ...args) { return Promise.resolve(JSON.parse(hostCall(name, JSON.stringify(args)))); },
            notify(name, ...args) { hostCall(name, JSON.stringify(args)); },
          }; 0`,
          "shim.js",
        );
        evalOk(gearsGuestSource(), "gears-guest.js");
        evalOk(
          [
            "GB()",
            "  .map(r => execute(r === 3 ? 'BAD' : 'GET', r))",
            "  .map(function check(r) {",
            "    if (r === 'p1') throw new Error('boom');",
            "    return r;",
            "  })",
            "  .countby()",
            "  .run(undefined, { convertToStr: false });",
          ].join("\n"),
          "script",
        );
        const actions = evalOk(`${GEARS_ENTRY}.actions()`, "host.js") as ActionInfo[];
        expect(actions[0].steps.map((s) => [s.type, s.name, s.line])).to.deep.equal([
          ["map", "", 2],
          ["map", "check", 3],
          ["countby", "", 7],
        ]);
        evalOk(`globalThis.id = ${GEARS_ENTRY}.start(0, ${JSON.stringify(CLUSTER3)}); 0`, "host.js");
        evalOk(
          `${GEARS_ENTRY}.feed(id, 0, '[1, 2]'); ${GEARS_ENTRY}.feed(id, 1, [1, 3]); ${GEARS_ENTRY}.feed(id, 2, [1]); 0`,
          "host.js",
        );
        const out = evalOk(`${GEARS_ENTRY}.finish(id)`, "host.js") as Outcome;
        const byKey = out.results.map((r) => JSON.stringify(r)).sort();
        expect(byKey).to.deep.equal(['["key","p0","value",2]', '["key","p2","value",1]']);
        expect(out.errors).to.deep.equal([
          "Error: boom in map at script:4",
          "Error: WRONGTYPE bad in map at script:2",
        ]);
        expect(
          evalOk(
            `[${GEARS_ENTRY}.slot('foo'), ${GEARS_ENTRY}.slot('123456789'), ${GEARS_ENTRY}.slot('é😀')]`,
            "host.js",
          ),
        ).to.deep.equal([12182, 12739, calculateSlot(Buffer.from("é😀"))]);
      } finally {
        ctx.dispose();
        rt.dispose();
      }
      expect(calls.length).to.be.greaterThan(0);
    });

    it("async steps settle through the job queue", async () => {
      const QuickJS = await getQuickJS();
      const rt = QuickJS.newRuntime();
      rt.setMaxStackSize(32 * 1024);
      const ctx = rt.newContext();
      try {
        const run = (code: string, filename = "host.js"): unknown => {
          const h = ctx.unwrapResult(ctx.evalCode(code, filename));
          const v: unknown = ctx.dump(h);
          h.dispose();
          return v;
        };
        run(
          `globalThis.__host = {
            callSync() { return null; },
            callAsync(name, partition, cmd, arg) { return Promise.resolve('v' + arg + '@' + partition); },
            notify() {},
          }; 0`,
        );
        run(gearsGuestSource(), "gears-guest.js");
        run("GB().map(async r => (await executeAsync('GET', r)).toUpperCase()).run(); 0", "script");
        run(
          `globalThis.id = ${GEARS_ENTRY}.start(0, { partitions: 2, slots: [[0, 8191, 0], [8192, 16383, 1]] }); 0`,
        );
        expect(
          run(
            `globalThis.fed = 0; ${GEARS_ENTRY}.feed(id, 0, [1, 2]).then(() => fed++); ${GEARS_ENTRY}.feed(id, 1, [3]).then(() => fed++); fed`,
          ),
        ).to.equal(0);
        expect(run(`JSON.stringify(${GEARS_ENTRY}.progress(id))`)).to.contain('"pending":3');
        rt.executePendingJobs();
        expect(run("fed")).to.equal(2);
        expect(run(`${GEARS_ENTRY}.finish(id)`)).to.deep.equal({
          results: ["V1@0", "V2@0", "V3@1"],
          errors: [],
        });
      } finally {
        ctx.dispose();
        rt.dispose();
      }
    });

    it("feeds 100,000 records through map/filter/countby in QuickJS (prints the rate)", async () => {
      const QuickJS = await getQuickJS();
      const rt = QuickJS.newRuntime();
      rt.setMaxStackSize(32 * 1024);
      const ctx = rt.newContext();
      try {
        const stub = "globalThis.__host = { callSync() {}, callAsync() {}, notify() {} }; 0";
        ctx.unwrapResult(ctx.evalCode(stub, "shim.js")).dispose();
        ctx.unwrapResult(ctx.evalCode(gearsGuestSource(), "gears-guest.js")).dispose();
        const script = "GB().map(r => r.value).filter(v => v.n % 10 !== 0).countby(v => v.tag).run()";
        ctx.unwrapResult(ctx.evalCode(script, "script")).dispose();
        const batches: string[] = [];
        for (let i = 0; i < 100_000; i += 1000) {
          const batch = [];
          for (let j = i; j < i + 1000; j++)
            batch.push({ key: `k:${j}`, value: { n: j, tag: `t${j % 50}` } });
          batches.push(JSON.stringify(batch));
        }
        const t0 = process.hrtime.bigint();
        const feed = ctx.unwrapResult(ctx.evalCode(`(p, s) => { ${GEARS_ENTRY}.feed(1, p, s) }`, "host.js"));
        ctx
          .unwrapResult(ctx.evalCode(`${GEARS_ENTRY}.start(0, ${JSON.stringify(CLUSTER3)})`, "host.js"))
          .dispose();
        batches.forEach((b, i) => {
          const s = ctx.newString(b);
          const p = ctx.newNumber(i % 3);
          ctx.unwrapResult(ctx.callFunction(feed, ctx.undefined, p, s)).dispose();
          s.dispose();
          p.dispose();
        });
        feed.dispose();
        const res = ctx.unwrapResult(ctx.evalCode(`JSON.stringify(${GEARS_ENTRY}.finish(1))`, "host.js"));
        const out = JSON.parse(ctx.getString(res)) as Outcome;
        res.dispose();
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        expect(out.errors).to.deep.equal([]);
        expect(out.results).to.have.length(45);
        const rate = Math.round(100_000 / (ms / 1000)).toLocaleString("en-US");
        console.log(
          `      guest pipeline in QuickJS: 100,000 records in ${ms.toFixed(1)} ms (${rate} records/s)`,
        );
      } finally {
        ctx.dispose();
        rt.dispose();
      }
    });

    it("an interrupted step is not swallowed and current() names it", async () => {
      const QuickJS = await getQuickJS();
      const rt = QuickJS.newRuntime();
      rt.setMaxStackSize(32 * 1024);
      const ctx = rt.newContext();
      try {
        const stub = ctx.evalCode(
          "globalThis.__host = { callSync() { return null }, callAsync() { return Promise.resolve(null) }, notify() {} }; 0",
          "shim.js",
        );
        ctx.unwrapResult(stub).dispose();
        ctx.unwrapResult(ctx.evalCode(gearsGuestSource(), "gears-guest.js")).dispose();
        ctx
          .unwrapResult(
            ctx.evalCode("GB()\n  .map(r => r)\n  .filter(r => { for (;;) {} })\n  .run()", "script"),
          )
          .dispose();
        ctx
          .unwrapResult(
            ctx.evalCode(
              `globalThis.id = ${GEARS_ENTRY}.start(0, { partitions: 1, slots: [] }); 0`,
              "host.js",
            ),
          )
          .dispose();
        rt.setInterruptHandler(shouldInterruptAfterDeadline(Date.now() + 50));
        const r = ctx.evalCode(`${GEARS_ENTRY}.feed(id, 0, [1]); 0`, "host.js");
        rt.removeInterruptHandler();
        expect(r.error).to.not.equal(undefined);
        const err = ctx.dump(r.error!) as { name: string; message: string };
        r.error!.dispose();
        expect(`${err.name}: ${err.message}`).to.equal("InternalError: interrupted");
        const where = ctx.unwrapResult(ctx.evalCode(`${GEARS_ENTRY}.current()`, "host.js"));
        expect(ctx.dump(where)).to.deep.equal({ step: "filter", line: 3 });
        where.dispose();
      } finally {
        ctx.dispose();
        rt.dispose();
      }
    });
  });
});
