import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { Redis } from "ioredis";
import { freePort, startRedis, type RedisNode } from "./harness/index.js";
import { ChildProxy } from "./support/child-proxy.js";
import { eventually } from "./support/polling.js";
import { RawClient, ReceivedText, toText } from "./support/raw-client.js";

/**
 * Runs `ask` on a connection of its own, which the supervisor deals to either thread; a
 * failure (e.g. a connection dealt to a thread that is just dying) comes back as its text, so
 * a poll asks again on another connection instead of failing.
 */
async function onFreshConnection<T>(
  proxy: ChildProxy,
  ask: (client: Redis) => Promise<T>,
): Promise<T | string> {
  const client = new Redis({
    port: proxy.port,
    host: "127.0.0.1",
    maxRetriesPerRequest: 0,
    lazyConnect: true,
  });
  client.on("error", () => {});
  try {
    await client.connect();
    return await ask(client);
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  } finally {
    client.disconnect();
  }
}

/** A failed wait names what the proxy logged (a thread that exited, and why). */
async function withOutput<T>(proxy: ChildProxy, waiting: Promise<T>): Promise<T> {
  try {
    return await waiting;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`${message}\nproxy output:\n${proxy.output().slice(-8000)}`, { cause: err });
  }
}

/** Waits until INFO, asked on any connection, counts both threads (each answers the other's questions). */
async function bothThreadsReady(proxy: ChildProxy): Promise<void> {
  await withOutput(
    proxy,
    eventually(
      () => onFreshConnection(proxy, async (c) => String(await c.call("INFO", "proxy"))),
      (info) => /^threads:2\r?$/m.test(info),
      "both threads ready",
    ),
  );
}

/**
 * --threads 2 (src/threads/): two processes serve one port, each a whole proxy, and a user
 * sees one proxy: CLIENT LIST/KILL and INFO cover both, an execution is answered on either.
 */
