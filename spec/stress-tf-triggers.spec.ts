import { expect } from "chai";
import { BACKEND_MODES, Backend } from "./support/backend.js";
import { eventually } from "./support/registrations.js";
import { tfLibrary as lib, useTfProxy } from "./support/tf.js";

/**
 * T&F keyspace triggers under bursts of writes made straight on the shards, with the
 * documentation's async callback (`async function (client, data) { client.block(...) }`):
 * every event runs, none fails, against real redis-server, standalone and a 3-master cluster.
 */
for (const mode of BACKEND_MODES) {
  describe(`stress: T&F keyspace triggers under bursts: ${Backend.label(mode)}`, function () {
    this.timeout(90_000);
    const t = useTfProxy(mode, { clean: true });

    it("2,000 writes straight on the shards to an async trigger that blocks: each event runs once, none fails", async () => {
      const code = lib(
        "asyncburst",
        `redis.registerKeySpaceTrigger('t', 'ab:', async function (client, data) {
           client.block((c) => c.call('incr', 'ab-count'));
         });`,
      );
      expect(await t.c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
      const keys = Array.from({ length: 2000 }, (_, i) => `ab:${i}`);
      const byNode = new Map<Awaited<ReturnType<typeof t.direct.on>>, string[]>();
      for (const key of keys) {
        const node = await t.direct.on(key);
        byNode.set(node, [...(byNode.get(node) ?? []), key]);
      }
      await Promise.all(
        [...byNode].map(async ([node, mine]) => {
          // Pipelined: every SET sent before the first reply is read, so the events come in a burst.
          for (const key of mine) node.send("SET", key, "1");
          for (let i = 0; i < mine.length; i++) expect(await node.next()).not.to.be.instanceOf(Error);
        }),
      );
      const stats = async (): Promise<Map<string, unknown>> => {
        const list = (await t.c.call("TFUNCTION", "LIST", "LIBRARY", "asyncburst", "vv")) as unknown[][];
        const lib0 = list[0];
        const triggers = lib0[lib0.indexOf("keyspace_triggers") + 1] as unknown[][];
        const trig = triggers[0];
        const m = new Map<string, unknown>();
        for (let i = 0; i + 1 < trig.length; i += 2) m.set(String(trig[i]), trig[i + 1]);
        return m;
      };
      await eventually(stats, (s) => s.get("num_finished") === 2000, "every event finished", 60_000);
      const s = await stats();
      expect(s.get("last_error"), "no event failed").to.equal(null);
      expect(s.get("num_failed")).to.equal(0);
      expect(s.get("num_success")).to.equal(2000);
      expect(await t.c.get("ab-count")).to.equal("2000");
    });
  });
}
