import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { eventually } from "./support/polling.js";
import { RawClient, toText } from "./support/raw-client.js";

// While registrations need keyspace notifications, the proxy subscribes its own pattern
// (`__keyevent@*__:*`, and a sync channel of its own) on every master. PUBSUB NUMPAT counted
// them: a client saw patterns with nobody subscribed. It leaves them out now, as PUBSUB
// CHANNELS leaves out the proxy's channels; a pattern a client subscribes too still counts.

const LIBRARY =
  "#!js api_version=1.0 name=qa6numpat\nredis.registerKeySpaceTrigger('t', 'qa6np:', (client, data) => {});";

for (const mode of BACKEND_MODES) {
  describe(`qa6: PUBSUB NUMPAT leaves out the proxy's own patterns (${mode})`, function () {
    this.timeout(120_000);
    let direct: RedisNode;
    let backend: Backend;
    let proxy: RunningProxy;
    const clients: RawClient[] = [];
    const open = async (port: number): Promise<RawClient> => {
      const c = await RawClient.connect(port);
      clients.push(c);
      return c;
    };

    before(async function () {
      this.timeout(120_000);
      direct = await startRedis();
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      const c = await open(proxy.port);
      expect(await c.call("TFUNCTION", "LOAD", LIBRARY)).to.equal("OK");
      // The proxy's patterns are on the server (slot 0's master in a cluster).
      const home = await backend.connect("{06S}");
      clients.push(home);
      await eventually(
        async () => Number(await home.call("PUBSUB", "NUMPAT")),
        (n) => n >= 1,
        "the proxy's keyspace pattern subscribed",
      );
    });
    after(async () => {
      for (const c of clients.splice(0)) c.close();
      await proxy?.close();
      await backend?.stop();
      await direct?.stop();
    });

    /** NUMPAT after `patterns` are subscribed by one client (and as many others as given). */
    async function numpat(port: number, patterns: string[][]): Promise<number> {
      const subs: RawClient[] = [];
      for (const names of patterns) {
        const sub = await open(port);
        subs.push(sub);
        sub.send("PSUBSCRIBE", ...names);
        for (let i = 0; i < names.length; i++) await sub.next();
      }
      const asker = await open(port);
      const n = toText(await asker.call("PUBSUB", "NUMPAT"));
      for (const sub of subs) sub.close();
      return n as number;
    }

    it("a second proxy in front of the same server: NUMPAT still counts no pattern, PUBSUB CHANNELS no channel of theirs", async () => {
      const second = await startProxy([{ port: backend.seed.port }]);
      try {
        const c = await open(second.port);
        // It follows the library, and subscribes its own sync channel beside the first's.
        await eventually(
          async () => ((await c.call("TFUNCTION", "LIST")) as unknown[]).length,
          (n) => n === 1,
          "the second proxy has the library",
        );
        const home = await backend.connect("{06S}");
        clients.push(home);
        await eventually(
          async () => ((await home.call("PUBSUB", "CHANNELS", "gears-proxy:synced:*")) as unknown[]).length,
          (n) => n >= 2,
          "both proxies' sync channels subscribed",
        );
        expect(await numpat(proxy.port, [])).to.equal(0);
        expect(await numpat(second.port, [])).to.equal(0);
        expect(await c.call("PUBSUB", "CHANNELS")).to.deep.equal([]);
      } finally {
        await second.close();
      }
    });

    for (const patterns of [[], [["x*"]], [["__keyevent@*__:*"]], [["__keyevent@*__:*", "y*"], ["y*"]]]) {
      it(`as one server counts ${JSON.stringify(patterns)}`, async () => {
        const want = await numpat(direct.port, patterns);
        await eventually(
          () => numpat(proxy.port, patterns),
          (n) => n === want,
          `NUMPAT ${want}`,
        );
      });
    }
  });
}