describe("--threads: several event loops, one proxy (src/threads/)", function () {
  this.timeout(60_000);
  let redis: RedisNode;
  let proxy: ChildProxy;
  let metricsPort: number;
  const open: Redis[] = [];

  function connect(name: string): Redis {
    const client = new Redis({
      port: proxy.port,
      host: "127.0.0.1",
      connectionName: name,
      maxRetriesPerRequest: 0,
    });
    open.push(client);
    return client;
  }

  /** The pid of the thread serving this connection: INFO's process_id is the answering thread's. */
  async function threadOf(client: Redis): Promise<number> {
    const info = String(await client.call("INFO", "proxy"));
    return Number(/^process_id:(\d+)/m.exec(info)![1]);
  }

  /** Clients until two of them are on different threads (the supervisor deals them out in turn). */
  async function onTwoThreads(prefix: string): Promise<[Redis, Redis]> {
    const first = connect(`${prefix}0`);
    const pid = await threadOf(first);
    for (let i = 1; i < 8; i++) {
      const other = connect(`${prefix}${i}`);
      if ((await threadOf(other)) !== pid) return [first, other];
    }
    throw new Error("eight connections all landed on one thread");
  }

  before(async () => {
    redis = await startRedis();
    metricsPort = await freePort();
    proxy = await ChildProxy.start({
      upstreams: [{ port: redis.port }],
      args: ["--threads", "2", "--metrics-port", String(metricsPort)],
    });
    // PING answers once one thread listens: wait until both answer the others' questions.
    await bothThreadsReady(proxy);
  });
  afterEach(() => {
    for (const c of open.splice(0)) c.disconnect();
  });
  after(async () => {
    await proxy.stop();
    await redis.stop();
  });

  it("deals clients to both threads; CLIENT LIST from either shows them all, CLIENT KILL reaches across", async () => {
    const [a, b] = await onTwoThreads("lister");
    expect(await threadOf(a)).to.not.equal(await threadOf(b));
    const names = open.map((c) => c.options.connectionName);
    for (const client of [a, b]) {
      const list = String(await client.call("CLIENT", "LIST"));
      for (const name of names) expect(list).to.include(` name=${name} `);
      // Ids are unique across the threads.
      const ids = [...list.matchAll(/^id=(\d+) /gm)].map((m) => m[1]);
      expect(new Set(ids).size).to.equal(ids.length);
    }
    const bLine = String(await a.call("CLIENT", "LIST"))
      .split("\n")
      .find((l) => l.includes(` name=${b.options.connectionName} `))!;
    const bId = /^id=(\d+)/.exec(bLine)![1];
    expect(await a.call("CLIENT", "KILL", "ID", bId)).to.equal(1);
    await eventually(
      async () => String(await a.call("CLIENT", "LIST")),
      (list) => !list.includes(` name=${b.options.connectionName} `),
      "the client on the other thread killed",
    );
    // The old form, by address, too.
    const [c, d] = await onTwoThreads("addressed");
    const dLine = String(await c.call("CLIENT", "LIST"))
      .split("\n")
      .find((l) => l.includes(` name=${d.options.connectionName} `))!;
    expect(await c.call("CLIENT", "KILL", / addr=(\S+)/.exec(dLine)![1])).to.equal("OK");
    await eventually(
      async () => String(await c.call("CLIENT", "LIST")),
      (list) => !list.includes(` name=${d.options.connectionName} `),
      "the client killed by address",
    );
  });

  it("CLIENT UNBLOCK ends a blocking command of a client on the other thread", async () => {
    const [a, b] = await onTwoThreads("unblocker");
    const bId = Number(await b.call("CLIENT", "ID"));
    const blocked = b.call("BLPOP", "threads:nothing", "0");
    await eventually(
      async () => String(await a.call("CLIENT", "LIST")),
      (list) => list.split("\n").some((l) => l.startsWith(`id=${bId} `) && / flags=\S*b/.test(l)),
      "the client shown blocked",
    );
    // The proxy shows the client blocked once its BLPOP leaves for Redis; Redis may take a
    // moment more to block it there, when UNBLOCK answers 0: ask again until it ends it.
    await eventually(
      async () => Number(await a.call("CLIENT", "UNBLOCK", String(bId))),
      (n) => n === 1,
      "CLIENT UNBLOCK ended the BLPOP",
    );
    expect(await blocked).to.equal(null);
  });

  it("sums INFO's client and command counters over the threads", async () => {
    const [a] = await onTwoThreads("counter");
    const info = String(await a.call("INFO", "proxy"));
    const field = (name: string): number => Number(new RegExp(`^${name}:(\\d+)`, "m").exec(info)![1]);
    const lines = String(await a.call("CLIENT", "LIST"))
      .trim()
      .split("\n");
    expect(field("threads")).to.equal(2);
    expect(field("connected_clients")).to.equal(lines.length);
    expect(field("total_connections_received")).to.be.at.least(open.length);
  });

  it("SLOWLOG GET/LEN/RESET and CONFIG SET slowlog-* span the threads", async () => {
    const [a, b] = await onTwoThreads("slow");
    type Row = [number, number, number, string[], string, string];
    const rows = async (client: Redis): Promise<Row[]> =>
      (await client.call("SLOWLOG", "GET", "-1")) as Row[];
    const logged = (list: Row[], key: string): boolean =>
      list.some((r) => r[3][0].toLowerCase() === "set" && r[3][1] === key);
    try {
      // Set through one thread, it reaches the other: b's commands get logged too.
      expect(await a.call("CONFIG", "SET", "slowlog-log-slower-than", "0")).to.equal("OK");
      await eventually(
        async () => {
          await a.set("slow:a", "1");
          await b.set("slow:b", "1");
          const list = await rows(a);
          return [logged(list, "slow:a"), logged(list, "slow:b")];
        },
        ([fromA, fromB]) => fromA && fromB,
        "SLOWLOG GET from one thread lists both threads' commands",
      );
      const list = await rows(b);
      expect(logged(list, "slow:a") && logged(list, "slow:b")).to.equal(true);
      const ids = list.map((r) => r[0]);
      expect(new Set(ids).size).to.equal(ids.length);
      expect(list.map((r) => r[1])).to.deep.equal([...list.map((r) => r[1])].sort((x, y) => y - x));
      expect(await b.call("SLOWLOG", "GET", "1")).to.have.length(1);
      expect(Number(await b.call("SLOWLOG", "LEN"))).to.be.at.least(list.length);
      // RESET from one thread empties both.
      await a.call("CONFIG", "SET", "slowlog-log-slower-than", "-1");
      await eventually(
        async () => {
          await b.set("slow:after", "1");
          await a.call("SLOWLOG", "RESET");
          await b.set("slow:after", "1");
          return (await rows(b)).length;
        },
        (left) => left === 0,
        "SLOWLOG RESET from one thread empties both, and -1 stops logging on both",
      );
      expect(await a.call("SLOWLOG", "LEN")).to.equal(0);
    } finally {
      await a.call("CONFIG", "SET", "slowlog-log-slower-than", "10000");
    }
  });

  it("sums /metrics over the threads", async () => {
    const [a] = await onTwoThreads("scraped");
    const scrape = async (): Promise<[number, number]> => {
      const info = String(await a.call("INFO", "proxy"));
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const current = Number(/^gears_proxy_connections_current (\d+)/m.exec(text)?.[1] ?? NaN);
      return [current, Number(/^connected_clients:(\d+)/m.exec(info)![1])];
    };
    // One thread alone holds fewer clients than both: only the sum matches INFO's.
    await eventually(scrape, ([m, i]) => m === i && m >= 2, "/metrics counts both threads' clients");
  });

  it("answers an RG.EXECUTE UNBLOCKING id started on one thread from a client of the other", async () => {
    const [a, b] = await onTwoThreads("gears");
    await a.call("SET", "threads:k1", "1");
    await a.call("SET", "threads:k2", "2");
    const id = String(await a.call("RG.EXECUTE", "GB('KeysOnlyReader').run('threads:*')", "UNBLOCKING"));
    const [results, errors] = (await b.call("RG.GETRESULTSBLOCKING", id)) as [string[], string[]];
    expect(errors).to.deep.equal([]);
    expect([...results].sort()).to.deep.equal(["threads:k1", "threads:k2"]);
    const again = (await b.call("RG.GETRESULTS", id)) as [string[], string[]];
    expect([...again[0]].sort()).to.deep.equal(["threads:k1", "threads:k2"]);
    expect(await b.call("RG.DROPEXECUTION", id)).to.equal("OK");
    // Dropped on the thread that held it: neither knows it any more.
    await b.call("RG.GETRESULTS", id).then(
      () => expect.fail("the dropped execution answered"),
      (err: Error) => expect(err.message).to.match(/execution/i),
    );
  });

  it("CLIENT TRACKING REDIRECT to a client of the other thread: invalidations reach it; a missing one is refused, a gone one reported", async () => {
    const raws: RawClient[] = [];
    const pidIn = (info: string): number => Number(/^process_id:(\d+)/m.exec(info)![1]);
    const rawPid = async (c: RawClient): Promise<number> =>
      pidIn(String(toText(await c.call("INFO", "proxy"))));
    try {
      // RESP2 connections: the subscriber, and a tracking client dealt to the other thread.
      const sub = await RawClient.connect(proxy.port);
      raws.push(sub);
      const subPid = await rawPid(sub);
      let tracker: RawClient | null = null;
      for (let i = 0; i < 8 && tracker === null; i++) {
        const c = await RawClient.connect(proxy.port);
        raws.push(c);
        if ((await rawPid(c)) !== subPid) tracker = c;
      }
      expect(tracker, "a connection on the other thread").to.not.equal(null);
      const subId = Number(await sub.call("CLIENT", "ID"));
      expect(toText(await sub.call("SUBSCRIBE", "__redis__:invalidate"))).to.deep.equal([
        "subscribe",
        "__redis__:invalidate",
        1,
      ]);
      expect(toText(await tracker!.call("CLIENT", "TRACKING", "ON", "REDIRECT", String(subId)))).to.equal(
        "OK",
      );
      expect(await tracker!.call("CLIENT", "GETREDIR")).to.equal(subId);
      expect(await tracker!.call("GET", "threads:tracked")).to.equal(null);
      await connect("tracking-writer").set("threads:tracked", "1");
      expect(toText(await sub.next())).to.deep.equal([
        "message",
        "__redis__:invalidate",
        ["threads:tracked"],
      ]);

      // An id of the other thread's kind that no client has.
      const missing = await tracker!.call("CLIENT", "TRACKING", "ON", "REDIRECT", String(subId + 2000));
      expect((missing as Error).message).to.equal("ERR The client ID you want redirect to does not exist");
      // Redis looks the REDIRECT client up as it meets the option: ahead of a later bad option.
      const missingFirst = await tracker!.call(
        "CLIENT",
        "TRACKING",
        "ON",
        "REDIRECT",
        String(subId + 2000),
        "NOSUCHOPTION",
      );
      expect((missingFirst as Error).message).to.equal(
        "ERR The client ID you want redirect to does not exist",
      );
      // A REDIRECT client that exists on the other thread, then a bad option: the option's error.
      const badAfter = await tracker!.call(
        "CLIENT",
        "TRACKING",
        "ON",
        "REDIRECT",
        String(subId),
        "OPTIN",
        "OPTOUT",
      );
      expect((badAfter as Error).message).to.equal("ERR You can't specify both OPTIN mode and OPTOUT mode");
      expect(await tracker!.call("CLIENT", "GETREDIR"), "tracking as it was").to.equal(subId);

      // A RESP3 tracking client on the tracker's thread; its REDIRECT client (sub) goes away.
      let resp3: ReceivedText | null = null;
      for (let i = 0; i < 8 && resp3 === null; i++) {
        const c = await ReceivedText.open(proxy.port);
        c.socket.write("INFO proxy\r\n");
        await eventually(
          async () => c.text,
          (t) => /process_id:\d+\r\n/.test(t),
          "INFO's process_id",
        );
        if (pidIn(c.text) !== subPid) resp3 = c;
        else c.socket.destroy();
      }
      expect(resp3, "a RESP3 connection on the other thread").to.not.equal(null);
      const from = resp3!.text.length;
      resp3!.socket.write(
        ["HELLO 3", `CLIENT TRACKING ON REDIRECT ${subId}`, "GET threads:gone"]
          .map((line) => line + "\r\n")
          .join(""),
      );
      await eventually(
        async () => resp3!.text.slice(from),
        (t) => t.endsWith("+OK\r\n_\r\n"),
        "HELLO, TRACKING and GET answered",
      );
      sub.close();
      await eventually(
        () => connect("tracking-lister").call("CLIENT", "LIST"),
        (list) => !String(list).includes(`id=${subId} `),
        "the REDIRECT client gone",
      );
      await connect("tracking-writer2").set("threads:gone", "1");
      await eventually(
        async () => resp3!.text.slice(from),
        (t) => t.includes(`>2\r\n$21\r\ntracking-redir-broken\r\n:${subId}\r\n`),
        "the RESP3 tracking client told its redirect broke",
      );
      resp3!.socket.destroy();
    } finally {
      for (const c of raws) c.close();
    }
  });

  it("lists the same registrations on every thread", async () => {
    const [a, b] = await onTwoThreads("registrar");
    await a.call(
      "RG.EXECUTE",
      "GB().foreach(x => execute('SADD', 'threads:seen', x.key)).register('threads:reg:*')",
    );
    const ids = async (client: Redis): Promise<string[]> =>
      ((await client.call("RG.DUMPREGISTRATIONS")) as unknown[][]).map((r) => String(r[1])).sort();
    const onA = await ids(a);
    expect(onA).to.have.length(1);
    await eventually(
      () => ids(b),
      (onB) => JSON.stringify(onB) === JSON.stringify(onA),
      "B lists A's registration",
    );
    // And it fires for a write through either thread.
    await b.call("SET", "threads:reg:x", "1");
    await a.call("SET", "threads:reg:y", "1");
    await eventually(
      async () => ((await a.call("SMEMBERS", "threads:seen")) as string[]).sort(),
      (seen) => JSON.stringify(seen) === JSON.stringify(["threads:reg:x", "threads:reg:y"]),
      "both writes handled",
    );
  });
});

