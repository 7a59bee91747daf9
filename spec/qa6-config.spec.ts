import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { RawClient, ReplyError, toText, type Reply } from "./support/raw-client.js";

// T&F's settings (redisgears_2.*) are settings of the server as a client sees it, as the
// module's are in Redis 7: CONFIG GET * and other patterns list them beside the server's,
// CONFIG GET takes several patterns (Redis 7), and CONFIG SET sets the server's and T&F's
// together, all or none.

const shown = (r: Reply): unknown =>
  r instanceof ReplyError
    ? `-${r.message}`
    : Array.isArray(r)
      ? r.map(shown)
      : Buffer.isBuffer(r)
        ? r.toString()
        : r;

/** CONFIG GET's flat reply as a name -> value object. */
function asObject(reply: Reply): Record<string, string> {
  const flat = toText(reply) as string[];
  const out: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) out[flat[i]] = flat[i + 1];
  return out;
}

for (const mode of BACKEND_MODES) {
  describe(`qa6: CONFIG GET and SET of T&F's and the server's settings together (${mode})`, function () {
    this.timeout(120_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let c: RawClient;

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      c = await RawClient.connect(proxy.port);
    });
    after(async () => {
      c?.close();
      await proxy?.close();
      await backend?.stop();
    });

    it("CONFIG GET * lists T&F's settings with the server's", async () => {
      const all = asObject(await c.call("CONFIG", "GET", "*"));
      expect(all).to.include({ maxmemory: "0", "redisgears_2.lock-redis-timeout": "500" });
      expect(Object.keys(all).filter((k) => k.startsWith("redisgears_2."))).to.have.length(10);
    });

    it("patterns that reach T&F's names: redisgears*, R[e]DISGEARS_2.error-v*", async () => {
      expect(Object.keys(asObject(await c.call("CONFIG", "GET", "redisgears*")))).to.have.length(10);
      expect(asObject(await c.call("CONFIG", "GET", "R[e]DISGEARS_2.error-v*"))).to.deep.equal({
        "redisgears_2.error-verbosity": "1",
      });
    });

    it("several patterns, in any order, T&F's first or not", async () => {
      const want = { maxmemory: "0", "redisgears_2.error-verbosity": "1" };
      expect(
        asObject(await c.call("CONFIG", "GET", "redisgears_2.error-verbosity", "maxmemory")),
      ).to.deep.equal(want);
      expect(
        asObject(await c.call("CONFIG", "GET", "maxmemory", "redisgears_2.error-verbosity")),
      ).to.deep.equal(want);
      expect(
        asObject(await c.call("CONFIG", "GET", "maxmemory", "redisgears_2.error-verbosity", "maxmemory")),
      ).to.deep.equal(want);
    });

    it("in MULTI, a CONFIG naming the server's settings too is queued on the server", async () => {
      expect(shown(await c.call("MULTI"))).to.equal("OK");
      expect(shown(await c.call("CONFIG", "GET", "*"))).to.equal("QUEUED");
      expect(shown(await c.call("CONFIG", "GET", "maxmemory", "redisgears_2.error-verbosity"))).to.equal(
        "QUEUED",
      );
      const exec = (await c.call("EXEC")) as Reply[];
      expect(exec).to.have.length(2);
      expect(asObject(exec[0])).to.include({ maxmemory: "0" });
      expect(asObject(exec[1])).to.deep.equal({ maxmemory: "0" });
    });

    it("CONFIG SET of both kinds: all set, or none when one is refused", async () => {
      expect(
        shown(
          await c.call(
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "allkeys-lru",
            "redisgears_2.error-verbosity",
            "2",
          ),
        ),
      ).to.equal("OK");
      expect(
        asObject(await c.call("CONFIG", "GET", "maxmemory-policy", "redisgears_2.error-verbosity")),
      ).to.deep.equal({ "maxmemory-policy": "allkeys-lru", "redisgears_2.error-verbosity": "2" });
      // The server's refusal: T&F's setting stays.
      expect(
        shown(await c.call("CONFIG", "SET", "redisgears_2.error-verbosity", "1", "maxmemory-policy", "bad")),
      ).to.match(/^-ERR CONFIG SET failed \(possibly related to argument 'maxmemory-policy'\)/);
      // T&F's refusal: the server's setting stays.
      expect(
        shown(
          await c.call(
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "noeviction",
            "redisgears_2.error-verbosity",
            "9",
          ),
        ),
      ).to.match(/^-ERR CONFIG SET failed \(possibly related to argument 'redisgears_2.error-verbosity'\)/);
      expect(
        asObject(await c.call("CONFIG", "GET", "maxmemory-policy", "redisgears_2.error-verbosity")),
      ).to.deep.equal({ "maxmemory-policy": "allkeys-lru", "redisgears_2.error-verbosity": "2" });
      expect(
        shown(
          await c.call(
            "CONFIG",
            "SET",
            "redisgears_2.error-verbosity",
            "1",
            "maxmemory-policy",
            "noeviction",
          ),
        ),
      ).to.equal("OK");
      expect(
        shown(
          await c.call(
            "CONFIG",
            "SET",
            "redisgears_2.error-verbosity",
            "1",
            "REDISGEARS_2.error-verbosity",
            "2",
          ),
        ),
      ).to.equal(
        "-ERR CONFIG SET failed (possibly related to argument 'REDISGEARS_2.error-verbosity') - duplicate parameter",
      );
    });
  });
}

describe("qa6: a user of the server's own ACL: CONFIG and PUBSUB NUMPAT are the server's to check", function () {
  this.timeout(60_000);
  let server: RedisNode;
  let proxy: RunningProxy;
  const clients: RawClient[] = [];

  before(async () => {
    server = await startRedis({
      args: ["--user", "limited", "on", ">pw", "~*", "&*", "+@all", "-config", "-pubsub"],
    });
    proxy = await startProxy([{ port: server.port }]);
  });
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    await proxy?.close();
    await server?.stop();
  });

  async function asLimited(port: number, commands: string[][]): Promise<unknown[]> {
    const c = await RawClient.connect(port);
    clients.push(c);
    expect(await c.call("AUTH", "limited", "pw")).to.equal("OK");
    const out: unknown[] = [];
    for (const command of commands) out.push(shown(await c.call(...command)));
    return out;
  }

  it("refused by the server as directly, T&F's settings or not", async () => {
    const commands = [
      ["CONFIG", "GET", "*"],
      ["CONFIG", "GET", "maxmemory", "redisgears_2.error-verbosity"],
      ["CONFIG", "SET", "maxmemory", "0", "redisgears_2.error-verbosity", "2"],
      ["PUBSUB", "NUMPAT"],
    ];
    const want = await asLimited(server.port, commands);
    expect(want.every((r) => typeof r === "string" && r.startsWith("-NOPERM"))).to.equal(true);
    expect(await asLimited(proxy.port, commands)).to.deep.equal(want);
  });
});
