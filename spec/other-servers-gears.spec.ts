/**
 * RG.* gears in front of the other servers users run, which load no Redis module either:
 * Valkey (8.x), Redis 6.0 and Redis 8.0. A batch map/reduce over every shard, a KeysReader registration
 * fed by writes straight to a shard (keyspace notifications), and a StreamReader registration
 * whose streams are trimmed once handled (Redis 6.0's XTRIM has no MINID; in a cluster idle
 * streams are read by one script per master, `allow-cross-slot-keys`). The clients' and T&F
 * specs run on each too (clients.spec.ts, tf-functions.spec.ts, tf-triggers.spec.ts).
 */
import { expect } from "chai";
import type { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES, Direct, serverAvailable, type ServerKind } from "./support/backend.js";
import { connect, run, str } from "./support/gears.js";
import { eventually, waitUntil } from "./support/polling.js";
import { toText } from "./support/raw-client.js";

/** What INFO server says of each. */
const INFO_LINE: Partial<Record<ServerKind, RegExp>> = {
  valkey: /^server_name:valkey\r?$/m,
  redis6: /^redis_version:6\.0\.\d+\r?$/m,
  redis8: /^redis_version:8\.0\.\d+\r?$/m,
};

for (const server of ["valkey", "redis6", "redis8"] as const)
  for (const mode of BACKEND_MODES) {
    describe(`gears in front of ${Backend.label(mode, server)}`, function () {
      this.timeout(60_000);
      let backend: Backend;
      let proxy: RunningProxy;
      let io: Redis;
      let direct: Direct;

      before(async function () {
        this.timeout(120_000);
        if (!serverAvailable(server)) this.skip();
        backend = await Backend.start(mode, server);
        proxy = await startProxy([{ port: backend.seed.port }]);
        io = connect(proxy.port);
        direct = new Direct(backend);
      });

      after(async () => {
        io?.disconnect();
        await proxy?.close();
        await backend?.stop();
      });

      it("is in front of the server it says: INFO server", async () => {
        expect(String(await io.call("INFO", "server"))).to.match(INFO_LINE[server]!);
      });

      it("commands whose keys move (XREAD BLOCK, ZUNIONSTORE, EVAL, SORT STORE) reach their keys' master", async () => {
        // Redis 6.0's COMMAND gives these no key positions: the proxy knows them as 7.0 does.
        const reader = connect(proxy.port);
        try {
          for (const stream of ["mv:s:a", "mv:s:b", "mv:s:c"]) {
            const master = await direct.on(stream);
            const read = reader.xread("BLOCK", 0, "STREAMS", stream, "$");
            // The XADD once the read blocks on the master, not after a fixed 100 ms: an entry
            // added before the read arrives is not after its "$", and the read would wait forever.
            await waitUntil(`the XREAD of ${stream} blocked on its master`, async () =>
              /^blocked_clients:1\r?$/m.test(String(toText(await master.call("INFO", "clients")))),
            );
            await master.call("XADD", stream, "*", "f", stream);
            const got = (await read) as [string, [string, string[]][]][];
            expect(got[0][0]).to.equal(stream);
            expect(got[0][1][0][1]).to.deep.equal(["f", stream]);
          }
        } finally {
          reader.disconnect();
        }
        for (const tag of ["a", "b", "c"]) {
          await io.zadd(`{mv${tag}}z1`, 1, "x");
          await io.zadd(`{mv${tag}}z2`, 2, "y");
          expect(await io.zunionstore(`{mv${tag}}dest`, 2, `{mv${tag}}z1`, `{mv${tag}}z2`)).to.equal(2);
          expect(await io.eval("return redis.call('ZCARD', KEYS[1])", 1, `{mv${tag}}dest`)).to.equal(2);
          await io.rpush(`{mv${tag}}l`, "3", "1", "2");
          expect(await io.sort(`{mv${tag}}l`, "STORE", `{mv${tag}}sorted`)).to.equal(3);
          expect(await io.lrange(`{mv${tag}}sorted`, 0, -1)).to.deep.equal(["1", "2", "3"]);
        }
      });

      it("RG.EXECUTE map/reduce reads every shard's keys", async () => {
        let sum = 0;
        for (let i = 0; i < 60; i++) {
          // Written straight to each key's shard: the proxy learns of them only by reading.
          await (await direct.on(`vk:${i}`)).call("SET", `vk:${i}`, String(i));
          sum += i;
        }
        const { results, errors } = await run(
          io,
          "GB().map(r => Number(r.value)).aggregate(0, (a, x) => a + x, (a, x) => a + x).run('vk:*')",
        );
        expect(errors).to.deep.equal([]);
        expect(results.map(str)).to.deep.equal([String(sum)]);
        const count = await run(io, "GB().count().run('vk:*')");
        expect(count.results.map(str)).to.deep.equal(["60"]);
      });

      it("a KeysReader registration sees writes made straight to a shard", async () => {
        expect(
          str(
            await io.call(
              "RG.EXECUTE",
              "GB().foreach(x => execute('SADD', '{vk}seen', x.key)).register('vkr:*')",
            ),
          ),
        ).to.equal("OK");
        for (let i = 0; i < 20; i++) await (await direct.on(`vkr:${i}`)).call("SET", `vkr:${i}`, "1");
        await eventually(
          async () => io.scard("{vk}seen"),
          (n) => n === 20,
          "every direct write in the set",
        );
      });

      it("a StreamReader registration handles entries added straight to a shard", async () => {
        expect(
          str(
            await io.call(
              "RG.EXECUTE",
              "GB('StreamReader').foreach(x => execute('INCRBY', '{vk}n', x.value.n)).register('vks:*')",
            ),
          ),
        ).to.equal("OK");
        let total = 0;
        for (let i = 1; i <= 6; i++) {
          const stream = `vks:${i % 3}`;
          await (await direct.on(stream)).call("XADD", stream, "*", "n", String(i));
          total += i;
        }
        await eventually(
          async () => Number(await io.get("{vk}n")),
          (n) => n === total,
          "every entry handled once",
        );
        // Handled entries leave the streams (trimStream, the default).
        await eventually(
          async () => {
            let left = 0;
            for (let i = 0; i < 3; i++)
              left += Number(await (await direct.on(`vks:${i}`)).call("XLEN", `vks:${i}`));
            return left;
          },
          (n) => n === 0,
          "the handled entries trimmed",
        );
      });
    });
  }