describe("--threads 2 with no --upstream: one embedded redis-server for both threads", function () {
  // A reforked thread loads the whole data plane in a fresh node process: a few seconds on a quiet
  // machine, past 20 s when the 2 cores run other jobs at load 6-8.
  this.timeout(120_000);
  const open: Redis[] = [];
  let proxy: ChildProxy | undefined;
  let redisPid = 0;

  const isAlive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const logLines = (): Record<string, unknown>[] =>
    proxy!
      .output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const threadOf = async (client: Redis): Promise<number> =>
    Number(/^process_id:(\d+)/m.exec(String(await client.call("INFO", "proxy")))![1]);

  after(async () => {
    for (const c of open.splice(0)) c.disconnect();
    await proxy?.kill();
    if (redisPid !== 0 && isAlive(redisPid)) process.kill(redisPid, "SIGKILL");
  });

  it("serves both threads from the redis-server the supervisor started, keeps it when a thread crashes, stops it on SIGTERM", async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "threads-embedded-"));
    proxy = await ChildProxy.start({
      upstreams: [],
      args: ["--threads", "2", "--data-dir", dataDir, "--log-level", "info"],
    });
    const connect = (): Redis => {
      const client = new Redis({ port: proxy!.port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      open.push(client);
      return client;
    };
    await bothThreadsReady(proxy);
    const a = connect();
    const started = logLines().filter((l) => String(l.msg).startsWith("started embedded redis-server"));
    expect(started, "one redis-server, started by the supervisor").to.have.length(1);
    redisPid = Number(started[0].pid);
    const aThread = await threadOf(a);
    let b = connect();
    for (let i = 0; i < 8 && (await threadOf(b)) === aThread; i++) b = connect();
    expect(await threadOf(b)).to.not.equal(aThread);

    expect(await a.call("PING")).to.equal("PONG");
    expect(await b.call("PING")).to.equal("PONG");
    // SIGHUP to the supervisor reaches every thread (each re-reads its TLS files) and ends none.
    proxy.signal("SIGHUP");
    await eventually(
      async () => logLines().filter((l) => l.msg === "SIGHUP: no TLS certificate files to reload").length,
      (n) => n === 2,
      "both threads took the SIGHUP",
    );
    expect(await a.call("PING")).to.equal("PONG");
    expect(await b.call("PING")).to.equal("PONG");
    expect(await a.call("SET", "threads:embedded", "from-a")).to.equal("OK");
    expect(await b.call("GET", "threads:embedded")).to.equal("from-a");

    // A crashed thread is replaced, in front of the same redis-server. Questions to every thread
    // (CLIENT LIST) are in flight as it dies: the supervisor's relay to the dead thread fails
    // (EPIPE) and must not bring the supervisor down.
    const bPid = await threadOf(b);
    const asking = Promise.all(Array.from({ length: 3000 }, () => a.call("CLIENT", "LIST")));
    await new Promise((resolve) => setTimeout(resolve, 5));
    process.kill(bPid, "SIGKILL");
    const lists = await asking;
    expect(
      lists.every((l) => String(l).includes("id=")),
      "every CLIENT LIST answered",
    ).to.equal(true);
    await withOutput(
      proxy,
      eventually(
        () =>
          onFreshConnection(proxy!, async (c) => [
            await threadOf(c),
            String(await c.call("GET", "threads:embedded")),
          ]),
        (answer) => typeof answer !== "string" && answer[0] !== aThread && answer[1] === "from-a",
        "a new thread reads what the old one wrote",
        60_000,
      ),
    );
    expect(isAlive(redisPid)).to.equal(true);

    for (const c of open.splice(0)) c.disconnect();
    await proxy.stop();
    expect(proxy.exitCode, proxy.output()).to.equal(0);
    expect(isAlive(redisPid), "the embedded redis-server stopped with the supervisor").to.equal(false);
    expect(fs.existsSync(path.join(dataDir, "dump.rdb"))).to.equal(true);
  });
});
