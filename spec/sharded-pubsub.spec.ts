import net from "node:net";
import { expect } from "chai";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { decodeReply } from "../src/resp/decode.js";
import { encodeCommand } from "../src/resp/encode.js";
import { ReplyScanner } from "../src/resp/reply-scanner.js";
import { startProxy, type RunningProxy } from "./harness/index.js";
import { Backend } from "./support/backend.js";
import { eventually } from "./support/polling.js";
import { RawClient, toText } from "./support/raw-client.js";

// Shard channels of different shards on one client connection, through the proxy in front
// of a 3-master cluster: one SSUBSCRIBE's channels share a slot, successive ones may not.

describe("SSUBSCRIBE to shard channels of different shards on one connection", function () {
  this.timeout(60_000);
  let backend: Backend;
  let proxy: RunningProxy;

  before(async function () {
    this.timeout(120_000);
    backend = await Backend.start("cluster");
    proxy = await startProxy([{ port: backend.seed.port }]);
  });

  after(async () => {
    await proxy?.close();
    await backend?.stop();
  });

  /** SHARDNUMSUB of `channel` on the shard that owns it. */
  async function shardSubscribers(channel: string): Promise<number> {
    const owner = await backend.connect(channel);
    try {
      return Number((toText(await owner.call("PUBSUB", "SHARDNUMSUB", channel)) as (string | number)[])[1]);
    } finally {
      owner.close();
    }
  }

  it("RESP2: Redis's counts, every shard's messages, SUNSUBSCRIBE with and without channels", async () => {
    const channels = await backend.onePerMaster("sp2:");
    const sub = await RawClient.connect(proxy.port);
    const pub = await RawClient.connect(proxy.port);
    try {
      for (const [i, channel] of channels.entries()) {
        expect(toText(await sub.call("SSUBSCRIBE", channel))).to.deep.equal(["ssubscribe", channel, i + 1]);
        expect(await shardSubscribers(channel)).to.equal(1);
      }
      for (const channel of channels) {
        expect(await pub.call("SPUBLISH", channel, `to ${channel}`)).to.equal(1);
        expect(toText(await sub.next())).to.deep.equal(["smessage", channel, `to ${channel}`]);
      }
      // Subscribed, a RESP2 client may still PING (answered in subscriber form).
      expect(toText(await sub.call("PING"))).to.deep.equal(["pong", ""]);
      expect(toText(await sub.call("SUNSUBSCRIBE", channels[1]))).to.deep.equal([
        "sunsubscribe",
        channels[1],
        2,
      ]);
      expect(await shardSubscribers(channels[1])).to.equal(0);
      sub.send("SUNSUBSCRIBE");
      const left = [toText(await sub.next()), toText(await sub.next())] as [string, string, number][];
      expect(left.map((f) => f[2])).to.deep.equal([1, 0]);
      expect(left.map((f) => f[1]).sort()).to.deep.equal([channels[0], channels[2]].sort());
      expect(toText(await sub.call("SUNSUBSCRIBE"))).to.deep.equal(["sunsubscribe", null, 0]);
      // Out of subscriber mode: an ordinary command runs again.
      expect(toText(await sub.call("ECHO", "back"))).to.equal("back");
      for (const channel of channels) expect(await shardSubscribers(channel)).to.equal(0);
    } finally {
      sub.close();
      pub.close();
    }
  });

  it("RESP3, pipelined: each shard's confirmation takes its command's place, with the client's count", async () => {
    const channels = await backend.onePerMaster("sp3:");
    const socket = net.connect({ host: "127.0.0.1", port: proxy.port });
    const scanner = new ReplyScanner();
    const frames: unknown[] = [];
    // HELLO, three SSUBSCRIBE confirmations, three SUNSUBSCRIBE ones, PONG.
    const wanted = 8;
    try {
      const done = new Promise<void>((resolve, reject) => {
        socket.on("data", (chunk: Buffer) => {
          scanner.push(chunk);
          let frame: Buffer | null;
          while ((frame = scanner.next()) !== null) frames.push(decodeReply(Buffer.from(frame)));
          if (frames.length >= wanted) resolve();
        });
        socket.once("error", reject);
        setTimeout(() => reject(new Error(`only ${frames.length} of ${wanted} frames`)), 5000).unref();
      });
      const commands = [
        ["HELLO", "3"],
        ...channels.map((c) => ["SSUBSCRIBE", c]),
        ["SUNSUBSCRIBE"],
        ["PING"],
      ];
      socket.write(Buffer.concat(commands.map((c) => encodeCommand(c))));
      await done;
    } finally {
      socket.destroy();
    }
    const text = (v: unknown): unknown =>
      Buffer.isBuffer(v) ? v.toString() : Array.isArray(v) ? v.map(text) : v;
    const got = frames.slice(1).map(text) as [string, string, number][];
    expect(got.slice(0, 3)).to.deep.equal(channels.map((c, i) => ["ssubscribe", c, i + 1]));
    expect(got.slice(3, 6).map((f) => [f[0], f[2]])).to.deep.equal([
      ["sunsubscribe", 2],
      ["sunsubscribe", 1],
      ["sunsubscribe", 0],
    ]);
    expect(
      got
        .slice(3, 6)
        .map((f) => f[1])
        .sort(),
    ).to.deep.equal([...channels].sort());
    expect(got[6]).to.equal("PONG");
  });

  it("node-redis 6 (RESP3): sSubscribe on every shard, messages from each, a GET between, sUnsubscribe", async () => {
    const channels = await backend.onePerMaster("spnr:");
    const sub = createClient({ socket: { port: proxy.port, host: "127.0.0.1" } });
    const pub = createClient({ socket: { port: proxy.port, host: "127.0.0.1" } });
    sub.on("error", () => {});
    pub.on("error", () => {});
    await sub.connect();
    await pub.connect();
    try {
      const got: string[] = [];
      for (const channel of channels)
        await sub.sSubscribe(channel, (message, from) => got.push(`${from}|${message}`));
      await pub.set("spnr:key", "v");
      expect(await sub.get("spnr:key")).to.equal("v");
      for (const channel of channels) expect(await pub.sPublish(channel, "hi")).to.equal(1);
      await eventually(
        async () => [...got].sort(),
        (seen) => seen.length === 3,
        "a message from each shard",
      );
      expect([...got].sort()).to.deep.equal(channels.map((c) => `${c}|hi`).sort());
      await sub.sUnsubscribe(channels[0]);
      expect(await shardSubscribers(channels[0])).to.equal(0);
      expect(await pub.sPublish(channels[0], "gone")).to.equal(0);
      expect(await pub.sPublish(channels[2], "still")).to.equal(1);
      await eventually(
        async () => got.length,
        (n) => n === 4,
        "the message of a shard still subscribed",
      );
      expect(got[3]).to.equal(`${channels[2]}|still`);
    } finally {
      await sub.quit();
      await pub.quit();
    }
  });

  it("SUBSCRIBE, PSUBSCRIBE and SSUBSCRIBE mixed on one connection: each kind's count and messages", async () => {
    const channels = await backend.onePerMaster("spmix:");
    const sub = await RawClient.connect(proxy.port);
    const pub = await RawClient.connect(proxy.port);
    try {
      expect(toText(await sub.call("SUBSCRIBE", "mix:plain"))).to.deep.equal(["subscribe", "mix:plain", 1]);
      expect(toText(await sub.call("PSUBSCRIBE", "mixp:*"))).to.deep.equal(["psubscribe", "mixp:*", 2]);
      // Shard channels count apart from channels and patterns, as in Redis.
      for (const [i, channel] of channels.entries())
        expect(toText(await sub.call("SSUBSCRIBE", channel))).to.deep.equal(["ssubscribe", channel, i + 1]);
      // PUBLISH counts the receivers of the node it ran on (the cluster bus carries it on): no count.
      await pub.call("PUBLISH", "mix:plain", "a");
      expect(toText(await sub.next())).to.deep.equal(["message", "mix:plain", "a"]);
      await pub.call("PUBLISH", "mixp:1", "b");
      expect(toText(await sub.next())).to.deep.equal(["pmessage", "mixp:*", "mixp:1", "b"]);
      for (const channel of channels) {
        expect(await pub.call("SPUBLISH", channel, "c")).to.equal(1);
        expect(toText(await sub.next())).to.deep.equal(["smessage", channel, "c"]);
      }
      expect(toText(await sub.call("UNSUBSCRIBE", "mix:plain"))).to.deep.equal([
        "unsubscribe",
        "mix:plain",
        1,
      ]);
      expect(toText(await sub.call("PUNSUBSCRIBE", "mixp:*"))).to.deep.equal(["punsubscribe", "mixp:*", 0]);
      // Still subscribed to the shard channels: their messages keep coming.
      expect(await pub.call("SPUBLISH", channels[2], "d")).to.equal(1);
      expect(toText(await sub.next())).to.deep.equal(["smessage", channels[2], "d"]);
      sub.send("SUNSUBSCRIBE");
      const left = [toText(await sub.next()), toText(await sub.next()), toText(await sub.next())];
      expect(left.map((f) => (f as unknown[])[2])).to.deep.equal([2, 1, 0]);
      expect(toText(await sub.call("ECHO", "out"))).to.equal("out");
    } finally {
      sub.close();
      pub.close();
    }
  });

  it("ioredis: ssubscribe on each shard in turn (counts 1, 2, 3), smessage from each, sunsubscribe", async () => {
    const channels = await backend.onePerMaster("spio:");
    const sub = new Redis({ port: proxy.port, host: "127.0.0.1" });
    const pub = new Redis({ port: proxy.port, host: "127.0.0.1" });
    try {
      const got: string[] = [];
      sub.on("smessage", (channel: string, message: string) => got.push(`${channel}|${message}`));
      const counts: unknown[] = [];
      for (const channel of channels) counts.push(await sub.ssubscribe(channel));
      expect(counts).to.deep.equal([1, 2, 3]);
      for (const channel of channels) expect(await pub.spublish(channel, "io")).to.equal(1);
      await eventually(
        async () => got.length,
        (n) => n === 3,
        "a message from each shard",
      );
      expect([...got].sort()).to.deep.equal(channels.map((c) => `${c}|io`).sort());
      expect(await sub.sunsubscribe()).to.equal(0);
      for (const channel of channels) expect(await shardSubscribers(channel)).to.equal(0);
    } finally {
      sub.disconnect();
      pub.disconnect();
    }
  });
});
