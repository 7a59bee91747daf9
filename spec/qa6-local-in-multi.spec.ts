import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { transcript, type Step } from "./support/transcript.js";
import { RawClient, type Reply } from "./support/raw-client.js";

// CLIENT subcommands, AUTH and HELLO inside MULTI: Redis queues them and runs them at EXEC,
// in their place in EXEC's reply (a HELLO switching the protocol of the replies after it, in
// the same reply). The proxy answers them itself: it queues a stand-in and puts its own
// reply in the stand-in's place. Compared byte for byte with one redis-server, in front of
// one server and of a 3-master cluster (HELLO's mode and the client ids aside).

const END = ["ECHO", "qa6-end"];
const UNTIL = "$7\r\nqa6-end\r\n";

/** Each sequence on a fresh connection, sent at once, up to the ECHO that ends it. */
const SEQUENCES: Record<string, string[][]> = {
  "CLIENT subcommands, the name set at EXEC": [
    ["MULTI"],
    ["CLIENT", "SETNAME", "foo"],
    ["CLIENT", "GETNAME"],
    ["CLIENT", "NO-EVICT", "on"],
    ["CLIENT", "TRACKINGINFO"],
    ["CLIENT", "GETREDIR"],
    ["CLIENT", "KILL", "ID", "99999"],
    ["CLIENT", "HELP"],
    ["SET", "{k}a", "v"],
    ["GET", "{k}a"],
    ["CLIENT", "GETNAME"],
    ["EXEC"],
    ["CLIENT", "GETNAME"],
  ],
  "HELLO 3 switches the replies after it in EXEC's reply; HELLO 2 SETNAME; errors at EXEC": [
    ["MULTI"],
    ["CLIENT", "SETNAME", "before"],
    ["HELLO", "3"],
    ["PING"],
    ["HGETALL", "{k}nohash"],
    ["GET", "{k}nokey"],
    ["AUTH", "x"],
    ["AUTH", "default", "x"],
    ["HELLO", "2", "SETNAME", "zz"],
    ["HGETALL", "{k}nohash"],
    ["HELLO", "4"],
    ["CLIENT", "GETNAME"],
    ["EXEC"],
    ["CLIENT", "GETNAME"],
    ["HGETALL", "{k}nohash"],
  ],
  "a RESP3 client's HELLO 2 in MULTI": [
    ["HELLO", "3"],
    ["MULTI"],
    ["HELLO", "2"],
    ["PING"],
    ["GET", "{k}nokey"],
    ["EXEC"],
    ["GET", "{k}nokey"],
  ],
  "refused while queuing: EXECABORT, nothing set": [
    ["MULTI"],
    ["CLIENT", "SETNAME", "x"],
    ["CLIENT", "BOGUS"],
    ["CLIENT"],
    ["AUTH"],
    ["EXEC"],
    ["CLIENT", "GETNAME"],
  ],
  "DISCARD: nothing run": [
    ["MULTI"],
    ["CLIENT", "SETNAME", "gone"],
    ["HELLO", "3"],
    ["DISCARD"],
    ["CLIENT", "GETNAME"],
  ],
};

/** HELLO's mode, the one thing a client is told differs in front of a cluster. */
const asStandalone = (text: string): string =>
  text.replace(/\$4\r\nmode\r\n\$7\r\ncluster\r\n/g, "$4\r\nmode\r\n$10\r\nstandalone\r\n");

async function received(port: number, sequence: string[][]): Promise<string> {
  const steps: Step[] = [{ send: [...sequence, END], until: UNTIL }];
  return asStandalone((await transcript(port, steps)).a);
}

for (const mode of BACKEND_MODES) {
  describe(`qa6: CLIENT, AUTH and HELLO inside MULTI, as Redis queues them (${mode})`, function () {
    this.timeout(120_000);
    let direct: RedisNode;
    let backend: Backend;
    let proxy: RunningProxy;

    before(async function () {
      this.timeout(120_000);
      direct = await startRedis();
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
    });
    after(async () => {
      await proxy?.close();
      await backend?.stop();
      await direct?.stop();
    });

    it("CLIENT INFO and CLIENT LIST run by EXEC show the client in its transaction (flags=x, multi)", async () => {
      /** The flags and multi fields of the CLIENT INFO and LIST lines EXEC answered. */
      const fields = async (port: number): Promise<string[]> => {
        const c = await RawClient.connect(port);
        try {
          for (const command of [
            ["MULTI"],
            ["SET", "{k}a", "1"],
            ["CLIENT", "INFO"],
            ["CLIENT", "LIST", "TYPE", "normal"],
          ])
            await c.call(...command);
          const exec = (await c.call("EXEC")) as Reply[];
          const info = String(exec[1]);
          const list = String(exec[2])
            .split("\n")
            .find((line) => line.includes(" cmd=exec "))!;
          return [info, list].map((line) =>
            (line.match(/ (flags=\S+).* (multi=\S+)/) ?? []).slice(1).join(" "),
          );
        } finally {
          c.close();
        }
      };
      expect(await fields(proxy.port)).to.deep.equal(await fields(direct.port));
    });

    for (const [title, sequence] of Object.entries(SEQUENCES)) {
      it(title, async () => {
        expect(await received(proxy.port, sequence)).to.equal(await received(direct.port, sequence));
      });
    }
  });
}

describe("qa6: AUTH inside MULTI changes the user at EXEC (--requirepass)", function () {
  this.timeout(60_000);
  let direct: RedisNode;
  let behind: RedisNode;
  let proxy: RunningProxy;

  before(async () => {
    direct = await startRedis({ password: "pw" });
    behind = await startRedis();
    proxy = await startProxy([{ port: behind.port }], { requirepass: "pw" });
  });
  after(async () => {
    await proxy?.close();
    await behind?.stop();
    await direct?.stop();
  });

  const sequence = [
    ["AUTH", "pw"],
    ["MULTI"],
    ["AUTH", "wrong"],
    ["AUTH", "default", "wrong"],
    ["AUTH", "pw"],
    ["HELLO", "3", "AUTH", "default", "pw"],
    ["GET", "nokey"],
    ["PING"],
    ["EXEC"],
    ["GET", "nokey"],
  ];

  it("WRONGPASS and OK in EXEC's reply, and a HELLO ... AUTH that switches to RESP3 there", async () => {
    expect(await received(proxy.port, sequence)).to.equal(await received(direct.port, sequence));
  });
});
