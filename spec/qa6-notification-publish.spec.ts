import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend } from "./support/backend.js";
import { RawClient, toText, type Value } from "./support/raw-client.js";

// In front of a cluster a client's subscription to a keyspace notification's channel is made
// on every master (notifications do not cross the bus). A PUBLISH to such a channel does cross
// the bus, to every master: the subscriber got it once per master. One server delivers it
// once, and each genuine notification once.

describe("qa6: PUBLISH to a channel named like a keyspace notification, in front of a cluster", function () {
  this.timeout(120_000);
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
    backend = await Backend.start("cluster");
    proxy = await startProxy([{ port: backend.seed.port }]);
  });
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    await proxy?.close();
    await backend?.stop();
  });

  /** One key in each third of the slots: on each of the three masters. */
  function keyPerMaster(): string[] {
    const keys: string[] = [];
    for (const [low, high] of [
      [0, 5460],
      [5461, 10922],
      [10923, 16383],
    ]) {
      for (let i = 0; ; i++) {
        const slot = calculateSlot(`qa6k${i}`);
        if (slot >= low && slot <= high) {
          keys.push(`qa6k${i}`);
          break;
        }
      }
    }
    return keys;
  }

  /** What `sub` received after its confirmations, until the pong of a PING sent after a pause. */
  async function received(sub: RawClient): Promise<Value[]> {
    await new Promise((resolve) => setTimeout(resolve, 300));
    sub.send("PING", "qa6-end");
    const out: Value[] = [];
    for (;;) {
      const reply = toText(await sub.next()) as Value[];
      if (reply[0] === "pong") return out;
      out.push(reply);
    }
  }

  it("published messages and genuine notifications each arrive once, channels and patterns", async () => {
    const keys = keyPerMaster();
    const c = await open(proxy.port);
    const sub = await open(proxy.port);
    const channels = [
      ...keys.map((k) => `__keyspace@0__:${k}`),
      "__keyevent@0__:set",
      "__keyevent@0__:nokey",
    ];
    sub.send("SUBSCRIBE", ...channels);
    for (let i = 0; i < channels.length; i++) await sub.next();
    const psub = await open(proxy.port);
    expect(toText(await psub.call("PSUBSCRIBE", "__key*"))).to.deep.equal(["psubscribe", "__key*", 1]);

    for (const key of keys) expect(await c.call("PUBLISH", `__keyspace@0__:${key}`, `m-${key}`)).to.equal(2);
    for (const key of keys) expect(await c.call("PUBLISH", "__keyevent@0__:set", key)).to.equal(2);
    // Any message names a key (of some master): this one's holder relays it.
    expect(await c.call("PUBLISH", "__keyevent@0__:nokey", "not a key at all")).to.equal(2);
    // Published on another master directly: it crosses the bus to all of them.
    const direct = await backend.connect(keys[1]);
    expect(await direct.call("PUBLISH", `__keyspace@0__:${keys[2]}`, "direct")).to.be.a("number");
    direct.close();

    const published: Value[] = [
      ...keys.map((k) => ["message", `__keyspace@0__:${k}`, `m-${k}`]),
      ...keys.map((k) => ["message", "__keyevent@0__:set", k]),
      ["message", "__keyevent@0__:nokey", "not a key at all"],
      ["message", `__keyspace@0__:${keys[2]}`, "direct"],
    ];
    // Each once; in the order of each key's master (documented in docs/transparency.md).
    const got = await received(sub);
    expect(got).to.have.deep.members(published);
    expect(got).to.have.length(published.length);
    const patterned = await received(psub);
    expect(patterned).to.have.deep.members(
      published.map((m) => ["pmessage", "__key*", (m as string[])[1], (m as string[])[2]]),
    );
    expect(patterned).to.have.length(published.length);

    // Genuine notifications, from each key's master: once each too.
    expect(await c.call("CONFIG", "SET", "notify-keyspace-events", "KEA")).to.equal("OK");
    try {
      for (const key of keys) expect(await c.call("SET", key, "1")).to.equal("OK");
      const events = await received(sub);
      expect(events).to.have.deep.members([
        ...keys.map((k) => ["message", `__keyspace@0__:${k}`, "set"]),
        ...keys.map((k) => ["message", "__keyevent@0__:set", k]),
      ]);
      expect(events).to.have.length(6);
    } finally {
      await c.call("CONFIG", "SET", "notify-keyspace-events", "");
    }
  });
});
