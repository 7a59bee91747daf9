import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend } from "./support/backend.js";
import { runPython } from "./support/redis-py.js";
import { encode, RawClient, toText, type Value } from "./support/raw-client.js";
import { deleteLibraries, tfLibrary } from "./support/tf.js";
import { eventually } from "./support/polling.js";

// In front of a cluster, FLUSHALL, DBSIZE, KEYS... span every master. Queued in MULTI, EXEC
// runs them on the transaction's master: the proxy then runs them on the other masters and
// merges, so that a client sees the one server it sees outside a transaction. redis-py's
// default pipeline is a transaction: `pipeline().flushdb().set(...).execute()` in a test's set-up
// emptied one master of three.

describe("FLUSHALL, DBSIZE, KEYS... inside MULTI in front of a 3-master cluster", function () {
  this.timeout(60_000);
  let backend: Backend;
  let proxy: RunningProxy;
  let io: Redis;
  /** One key on each master. */
  let spread: string[];

  before(async function () {
    this.timeout(120_000);
    backend = await Backend.start("cluster");
    proxy = await startProxy([{ port: backend.seed.port }]);
    io = new Redis({ port: proxy.port, lazyConnect: true });
    await io.connect();
    spread = await backend.onePerMaster("spread:");
  });

  beforeEach(async () => {
    await io.flushall();
    for (const key of spread) await io.set(key, "v");
  });

  after(async () => {
    io?.disconnect();
    await proxy?.close();
    await backend?.stop();
  });

  /** The keys each master holds, the proxy's own left out. */
  async function keysOnMasters(): Promise<string[]> {
    const keys: string[] = [];
    for (const node of await backend.masters())
      keys.push(
        ...((await node.call("KEYS", "*")) as string[]).filter((k) => !k.startsWith("{gears-proxy}")),
      );
    return keys.sort();
  }

  it("FLUSHALL and FLUSHDB empty every master; the transaction's writes after them stay", async () => {
    expect(await io.multi().flushall().set("{t}after", "1").exec()).to.deep.equal([
      [null, "OK"],
      [null, "OK"],
    ]);
    expect(await keysOnMasters()).to.deep.equal(["{t}after"]);
    for (const key of spread) await io.set(key, "v");
    expect(await io.multi().set("{t}before", "1").flushdb().exec()).to.deep.equal([
      [null, "OK"],
      [null, "OK"],
    ]);
    expect(await keysOnMasters()).to.deep.equal([]);
  });

  it("DBSIZE counts and KEYS lists every master's keys, the transaction's own write included", async () => {
    const [[, size], [, keys]] = (await io.multi().set("{t}k", "1").dbsize().keys("*").exec())!.slice(1) as [
      [null, number],
      [null, string[]],
    ];
    expect(size).to.equal(spread.length + 1);
    expect([...keys].sort()).to.deep.equal([...spread, "{t}k"].sort());
  });

  it("the client's next command runs after the other masters' part (its reply order kept)", async () => {
    const raw = await RawClient.connect(proxy.port);
    try {
      // One write: MULTI, FLUSHALL, EXEC and then an EXISTS of a key on each master.
      raw.write(
        Buffer.concat(
          [["MULTI"], ["FLUSHALL"], ["EXEC"], ...spread.map((k) => ["EXISTS", k])].map((c) => encode(c)),
        ),
      );
      const replies: Value[] = [];
      for (let i = 0; i < 3 + spread.length; i++) replies.push(toText(await raw.next()));
      expect(replies).to.deep.equal(["OK", "QUEUED", ["OK"], ...spread.map(() => 0)]);
    } finally {
      raw.close();
    }
  });

  it("node-redis 6 (RESP3): a transaction's DBSIZE and FLUSHALL as on one server", async () => {
    const c = createClient({ socket: { port: proxy.port } });
    await c.connect();
    try {
      const replies = await c.multi().set("{t}n", "1").dbSize().flushAll().dbSize().exec();
      expect(replies).to.deep.equal(["OK", spread.length + 1, "OK", 0]);
      expect(await keysOnMasters()).to.deep.equal([]);
    } finally {
      await c.quit();
    }
  });

  it("redis-py 8: pipeline().flushdb().set().execute() (a transaction) leaves only the new key", async () => {
    const script = path.join(os.tmpdir(), `multi-fan-out-${process.pid}.py`);
    fs.writeFileSync(
      script,
      [
        "import sys, redis",
        "r = redis.Redis(port=int(sys.argv[1]))",
        "print(r.pipeline().flushdb().set('{t}py', 'x').dbsize().execute())",
        "print(r.dbsize())",
      ].join("\n"),
    );
    try {
      const { code, output } = await runPython(script, [String(proxy.port)]);
      expect(code, output).to.equal(0);
      expect(output.trim().split("\n")).to.deep.equal(["[True, True, 1]", "1"]);
    } finally {
      fs.rmSync(script, { force: true });
    }
  });

  it("WAIT in a transaction answers at once, as on one server, and blocks no other client", async () => {
    const started = Date.now();
    // Timeout 0: for ever, were it run alone on a master without replicas.
    expect(await io.multi().set("{t}w", "1").call("WAIT", "1", "0").exec()).to.deep.equal([
      [null, "OK"],
      [null, 0],
    ]);
    expect(Date.now() - started).to.be.below(1000);
    const other = new Redis({ port: proxy.port });
    try {
      expect(await other.dbsize()).to.equal(spread.length + 1);
      for (const key of spread) expect(await other.get(key)).to.equal("v");
    } finally {
      other.disconnect();
    }
  });

  it("after a TFCALL in the transaction (run by the proxy after EXEC), DBSIZE and FLUSHALL too", async () => {
    await io.call(
      "TFUNCTION",
      "LOAD",
      "REPLACE",
      tfLibrary("txtail", "redis.registerFunction('f', () => 1);"),
    );
    try {
      const replies = (await io.multi().call("TFCALL", "txtail.f", "0").dbsize().flushall().exec())!.map(
        ([, v]) => v,
      );
      expect(replies).to.deep.equal([1, spread.length, "OK"]);
      expect(await keysOnMasters()).to.deep.equal([]);
    } finally {
      await deleteLibraries(io);
    }
  });

  it("a transaction that EXEC aborts (a WATCHed key changed) runs nothing on the other masters", async () => {
    const other = new Redis({ port: proxy.port });
    try {
      await io.watch("{t}w");
      await other.set("{t}w", "changed");
      expect(await io.multi().flushall().exec()).to.equal(null);
      expect(await keysOnMasters()).to.deep.equal([...spread, "{t}w"].sort());
    } finally {
      other.disconnect();
    }
  });
});

