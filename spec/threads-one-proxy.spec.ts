import { expect } from "chai";
import { Backend } from "./support/backend.js";
import { ChildProxy } from "./support/child-proxy.js";
import { RawClient, ReplyError, toText } from "./support/raw-client.js";
import { connectionsOnBothThreads } from "./support/thread-connections.js";

// A --threads proxy is one proxy to its users: a library loaded, a session registered or a
// registration removed through one connection is in place on every thread when the reply
// comes. The threads used to find each other's changes at their next poll of the store (about
// a second): a TFCALL right after TFUNCTION LOAD, sent on a connection of the other thread,
// answered "Unknown library", and RG.DUMPREGISTRATIONS differed between connections. Each
// thread also counted only the events it ran (those of the shards it holds): its counters are
// now summed into one listing, and RG.CLEARREGISTRATIONSSTATS clears every thread's.

const CONNECTIONS = 6;

describe("--threads 2: what one thread stores or sets is in place on every thread when its client is answered", function () {
  this.timeout(120_000);
  let backend: Backend;
  let proxy: ChildProxy;
  const conns: RawClient[] = [];

  before(async function () {
    this.timeout(120_000);
    backend = await Backend.start("standalone");
    proxy = await ChildProxy.start({ upstreams: [backend.seed], args: ["--threads", "2"] });
    conns.push(...(await connectionsOnBothThreads(proxy.port, CONNECTIONS)));
  });
  after(async () => {
    for (const c of conns.splice(0)) c.close();
    await proxy?.kill();
    await backend?.stop();
  });

  /** The same command on every connection at once, as text. */
  const everywhere = (...args: string[]): Promise<unknown[]> =>
    Promise.all(
      conns.map(async (c) => {
        const reply = await c.call(...args);
        return reply instanceof ReplyError ? reply.message : toText(reply);
      }),
    );

  it("TFUNCTION LOAD, then TFCALL on every connection: each answers; after TFUNCTION DELETE none does", async () => {
    for (let n = 0; n < 8; n++) {
      const code = `#!js api_version=1.0 name=tsf${n}\nredis.registerFunction('f', () => 'from ${n}');`;
      expect(toText(await conns[n % CONNECTIONS].call("TFUNCTION", "LOAD", code))).to.equal("OK");
      expect(await everywhere("TFCALL", `tsf${n}.f`, "0")).to.deep.equal(
        Array(CONNECTIONS).fill(`from ${n}`),
      );
    }
    for (let n = 0; n < 8; n++) {
      expect(toText(await conns[(n + 1) % CONNECTIONS].call("TFUNCTION", "DELETE", `tsf${n}`))).to.equal(
        "OK",
      );
      expect(await everywhere("TFCALL", `tsf${n}.f`, "0")).to.deep.equal(
        Array(CONNECTIONS).fill(`Unknown library tsf${n}`),
      );
    }
  });

  it("RG.CONFIGSET and CONFIG SET of T&F's settings: every connection reads the new value at once", async () => {
    for (let n = 0; n < 4; n++) {
      const idle = String(6000 + n);
      const lock = String(600 + n);
      expect(
        toText(await conns[n % CONNECTIONS].call("RG.CONFIGSET", "ExecutionMaxIdleTime", idle)),
      ).to.deep.equal(["OK"]);
      expect(await everywhere("RG.CONFIGGET", "ExecutionMaxIdleTime")).to.deep.equal(
        Array(CONNECTIONS).fill([Number(idle)]),
      );
      const set = await conns[(n + 1) % CONNECTIONS].call(
        "CONFIG",
        "SET",
        "redisgears_2.lock-redis-timeout",
        lock,
      );
      expect(toText(set)).to.equal("OK");
      expect(await everywhere("CONFIG", "GET", "redisgears_2.lock-redis-timeout")).to.deep.equal(
        Array(CONNECTIONS).fill(["redisgears_2.lock-redis-timeout", lock]),
      );
    }
    // RG.CONFIGSET of T&F's settings, pair by pair (one refused): the same on every thread.
    const mixed = (await conns[2].call(
      "RG.CONFIGSET",
      "redisgears_2.lock-redis-timeout",
      "777",
      "redisgears_2.error-verbosity",
      "9",
    )) as unknown[];
    expect(mixed[0]).to.equal("OK");
    expect(mixed[1]).to.be.instanceOf(ReplyError);
    expect(await everywhere("CONFIG", "GET", "redisgears_2.lock-redis-timeout")).to.deep.equal(
      Array(CONNECTIONS).fill(["redisgears_2.lock-redis-timeout", "777"]),
    );
    // A refused value is refused on every thread alike: the old one stays everywhere.
    const refused = (await conns[0].call("RG.CONFIGSET", "ExecutionMaxIdleTime", "x")) as unknown[];
    expect(refused[0]).to.be.instanceOf(ReplyError);
    expect(await everywhere("RG.CONFIGGET", "ExecutionMaxIdleTime")).to.deep.equal(
      Array(CONNECTIONS).fill([6003]),
    );
  });

  it("RG.EXECUTE of a registration, then RG.UNREGISTER: RG.DUMPREGISTRATIONS agrees on every connection at once", async () => {
    const ids: string[] = [];
    for (let n = 0; n < 6; n++) {
      const script = `GB().foreach(x => execute('SADD', 'tsf:seen', x.key)).register('tsf${n}:*')`;
      expect(toText(await conns[n % CONNECTIONS].call("RG.EXECUTE", script))).to.equal("OK");
      const dumps = (await everywhere("RG.DUMPREGISTRATIONS")) as unknown[][];
      expect(dumps.map((d) => d.length)).to.deep.equal(Array(CONNECTIONS).fill(n + 1));
      ids.push(...(dumps[0].map((r) => (r as string[])[1]) as string[]).filter((id) => !ids.includes(id)));
    }
    for (const [n, id] of ids.entries()) {
      expect(toText(await conns[(n + 2) % CONNECTIONS].call("RG.UNREGISTER", id))).to.equal("OK");
      const dumps = (await everywhere("RG.DUMPREGISTRATIONS")) as unknown[][];
      expect(dumps.map((d) => d.length)).to.deep.equal(Array(CONNECTIONS).fill(ids.length - n - 1));
    }
  });

  it("RG.DUMPREGISTRATIONS counts every thread's events, the same on every connection; RG.CLEARREGISTRATIONSSTATS clears them all", async () => {
    const script = "GB().foreach(x => execute('SADD', 'tsc:seen', x.key)).register('tsc:k*', {mode: 'sync'})";
    expect(toText(await conns[1].call("RG.EXECUTE", script))).to.equal("OK");
    // Writes through every connection: each thread's, counted by the thread holding the shard.
    for (let i = 0; i < 24; i++) await conns[i % CONNECTIONS].call("SET", `tsc:k${i}`, "v");
    const counters = async (): Promise<string[]> =>
      ((await everywhere("RG.DUMPREGISTRATIONS")) as unknown[][][]).map((dump) => {
        // The test before removed every other registration.
        expect(dump).to.have.length(1);
        const reg = dump[0];
        const data = reg[reg.indexOf("RegistrationData") + 1] as unknown[];
        const field = (name: string): unknown => data[data.indexOf(name) + 1];
        return `${field("numTriggered")}/${field("numSuccess")}/${field("numFailures")}`;
      });
    expect(await counters()).to.deep.equal(Array(CONNECTIONS).fill("24/24/0"));
    expect(toText(await conns[4].call("RG.CLEARREGISTRATIONSSTATS"))).to.equal("OK");
    expect(await counters()).to.deep.equal(Array(CONNECTIONS).fill("0/0/0"));
  });
});
