import { expect } from "chai";
import { startProxy, startRedis, type RedisNode, type RunningProxy } from "./harness/index.js";
import { Backend } from "./support/backend.js";
import { RawClient, ReplyError, toText, type Reply, type Value } from "./support/raw-client.js";

const textOf = (reply: Reply): Value =>
  reply instanceof ReplyError ? `ERROR: ${reply.message}` : toText(reply);

// CLIENT LIST's sub, psub and ssub count a client's channels, patterns and shard channels
// apart, and multi the commands it queued since MULTI: monitoring tools read them. Through the
// proxy they are compared with one redis-server's, for the same steps.

/** The fields of the CLIENT LIST line of the client named `name`, seen from `observer`. */
async function fieldsOf(observer: RawClient, name: string): Promise<Record<string, string>> {
  const list = String(toText(await observer.call("CLIENT", "LIST")));
  const line = list.split("\n").find((l) => l.includes(` name=${name} `));
  if (line === undefined) throw new Error(`no client named ${name} in ${list}`);
  return Object.fromEntries(
    line
      .trim()
      .split(" ")
      .map((f) => f.split("=", 2) as [string, string]),
  );
}

const counts = (f: Record<string, string>): string =>
  `sub=${f.sub} psub=${f.psub} ssub=${f.ssub} multi=${f.multi}`;

/** What CLIENT LIST says of a subscriber and of a client inside MULTI, after the same steps on `port`. */
async function stepsOn(port: number): Promise<string[]> {
  const open: RawClient[] = [];
  const connect = async (): Promise<RawClient> => {
    const c = await RawClient.connect(port);
    open.push(c);
    return c;
  };
  try {
    const observer = await connect();
    const subscriber = await connect();
    await subscriber.call("CLIENT", "SETNAME", "subscriber");
    const seen: string[] = [];
    subscriber.send("SUBSCRIBE", "c1", "c2", "c3");
    subscriber.send("PSUBSCRIBE", "p*");
    subscriber.send("SSUBSCRIBE", "s1");
    for (let i = 0; i < 5; i++) await subscriber.next();
    seen.push(counts(await fieldsOf(observer, "subscriber")));
    subscriber.send("UNSUBSCRIBE", "c2");
    subscriber.send("PUNSUBSCRIBE", "p*");
    for (let i = 0; i < 2; i++) await subscriber.next();
    seen.push(counts(await fieldsOf(observer, "subscriber")));
    const queuing = await connect();
    await queuing.call("CLIENT", "SETNAME", "queuing");
    seen.push(counts(await fieldsOf(observer, "queuing")));
    await queuing.call("MULTI");
    seen.push(counts(await fieldsOf(observer, "queuing")));
    await queuing.call("SET", "{k}a", "1");
    await queuing.call("GET", "{k}a");
    seen.push(counts(await fieldsOf(observer, "queuing")));
    await queuing.call("EXEC");
    seen.push(counts(await fieldsOf(observer, "queuing")));
    // Redis counts no command after one it refused (queueMultiCommand): an unknown command,
    // a wrong arity.
    await queuing.call("MULTI");
    await queuing.call("SET", "{k}a", "1");
    await queuing.call("NOSUCHCMD").catch(() => null);
    await queuing.call("SET", "{k}b", "1");
    seen.push(counts(await fieldsOf(observer, "queuing")));
    await queuing.call("DISCARD");
    await queuing.call("MULTI");
    await queuing.call("GET", "{k}a", "{k}b").catch(() => null);
    await queuing.call("SET", "{k}c", "1");
    seen.push(counts(await fieldsOf(observer, "queuing")));
    await queuing.call("DISCARD");
    return seen;
  } finally {
    for (const c of open) c.close();
  }
}

// A RESP2 client subscribed to channels, patterns and shard channels at once, which then leaves
// its shard channels, stays in subscriber mode (one server's SSUBSCRIBE confirmations count
// shard channels alone, the others channels and patterns), and RESET still answers (the
// shard's connection has left subscriber mode and answers the proxy's marker PING as a plain
// PING).

/** Every reply a raw RESP2 client gets for the steps, each step's replies read before the next. */
async function mixedStepsOn(port: number): Promise<Value[]> {
  const c = await RawClient.connect(port);
  try {
    const replies: Value[] = [];
    const step = async (frames: number, ...args: string[]): Promise<void> => {
      c.send(...args);
      for (let i = 0; i < frames; i++) replies.push(textOf(await c.next(3000)));
    };
    await step(2, "SUBSCRIBE", "c1", "c2");
    await step(1, "PSUBSCRIBE", "p*");
    await step(1, "SSUBSCRIBE", "s1");
    await step(1, "SUNSUBSCRIBE", "s1");
    await step(1, "GET", "a");
    await step(1, "PING");
    await step(1, "RESET");
    await step(1, "GET", "a");
    return replies;
  } finally {
    c.close();
  }
}

for (const mode of ["standalone", "cluster"] as const) {
  describe(`a client's subscriptions and transaction through the proxy, against one redis-server, ${Backend.label(mode)}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    let single: RedisNode;

    before(async function () {
      this.timeout(120_000);
      backend = await Backend.start(mode);
      proxy = await startProxy([{ port: backend.seed.port }]);
      single = await startRedis();
    });

    after(async () => {
      await proxy?.close();
      await backend?.stop();
      await single?.stop();
    });

    it("count channels, patterns, shard channels and queued commands apart, as one redis-server does", async () => {
      const direct = await stepsOn(single.port);
      expect(direct[0]).to.equal("sub=3 psub=1 ssub=1 multi=-1");
      // The proxy counts a confirmation before it relays it: the client has seen each one.
      const through = await stepsOn(proxy.port);
      expect(through).to.deep.equal(direct);
    });
    it("leaving the shard channels keeps subscriber mode, and RESET answers, as one redis-server", async () => {
      const direct = await mixedStepsOn(single.port);
      expect(direct[5]).to.match(/^ERROR: ERR Can't execute 'get'/);
      expect(direct[7]).to.equal("RESET");
      expect(await mixedStepsOn(proxy.port)).to.deep.equal(direct);
    });
  });
}
