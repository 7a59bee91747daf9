import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { mayReceiveNotifications } from "../src/client/notification-fan-in.js";
import { Backend } from "./support/backend.js";
import { eventually } from "./support/polling.js";
import { encode, RawClient, ReceivedText, toText, type Value } from "./support/raw-client.js";

// Channel pub/sub through the proxy in front of a 3-master cluster, where a client sees one
// server: every subscriber is counted wherever it subscribed, shard channels are counted on
// their own shards, and a message published reaches its subscribers without the cluster bus.

describe("channel pub/sub in front of a 3-master cluster, as one server", function () {
  this.timeout(60_000);
  let backend: Backend;
  let proxy: RunningProxy;
  let single: RedisNode;
  const open: RawClient[] = [];

  before(async function () {
    this.timeout(120_000);
    backend = await Backend.start("cluster");
    proxy = await startProxy([{ port: backend.seed.port }]);
    single = await startRedis();
  });

  afterEach(() => {
    for (const c of open.splice(0)) c.close();
  });

  after(async () => {
    await proxy?.close();
    await backend?.stop();
    await single?.stop();
  });

  async function connect(port: number): Promise<RawClient> {
    const c = await RawClient.connect(port);
    open.push(c);
    return c;
  }

  /** A raw connection in `proto` (HELLO answered, its reply left behind). */
  async function rawIn(port: number, proto: string): Promise<ReceivedText> {
    const r = await ReceivedText.open(port);
    r.socket.write(Buffer.concat([encode(["HELLO", proto]), encode(["PING"])]));
    await eventually(
      async () => r.text,
      (t) => t.endsWith("+PONG\r\n"),
      "HELLO",
    );
    return r;
  }

  /** The bytes a raw connection receives for one command (a PING behind it marks the end). */
  async function bytesOf(r: ReceivedText, args: string[]): Promise<string> {
    const start = r.text.length;
    r.socket.write(Buffer.concat([encode(args), encode(["PING"])]));
    const text = await eventually(
      async () => r.text.slice(start),
      (t) => t.endsWith("+PONG\r\n"),
      args.join(" "),
    );
    r.socket.destroy();
    return text.slice(0, -"+PONG\r\n".length);
  }

  /**
   * Subscribes `count` connections to `port`, each to the same channel and pattern, then asks
   * PUBSUB from `count` other connections: what each of them answers.
   */
  async function countsSeenAt(port: number, count: number, tag: string): Promise<Value[]> {
    for (let i = 0; i < count; i++) {
      const sub = await connect(port);
      await sub.call("SUBSCRIBE", `${tag}:ch`);
      await sub.call("PSUBSCRIBE", `${tag}:p*`);
    }
    const answers: Value[] = [];
    for (let i = 0; i < count; i++) {
      const asker = await connect(port);
      answers.push(
        toText([
          await asker.call("PUBSUB", "NUMSUB", `${tag}:ch`, `${tag}:none`),
          await asker.call("PUBSUB", "NUMPAT"),
          await asker.call("PUBSUB", "CHANNELS", `${tag}:*`),
        ]),
      );
    }
    return answers;
  }

  it("PUBSUB NUMSUB, NUMPAT and CHANNELS count every subscriber, whichever connection asks", async () => {
    const direct = await countsSeenAt(single.port, 6, "n1");
    const through = await countsSeenAt(proxy.port, 6, "n1");
    expect(direct[0]).to.deep.equal([["n1:ch", 6, "n1:none", 0], 1, ["n1:ch"]]);
    expect(through).to.deep.equal(direct);
  });

  it("RESP3: PUBSUB NUMSUB in the server's layout", async () => {
    for (const port of [proxy.port, single.port]) await (await connect(port)).call("SUBSCRIBE", "m3:ch");
    const ask = ["PUBSUB", "NUMSUB", "m3:ch", "m3:x"];
    const want = await bytesOf(await rawIn(single.port, "3"), ask);
    expect(await bytesOf(await rawIn(proxy.port, "3"), ask)).to.equal(want);
  });

  it("PUBLISH and SUBSCRIBE inside MULTI meet every other client's, as on one server", async () => {
    const sub = await connect(proxy.port);
    await sub.call("SUBSCRIBE", "tx:ch");
    for (let i = 0; i < 6; i++) {
      const c = await connect(proxy.port);
      expect(await c.call("MULTI")).to.equal("OK");
      expect(await c.call("PUBLISH", "tx:ch", `m${i}`)).to.equal("QUEUED");
      expect(await c.call("EXEC")).to.deep.equal([1]);
      expect(toText(await sub.next(3000))).to.deep.equal(["message", "tx:ch", `m${i}`]);
    }
    for (let i = 0; i < 4; i++) {
      const c = await connect(proxy.port);
      await c.call("MULTI");
      await c.call("SUBSCRIBE", "tx:ch2");
      expect(toText(await c.call("EXEC"))).to.deep.equal([["subscribe", "tx:ch2", 1]]);
    }
    const asker = await connect(proxy.port);
    expect(toText(await asker.call("PUBSUB", "NUMSUB", "tx:ch2"))).to.deep.equal(["tx:ch2", 4]);
    expect(await asker.call("PUBLISH", "tx:ch2", "all")).to.equal(4);
  });

  it("PUBSUB SHARDNUMSUB counts each shard channel on its shard, SHARDCHANNELS lists every shard's", async () => {
    const channels = await backend.onePerMaster("sh:");
    for (const port of [proxy.port, single.port]) {
      for (const channel of channels) await (await connect(port)).call("SSUBSCRIBE", channel);
    }
    const asked = [channels[2], "sh:none", channels[0], channels[1], channels[0]];
    for (const proto of ["2", "3"]) {
      for (const ask of [
        ["PUBSUB", "SHARDNUMSUB", ...asked],
        ["PUBSUB", "SHARDNUMSUB"],
      ]) {
        const want = await bytesOf(await rawIn(single.port, proto), ask);
        expect(await bytesOf(await rawIn(proxy.port, proto), ask), `RESP${proto} ${ask.join(" ")}`).to.equal(
          want,
        );
      }
    }
    const listed = toText(
      await (await connect(proxy.port)).call("PUBSUB", "SHARDCHANNELS", "sh:*"),
    ) as string[];
    expect([...listed].sort()).to.deep.equal([...channels].sort());
  });

  it("a message published reaches every subscriber while the other masters are paused", async () => {
    // A key of slot 0: the master every proxy's channel pub/sub goes to.
    let homeKey = 0;
    while (calculateSlot(String(homeKey)) !== 0) homeKey++;
    const home = await backend.nodeOf(String(homeKey));
    const others = (await backend.masters()).filter((m) => m.port !== home.port);
    for (const node of others) {
      const c = await connect(node.port);
      await c.call("CLIENT", "PAUSE", "3000", "ALL");
    }
    const started = Date.now();
    try {
      const subs: RawClient[] = [];
      for (let i = 0; i < 6; i++) {
        const sub = await connect(proxy.port);
        expect(toText(await sub.call("SUBSCRIBE", "paused:ch"))).to.deep.equal(["subscribe", "paused:ch", 1]);
        subs.push(sub);
      }
      for (let i = 0; i < 3; i++) {
        const pub = await connect(proxy.port);
        expect(await pub.call("PUBLISH", "paused:ch", `m${i}`)).to.equal(6);
      }
      for (const sub of subs) {
        for (let i = 0; i < 3; i++)
          expect(toText(await sub.next(1500))).to.deep.equal(["message", "paused:ch", `m${i}`]);
      }
      expect(Date.now() - started).to.be.below(2500);
    } finally {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 3100 - (Date.now() - started))));
    }
  });

  describe("keyspace notifications: every master's, as one server sends them all", () => {
    before(async () => {
      for (const port of [proxy.port, single.port]) {
        const c = await connect(port);
        expect(await c.call("CONFIG", "SET", "notify-keyspace-events", "KEA")).to.equal("OK");
      }
    });

    /** Events received on `sub` (RESP2) until `count` have come, or 3 s passed. */
    async function collect(sub: RawClient, count: number): Promise<Value[]> {
      const got: Value[] = [];
      while (got.length < count) got.push(toText(await sub.next(3000)));
      return got;
    }

    it("PSUBSCRIBE __keyevent@0__:set gets the SETs of keys on every master", async () => {
      const keys = await backend.onePerMaster("ev:");
      const seen: Value[][] = [];
      for (const port of [single.port, proxy.port]) {
        const sub = await connect(port);
        expect(toText(await sub.call("PSUBSCRIBE", "__keyevent@0__:set"))).to.deep.equal([
          "psubscribe",
          "__keyevent@0__:set",
          1,
        ]);
        const writer = await connect(port);
        for (const key of keys) expect(await writer.call("SET", key, "v")).to.equal("OK");
        const events = await collect(sub, keys.length);
        seen.push(events.sort());
      }
      expect(seen[0]).to.have.length(3);
      expect(seen[1]).to.deep.equal(seen[0]);
    });

    it("SUBSCRIBE to one key's __keyspace@0__ channel, on whichever master the key is", async () => {
      for (const key of await backend.onePerMaster("ks:")) {
        const sub = await connect(proxy.port);
        await sub.call("SUBSCRIBE", `__keyspace@0__:${key}`);
        const writer = await connect(proxy.port);
        await writer.call("LPUSH", key, "a");
        expect(toText(await sub.next(3000))).to.deep.equal(["message", `__keyspace@0__:${key}`, "lpush"]);
      }
    });

    it("after PUNSUBSCRIBE nothing comes from any master, and the other masters drop the pattern", async () => {
      const keys = await backend.onePerMaster("un:");
      const sub = await connect(proxy.port);
      await sub.call("PSUBSCRIBE", "__keyevent@0__:incrby");
      const writer = await connect(proxy.port);
      for (const key of keys) await writer.call("INCRBY", key, "2");
      expect(await collect(sub, 3)).to.have.length(3);
      expect(toText(await sub.call("PUNSUBSCRIBE"))).to.deep.equal([
        "punsubscribe",
        "__keyevent@0__:incrby",
        0,
      ]);
      for (const key of keys) await writer.call("INCRBY", key, "2");
      expect(toText(await sub.call("PING"))).to.equal("PONG");
      await eventually(
        async () => {
          let patterns = 0;
          for (const master of await backend.masters())
            patterns += Number(await (await connect(master.port)).call("PUBSUB", "NUMPAT"));
          return patterns;
        },
        (n) => n === 0,
        "no pattern left on any master",
      );
    });

    it("a pattern that matches every channel: each PUBLISH once, notifications from every master", async () => {
      const keys = await backend.onePerMaster("all:");
      const sub = await connect(proxy.port);
      await sub.call("PSUBSCRIBE", "*");
      const other = await connect(proxy.port);
      expect(await other.call("PUBLISH", "plain", "hello")).to.equal(1);
      expect(toText(await sub.next(3000))).to.deep.equal(["pmessage", "*", "plain", "hello"]);
      for (const key of keys) await other.call("SET", key, "v");
      for (const key of keys) await other.call("DEL", key);
      await other.call("PUBLISH", "plain", "again");
      // Each master's events come in its order; the masters' among themselves in any.
      const got: string[][] = [];
      const deleted = (): string[] => got.filter((m) => m[2] === "__keyevent@0__:del").map((m) => m[3]);
      while (deleted().length < keys.length || !got.some((m) => m[3] === "again"))
        got.push(toText(await sub.next(3000)) as string[]);
      expect(deleted().sort()).to.deep.equal([...keys].sort());
      // SET and DEL: keyspace and keyevent, 4 events per key.
      expect(got.filter((m) => m[2].startsWith("__key"))).to.have.length(4 * keys.length);
      expect(await other.call("PUBLISH", "plain", "last")).to.equal(1);
      expect(toText(await sub.next(3000))).to.deep.equal(["pmessage", "*", "plain", "last"]);
      expect(got.filter((m) => m[2] === "plain")).to.have.length(1);
    });

    it("events written straight on every master right after the confirmation all come", async () => {
      const keys = await backend.onePerMaster("now:");
      const owners = await Promise.all(keys.map(async (key) => connect((await backend.nodeOf(key)).port)));
      for (let round = 0; round < 5; round++) {
        const sub = await connect(proxy.port);
        await sub.call("PSUBSCRIBE", `__keyevent@0__:${round === 4 ? "*" : "set"}`);
        await Promise.all(owners.map((owner, i) => owner.call("SET", keys[i], String(round))));
        const got = (await collect(sub, keys.length)) as string[][];
        expect(got.map((m) => m[3]).sort(), `round ${round}`).to.deep.equal([...keys].sort());
        sub.close();
      }
    });

    it("PSUBSCRIBE and PUNSUBSCRIBE in one write: nothing comes after, the next reply is the next command's", async () => {
      const keys = await backend.onePerMaster("pu:");
      const seen: string[] = [];
      for (const port of [single.port, proxy.port]) {
        const r = await ReceivedText.open(port);
        const both = [["PSUBSCRIBE", "__keyevent@0__:set"], ["PUNSUBSCRIBE"]];
        const confirmations = "*3\r\n$10\r\npsubscribe\r\n$18\r\n__keyevent@0__:set\r\n:1\r\n";
        const left = "*3\r\n$12\r\npunsubscribe\r\n$18\r\n__keyevent@0__:set\r\n:0\r\n";
        expect(await r.exchange(both, confirmations.length + left.length)).to.equal(confirmations + left);
        const writer = await connect(port);
        for (const key of keys) await writer.call("SET", key, "x");
        const start = r.text.length;
        r.socket.write(encode(["GET", keys[0]]));
        seen.push(await r.wait(start, 7, "GET's reply"));
        await new Promise((resolve) => setTimeout(resolve, 200));
        seen.push(r.text.slice(start));
        r.socket.destroy();
      }
      expect(seen[1]).to.equal("$1\r\nx\r\n");
      expect(seen.slice(2)).to.deep.equal(seen.slice(0, 2));
    });

    it("a master's connection lost: the client stays, and that master's notifications come again", async () => {
      const keys = await backend.onePerMaster("lost:");
      const sub = await connect(proxy.port);
      await sub.call("PSUBSCRIBE", "__keyevent@0__:append");
      const writer = await connect(proxy.port);
      for (const key of keys) await writer.call("APPEND", key, "x");
      expect(await collect(sub, 3)).to.have.length(3);
      // The home master is slot 0's; on the others the fan-in's connections are the only subscribers.
      let homeKey = 0;
      while (calculateSlot(String(homeKey)) !== 0) homeKey++;
      const home = await backend.nodeOf(String(homeKey));
      for (const master of await backend.masters()) {
        if (master.port === home.port) continue;
        expect(
          Number(await (await connect(master.port)).call("CLIENT", "KILL", "TYPE", "pubsub")),
        ).to.be.above(0);
      }
      await eventually(
        async () => {
          for (const key of keys) await writer.call("APPEND", key, "x");
          const got: Value[] = [];
          for (;;) {
            const frame = await sub.next(300).catch(() => null);
            if (frame === null) break;
            got.push(toText(frame));
          }
          return new Set((got as string[][]).map((m) => m[3])).size;
        },
        (n) => n === keys.length,
        "every master's APPEND again",
      );
      expect(toText(await sub.call("PING"))).to.deep.equal(["pong", ""]);
    });

    it("RESP3: the other masters' notifications come as the server's pushes", async () => {
      const keys = await backend.onePerMaster("r3:");
      const ask = ["PSUBSCRIBE", "__keyevent@0__:hset"];
      const expected: string[] = [];
      for (const port of [single.port, proxy.port]) {
        const sub = await rawIn(port, "3");
        const start = sub.text.length;
        sub.socket.write(encode(ask));
        await sub.wait(start, 1, "PSUBSCRIBE");
        const writer = await connect(port);
        for (const key of keys) await writer.call("HSET", key, "f", "v");
        const want = expected[0];
        const text = await eventually(
          async () => sub.text.slice(start),
          (t) => (want === undefined ? (t.match(/pmessage/g) ?? []).length === 3 : t.length >= want.length),
          "three pushes",
        );
        sub.socket.destroy();
        // The proxy's order is each master's own; compare the pushes as a set.
        expected.push(text);
      }
      const split = (t: string): string[] =>
        t
          .split(">")
          .filter((x) => x !== "")
          .sort();
      expect(split(expected[1])).to.deep.equal(split(expected[0]));
    });
  });
});

