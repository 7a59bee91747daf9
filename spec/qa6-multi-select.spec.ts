import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { RawClient, ReplyError, toText, type Reply } from "./support/raw-client.js";

// In front of one server the proxy keeps its own keys in database 0 and leaves them out of
// KEYS, DBSIZE, RANDOMKEY and SCAN, in MULTI too. A SELECT queued in the transaction that the
// server refuses at EXEC (an index out of range) leaves the commands after it in database 0:
// they must leave the proxy's keys out there as well. SCAN inside MULTI likewise.

const LIBRARY = "#!js api_version=1.0 name=qa6sel\nredis.registerFunction('f', () => 1);";

/** A reply as a comparable value: errors by their text, bulk strings as text. */
const shown = (r: Reply): unknown =>
  r instanceof ReplyError
    ? `-${r.message}`
    : Array.isArray(r)
      ? r.map(shown)
      : Buffer.isBuffer(r)
        ? r.toString()
        : r;

describe("qa6: a SELECT refused at EXEC, then key listings in the same transaction", function () {
  this.timeout(60_000);
  let direct: RedisNode;
  let behind: RedisNode;
  let proxy: RunningProxy;
  const clients: RawClient[] = [];
  const open = async (port: number): Promise<RawClient> => {
    const c = await RawClient.connect(port);
    clients.push(c);
    return c;
  };

  before(async () => {
    direct = await startRedis();
    behind = await startRedis();
    proxy = await startProxy([{ port: behind.port }]);
    const c = await open(proxy.port);
    // The proxy's own keys, in database 0 of the server behind it.
    expect(await c.call("TFUNCTION", "LOAD", LIBRARY)).to.equal("OK");
    const raw = await open(behind.port);
    expect((toText(await raw.call("KEYS", "{gears-proxy}*")) as string[]).length).to.be.above(0);
  });
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    await proxy?.close();
    await direct?.stop();
    await behind?.stop();
  });

  async function transaction(port: number, commands: string[][]): Promise<unknown[]> {
    const c = await open(port);
    expect(await c.call("SET", "userkey", "1")).to.equal("OK");
    const out: unknown[] = [shown(await c.call("MULTI"))];
    for (const command of commands) out.push(shown(await c.call(...command)));
    out.push(shown(await c.call("EXEC")));
    return out;
  }

  for (const commands of [
    [["SELECT", "99"], ["KEYS", "*"], ["DBSIZE"], ["RANDOMKEY"]],
    [["SELECT", "-1"], ["KEYS", "*"], ["DBSIZE"]],
    [["SELECT", "3"], ["SELECT", "99"], ["KEYS", "*"], ["DBSIZE"]],
    [
      ["SCAN", "0"],
      ["SELECT", "99"],
      ["SCAN", "0", "COUNT", "100"],
    ],
  ]) {
    it(`${commands.map((c) => c.join(" ")).join("; ")}: Redis's replies`, async () => {
      const want = await transaction(direct.port, commands);
      const got = await transaction(proxy.port, commands);
      expect(got).to.deep.equal(want);
    });
  }
});
