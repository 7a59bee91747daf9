/**
 * An execution started through one proxy is reachable through any other proxy in front of the
 * same Redis (src/gears/executions-across-proxies.ts): RG.GETRESULTS(BLOCKING), GETEXECUTION
 * and DROPEXECUTION of its id on another proxy reach the proxy that ran it, through Redis
 * pub/sub; the id of a dead proxy gets the unknown-execution error.
 */
import { expect } from "chai";
import calculateSlot from "cluster-key-slot";
import { Redis } from "ioredis";
import { startCluster, startProxy, startRedis, type RedisCluster, type RedisNode } from "./harness/index.js";
import { ChildProxy, stopChildProxies } from "./support/child-proxy.js";
import { encode, ReceivedText } from "./support/raw-client.js";
import { eventually, sleep } from "./support/polling.js";
import { asArray, connect, outcome, rejection, str } from "./support/gears.js";

const NO_EXECUTION = "execution plan does not exist";
/** 20 keys at 50 ms each: about a second, so the other proxy asks while it runs. */
// Slow enough (20 keys x 200 ms, 1.4 s or more per shard) that B's first question, which
// subscribes first, finds it running on a loaded machine.
const SLOW_KEYS =
  "GB().map(x => { const t = Date.now(); while (Date.now() - t < 200) {} return x.key; }).run('k:*')";
const KEYS = Array.from({ length: 20 }, (_, i) => `k:${i}`);

/** A connection that does not reconnect (its proxy may be killed on purpose). */
function connectOnce(port: number): Redis {
  const c = connect(port, { retryStrategy: () => null });
  c.on("error", () => {});
  return c;
}

/** The bytes of the reply to `args` on a connection that said HELLO `proto` first. */
async function replyBytes(port: number, proto: 2 | 3, args: string[]): Promise<string> {
  const received = await ReceivedText.open(port);
  const settled = async (): Promise<number> => {
    // Replies come whole within a moment here; the text stops growing once they are in.
    let length = -1;
    while (length !== received.text.length || length === 0) {
      length = received.text.length;
      await sleep(100);
    }
    return length;
  };
  try {
    received.socket.write(encode(["HELLO", String(proto)]));
    const helloEnd = await settled();
    received.socket.write(encode(args));
    await settled();
    return received.text.slice(helloEnd);
  } finally {
    received.socket.destroy();
  }
}

/** What each proxy says of one execution, once it finished: the same through either. */
async function sameThroughBoth(a: Redis, b: Redis, id: string): Promise<void> {
  const onB = outcome(await b.call("RG.GETRESULTSBLOCKING", id), "RG.GETRESULTSBLOCKING on B");
  expect(onB.errors).to.deep.equal([]);
  expect(onB.results.map(String).sort()).to.deep.equal([...KEYS].sort());
  expect(await a.call("RG.GETRESULTSBLOCKING", id)).to.deep.equal(await b.call("RG.GETRESULTSBLOCKING", id));
  expect(await b.call("RG.GETRESULTS", id)).to.deep.equal(await a.call("RG.GETRESULTS", id));
  const execution = await b.call("RG.GETEXECUTION", id);
  expect(execution).to.deep.equal(await a.call("RG.GETEXECUTION", id));
  const plan = asArray(asArray(asArray(execution, "RG.GETEXECUTION")[0], "shard")[3], "plan");
  expect(plan.slice(0, 2)).to.deep.equal(["status", "done"]);
}

/** RG.DROPEXECUTION through B drops it on A. */
async function dropThroughOther(a: Redis, b: Redis, id: string): Promise<void> {
  expect(await b.call("RG.DROPEXECUTION", id)).to.equal("OK");
  expect(await rejection(a.call("RG.GETRESULTS", id))).to.include(NO_EXECUTION);
  expect(await rejection(b.call("RG.GETRESULTS", id))).to.include(NO_EXECUTION);
}

