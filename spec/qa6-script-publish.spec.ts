import { expect } from "chai";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend } from "./support/backend.js";
import { RawClient, toText } from "./support/raw-client.js";

// In front of a cluster, channel pub/sub lives on slot 0's master. A script or function called
// without keys that PUBLISHes must meet the subscribers there too: run on another master, its
// PUBLISH answered 0 (that master's own subscribers) where one server answers 1, and its
// message crossed the cluster bus.

describe("qa6: EVAL, EVALSHA and FCALL without keys that PUBLISH, in front of a cluster", function () {
  this.timeout(120_000);
  let backend: Backend;
  let proxy: RunningProxy;
  const clients: RawClient[] = [];
  const open = async (): Promise<RawClient> => {
    const c = await RawClient.connect(proxy.port);
    clients.push(c);
    return c;
  };

  before(async function () {
    this.timeout(120_000);
    backend = await Backend.start("cluster");
    proxy = await startProxy([{ port: backend.seed.port }]);
  });
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    await proxy?.close();
    await backend?.stop();
  });

  const SCRIPT = "return redis.call('publish', ARGV[1], ARGV[2])";

  it("each one counts the one subscriber, as one server does, whichever connection sends it", async () => {
    const sub = await open();
    expect(toText(await sub.call("SUBSCRIBE", "qa6:ch"))).to.deep.equal(["subscribe", "qa6:ch", 1]);
    const loader = await open();
    const sha = toText(await loader.call("SCRIPT", "LOAD", SCRIPT));
    expect(
      toText(
        await loader.call(
          "FUNCTION",
          "LOAD",
          "REPLACE",
          "#!lua name=qa6pub\nredis.register_function('qa6pub', function(keys, args) return redis.call('publish', args[1], args[2]) end)",
        ),
      ),
    ).to.equal("qa6pub");
    const counts: unknown[] = [];
    // Fresh connections spread over the proxy's shared connections and masters.
    for (let i = 0; i < 6; i++) {
      const c = await open();
      counts.push(toText(await c.call("EVAL", SCRIPT, "0", "qa6:ch", `eval${i}`)));
      counts.push(toText(await c.call("EVALSHA", String(sha), "0", "qa6:ch", `evalsha${i}`)));
      counts.push(toText(await c.call("FCALL", "qa6pub", "0", "qa6:ch", `fcall${i}`)));
      counts.push(
        toText(await c.call("MULTI")),
        toText(await c.call("EVAL", SCRIPT, "0", "qa6:ch", `multi${i}`)),
      );
      counts.push(toText(await c.call("EXEC")));
    }
    expect(counts).to.deep.equal(Array.from({ length: 6 }, () => [1, 1, 1, "OK", "QUEUED", [1]]).flat());
    const messages: unknown[] = [];
    for (let i = 0; i < 24; i++) messages.push(toText(await sub.next()));
    expect(messages.map((m) => (m as string[])[2])).to.deep.equal(
      Array.from({ length: 6 }, (_, i) => [`eval${i}`, `evalsha${i}`, `fcall${i}`, `multi${i}`]).flat(),
    );
  });
});
