import { createHash } from "node:crypto";
import net from "node:net";
import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { Redis } from "ioredis";
import {
  SLOT_COUNT,
  startCluster,
  startProxy,
  startRedis,
  type RedisCluster,
  type RedisNode,
  type RespValue,
  type RunningProxy,
} from "./harness/index.js";
import { encode, RawClient, ReplyError, toText, type Reply, type Value } from "./support/raw-client.js";
import { eventually, waitUntil } from "./support/polling.js";
import { TestClients } from "./support/test-clients.js";

// ---- helpers ------------------------------------------------------------------------------

const CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot";
const EXECABORT = "EXECABORT Transaction discarded because of previous errors.";
const MAX_CURSOR = 2n ** 63n;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The message of an error reply; fails when the reply is not an error. */
function errorOf(reply: Reply): string {
  if (!(reply instanceof ReplyError)) {
    throw new Error(`expected an error reply, got ${JSON.stringify(toText(reply))}`);
  }
  return reply.message;
}

/** A reply made comparable: bulk strings as text, errors as "ERROR: <message>". */
type Comparable = string | number | null | Comparable[];
function comparable(reply: Reply): Comparable {
  if (reply instanceof ReplyError) return `ERROR: ${reply.message}`;
  if (Buffer.isBuffer(reply)) return reply.toString("utf8");
  if (Array.isArray(reply)) return reply.map(comparable);
  return reply;
}

function text(v: RespValue): string {
  if (typeof v !== "string") throw new Error(`expected a string reply, got ${JSON.stringify(v)}`);
  return v;
}

/** One field of an INFO text. */
function infoField(info: string, field: string): string | undefined {
  const line = info.split("\r\n").find((l) => l.startsWith(`${field}:`));
  return line?.slice(field.length + 1);
}

/**
 * The raw bytes a RESP3 connection (HELLO 3) to `port` gets for `steps`, sent in one write;
 * a PING marker written after them tells where they end.
 */
async function resp3Bytes(port: number, steps: string[][]): Promise<Buffer> {
  const socket = net.connect({ port, host: "127.0.0.1" });
  let received = Buffer.alloc(0);
  let wake: (() => void) | null = null;
  socket.on("data", (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
    wake?.();
  });
  const until = async (suffix: string): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!received.toString("latin1").endsWith(suffix)) {
      if (Date.now() > deadline) throw new Error(`no ${JSON.stringify(suffix)} from ${port}`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
  };
  try {
    socket.write(Buffer.concat([encode(["HELLO", "3"]), encode(["PING", "ready"])]));
    await until("$5\r\nready\r\n");
    received = Buffer.alloc(0);
    socket.write(Buffer.concat([...steps.map((step) => encode(step)), encode(["PING", "done"])]));
    await until("$4\r\ndone\r\n");
    return received.subarray(0, received.length - "$4\r\ndone\r\n".length);
  } finally {
    socket.destroy();
  }
}

function sha1(body: string): string {
  return createHash("sha1").update(body).digest("hex");
}

/** Owner port of every slot, from CLUSTER SLOTS of one node. */
async function slotOwners(node: RedisNode): Promise<Int32Array> {
  const reply = await node.call("CLUSTER", "SLOTS");
  if (!Array.isArray(reply)) throw new Error("CLUSTER SLOTS: expected an array");
  const owners = new Int32Array(SLOT_COUNT).fill(-1);
  for (const range of reply) {
    if (!Array.isArray(range) || !Array.isArray(range[2])) continue;
    const port = Number(range[2][1]);
    for (let s = Number(range[0]); s <= Number(range[1]); s++) owners[s] = port;
  }
  return owners;
}

/** MOVED and ASK errors the masters have sent so far (INFO errorstats). */
async function redirectsSent(masters: readonly RedisNode[]): Promise<{ moved: number; ask: number }> {
  let moved = 0;
  let ask = 0;
  for (const node of masters) {
    const info = text(await node.call("INFO", "errorstats"));
    const count = (code: string): number => {
      const m = new RegExp(`^errorstat_${code}:count=(\\d+)`, "m").exec(info);
      return m === null ? 0 : Number(m[1]);
    };
    moved += count("MOVED");
    ask += count("ASK");
  }
  return { moved, ask };
}

// ---- the tests ----------------------------------------------------------------------------