describe("mayReceiveNotifications", () => {
  it("channels by their prefix, patterns by their literal start", () => {
    expect(mayReceiveNotifications("subscribe", "__keyspace@0__:k")).to.equal(true);
    expect(mayReceiveNotifications("subscribe", "__keyevent@3__:set")).to.equal(true);
    expect(mayReceiveNotifications("subscribe", "news")).to.equal(false);
    expect(mayReceiveNotifications("subscribe", "__key*")).to.equal(false);
    for (const pattern of [
      "*",
      "__key*",
      "__keyspace@*",
      "__keyevent@0__:*",
      "?_keyspace@0__:k",
      "*set",
      "_[_]key*",
    ])
      expect(mayReceiveNotifications("psubscribe", pattern), pattern).to.equal(true);
    for (const pattern of ["news*", "__keyspace@0__:k", "n?ws", "__keyevents*"])
      expect(mayReceiveNotifications("psubscribe", pattern), pattern).to.equal(
        pattern === "__keyspace@0__:k",
      );
  });
});

for (const mode of ["standalone", "cluster"] as const) {
  describe(`keyspace notifications of the proxy's own keys, in front of ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
    });

    after(async () => {
      await proxy?.close();
      await backend?.stop();
    });

    it("a client subscribed to every notification gets its own keys' and none of the proxy's", async () => {
      const sub = await RawClient.connect(proxy.port);
      const c = await RawClient.connect(proxy.port);
      try {
        expect(await c.call("CONFIG", "SET", "notify-keyspace-events", "KEA")).to.equal("OK");
        await sub.call("PSUBSCRIBE", "__key*");
        // Loading a library writes the proxy's library keys; a stream trigger takes leases.
        const code = [
          "#!js api_version=1.0 name=own",
          "redis.registerStreamTrigger('st', 'own:s', (client, data) => {});",
        ].join("\n");
        expect(await c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
        await c.call("XADD", "own:s", "*", "f", "v");
        await c.call("SET", "own:k", "v");
        const got: string[][] = [];
        while (!got.some((m) => m[2] === "__keyevent@0__:set" && m[3] === "own:k"))
          got.push(toText(await sub.next(3000)) as string[]);
        expect(got.filter((m) => m.join(" ").includes("gears-proxy"))).to.deep.equal([]);
        expect(got.map((m) => m[2])).to.include("__keyevent@0__:xadd");
      } finally {
        await c.call("TFUNCTION", "DELETE", "own").catch(() => undefined);
        sub.close();
        c.close();
      }
    });

    it("PUBSUB CHANNELS leaves out the channel the proxy subscribes for its leases", async () => {
      const c = await RawClient.connect(proxy.port);
      const code = [
        "#!js api_version=1.0 name=leases",
        "redis.registerKeySpaceTrigger('t', 'lease-owner:', (client, data) => {});",
      ].join("\n");
      try {
        expect(await c.call("TFUNCTION", "LOAD", code)).to.equal("OK");
        await c.call("SUBSCRIBE", "users-channel");
        const asker = await RawClient.connect(proxy.port);
        // On the server: the proxy's channel, where its lease keys are.
        const owner = await RawClient.connect((await backend.nodeOf("{gears-proxy}")).port);
        await eventually(
          async () => toText(await owner.call("PUBSUB", "CHANNELS")) as string[],
          (channels) => channels.some((ch) => ch.startsWith("{gears-proxy}")),
          "the proxy's leases channel subscribed",
        );
        owner.close();
        expect(toText(await asker.call("PUBSUB", "CHANNELS"))).to.deep.equal(["users-channel"]);
        expect(toText(await asker.call("PUBSUB", "CHANNELS", "*"))).to.deep.equal(["users-channel"]);
        asker.close();
      } finally {
        c.close();
        const d = await RawClient.connect(proxy.port);
        await d.call("TFUNCTION", "DELETE", "leases").catch(() => undefined);
        d.close();
      }
    });
  });
}