describe("gears: executions across proxies, when Redis refuses the proxies' channel", function () {
  this.timeout(30_000);
  let redis: RedisNode;
  before(async () => {
    redis = await startRedis();
    // An ACL user with every command and key, but no pub/sub channel.
    await redis.call("ACL", "SETUSER", "proxy", "on", ">pw", "~*", "+@all", "resetchannels");
  });
  after(async () => redis.stop());

  it("RG.EXECUTE UNBLOCKING still answers, and another proxy says the execution is unknown", async () => {
    const user = { upstreamUser: "proxy", upstreamPassword: "pw" };
    const proxyA = await startProxy([{ port: redis.port }], user);
    const proxyB = await startProxy([{ port: redis.port }], user);
    const a = connectOnce(proxyA.port);
    const b = connectOnce(proxyB.port);
    try {
      const started = Date.now();
      const id = str(await a.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
      expect(Date.now() - started, "RG.EXECUTE waits for the channel at most a few seconds").to.be.below(
        5000,
      );
      expect(outcome(await a.call("RG.GETRESULTSBLOCKING", id)).errors).to.deep.equal([]);
      expect(await rejection(b.call("RG.GETRESULTS", id))).to.include(NO_EXECUTION);
    } finally {
      a.disconnect();
      b.disconnect();
      await proxyA.close();
      await proxyB.close();
    }
  });
});

describe("gears: executions across proxies, with the proxies' own ACL users", function () {
  this.timeout(30_000);

  // The channel takes questions from anyone who can PUBLISH (a client of the proxy too): with
  // users who may each read only their own executions, it is not opened.
  it("another proxy says the execution is unknown, and a question published by a client gets no answer", async () => {
    const redis = await startRedis();
    const users = { users: ["default on nopass ~* &* +@all"] };
    const proxyA = await startProxy([{ port: redis.port }], users);
    const proxyB = await startProxy([{ port: redis.port }], users);
    const a = connectOnce(proxyA.port);
    const b = connectOnce(proxyB.port);
    try {
      const id = str(await a.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
      expect(outcome(await a.call("RG.GETRESULTSBLOCKING", id)).errors).to.deep.equal([]);
      expect(await rejection(b.call("RG.GETRESULTS", id))).to.include(NO_EXECUTION);
      const owner = `{gears-proxy}:executions:${id.split("-")[0]}`;
      // Seen on Redis itself: no proxy listens there.
      expect(await redis.call("PUBSUB", "NUMSUB", owner)).to.deep.equal([owner, 0]);
    } finally {
      for (const c of [a, b]) c.disconnect();
      await proxyA.close();
      await proxyB.close();
      await redis.stop();
    }
  });
});

describe("gears: an execution is reachable through any proxy in front of the same Redis", function () {
  this.timeout(60_000);
  const clients: Redis[] = [];
  const client = (port: number): Redis => {
    const c = connectOnce(port);
    clients.push(c);
    return c;
  };
  afterEach(async () => {
    for (const c of clients.splice(0)) c.disconnect();
    await stopChildProxies();
  });

  for (const topology of ["one redis-server", "a 3-master cluster"] as const) {
    describe(topology, () => {
      let redis: RedisNode | null = null;
      let cluster: RedisCluster | null = null;
      let seed: { port: number };

      before(async () => {
        if (topology === "one redis-server") {
          redis = await startRedis();
          seed = { port: redis.port };
        } else {
          cluster = await startCluster({ masters: 3 });
          seed = { port: cluster.nodes[0].port };
        }
      });
      after(async () => {
        await redis?.stop();
        await cluster?.stop();
      });

      it("RG.GETRESULTSBLOCKING, GETRESULTS, GETEXECUTION and DROPEXECUTION of A's execution on B", async () => {
        const proxyA = await startProxy([seed]);
        const proxyB = await startProxy([seed]);
        const a = client(proxyA.port);
        const b = client(proxyB.port);
        for (const k of KEYS) await a.set(k, "1");
        const id = str(await a.call("RG.EXECUTE", SLOW_KEYS, "UNBLOCKING"));
        // Asked at once, while it runs: B waits for it as A would.
        expect(await rejection(b.call("RG.GETRESULTS", id))).to.include("execution is still running");
        await sameThroughBoth(a, b, id);
        await dropThroughOther(a, b, id);
        // The proxies' channels are theirs: PUBSUB CHANNELS through a proxy leaves them out.
        const channels = asArray(await b.call("PUBSUB", "CHANNELS"), "PUBSUB CHANNELS").map(String);
        expect(channels.filter((c) => c.includes(":executions:"))).to.deep.equal([]);
        if (redis !== null) {
          const direct = asArray(await redis.call("PUBSUB", "CHANNELS", "*:executions:*"), "PUBSUB CHANNELS");
          // A's, and B's (it listens for the answers to its questions).
          expect(direct).to.have.length(2);
          expect(direct.map(String)).to.include(`{gears-proxy}:executions:${id.split("-")[0]}`);
        }
        await proxyA.close();
        await proxyB.close();
      });

      it("RG.DUMPEXECUTIONS through either proxy lists both proxies' executions, in one order; a closed proxy's are gone", async () => {
        const proxyA = await startProxy([seed]);
        const proxyB = await startProxy([seed]);
        const a = client(proxyA.port);
        const b = client(proxyB.port);
        const ids = (reply: unknown): string[] =>
          asArray(reply, "RG.DUMPEXECUTIONS").map((e) => str(asArray(e, "entry")[1]));
        const onA = str(await a.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
        const onB = str(await b.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
        await a.call("RG.GETRESULTSBLOCKING", onA);
        await b.call("RG.GETRESULTSBLOCKING", onB);
        const listed = ids(await a.call("RG.DUMPEXECUTIONS"));
        expect(listed).to.include.members([onA, onB]);
        expect(ids(await b.call("RG.DUMPEXECUTIONS"))).to.deep.equal(listed);
        await proxyA.close();
        expect(ids(await b.call("RG.DUMPEXECUTIONS"))).to.deep.equal(listed.filter((id) => id !== onA));
        await proxyB.close();
      });

      it("a RESP3 and a RESP2 client get through B the bytes A gives them", async () => {
        const proxyA = await startProxy([seed]);
        const proxyB = await startProxy([seed]);
        const a = client(proxyA.port);
        const script =
          "GB('ShardsIDReader').collect().limit(1).map(() => ({n: 1, o: {t: true}})).run({convertToStr: false})";
        const id = str(await a.call("RG.EXECUTE", script, "UNBLOCKING"));
        await a.call("RG.GETRESULTSBLOCKING", id);
        const resp3 = await Promise.all(
          [proxyA, proxyB].map((p) => replyBytes(p.port, 3, ["RG.GETRESULTS", id])),
        );
        expect(resp3[0]).to.match(/^\*2\r\n\*1\r\n/);
        expect(resp3[1]).to.equal(resp3[0]);
        const resp2 = await Promise.all(
          [proxyA, proxyB].map((p) => replyBytes(p.port, 2, ["RG.GETRESULTS", id])),
        );
        expect(resp2[0]).to.match(/^\*2\r\n\*1\r\n\*4\r\n/);
        expect(resp2[1]).to.equal(resp2[0]);
        await proxyA.close();
        await proxyB.close();
      });

      it("a reply of several MB comes through B whole (published in parts)", async () => {
        const proxyA = await startProxy([seed]);
        const proxyB = await startProxy([seed]);
        const a = client(proxyA.port);
        const b = client(proxyB.port);
        const value = "v".repeat(1000);
        for (let i = 0; i < 3000; i += 500) {
          const p = a.pipeline();
          for (let j = i; j < i + 500; j++) p.set(`big:${j}`, value + j);
          await p.exec();
        }
        const id = str(await a.call("RG.EXECUTE", "GB().map(x => x.value).run('big:*')", "UNBLOCKING"));
        const onB = outcome(await b.call("RG.GETRESULTSBLOCKING", id));
        expect(onB.results).to.have.length(3000);
        expect(onB.results.map(String).sort()).to.deep.equal(
          Array.from({ length: 3000 }, (_, j) => value + j).sort(),
        );
        await proxyA.close();
        await proxyB.close();
      });

      /** Proxies A and B (ScriptTimeoutMS 60 s), and an execution on A that runs `ms` on each shard. */
      async function busyOnA(ms: number) {
        const long = { gearsConfig: { ScriptTimeoutMS: "60000" } };
        const proxyA = await startProxy([seed], long);
        const proxyB = await startProxy([seed], long);
        const a = client(proxyA.port);
        const b = client(proxyB.port);
        const script = `GB('ShardsIDReader').map(x => { const t = Date.now(); while (Date.now() - t < ${ms}) {} return x; }).run()`;
        const id = str(await a.call("RG.EXECUTE", script, "UNBLOCKING"));
        return { proxyA, proxyB, a, b, id };
      }

      /** Every node of the topology (the proxies subscribe on the proxy keys' master). */
      const nodes = (): RedisNode[] => (redis !== null ? [redis] : cluster!.nodes);

      it("RG.GETRESULTSBLOCKING on B gets the result though the proxies' subscriptions are killed while it waits", async () => {
        const { proxyA, proxyB, a, b, id } = await busyOnA(4000);
        // B's question reached A (B waits on it), then A's and B's channels are cut, three
        // times: each time both are without a subscription for a moment (A's is the owner's gap).
        expect(await rejection(b.call("RG.GETRESULTS", id))).to.include("execution is still running");
        const waiting = b.call("RG.GETRESULTSBLOCKING", id).catch((err: Error) => err.message);
        for (let i = 0; i < 3; i++) {
          await sleep(600);
          for (const node of nodes()) await node.call("CLIENT", "KILL", "TYPE", "pubsub");
        }
        const onB = outcome(await waiting, "RG.GETRESULTSBLOCKING on B");
        expect(onB.errors).to.deep.equal([]);
        expect(onB).to.deep.equal(outcome(await a.call("RG.GETRESULTS", id)));
        expect(onB.results).to.have.length(redis !== null ? 1 : 3);
        await proxyA.close();
        await proxyB.close();
      });

      it("a reply past Redis's pubsub output limit reaches a proxy that stops reading for a while (parts acknowledged)", async () => {
        // 6 MB hard limit; about 24 MB of reply, published while B does not read (SIGSTOP): without
        // waiting for B's acknowledgements A would fill B's output buffer past the limit.
        const limits = await Promise.all(
          nodes().map((n) => n.call("CONFIG", "GET", "client-output-buffer-limit")),
        );
        for (const node of nodes())
          await node.call("CONFIG", "SET", "client-output-buffer-limit", "pubsub 6mb 6mb 60");
        try {
          const proxyA = await startProxy([seed], { gearsConfig: { ScriptTimeoutMS: "60000" } });
          const proxyB = await ChildProxy.start({ upstreams: [seed] });
          const a = client(proxyA.port);
          const b = client(proxyB.port);
          const value = "w".repeat(10_000);
          for (let i = 0; i < 2400; i += 200) {
            const p = a.pipeline();
            for (let j = i; j < i + 200; j++) p.set(`huge:${j}`, value + j);
            await p.exec();
          }
          // About 1.2 s of work: it ends while B is stopped.
          const script =
            "GB().map(x => { const t = Date.now(); while (Date.now() - t < 0.5) {} return x.value; }).run('huge:*')";
          const id = str(await a.call("RG.EXECUTE", script, "UNBLOCKING"));
          const waiting = b.call("RG.GETRESULTSBLOCKING", id).catch((err: Error) => err.message);
          await sleep(300);
          proxyB.signal("SIGSTOP");
          // The reply is published while B is stopped: held until the execution is done on A,
          // then a second (A waits for B's acks after 4 MB; it would stop waiting after 5 s).
          await a.call("RG.GETRESULTSBLOCKING", id);
          await sleep(1000);
          proxyB.signal("SIGCONT");
          const onB = outcome(await waiting, "RG.GETRESULTSBLOCKING on B");
          expect(onB.errors).to.deep.equal([]);
          expect(onB.results).to.have.length(2400);
          expect(new Set(onB.results.map(String))).to.deep.equal(
            new Set(Array.from({ length: 2400 }, (_, j) => value + j)),
          );
          // Whole at the first try: B's channel was never cut.
          expect(proxyB.output()).to.not.include("lost the channel other proxies answer on");
          await proxyA.close();
        } finally {
          for (const [i, node] of nodes().entries()) {
            const setting = asArray(limits[i], "CONFIG GET").map(String)[1];
            await node.call("CONFIG", "SET", "client-output-buffer-limit", setting);
          }
        }
      });

      it("RG.ABORTEXECUTION on B aborts A's running execution", async () => {
        const { proxyA, proxyB, a, b, id } = await busyOnA(30000);
        const started = Date.now();
        expect(await b.call("RG.ABORTEXECUTION", id)).to.equal("OK");
        expect(Date.now() - started, "aborted, not run to its end").to.be.below(10_000);
        const plan = asArray(
          asArray(asArray(await a.call("RG.GETEXECUTION", id), "shard")[0], "shard")[3],
          "plan",
        );
        expect(plan.slice(0, 2)).to.deep.equal(["status", "aborted"]);
        await proxyA.close();
        await proxyB.close();
      });

      it("the id of a SIGKILLed proxy: the unknown-execution error within a few seconds", async () => {
        const dying = await ChildProxy.start({
          upstreams: [seed],
          gearsConfig: { ScriptTimeoutMS: "60000" },
        });
        const proxyB = await startProxy([seed]);
        const a = client(dying.port);
        const b = client(proxyB.port);
        const done = str(await a.call("RG.EXECUTE", "GB('ShardsIDReader').run()", "UNBLOCKING"));
        await a.call("RG.GETRESULTSBLOCKING", done);
        // Runs 30 s: B's RG.GETRESULTSBLOCKING waits on it until its proxy dies.
        const running = str(
          await a.call(
            "RG.EXECUTE",
            "GB('ShardsIDReader').map(x => { const t = Date.now(); while (Date.now() - t < 30000) {} return x; }).run()",
            "UNBLOCKING",
          ),
        );
        expect(await rejection(b.call("RG.GETRESULTS", running))).to.include("execution is still running");
        const waiting = rejection(b.call("RG.GETRESULTSBLOCKING", running));
        await dying.kill();
        const killedAt = Date.now();
        expect(await waiting).to.include(NO_EXECUTION);
        expect(Date.now() - killedAt, "the blocked client answered soon after the kill").to.be.below(3000);
        for (const command of ["RG.GETRESULTS", "RG.GETEXECUTION", "RG.GETRESULTSBLOCKING"]) {
          const started = Date.now();
          expect(await rejection(b.call(command, done))).to.include(NO_EXECUTION);
          expect(Date.now() - started, `${command} of a dead proxy's id`).to.be.below(3000);
        }
        await proxyB.close();
      });

      it("with --threads 2 on one side: the threads are asked first, then the other proxies", async () => {
        const threaded = await ChildProxy.start({ upstreams: [seed], args: ["--threads", "2"] });
        const proxyA = await startProxy([seed]);
        const a = client(proxyA.port);
        await a.mset(Object.fromEntries(KEYS.map((k) => [k, "1"])));
        const id = str(await a.call("RG.EXECUTE", SLOW_KEYS, "UNBLOCKING"));
        // Fresh connections: the supervisor deals them to either thread.
        for (let i = 0; i < 4; i++) {
          const t = client(threaded.port);
          await sameThroughBoth(a, t, id);
        }
        // The other way: an execution of one of the threads, through the other proxy.
        const t = client(threaded.port);
        const theirs = str(await t.call("RG.EXECUTE", SLOW_KEYS, "UNBLOCKING"));
        await sameThroughBoth(t, a, theirs);
        await dropThroughOther(a, client(threaded.port), id);
        await proxyA.close();
      });
    });
  }
});

describe("gears: executions across proxies, through a failover of the proxy keys' slot", function () {
  this.timeout(90_000);
  let cluster: RedisCluster;
  const clients: Redis[] = [];
  before(async () => {
    cluster = await startCluster({ masters: 3, replicasPerMaster: 1 });
  });
  after(async () => {
    for (const c of clients.splice(0)) c.disconnect();
    await cluster.stop();
  });

  it("RG.GETRESULTSBLOCKING on B, asked before the failover, gets A's result after it", async () => {
    const seed = { port: cluster.nodes[0].port };
    const long = { gearsConfig: { ScriptTimeoutMS: "60000" } };
    const proxyA = await startProxy([seed], long);
    const proxyB = await startProxy([seed], long);
    const a = connectOnce(proxyA.port);
    const b = connectOnce(proxyB.port);
    clients.push(a, b);
    const script =
      "GB('ShardsIDReader').map(x => { const t = Date.now(); while (Date.now() - t < 2000) {} return x; }).run()";
    const id = str(await a.call("RG.EXECUTE", script, "UNBLOCKING"));
    expect(await rejection(b.call("RG.GETRESULTS", id))).to.include("execution is still running");
    const waiting = b.call("RG.GETRESULTSBLOCKING", id).catch((err: Error) => err.message);
    // Both proxies listen on the proxy keys' master: its replica takes over.
    const master = await cluster.nodeForSlot(calculateSlot("{gears-proxy}"));
    let replica: RedisNode | undefined;
    for (const node of await cluster.replicas()) {
      const text = String(await node.call("INFO", "replication"));
      if (new RegExp(`^master_port:${master.port}\\r?$`, "m").test(text)) replica = node;
    }
    expect(await replica!.call("CLUSTER", "FAILOVER")).to.equal("OK");
    await eventually(
      () => replica!.call("ROLE").then((r) => (Array.isArray(r) ? String(r[0]) : "")),
      (role) => role === "master",
      "the replica took over",
    );
    const onB = outcome(await waiting, "RG.GETRESULTSBLOCKING on B");
    expect(onB.errors).to.deep.equal([]);
    expect(onB).to.deep.equal(outcome(await a.call("RG.GETRESULTS", id)));
    // And a new question after it, through B.
    expect(await b.call("RG.GETRESULTS", id)).to.deep.equal(await a.call("RG.GETRESULTS", id));
    await proxyA.close();
    await proxyB.close();
  });
});