describe("KEYS, DBSIZE and RANDOMKEY inside MULTI in front of one server: the proxy's keys left out", function () {
  this.timeout(60_000);
  let backend: Backend;
  let proxy: RunningProxy;
  let io: Redis;

  before(async () => {
    backend = await Backend.start("standalone");
    proxy = await startProxy([{ port: backend.seed.port }]);
    io = new Redis({ port: proxy.port });
    // A T&F library: the proxy keeps it in keys of its own.
    await io.call("TFUNCTION", "LOAD", tfLibrary("multikeys", "redis.registerFunction('f', () => 1);"));
  });

  after(async () => {
    if (io !== undefined) await deleteLibraries(io);
    io?.disconnect();
    await proxy?.close();
    await backend?.stop();
  });

  it("answers as outside a transaction, in database 0 and after a SELECT inside it", async () => {
    await io.flushall();
    await io.set("mine", "1");
    // Written again after the FLUSHALL, within a moment.
    await eventually(
      async () => (await backend.seed.call("KEYS", "*")) as string[],
      (keys) => keys.some((k) => k.startsWith("{gears-proxy}")),
      "the proxy's keys on the server",
    );
    const replies = (await io.multi().dbsize().keys("*").randomkey().randomkey().exec())!.map(([, v]) => v);
    expect(replies).to.deep.equal([1, ["mine"], "mine", "mine"]);
    expect(await io.multi().dbsize().exec()).to.deep.equal([[null, await io.dbsize()]]);
    // Another database holds no keys of the proxy's: its listing is the server's.
    const other = (await io.multi().select(5).set("five", "5").dbsize().keys("*").select(0).exec())!.map(
      ([, v]) => v,
    );
    expect(other).to.deep.equal(["OK", "OK", 1, ["five"], "OK"]);
    // Behind a TFCALL, which the proxy runs after EXEC, as before it.
    const tail = (await io.multi().call("TFCALL", "multikeys.f", "0").dbsize().keys("*").exec())!.map(
      ([, v]) => v,
    );
    expect(tail).to.deep.equal([1, 1, ["mine"]]);
  });
});