describe("cluster routing: a 3-master Redis Cluster behind the proxy", function () {
  this.timeout(30_000);
  let cluster: RedisCluster;
  let masters: RedisNode[];
  let reference: RedisNode;
  let proxy: RunningProxy;
  let io: Redis;
  const clients = new TestClients(() => proxy.port);

  const client = (port?: number): Promise<RawClient> => clients.raw(port);
  const ioClient = (): Redis => clients.io();

  /** The master serving `key`, as the cluster itself says. */
  function ownerOf(key: string): Promise<RedisNode> {
    return cluster.nodeForSlot(calculateSlot(key));
  }

  /** A key named `${prefix}<n>` served by each master, in master order. */
  async function keyPerMaster(prefix: string): Promise<string[]> {
    const owners = await slotOwners(masters[0]);
    return masters.map((m) => {
      for (let n = 0; ; n++) {
        const key = `${prefix}${n}`;
        if (owners[calculateSlot(key)] === m.port) return key;
      }
    });
  }

  /** Runs `body` and checks that the masters sent no MOVED/ASK meanwhile: the proxy routed right. */
  async function withoutRedirects(body: () => Promise<void>): Promise<void> {
    const before = await redirectsSent(masters);
    await body();
    expect(await redirectsSent(masters)).to.deep.equal(before, "the proxy was redirected (MOVED/ASK)");
  }

  /** `slot` starts migrating from `from` to `to` (CLUSTER SETSLOT IMPORTING, then MIGRATING). */
  async function startMigrating(slot: number, from: RedisNode, to: RedisNode): Promise<void> {
    const fromId = text(await from.call("CLUSTER", "MYID"));
    const toId = text(await to.call("CLUSTER", "MYID"));
    expect(await to.call("CLUSTER", "SETSLOT", String(slot), "IMPORTING", fromId)).to.equal("OK");
    expect(await from.call("CLUSTER", "SETSLOT", String(slot), "MIGRATING", toId)).to.equal("OK");
  }

  /**
   * Ends a migration of `slot` from `from`: every master is told `to` owns it (`to` first,
   * then `from`, then the others), and the wait lasts until all of them agree.
   */
  /** Writes key:<i> = value:<i> for i < count through the proxy, pipelined (ioredis). */
  async function writeKeys(count: number, prefix = "key:"): Promise<string[]> {
    const keys = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
    const pipeline = io.pipeline();
    for (const key of keys) pipeline.set(key, `value:${key}`);
    const results = (await pipeline.exec()) ?? [];
    expect(results.filter(([err]) => err !== null)).to.deep.equal([]);
    expect(results.map(([, v]) => v)).to.deep.equal(keys.map(() => "OK"));
    return keys;
  }

  before(async function () {
    this.timeout(60_000);
    [cluster, reference] = await Promise.all([startCluster({ masters: 3 }), startRedis()]);
    masters = await cluster.masters();
    proxy = await startProxy([{ port: cluster.nodes[0].port }]);
    io = new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 1 });
    expect(await io.ping()).to.equal("PONG");
  });

  beforeEach(async () => {
    for (const node of [...masters, reference]) {
      await node.call("FLUSHALL");
      await node.call("SCRIPT", "FLUSH");
    }
  });

  afterEach(() => clients.closeAll());

  after(async () => {
    io?.disconnect();
    await proxy?.close();
    await cluster?.stop();
    await reference?.stop();
  });

  it("10,000 keys written through the proxy (pipelined) land on their slot's shard, and only there", async () => {
    let keys: string[] = [];
    await withoutRedirects(async () => {
      keys = await writeKeys(10_000);
    });
    const owners = await slotOwners(masters[0]);
    const expected = new Map<number, Set<string>>(masters.map((m) => [m.port, new Set<string>()]));
    for (const key of keys) expected.get(owners[calculateSlot(key)])!.add(key);
    for (const m of masters) expect(expected.get(m.port)!.size).to.be.above(2000, `keys for ${m.port}`);

    // Each shard holds exactly the keys of its slots: count, and the names themselves.
    for (const m of masters) {
      expect(await m.call("DBSIZE"), `DBSIZE of ${m.port}`).to.equal(expected.get(m.port)!.size);
      const onShard = await m.call("KEYS", "*");
      if (!Array.isArray(onShard)) throw new Error("KEYS: expected an array");
      const stray = onShard.map(String).filter((k) => !expected.get(m.port)!.has(k));
      expect(stray, `keys on ${m.port} that belong elsewhere`).to.deep.equal([]);
    }

    // A sample, checked on the owner named by the cluster itself.
    for (let i = 0; i < keys.length; i += 97) {
      const key = keys[i];
      const owner = await ownerOf(key);
      expect(await owner.call("GET", key), key).to.equal(`value:${key}`);
    }
  });

  it("MGET/DEL/EXISTS/TOUCH/UNLINK/MSET over 100 keys spanning every shard answer as one Redis does", async () => {
    const keys = Array.from({ length: 100 }, (_, i) => `span:${i}`);
    const owners = await slotOwners(masters[0]);
    expect(new Set(keys.map((k) => owners[calculateSlot(k)])).size).to.equal(3, "keys on every master");
    expect(new Set(keys.map((k) => calculateSlot(k))).size).to.be.above(90, "distinct slots");
    const present = keys.filter((_, i) => i % 5 !== 0);
    const steps: string[][] = [
      ["MSET", ...present.flatMap((k) => [k, `v-${k}`])],
      ["MGET", ...keys],
      ["EXISTS", ...keys, keys[1], keys[1], keys[0]],
      ["TOUCH", ...keys, keys[2], "span:none"],
      ["DEL", ...keys.slice(0, 30), "span:none", keys[7]],
      ["MGET", ...keys],
      ["UNLINK", ...keys.slice(25, 50), keys[40]],
      ["EXISTS", ...keys],
      ["MSET", ...keys.flatMap((k) => [k, `w-${k}`])],
      ["MGET", ...keys.slice(50), ...keys.slice(0, 50)],
      ["DEL", ...keys, ...keys],
      ["MGET", ...keys],
      ["EXISTS", ...keys],
    ];
    const viaProxy = await client();
    const single = await client(reference.port);
    const answers: Comparable[] = [];
    await withoutRedirects(async () => {
      for (const step of steps) {
        const want = comparable(await single.call(...step));
        const got = comparable(await viaProxy.call(...step));
        expect(got, `${step[0]} (step ${answers.length})`).to.deep.equal(want);
        answers.push(want);
      }
    });
    // The reference answers were not trivial: values and nulls mixed, counts neither 0 nor all.
    expect(answers[1]).to.satisfy((a: Comparable[]) => a.includes(null) && a.includes("v-span:1"));
    expect(answers[2]).to.equal(82);
    expect(answers[4]).to.equal(24);
    expect(answers[10]).to.equal(100);
  });

  it("split MGET/DEL/EXISTS/MSET for a RESP3 client: the very bytes a single Redis sends (nulls as _)", async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `r3:${i}`);
    const steps = [
      ["MSET", ...keys.filter((_, i) => i % 3 !== 0).flatMap((k) => [k, `v-${k}`])],
      ["MGET", ...keys],
      ["EXISTS", ...keys],
      ["DEL", ...keys, "r3:none"],
      ["MGET", ...keys.slice(0, 5)],
    ];
    const want = await resp3Bytes(reference.port, steps);
    expect(want.toString()).to.include("_\r\n");
    expect((await resp3Bytes(proxy.port, steps)).toString()).to.equal(want.toString());
  });

  it("split commands with a wrong argument count get Redis' own arity error", async () => {
    const [a, b] = await keyPerMaster("arity:");
    const viaProxy = await client();
    const single = await client(reference.port);
    for (const step of [["MSET", a, "1", b], ["MSET"], ["MGET"], ["DEL"], ["EXISTS"]]) {
      const want = comparable(await single.call(...step));
      expect(want).to.match(/^ERROR: ERR wrong number of arguments/);
      expect(comparable(await viaProxy.call(...step)), step.join(" ")).to.equal(want);
    }
  });

  it("MGET with missing keys keeps the nulls at their positions", async () => {
    const keys = Array.from({ length: 60 }, (_, i) => `holes:${i}`);
    const set = keys.filter((_, i) => i % 3 === 1);
    expect(await io.mset(...set.flatMap((k) => [k, `val-${k}`]))).to.equal("OK");
    const expected = keys.map((k, i) => (i % 3 === 1 ? `val-${k}` : null));
    expect(await io.mget(...keys)).to.deep.equal(expected);
    const reversed = [...keys].reverse();
    expect(await io.mget(...reversed)).to.deep.equal([...expected].reverse());
    expect(await io.mget("holes:none", keys[1], "holes:none2")).to.deep.equal([null, `val-${keys[1]}`, null]);
    expect(await io.mget("holes:none", "holes:none2")).to.deep.equal([null, null]);
  });

  it("SCAN through the proxy returns each of 10,000 keys exactly once, with numeric cursors below 2^63", async () => {
    const keys = await writeKeys(10_000, "scan:");
    const c = await client();
    const scanAll = async (...options: string[]): Promise<Map<string, number>> => {
      const seen = new Map<string, number>();
      let cursor = "0";
      let calls = 0;
      do {
        const reply = toText(await c.call("SCAN", cursor, ...options));
        if (!Array.isArray(reply) || reply.length !== 2 || !Array.isArray(reply[1])) {
          throw new Error(`unexpected SCAN reply ${JSON.stringify(reply)}`);
        }
        cursor = String(reply[0]);
        expect(cursor).to.match(/^\d+$/, "cursor is a non-negative decimal number");
        expect(BigInt(cursor) < MAX_CURSOR).to.equal(true, `cursor ${cursor} below 2^63`);
        for (const k of reply[1]) seen.set(String(k), (seen.get(String(k)) ?? 0) + 1);
        expect(++calls).to.be.below(5000, "SCAN did not finish");
      } while (cursor !== "0");
      return seen;
    };

    const all = await scanAll("COUNT", "100");
    expect(all.size).to.equal(keys.length);
    expect([...all.values()].filter((n) => n !== 1)).to.deep.equal([], "keys returned more than once");
    expect(keys.filter((k) => !all.has(k))).to.deep.equal([], "keys never returned");

    const matching = await scanAll("MATCH", "scan:12*", "COUNT", "100");
    const expected = keys.filter((k) => k.startsWith("scan:12")).sort();
    expect([...matching.keys()].sort()).to.deep.equal(expected);
    expect([...matching.values()].every((n) => n === 1)).to.equal(true, "MATCH: a key returned twice");
  });

  it("KEYS * and DBSIZE agree with the 10,000 keys written", async () => {
    const keys = await writeKeys(10_000);
    const c = await client();
    const all = toText(await c.call("KEYS", "*"));
    if (!Array.isArray(all)) throw new Error("KEYS: expected an array");
    expect(all.length).to.equal(keys.length);
    expect(all.map(String).sort()).to.deep.equal([...keys].sort());
    expect(await c.call("DBSIZE")).to.equal(keys.length);
    const some = toText(await c.call("KEYS", "key:99*"));
    expect(Array.isArray(some) ? some.map(String).sort() : some).to.deep.equal(
      keys.filter((k) => k.startsWith("key:99")).sort(),
    );
  });

  it("DBSIZE sums the shards", async () => {
    await writeKeys(1234, "db:");
    const perShard = await Promise.all(masters.map(async (m) => Number(await m.call("DBSIZE"))));
    expect(perShard.every((n) => n > 0)).to.equal(true, "every shard holds some keys");
    expect(await io.dbsize()).to.equal(1234);
    expect(perShard.reduce((a, b) => a + b, 0)).to.equal(1234);
  });

  it("FLUSHALL through the proxy empties every shard", async () => {
    await writeKeys(3000, "flush:");
    for (const m of masters) expect(Number(await m.call("DBSIZE"))).to.be.above(0);
    expect(await io.flushall()).to.equal("OK");
    for (const m of masters) expect(await m.call("DBSIZE"), `DBSIZE of ${m.port}`).to.equal(0);
    expect(await io.dbsize()).to.equal(0);
  });

  it("CLUSTER COUNTKEYSINSLOT/GETKEYSINSLOT answer from the slot's master, as Redis; the proxy's keys left out", async () => {
    const c = await client();
    for (const tag of await keyPerMaster("ks")) {
      const keys = [`{${tag}}a`, `{${tag}}b`, `{${tag}}c`];
      for (const key of keys) expect(await c.text("SET", key, "x")).to.equal("OK");
      const slot = calculateSlot(keys[0]);
      expect(await c.call("CLUSTER", "COUNTKEYSINSLOT", String(slot))).to.equal(3);
      expect(
        (toText(await c.call("CLUSTER", "GETKEYSINSLOT", String(slot), "10")) as string[]).sort(),
      ).to.deep.equal(keys);
      expect(toText(await c.call("CLUSTER", "GETKEYSINSLOT", String(slot), "2"))).to.have.length(2);
    }
    // The slot of the proxy's own keys (a library loaded writes some): none of them listed.
    const lib = "#!js api_version=1.0 name=slotlib\nredis.registerFunction('f', () => 1);";
    expect(await c.call("TFUNCTION", "LOAD", "REPLACE", lib)).to.equal("OK");
    const own = calculateSlot("{gears-proxy}");
    expect(
      Number(await (await ownerOf("{gears-proxy}")).call("CLUSTER", "COUNTKEYSINSLOT", String(own))),
    ).to.be.above(0);
    expect(await c.call("CLUSTER", "COUNTKEYSINSLOT", String(own))).to.equal(0);
    expect(toText(await c.call("CLUSTER", "GETKEYSINSLOT", String(own), "100"))).to.deep.equal([]);
    // Argument errors: Redis's, in Redis's order (arity, integers, range).
    const direct = await RawClient.connect(masters[0].port);
    try {
      const cases = [
        ["x"],
        ["-1"],
        ["16384"],
        ["1", "2"],
        ["x", "1"],
        ["1", "-1"],
        ["16384", "1"],
        ["1", "x"],
        [],
      ];
      for (const name of ["COUNTKEYSINSLOT", "GETKEYSINSLOT"]) {
        for (const args of cases) {
          const want = await direct.call("CLUSTER", name, ...args);
          if (!(want instanceof ReplyError)) continue;
          const got = await c.call("CLUSTER", name, ...args);
          expect(got instanceof ReplyError ? got.message : got, `${name} ${args.join(" ")}`).to.equal(
            want.message,
          );
        }
      }
    } finally {
      direct.close();
    }
  });

  it("SAVE and BGSAVE snapshot every master; LASTSAVE is the oldest master's", async () => {
    const c = await client();
    // Snapshots made by each master (the proxy's own writes may follow a save at any time, so
    // the count of changes since the last save is not the measure).
    const saves = async (): Promise<number[]> =>
      Promise.all(
        masters.map(async (m) => Number(infoField(String(await m.call("INFO", "persistence")), "rdb_saves"))),
      );
    const before = await saves();
    expect(await c.text("SAVE")).to.equal("OK");
    expect(await saves()).to.deep.equal(before.map((n) => n + 1));
    const lastSaves = await Promise.all(masters.map(async (m) => Number(await m.call("LASTSAVE"))));
    expect(await c.call("LASTSAVE")).to.equal(Math.min(...lastSaves));
    expect(await c.text("BGSAVE")).to.equal("Background saving started");
    await eventually(
      saves,
      (n) => n.every((count, i) => count === before[i] + 2),
      "every master saved in the background",
    );
  });

  it("RANDOMKEY returns a key wherever it lives; null when every shard is empty", async () => {
    const c = await client();
    expect(await c.call("RANDOMKEY")).to.equal(null);
    // One key only: on one shard, so the proxy must look past empty ones.
    for (const key of await keyPerMaster("rnd:")) {
      expect(await c.text("SET", key, "x")).to.equal("OK");
      for (let i = 0; i < 6; i++) expect(await c.text("RANDOMKEY")).to.equal(key);
      expect(await c.call("DEL", key)).to.equal(1);
    }
  });

  it("EVAL with keys in one slot works; across slots CROSSSLOT; numkeys 0 goes to any master", async () => {
    const c = await client();
    const body =
      "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[2]); return redis.call('MGET', KEYS[1], KEYS[2])";
    for (const key of await keyPerMaster("ev:")) {
      const [k1, k2] = [`{${key}}:a`, `{${key}}:b`];
      await withoutRedirects(async () => {
        expect(await c.text("EVAL", body, "2", k1, k2, "one", "two")).to.deep.equal(["one", "two"]);
      });
      expect(await (await ownerOf(k1)).call("MGET", k1, k2)).to.deep.equal(["one", "two"]);
    }
    const [x, y] = await keyPerMaster("evx:");
    expect(errorOf(await c.call("EVAL", body, "2", x, y, "1", "2"))).to.equal(CROSSSLOT);
    expect(await (await ownerOf(x)).call("EXISTS", x)).to.equal(0);
    // numkeys 0: the arguments are not keys, even when they would span slots.
    expect(await c.text("EVAL", "return ARGV[1] .. ARGV[2]", "0", x, y)).to.equal(x + y);
    expect(await c.call("EVAL", "return 42", "0")).to.equal(42);
    expect(errorOf(await c.call("EVAL", "return 1", "3", x))).to.match(/^ERR Number of keys/);
  });

  it("EVAL/EVALSHA/FCALL with keys ride the shared pipelined connections: the masters see no new connection", async () => {
    const keys = await keyPerMaster("shared:");
    const body = "return redis.call('INCR', KEYS[1])";
    const c = await client();
    const lib =
      "#!lua name=sharedlib\nredis.register_function('sharedincr', function(k) return redis.call('INCR', k[1]) end)";
    expect(await c.text("FUNCTION", "LOAD", "REPLACE", lib)).to.equal("sharedlib");
    const sha = String(await c.text("SCRIPT", "LOAD", body));
    const users = [c, await client(), await client()];
    // Each client's shared connections exist before counting (they open on first use).
    for (const u of users) for (const key of keys) expect(await u.text("GET", key)).to.equal(null);
    const connected = (): Promise<number[]> =>
      Promise.all(
        masters.map(async (m) =>
          Number(infoField(text(await m.call("INFO", "clients")), "connected_clients")),
        ),
      );
    const before = await connected();
    // Pipelined and concurrent: on dedicated connections these would need one each.
    await Promise.all(
      users.map(async (u) => {
        for (const key of keys) {
          u.send("EVAL", body, "1", key);
          u.send("EVALSHA", sha, "1", key);
          u.send("FCALL", "sharedincr", "1", key);
        }
        for (let i = 0; i < keys.length * 3; i++) expect(await u.next()).to.be.a("number");
      }),
    );
    expect(await connected()).to.deep.equal(before);
    for (const key of keys)
      expect(await (await ownerOf(key)).call("GET", key)).to.equal(String(users.length * 3));
    await c.call("FUNCTION", "DELETE", "sharedlib");
  });

  it("EVALSHA after SCRIPT FLUSH on the key's shard still succeeds: the proxy reloads what it saw", async () => {
    const c = await client();
    const [viaEval, viaLoad] = await keyPerMaster("nos:");
    const evalBody = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    const evalSha = sha1(evalBody);
    expect(await c.call("EVAL", evalBody, "1", viaEval, "5")).to.equal(5);
    const owner = await ownerOf(viaEval);
    expect(await owner.call("SCRIPT", "FLUSH")).to.equal("OK");
    expect(await owner.call("SCRIPT", "EXISTS", evalSha)).to.deep.equal([0]);
    expect(await c.call("EVALSHA", evalSha, "1", viaEval, "2")).to.equal(7);
    expect(await owner.call("SCRIPT", "EXISTS", evalSha)).to.deep.equal([1]);

    const loadBody = "return redis.call('APPEND', KEYS[1], ARGV[1])";
    expect(await c.text("SCRIPT", "LOAD", loadBody)).to.equal(sha1(loadBody));
    const loadOwner = await ownerOf(viaLoad);
    expect(await loadOwner.call("SCRIPT", "FLUSH")).to.equal("OK");
    expect(await c.call("EVALSHA", sha1(loadBody), "1", viaLoad, "abc")).to.equal(3);
    expect(await loadOwner.call("GET", viaLoad)).to.equal("abc");

    // A script the proxy never saw: NOSCRIPT, as Redis says.
    expect(errorOf(await c.call("EVALSHA", sha1("return 0"), "1", viaLoad))).to.match(/^NOSCRIPT/);
  });

  it("SCRIPT LOAD reaches every master: SCRIPT EXISTS says 1 and EVALSHA works on keys of every shard", async () => {
    const c = await client();
    const body = "return {KEYS[1], redis.call('INCR', KEYS[1])}";
    const sha = toText(await c.call("SCRIPT", "LOAD", body));
    expect(sha).to.equal(sha1(body));
    expect(await c.call("SCRIPT", "EXISTS", String(sha), sha1("nope"))).to.deep.equal([1, 0]);
    for (const m of masters)
      expect(await m.call("SCRIPT", "EXISTS", String(sha)), `on ${m.port}`).to.deep.equal([1]);
    await withoutRedirects(async () => {
      for (const key of await keyPerMaster("sha:")) {
        expect(await c.text("EVALSHA", String(sha), "1", key)).to.deep.equal([key, 1]);
        expect(await c.text("EVALSHA", String(sha), "1", key)).to.deep.equal([key, 2]);
      }
    });
  });

  it("MULTI with keys in two slots: CROSSSLOT for the second, EXEC gives EXECABORT, nothing runs", async () => {
    const [a, b] = await keyPerMaster("txx:");
    const c = await client();
    c.write(
      Buffer.concat([
        encode(["MULTI"]),
        encode(["SET", a, "1"]),
        encode(["SET", b, "2"]),
        encode(["EXEC"]),
        encode(["MULTI"]),
        encode(["MSET", `{${a}}x`, "1", `{${b}}y`, "2"]),
        encode(["EXEC"]),
      ]),
    );
    expect(await c.next()).to.equal("OK");
    expect(await c.next()).to.equal("QUEUED");
    expect(errorOf(await c.next())).to.equal(CROSSSLOT);
    expect(errorOf(await c.next())).to.equal(EXECABORT);
    expect(await c.next()).to.equal("OK");
    expect(errorOf(await c.next())).to.equal(CROSSSLOT);
    expect(errorOf(await c.next())).to.equal(EXECABORT);
    expect(await (await ownerOf(a)).call("EXISTS", a)).to.equal(0);
    expect(await (await ownerOf(b)).call("EXISTS", b)).to.equal(0);
    expect(await c.text("PING")).to.equal("PONG");
  });

  it("MULTI in one slot ({tag}) works, with keyless commands (PING) queued before the first key", async () => {
    for (const tag of await keyPerMaster("tag")) {
      const [k, n] = [`{${tag}}:k`, `{${tag}}:n`];
      const c = await client();
      c.write(
        Buffer.concat([
          encode(["MULTI"]),
          encode(["PING"]),
          encode(["ECHO", "hi"]),
          encode(["SET", k, "v"]),
          encode(["INCRBY", n, "3"]),
          encode(["GET", k]),
          encode(["EXEC"]),
        ]),
      );
      const replies: Value[] = [];
      for (let i = 0; i < 7; i++) replies.push(toText(await c.next()));
      expect(replies).to.deep.equal([
        "OK",
        "QUEUED",
        "QUEUED",
        "QUEUED",
        "QUEUED",
        "QUEUED",
        ["PONG", "hi", "OK", 3, "v"],
      ]);
      expect(await (await ownerOf(k)).call("MGET", k, n)).to.deep.equal(["v", "3"]);
      const io2 = ioClient();
      expect(await io2.multi().ping().incr(n).get(n).exec()).to.deep.equal([
        [null, "PONG"],
        [null, 4],
        [null, "4"],
      ]);
    }
  });

  it("MULTI one reply at a time (MULTI, PING, then keys of one slot): every reply comes without waiting for the next command", async () => {
    for (const tag of await keyPerMaster("seq")) {
      const k = `{${tag}}:k`;
      const c = await client();
      expect(await c.text("MULTI")).to.equal("OK");
      expect(await c.text("PING")).to.equal("QUEUED");
      expect(await c.text("SET", k, "v")).to.equal("QUEUED");
      expect(await c.text("INCR", `{${tag}}:n`)).to.equal("QUEUED");
      expect(await c.text("EXEC")).to.deep.equal(["PONG", "OK", 1]);
      expect(await (await ownerOf(k)).call("GET", k)).to.equal("v");
      expect(await c.text("MULTI")).to.equal("OK");
      expect(await c.text("PING")).to.equal("QUEUED");
      expect(await c.text("EXEC")).to.deep.equal(["PONG"]);
    }
  });

  it("WATCH in a cluster: EXEC is null after another client's write, runs otherwise; WATCH across slots is CROSSSLOT", async () => {
    for (const key of await keyPerMaster("watch:")) {
      const a = await client();
      const b = await client();
      expect(await a.text("SET", key, "start")).to.equal("OK");
      expect(await a.text("WATCH", key)).to.equal("OK");
      expect(await b.text("SET", key, "by-b")).to.equal("OK");
      a.write(Buffer.concat([encode(["MULTI"]), encode(["SET", key, "by-a"]), encode(["EXEC"])]));
      expect(await a.next()).to.equal("OK");
      expect(await a.next()).to.equal("QUEUED");
      expect(await a.next()).to.equal(null);
      expect(await (await ownerOf(key)).call("GET", key)).to.equal("by-b");

      expect(await a.text("WATCH", key)).to.equal("OK");
      expect(await a.text("MULTI")).to.equal("OK");
      expect(await a.text("SET", key, "by-a")).to.equal("QUEUED");
      expect(await a.text("EXEC")).to.deep.equal(["OK"]);
      expect(await (await ownerOf(key)).call("GET", key)).to.equal("by-a");
    }
    const [x, y] = await keyPerMaster("watchx:");
    const c = await client();
    expect(errorOf(await c.call("WATCH", x, y))).to.equal(CROSSSLOT);
    expect(await c.text("PING")).to.equal("PONG");
  });

  it("BLPOP on a key of each shard is woken by an LPUSH from another client", async () => {
    for (const key of await keyPerMaster("bl:")) {
      const a = await client();
      const b = await client();
      const owner = await ownerOf(key);
      const blocked = async (): Promise<number> =>
        Number(infoField(text(await owner.call("INFO", "clients")), "blocked_clients"));
      a.send("BLPOP", key, "10");
      await waitUntil(`the BLPOP on ${key} to block on its shard`, async () => (await blocked()) === 1);
      expect(await b.text("LPUSH", key, "woken")).to.equal(1);
      expect(toText(await a.next())).to.deep.equal([key, "woken"]);
      expect(await owner.call("EXISTS", key)).to.equal(0);
      expect(await a.text("SET", key, "after")).to.equal("OK");
    }
  });

  it("SUBSCRIBE/PSUBSCRIBE through the proxy get PUBLISHes from clients on every master", async () => {
    const sub = ioClient();
    const messages: string[][] = [];
    sub.on("message", (channel: string, message: string) => messages.push(["message", channel, message]));
    sub.on("pmessage", (pattern: string, channel: string, message: string) =>
      messages.push(["pmessage", pattern, channel, message]),
    );
    expect(await sub.subscribe("cps:news")).to.equal(1);
    expect(await sub.psubscribe("cps:n*")).to.equal(2);
    // Consecutive clients: the proxy spreads keyless commands over the masters.
    const publishers = await Promise.all([client(), client(), client(), client()]);
    for (const [i, p] of publishers.entries()) {
      const count = toText(await p.call("PUBLISH", "cps:news", `m${i}`));
      expect(count).to.be.oneOf([0, 1, 2]);
    }
    // Published on each master directly: the subscription sits on one of them only.
    for (const [i, m] of masters.entries()) await m.call("PUBLISH", "cps:news", `direct${i}`);
    await waitUntil("14 messages", () => messages.length >= 14);
    await sleep(100);
    const got = messages.map((m) => m.join("|")).sort();
    const want = ["m0", "m1", "m2", "m3", "direct0", "direct1", "direct2"]
      .flatMap((body) => [`message|cps:news|${body}`, `pmessage|cps:n*|cps:news|${body}`])
      .sort();
    expect(got).to.deep.equal(want);
  });

  it("SSUBSCRIBE/SPUBLISH are routed by the channel's slot", async () => {
    for (const channel of await keyPerMaster("shard-chan:")) {
      const sub = await client();
      const pub = await client();
      expect(toText(await sub.call("SSUBSCRIBE", channel))).to.deep.equal(["ssubscribe", channel, 1]);
      const owner = await ownerOf(channel);
      expect(await owner.call("PUBSUB", "SHARDNUMSUB", channel)).to.deep.equal([channel, 1]);
      await withoutRedirects(async () => {
        expect(await pub.call("SPUBLISH", channel, "hello")).to.equal(1);
      });
      expect(toText(await sub.next())).to.deep.equal(["smessage", channel, "hello"]);
      expect(toText(await sub.call("SUNSUBSCRIBE", channel))).to.deep.equal(["sunsubscribe", channel, 0]);
    }
  });

  it("XREAD routes by the keys after STREAMS (keyword key spec); BLOCK waits on the right shard", async () => {
    const c = await client();
    for (const tag of await keyPerMaster("xs")) {
      const [s1, s2] = [`{${tag}}:a`, `{${tag}}:b`];
      const id1 = toText(await c.call("XADD", s1, "1-1", "f", "v1"));
      const id2 = toText(await c.call("XADD", s2, "2-1", "f", "v2"));
      await withoutRedirects(async () => {
        expect(toText(await c.call("XREAD", "COUNT", "10", "STREAMS", s1, s2, "0", "0"))).to.deep.equal([
          [s1, [[id1, ["f", "v1"]]]],
          [s2, [[id2, ["f", "v2"]]]],
        ]);
      });
      const blocked = await client();
      blocked.send("XREAD", "BLOCK", "5000", "STREAMS", s1, "$");
      const owner = await ownerOf(s1);
      await waitUntil(
        "XREAD BLOCK to block on its shard",
        async () => Number(infoField(text(await owner.call("INFO", "clients")), "blocked_clients")) === 1,
      );
      expect(await c.text("XADD", s1, "3-1", "f", "v3")).to.equal("3-1");
      expect(toText(await blocked.next())).to.deep.equal([[s1, [["3-1", ["f", "v3"]]]]]);
    }
    const [x, y] = await keyPerMaster("xsx:");
    expect(errorOf(await c.call("XREAD", "STREAMS", x, y, "0", "0"))).to.equal(CROSSSLOT);
  });

  it("ZUNIONSTORE/ZUNION/SUNIONSTORE/SINTERCARD in one slot work (keynum and range keys), across slots CROSSSLOT", async () => {
    const c = await client();
    const single = await client(reference.port);
    for (const tag of await keyPerMaster("un")) {
      const [z1, z2, zd, s1, s2, sd] = ["z1", "z2", "zd", "s1", "s2", "sd"].map((n) => `{${tag}}:${n}`);
      const steps: string[][] = [
        ["ZADD", z1, "1", "a", "2", "b"],
        ["ZADD", z2, "5", "b", "7", "c"],
        ["ZUNIONSTORE", zd, "2", z1, z2, "WEIGHTS", "1", "10", "AGGREGATE", "MAX"],
        ["ZRANGE", zd, "0", "-1", "WITHSCORES"],
        ["ZUNION", "2", z1, z2, "WEIGHTS", "2", "1", "WITHSCORES"],
        ["ZINTERCARD", "2", z1, z2],
        ["SADD", s1, "a", "b"],
        ["SADD", s2, "b", "c"],
        ["SUNIONSTORE", sd, s1, s2],
        ["SINTERCARD", "2", s1, s2],
      ];
      await withoutRedirects(async () => {
        for (const step of steps) {
          const want = comparable(await single.call(...step));
          expect(want, `${step[0]} on one Redis`).to.not.match(/^ERROR/);
          expect(comparable(await c.call(...step)), step.join(" ")).to.deep.equal(want);
        }
      });
      expect(await (await ownerOf(zd)).call("ZCARD", zd)).to.equal(3);
    }
    const [x, y] = await keyPerMaster("unx:");
    expect(errorOf(await c.call("ZUNIONSTORE", `{${x}}d`, "2", x, y))).to.equal(CROSSSLOT);
    expect(errorOf(await c.call("SUNIONSTORE", `{${x}}d`, x, y))).to.equal(CROSSSLOT);
    expect(await (await ownerOf(x)).call("EXISTS", `{${x}}d`)).to.equal(0);
  });

  it("INFO has the proxy section naming the 3 masters; SELECT 0 is accepted", async () => {
    const c = await client();
    const info = String(toText(await c.call("INFO", "proxy")));
    expect(info).to.match(/^# Proxy\r\n/);
    expect(infoField(info, "upstream_nodes")).to.equal("3");
    for (const m of masters) expect(info).to.include(`127.0.0.1:${m.port}`);
    const full = String(toText(await c.call("INFO")));
    expect(full).to.match(/^# Proxy\r\n/m);
    expect(full).to.match(/^redis_version:/m);
    expect(await c.text("SELECT", "0")).to.equal("OK");
    expect(errorOf(await c.call("SELECT", "1"))).to.equal("ERR SELECT is not allowed in cluster mode");
    expect(await c.text("SET", "sel:k", "v")).to.equal("OK");
    expect(await (await ownerOf("sel:k")).call("GET", "sel:k")).to.equal("v");
  });

  it("MSET/MGET/DEL over 120 keys while one of their slots migrates (ASK) and after it moved (MOVED): Redis' replies", async () => {
    const keys = Array.from({ length: 120 }, (_, i) => `mv:${i}`);
    // The migrating key is alone in its slot among the 120, so no part is refused with TRYAGAIN.
    const alone = keys.filter((k) => keys.filter((o) => calculateSlot(o) === calculateSlot(k)).length === 1);
    const moving = alone[0];
    const slot = calculateSlot(moving);
    const source = await ownerOf(moving);
    const target = masters.find((m) => m !== source)!;
    const viaProxy = await client();
    const single = await client(reference.port);
    const same = async (...step: string[]): Promise<Comparable> => {
      const want = comparable(await single.call(...step));
      expect(comparable(await viaProxy.call(...step)), step[0]).to.deep.equal(want);
      return want;
    };
    const setAll = (tag: string): string[] => ["MSET", ...keys.flatMap((k) => [k, `${tag}-${k}`])];
    await same(...setAll("a"));
    const before = await redirectsSent(masters);

    await startMigrating(slot, source, target);
    expect(await source.call("MIGRATE", "127.0.0.1", String(target.port), moving, "0", "5000")).to.equal(
      "OK",
    );
    expect(await same("MGET", ...keys)).to.include(`a-${moving}`);
    await same(...setAll("b"));
    expect(await same("MGET", ...[...keys].reverse())).to.include(`b-${moving}`);
    expect(await same("EXISTS", ...keys, moving)).to.equal(121);
    const asked = await redirectsSent(masters);
    expect(asked.ask - before.ask).to.be.at.least(3, "the source answered ASK");

    await cluster.assignSlots([slot], target);
    await same(...setAll("c"));
    expect(await same("MGET", ...keys)).to.include(`c-${moving}`);
    expect(await same("DEL", ...keys.slice(0, 60), moving, "mv:none")).to.equal(
      keys.indexOf(moving) < 60 ? 60 : 61,
    );
    await withoutRedirects(async () => {
      await same("MGET", ...keys);
      expect(await same("DEL", ...keys)).to.be.above(0);
    });

    // The slot goes back the same way (the importing side takes a new epoch), so the tests
    // after this one find the layout they started with.
    await startMigrating(slot, target, source);
    await cluster.assignSlots([slot], source);
    expect(await viaProxy.call("GET", moving)).to.equal(null);
  });

  it("an MSET refused on one master (OOM) gets the error Redis gives; the others' parts still answer", async () => {
    const keys = Array.from({ length: 100 }, (_, i) => `oom:${i}`);
    const full = await ownerOf(keys[0]);
    const viaProxy = await client();
    const single = await client(reference.port);
    try {
      for (const node of [full, reference])
        expect(await node.call("CONFIG", "SET", "maxmemory", "1")).to.equal("OK");
      const step = ["MSET", ...keys.flatMap((k) => [k, "v"])];
      const want = comparable(await single.call(...step));
      expect(want).to.match(/^ERROR: OOM /);
      expect(comparable(await viaProxy.call(...step))).to.equal(want);
      // Reads and deletes are not refused for memory: their merged replies are whole.
      expect(comparable(await viaProxy.call("EXISTS", ...keys))).to.be.a("number");
      expect(comparable(await viaProxy.call("MGET", ...keys))).to.have.length(100);
    } finally {
      for (const node of [full, reference]) await node.call("CONFIG", "SET", "maxmemory", "0");
    }
  });

  it("single-key commands pipelined in one write over every master, one key's slot migrating (ASK) then moved (MOVED), errors among them: Redis' replies, in order", async () => {
    const spread = await keyPerMaster("run:");
    const moving = "run:moving";
    const slot = calculateSlot(moving);
    const source = await ownerOf(moving);
    const target = masters.find((m) => m !== source)!;
    const viaProxy = await client();
    const single = await client(reference.port);
    // Keys of every master back to back, the moving one among them, with a WRONGTYPE error,
    // a missing key and an arity error (a key-taking command without its key).
    const pipeline = (tag: string): string[][] => [
      ...spread.flatMap((k, i) => [
        ["SET", k, `${tag}-${i}`],
        ["GET", moving],
        ["INCR", `${k}:n`],
        ["LPUSH", `${k}:l`, tag],
        ["GET", `${k}:l`],
        ["GET", `${k}:none`],
        ["SET", moving, `${tag}-moving-${i}`],
        ["APPEND", k, "+"],
        ["GET", k],
        // One slot (a hash tag): a run's request like the others; keys of two slots: split.
        ["MSET", `{${k}}:a`, `${tag}a`, `{${k}}:b`, `${tag}b`],
        ["MGET", `{${k}}:a`, `{${k}}:b`],
        ["MGET", `{${k}}:a`, moving, k],
        ["DEL", `{${k}}:b`, `{${k}}:none`],
      ]),
      ["GET"],
      ["GET", moving],
    ];
    const same = async (steps: string[][]): Promise<Comparable[]> => {
      const payload = Buffer.concat(steps.map((step) => encode(step)));
      viaProxy.write(payload);
      single.write(payload);
      const got: Comparable[] = [];
      const want: Comparable[] = [];
      for (let i = 0; i < steps.length; i++) {
        want.push(comparable(await single.next()));
        got.push(comparable(await viaProxy.next()));
      }
      expect(got).to.deep.equal(want);
      return got;
    };
    await same(pipeline("a"));
    // For RESP3 too: the split MGET's parts go on the client's RESP3 connections, in its order.
    expect((await resp3Bytes(proxy.port, pipeline("r3"))).toString()).to.equal(
      (await resp3Bytes(reference.port, pipeline("r3"))).toString(),
    );
    const before = await redirectsSent(masters);

    await startMigrating(slot, source, target);
    expect(await source.call("MIGRATE", "127.0.0.1", String(target.port), moving, "0", "5000")).to.equal(
      "OK",
    );
    expect(await same(pipeline("b"))).to.include("b-moving-2");
    const asked = await redirectsSent(masters);
    expect(asked.ask - before.ask).to.be.at.least(10, "the source answered ASK");

    await cluster.assignSlots([slot], target);
    expect(await same(pipeline("c"))).to.include("c-moving-2");
    await withoutRedirects(async () => {
      expect(await same(pipeline("d"))).to.include("d-moving-2");
    });
    expect(await target.call("GET", moving)).to.equal("d-moving-2");

    // The slot goes back (see the MSET test above), so the tests after this one find the layout they started with.
    expect(await target.call("DEL", moving)).to.equal(1);
    await startMigrating(slot, target, source);
    await cluster.assignSlots([slot], source);
  });

  it("split MSET/MGET/DEL/EXISTS pipelined among single-key commands, keys repeated, values short and long, over many reads of the client's input: Redis' replies, in order", async () => {
    const viaProxy = await client();
    const single = await client(reference.port);
    const long = "L".repeat(300);
    // Every split part is cut from the client's bytes: repeated keys (the last MSET value wins,
    // DEL counts a key once, EXISTS twice), neighbours of one slot, values past the short copy.
    const round = (r: number): string[][] => {
      const keys = Array.from({ length: 12 }, (_, i) => `sp:${(r * 7 + i) % 40}`);
      return [
        ["SET", keys[0], `one-${r}`],
        [
          "MSET",
          ...keys.flatMap((k, i) => [k, i % 3 === 0 ? `${long}-${r}-${i}` : `v${r}-${i}`]),
          keys[1],
          `last-${r}`,
        ],
        ["GET", keys[1]],
        ["MGET", keys[2], "sp:none", keys[2], ...keys.slice(5), `{${keys[3]}}:x`],
        ["INCR", `sp:n:${r % 5}`],
        ["DEL", keys[4], keys[4], `sp:${(r + 20) % 40}`, "sp:none"],
        ["EXISTS", ...keys, keys[0]],
        ["MSET", `{t${r}}a`, "1", `{t${r}}b`, "2"],
        ["MGET", `{t${r}}a`, keys[6], `{t${r}}b`],
        ["GET", keys[4]],
      ];
    };
    const steps = Array.from({ length: 400 }, (_, r) => round(r)).flat();
    // Written in pieces, so the proxy reads the pipeline in many chunks and its runs see
    // requests of several input buffers.
    const payload = Buffer.concat(steps.map((step) => encode(step)));
    for (let at = 0; at < payload.length; at += 7_001) {
      viaProxy.write(payload.subarray(at, at + 7_001));
      single.write(payload.subarray(at, at + 7_001));
      await sleep(1);
    }
    const got: Comparable[] = [];
    const want: Comparable[] = [];
    for (let i = 0; i < steps.length; i++) {
      want.push(comparable(await single.next()));
      got.push(comparable(await viaProxy.next()));
    }
    expect(got).to.deep.equal(want);
    // RESP3: the merged replies in the client's protocol, the very bytes a single Redis sends.
    await single.call("FLUSHALL");
    await viaProxy.call("FLUSHALL");
    const few = Array.from({ length: 5 }, (_, r) => round(r)).flat();
    expect((await resp3Bytes(proxy.port, few)).toString()).to.equal(
      (await resp3Bytes(reference.port, few)).toString(),
    );
  });

  it("a slot migrated behind the proxy's back: ASK while migrating, MOVED after; right values, no error", async () => {
    const [key] = await keyPerMaster("mig:");
    const slot = calculateSlot(key);
    const source = await ownerOf(key);
    const target = masters.find((m) => m !== source)!;
    const sibling = `{${key}}:sibling`;
    const fresh = `{${key}}:fresh`;
    const c = await client();
    expect(await c.text("SET", key, "before")).to.equal("OK");
    expect(await c.text("SET", sibling, "sib")).to.equal("OK");
    const before = await redirectsSent(masters);

    // Migrating: the keys go over one by one; the source answers ASK for those already moved.
    await startMigrating(slot, source, target);
    expect(await source.call("MIGRATE", "127.0.0.1", String(target.port), key, "0", "5000")).to.equal("OK");
    expect(await c.text("GET", key)).to.equal("before");
    expect(await c.text("GET", sibling)).to.equal("sib");
    expect(await c.text("SET", fresh, "new")).to.equal("OK");
    const asked = await redirectsSent(masters);
    expect(asked.ask - before.ask).to.be.at.least(2, "the source answered ASK");

    // Finish: the rest of the keys, then every node learns the new owner.
    expect(
      await source.call("MIGRATE", "127.0.0.1", String(target.port), "", "0", "5000", "KEYS", sibling),
    ).to.equal("OK");
    await cluster.assignSlots([slot], target);
    expect(await c.text("GET", key)).to.equal("before");
    expect(await c.text("SET", key, "after")).to.equal("OK");
    expect(await c.text("MGET", sibling, fresh, key)).to.deep.equal(["sib", "new", "after"]);
    expect(await target.call("MGET", sibling, fresh, key)).to.deep.equal(["sib", "new", "after"]);
    expect(await source.call("DBSIZE")).to.equal(0);
    // The stale map is corrected by a MOVED or, when the gears' topology watch refreshed it
    // first, without one: either way the proxy must now go straight to the new owner.
    // Once corrected, the proxy goes straight to the new owner.
    await withoutRedirects(async () => {
      for (let i = 0; i < 5; i++) expect(await c.text("GET", key)).to.equal("after");
    });
  });
});
