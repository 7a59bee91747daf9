import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { eventually, execute, registrations, sessions } from "./support/registrations.js";

/**
 * Issue 12, "registrations survive flushes": gears sessions and registrations are kept in
 * Redis under `{gears-proxy}` keys, yet FLUSHALL and FLUSHDB (through the proxy or straight
 * to a shard) neither stop them nor lose them for the next start; only RG.UNREGISTER removes
 * them (a tombstone). Through the proxy, key listings and counts show the users' keys only.
 */

const SESSIONS_KEY = "{gears-proxy}:sessions";

const KEYS_SCRIPT = "GB().foreach(x => execute('SADD', 'seen', x.key)).register('user:*')";
const STREAM_SCRIPT =
  "GB('StreamReader').foreach(x => execute('SET', 'applied:' + x.value.n, '1')).register('s:*')";

for (const mode of BACKEND_MODES) {
  describe(`gears state across flushes: ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let io: Redis;
    let masters: Redis[] = [];
    const clients: Redis[] = [];

    function client(port: number): Redis {
      const c = new Redis({ port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      clients.push(c);
      return c;
    }

    before(async function () {
      this.timeout(90_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      io = client(proxy.port);
      masters = (await backend.masters()).map((n) => client(n.port));
    });

    afterEach(async () => {
      for (const r of await registrations(io)) expect(await io.call("RG.UNREGISTER", r.id)).to.equal("OK");
      for (const m of masters) await m.flushall();
    });

    after(async () => {
      for (const c of clients) c.disconnect();
      await proxy?.close();
      await backend?.stop();
    });

    /** The stored session ids, read on the shard that holds them. */
    async function storedIds(): Promise<string[]> {
      for (const m of masters) {
        const fields = await m.hgetall(SESSIONS_KEY).catch(() => ({}));
        const live = Object.entries(fields).filter(([, v]) => v !== "");
        if (Object.keys(fields).length > 0) return live.map(([id]) => id).sort();
      }
      return [];
    }

    async function registerBoth(): Promise<void> {
      await execute(io, KEYS_SCRIPT, "ID", "keys");
      await execute(io, STREAM_SCRIPT, "ID", "stream");
      expect(await storedIds()).to.deep.equal(["keys", "stream"]);
    }

    /** Both registrations still listed, still firing, still consuming. */
    async function stillWorking(round: string): Promise<void> {
      expect((await registrations(io)).map((r) => r.reader).sort()).to.deep.equal([
        "KeysReader",
        "StreamReader",
      ]);
      await io.set(`user:${round}`, "v");
      await eventually(
        () => io.sismember("seen", `user:${round}`),
        (v) => v === 1,
        `the KeysReader registration fired for user:${round}`,
      );
      await io.xadd(`s:${round}`, "*", "n", round);
      await eventually(
        () => io.get(`applied:${round}`),
        (v) => v === "1",
        `the StreamReader registration consumed s:${round}`,
      );
      // The store lost them; the proxy writes them back within its store poll.
      await eventually(storedIds, (ids) => ids.join() === "keys,stream", "the store written back", 5000);
    }

    it("FLUSHALL and FLUSHDB through the proxy: registrations listed, firing, consuming, stored again", async () => {
      await registerBoth();
      await stillWorking("a");
      expect(await io.flushall()).to.equal("OK");
      await stillWorking("b");
      expect(await io.flushdb()).to.equal("OK");
      await stillWorking("c");
    });

    it("FLUSHALL sent straight to every shard: the same", async () => {
      await registerBoth();
      await stillWorking("a");
      for (const m of masters) await m.flushall();
      await stillWorking("b");
    });

    it("KEYS, SCAN, DBSIZE and RANDOMKEY through the proxy show only the users' keys", async () => {
      await registerBoth();
      await stillWorking("a");
      const ownKeys = async (): Promise<number> => {
        let n = 0;
        for (const m of masters) n += (await m.keys("{gears-proxy}*")).length;
        return n;
      };
      expect(await ownKeys(), "the proxy keeps keys of its own").to.be.at.least(2);
      const user = ["seen", "user:a", "s:a", "applied:a"].sort();
      expect((await io.keys("*")).sort()).to.deep.equal(user);
      expect(await io.dbsize()).to.equal(user.length);
      const scanned: string[] = [];
      let cursor = "0";
      do {
        const [next, keys] = await io.scan(cursor, "COUNT", "2");
        scanned.push(...keys);
        cursor = next;
      } while (cursor !== "0");
      expect(scanned.sort()).to.deep.equal(user);
      for (let i = 0; i < 50; i++) expect(user).to.include(await io.randomkey());
      // With no user key at all, RANDOMKEY says so even though the proxy's keys are there
      // (the registrations go first: the KeysReader one would add to `seen` again).
      for (const r of await registrations(io)) expect(await io.call("RG.UNREGISTER", r.id)).to.equal("OK");
      // One user's key among the proxy's: RANDOMKEY still finds it every time (retrying alone
      // gave up now and then when the proxy's keys came up several times in a row).
      await io.del(...user.slice(1));
      const left = await Promise.all(Array.from({ length: 1000 }, () => io.randomkey()));
      expect(new Set(left)).to.deep.equal(new Set([user[0]]));
      await io.del(user[0]);
      expect(await ownKeys(), "tombstones and leases are still there").to.be.at.least(1);
      expect(await io.dbsize()).to.equal(0);
      expect(await io.keys("*")).to.deep.equal([]);
      expect(await io.randomkey()).to.equal(null);
    });

    it("only RG.UNREGISTER removes a session: its tombstone keeps other proxies and flushes from bringing it back", async () => {
      await registerBoth();
      const other = await startProxy([{ port: backend.seed.port }]);
      const b = client(other.port);
      try {
        await eventually(
          async () => (await sessions(b)).map((s) => s.id).sort(),
          (ids) => ids.join() === "keys,stream",
          "the second proxy restored both sessions",
        );
        const keysReg = (await registrations(io)).find((r) => r.reader === "KeysReader")!;
        expect(await io.call("RG.UNREGISTER", keysReg.id)).to.equal("OK");
        await eventually(
          async () => (await sessions(b)).map((s) => s.id),
          (ids) => ids.join() === "stream",
          "the second proxy dropped the unregistered session",
        );
        // A flush while both run: the survivor is written back, the unregistered one is not.
        for (const m of masters) await m.flushall();
        await eventually(
          storedIds,
          (ids) => ids.join() === "stream",
          "only the live session stored again",
          5000,
        );
        expect((await sessions(b)).map((s) => s.id)).to.deep.equal(["stream"]);
        expect((await sessions(io)).map((s) => s.id)).to.deep.equal(["stream"]);
      } finally {
        b.disconnect();
        await other.close();
      }
      // A proxy started after the flush brings back what was written back.
      const third = await startProxy([{ port: backend.seed.port }]);
      const c = client(third.port);
      try {
        expect((await sessions(c)).map((s) => s.id)).to.deep.equal(["stream"]);
      } finally {
        c.disconnect();
        await third.close();
      }
    });
  });
}
