import { expect } from "chai";
import { createClient } from "redis";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend, BACKEND_MODES } from "./support/backend.js";
import { ChildProxy } from "./support/child-proxy.js";
import { eventually } from "./support/polling.js";
import { RawClient, toText } from "./support/raw-client.js";

// The proxy publishes on channels of its own: sync answers between the proxies (and threads)
// that share registrations (`gears-proxy:synced:<id>`), lease releases
// (`{gears-proxy}:leases-released`) and executions asked across proxies
// (`{gears-proxy}:executions:<id>`). PUBSUB CHANNELS leaves them out; a client's `PSUBSCRIBE *`
// got their messages, so a monitoring subscriber saw the proxy talk to itself (with --threads 2
// and a `sync` registration, a message for about every other write).

const PROXY_CHANNELS = [
  "gears-proxy:synced:abc",
  "{gears-proxy}:leases-released",
  "{gears-proxy}:executions:abc",
];

/** The pmessage frames `sub` gets until `count` of them are on `end`, as [pattern, channel]. */
async function pmessagesUntil(sub: RawClient, end: string, count = 1): Promise<string[][]> {
  const frames: string[][] = [];
  while (frames.filter(([, channel]) => channel === end).length < count) {
    const frame = toText(await sub.next()) as string[];
    expect(frame[0]).to.equal("pmessage");
    frames.push([frame[1], frame[2]]);
  }
  return frames;
}

/** A RESP2 subscriber, subscribed to `patterns`. */
async function psubscribed(port: number, patterns: string[]): Promise<RawClient> {
  const sub = await RawClient.connect(port);
  sub.send("PSUBSCRIBE", ...patterns);
  for (let i = 0; i < patterns.length; i++) await sub.next();
  return sub;
}

for (const mode of BACKEND_MODES) {
  describe(`pub/sub: a client's patterns get no message of the proxy's own channels (${mode})`, function () {
    this.timeout(120_000);
    let backend: Backend;
    let proxy: RunningProxy;
    const clients: RawClient[] = [];

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
    });
    after(async () => {
      for (const c of clients.splice(0)) c.close();
      await proxy?.close();
      await backend?.stop();
    });

    it("PSUBSCRIBE * and patterns naming them (RESP2): only the users' messages; SUBSCRIBE of such a channel gets its own", async () => {
      // A pattern of 600 bytes, naming the proxy's prefix only at its end, puts the channel far
      // into each frame it matches.
      const long = `[${"x".repeat(600)}{]gears-proxy}:*`;
      const sub = await psubscribed(proxy.port, ["*", "gears*", "{gears-proxy}*", long, "user:*"]);
      clients.push(sub);
      const named = await RawClient.connect(proxy.port);
      clients.push(named);
      named.send("SUBSCRIBE", PROXY_CHANNELS[0]);
      await named.next();
      await publishAll();
      // "*" and "user:*" each match the user's channel (in no set order); the proxy's, nothing.
      const seen = await pmessagesUntil(sub, "user:news", 2);
      expect(seen.map(([pattern, channel]) => `${pattern} ${channel}`).sort()).to.deep.equal([
        "* user:news",
        "user:* user:news",
      ]);
      expect(toText(await named.next())).to.deep.equal(["message", PROXY_CHANNELS[0], "x"]);
    });

    it("node-redis with RESP3 (pushes): PSUBSCRIBE * gets the users' messages only", async () => {
      const sub = createClient({ socket: { port: proxy.port }, RESP: 3 });
      await sub.connect();
      try {
        const seen: string[] = [];
        let news!: () => void;
        const newsCame = new Promise<void>((resolve) => (news = resolve));
        await sub.pSubscribe("*", (_message, channel) => {
          seen.push(channel);
          if (channel === "user:news") news();
        });
        await publishAll();
        await newsCame;
        expect(seen).to.deep.equal(["user:news"]);
      } finally {
        await sub.close();
      }
    });

    /** The proxy's channels' messages published on the server itself, as the proxy publishes them, then a user's. */
    async function publishAll(): Promise<void> {
      const direct = await backend.connect("{06S}");
      clients.push(direct);
      for (const channel of PROXY_CHANNELS) await direct.call("PUBLISH", channel, "x");
      await direct.call("PUBLISH", "user:news", "hello");
    }

    it("a pattern that cannot match them still gets a user's channel named like one", async () => {
      const sub = await psubscribed(proxy.port, ["news:gears-proxy:*"]);
      clients.push(sub);
      const publisher = await RawClient.connect(proxy.port);
      clients.push(publisher);
      await publisher.call("PUBLISH", "news:gears-proxy:synced:1", "m");
      expect(toText(await sub.next())).to.deep.equal([
        "pmessage",
        "news:gears-proxy:*",
        "news:gears-proxy:synced:1",
        "m",
      ]);
    });
  });
}

describe("pub/sub: PSUBSCRIBE * through a --threads 2 proxy with a sync registration sees no sync answer", function () {
  this.timeout(120_000);
  let backend: Backend;
  let proxy: ChildProxy;
  const clients: RawClient[] = [];

  before(async function () {
    this.timeout(120_000);
    backend = await Backend.start("standalone");
    proxy = await ChildProxy.start({ upstreams: [backend.seed], args: ["--threads", "2"] });
  });
  after(async () => {
    for (const c of clients.splice(0)) c.close();
    await proxy?.kill();
    await backend?.stop();
  });

  it("writes through both threads: the subscriber gets their keyspace events and no gears-proxy channel", async () => {
    const admin = await RawClient.connect(proxy.port);
    clients.push(admin);
    const script = "GB().foreach(x => execute('SADD', 'ppc:seen', x.key)).register('ppc:k*', {mode: 'sync'})";
    expect(toText(await admin.call("RG.EXECUTE", script))).to.equal("OK");
    const sub = await psubscribed(proxy.port, ["*"]);
    clients.push(sub);
    // The sync answers, seen on the server itself: the writes below must have made some.
    const direct = await backend.connect();
    clients.push(direct);
    direct.send("PSUBSCRIBE", "gears-proxy:synced:*");
    await direct.next();
    let answers = 0;
    void (async () => {
      for (;;) if ((toText(await direct.next(60_000)) as string[])[0] === "pmessage") answers++;
    })().catch(() => {});
    // Connections are dealt to both threads: the writes of those on the thread that does not
    // hold the shard's lease wait for the holder's sync answer, published on its channel (once
    // that thread follows the registration: rounds until some were).
    const writers: RawClient[] = [];
    for (let i = 0; i < 8; i++) writers.push(await RawClient.connect(proxy.port));
    clients.push(...writers);
    let rounds = 0;
    await eventually(
      async () => {
        const round = rounds++;
        await Promise.all(writers.map((w, i) => w.call("SET", `ppc:k${round}:${i}`, "v")));
        return answers;
      },
      (n) => n >= 4,
      "writes answered by the other thread's sync answer",
    );
    await admin.call("PUBLISH", "ppc:end", "x");
    const channels = (await pmessagesUntil(sub, "ppc:end")).map(([, channel]) => channel);
    expect(channels.filter((c) => c.includes("gears-proxy"))).to.deep.equal([]);
    expect(channels.filter((c) => c === "__keyevent@0__:set")).to.have.length(8 * rounds);
    expect(toText(await admin.call("SCARD", "ppc:seen"))).to.equal(8 * rounds);
  });
});
