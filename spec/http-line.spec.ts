import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { connectSocket, encode } from "./support/raw-client.js";
import { RawClient } from "./support/raw-client.js";

// POST and Host: are what an HTTP request starts with: Redis takes them for an attack (a
// browser sent to its port) and closes the connection without a reply. Through the proxy the
// client's connection closes the same way, and nothing reaches the server: forwarded, the
// command closed the proxy's shared upstream connection, and every other client's command in
// flight on it failed ('upstream connection lost').
describe("POST and Host: (an HTTP request) through the proxy", function () {
  this.timeout(30_000);
  let redis: RedisNode;
  let proxy: RunningProxy;
  before(async () => {
    redis = await startRedis();
    proxy = await startProxy([{ port: redis.port }]);
  });
  after(async () => {
    await proxy?.close();
    await redis?.stop();
  });

  /** Sends `data` on a new connection; what came back before the proxy closed it. */
  async function sendAndWaitForClose(data: Buffer): Promise<string> {
    const socket = await connectSocket(proxy.port);
    let received = "";
    socket.on("data", (chunk: Buffer) => (received += chunk.toString("latin1")));
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.write(data);
    await closed;
    return received;
  }

  for (const line of ["POST / HTTP/1.1\r\n", "Host: example.com\r\n"])
    it(`${JSON.stringify(line.split(" ")[0])} closes the client's connection, with no reply, and fails no other client's commands`, async () => {
      const other = await RawClient.connect(proxy.port);
      try {
        const n = 2000;
        for (let i = 0; i < n; i++) other.send("INCR", "counter");
        const received = await sendAndWaitForClose(Buffer.concat([encode(["PING"]), Buffer.from(line)]));
        expect(received).to.equal("");
        const replies = [];
        for (let i = 0; i < n; i++) replies.push(await other.next());
        expect(replies.filter((r) => typeof r !== "number")).to.deep.equal([]);
        expect(await other.call("PING")).to.equal("PONG");
      } finally {
        other.close();
      }
    });
});
