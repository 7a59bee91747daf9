import { expect } from "chai";
import { startCluster, startProxy, startRedis } from "./harness/index.js";
import { RawClient, ReplyError } from "./support/raw-client.js";

// SCRIPT DEBUG YES/SYNC would give the client a Lua debugger session on its next EVAL, which
// takes over its connection: through the proxy that connection is shared, so the proxy refuses
// them (and answers NO itself, with the server's errors: spec/differential.spec.ts).
describe("SCRIPT DEBUG through the proxy", function () {
  this.timeout(60_000);

  for (const mode of ["standalone", "cluster"] as const) {
    it(`YES and SYNC are refused, and the client's scripts run as before (${mode})`, async () => {
      const server = mode === "cluster" ? await startCluster({ masters: 3 }) : await startRedis();
      const proxy = await startProxy([{ port: "nodes" in server ? server.nodes[0].port : server.port }]);
      const client = await RawClient.connect(proxy.port);
      try {
        for (const m of ["YES", "sync"]) {
          const reply = await client.call("SCRIPT", "DEBUG", m);
          expect(reply).to.be.instanceOf(ReplyError);
          expect((reply as ReplyError).message).to.equal("ERR SCRIPT DEBUG is not supported by gears-proxy");
        }
        expect(await client.call("EVAL", "return 7", "1", "{a}k")).to.equal(7);
        expect(await client.call("SCRIPT", "DEBUG", "NO")).to.equal("OK");
      } finally {
        client.close();
        await proxy.close();
        await server.stop();
      }
    });
  }
});
