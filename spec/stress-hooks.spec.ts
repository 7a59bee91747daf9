import { expect } from "chai";
import { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend } from "./support/backend.js";
import { execute, registrations } from "./support/registrations.js";

/**
 * Command hooks (CommandReader `hook`) under many clients at once, against one real
 * redis-server: every hooked command runs its own callNext(), and none answers an error.
 */
describe("stress: command hooks under 50 clients (one redis-server)", function () {
  this.timeout(120_000);
  let backend: Backend;
  let proxy: RunningProxy;
  let clients: Redis[];

  before(async function () {
    this.timeout(60_000);
    backend = await Backend.start("standalone");
    proxy = await startProxy([{ port: backend.seed.port }]);
    clients = Array.from(
      { length: 50 },
      () => new Redis({ port: proxy.port, host: "127.0.0.1", maxRetriesPerRequest: 0 }),
    );
  });

  after(async () => {
    for (const c of clients ?? []) c.disconnect();
    await proxy?.close();
    await backend?.stop();
  });

  it("a hook on SET with callNext: 3 fresh registrations, each under 50 clients x 100 pipelined SETs, every key its own value", async () => {
    const io = clients[0];
    for (let round = 0; round < 3; round++) {
      for (const r of await registrations(io)) await io.call("RG.UNREGISTER", r.id);
      await io.flushall();
      expect(
        await execute(
          io,
          "GB('CommandReader').map(x => { execute('INCR', 'hooked'); return callNext(...x.slice(1)) }).register({hook: 'set', keyprefix: 'h:'})",
        ),
      ).to.equal("OK");
      const errors: string[] = [];
      await Promise.all(
        clients.map((c, ci) =>
          Promise.all(
            Array.from({ length: 100 }, (_, j) =>
              c.set(`h:${ci}:${j}`, `${ci}:${j}`).catch((e: Error) => errors.push(e.message)),
            ),
          ),
        ),
      );
      expect(errors.slice(0, 3), `round ${round}: errors`).to.deep.equal([]);
      const keys = clients.flatMap((_, ci) => Array.from({ length: 100 }, (__, j) => `h:${ci}:${j}`));
      const values = await io.mget(...keys);
      const wrong = keys.filter((k, i) => values[i] !== k.slice(2));
      expect(wrong.slice(0, 3), `round ${round}: keys without their own value`).to.deep.equal([]);
      expect(await io.get("hooked")).to.equal("5000");
    }
  });
});
