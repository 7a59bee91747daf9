import { expect } from "chai";
import { startProxy, startRedis, type RedisNode } from "./harness/index.js";
import { ReceivedText as Received, encode } from "./support/raw-client.js";
import { eventually } from "./support/polling.js";

// Client-side caching clients (redis-py 5+, node-redis 5) apply invalidation pushes in the
// order they come among the replies. Redis writes a client's own invalidations right after
// the reply of the command that made them, one per key in the order written, and BCAST's
// after the replies of the commands it ran in the same turn. The proxy learns of changes on
// a separate stream: these compare its bytes with Redis's, pipelined as a client sends them.

/** The frames of a RESP2/RESP3 text (the types these exchanges use), each as its text. */
function frames(text: string): string[] {
  const out: string[] = [];
  let at = 0;
  const one = (): void => {
    const end = text.indexOf("\r\n", at);
    const type = text[at];
    const n = Number(text.slice(at + 1, end));
    at = end + 2;
    if (type === "$" && n >= 0) at += n + 2;
    else if (type === "*" || type === ">") for (let i = 0; i < n; i++) one();
  };
  while (at < text.length) {
    const start = at;
    one();
    out.push(text.slice(start, at));
  }
  return out;
}

/**
 * The replies, and the pushes, of a text apart. A change's message leaves the server on
 * another connection than the replies (the proxy's stream), and which of the two the proxy
 * reads first is up to the network: there only their own orders are compared.
 */
function apart(text: string): { replies: string[]; pushes: string[] } {
  const all = frames(text);
  return { replies: all.filter((f) => f[0] !== ">"), pushes: all.filter((f) => f[0] === ">") };
}

const bulk = (s: string): string => `$${s.length}\r\n${s}\r\n`;
const push = (...keys: string[]): string =>
  `>2\r\n$10\r\ninvalidate\r\n*${keys.length}\r\n${keys.map(bulk).join("")}`;
/** One push per key, as normal mode sends them. */
const each = (...keys: string[]): string => keys.map((k) => push(k)).join("");
const message = (key: string): string =>
  `*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n${bulk(key)}`;

const hello3 = async (c: Received): Promise<void> => {
  const start = c.text.length;
  c.socket.write(encode(["HELLO", "3"]));
  await eventually(
    async () => c.text.slice(start),
    (t) => t.includes("modules"),
    "HELLO 3",
  );
};

/** A RESP3 connection with tracking on in `mode` (extra CLIENT TRACKING arguments). */
async function tracker(port: number, mode: string[]): Promise<Received> {
  const c = await Received.open(port);
  await hello3(c);
  expect(await c.exchange([["CLIENT", "TRACKING", "ON", ...mode]], 5)).to.equal("+OK\r\n");
  return c;
}

/** Normal mode: own MSET then MGET pipelined, then another client's DEL. */
async function normalMode(port: number): Promise<unknown[]> {
  const a = await tracker(port, []);
  const b = await Received.open(port);
  try {
    const out: unknown[] = [];
    out.push(await a.exchange([["MGET", "k1", "k2", "k3"]], "*3\r\n_\r\n_\r\n_\r\n".length));
    const own = "+OK\r\n" + each("k1", "k2", "k3") + `*3\r\n${bulk("1")}${bulk("2")}${bulk("3")}`;
    out.push(
      apart(
        await a.exchange(
          [
            ["MSET", "k1", "1", "k2", "2", "k3", "3"],
            ["MGET", "k1", "k2", "k3"],
          ],
          own.length,
        ),
      ),
    );
    // Read again after its own write: still tracked, so another client's change is told.
    const start = a.text.length;
    await b.exchange([["DEL", "k1", "k2", "k3"]], 4);
    out.push(await a.wait(start, each("k1", "k2", "k3").length));
    // Queued writes: their invalidations follow EXEC's reply, in the order queued.
    out.push(await a.exchange([["MGET", "k1", "k2"]], "*2\r\n_\r\n_\r\n".length));
    const exec = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n" + each("k2", "k1") + bulk("1");
    out.push(
      apart(
        await a.exchange(
          [["MULTI"], ["SET", "k2", "1"], ["SET", "k1", "1"], ["EXEC"], ["GET", "k1"]],
          exec.length,
        ),
      ),
    );
    // A key written, then read, by the client that never read it before: no message.
    const fresh = "+OK\r\n" + bulk("1") + "+PONG\r\n";
    const before = a.text.length;
    await a.exchange([["SET", "n", "1"], ["GET", "n"], ["PING"]], fresh.length);
    // Nothing may follow: a message would come with the replies (the proxy's stream is quick).
    await new Promise((r) => setTimeout(r, 200));
    out.push(a.text.slice(before));
    return out;
  } finally {
    a.socket.destroy();
    b.socket.destroy();
  }
}

/** BCAST: writes with PINGs pipelined between them, then another client's writes. */
async function bcastMode(port: number): Promise<unknown[]> {
  const a = await tracker(port, ["BCAST"]);
  const b = await Received.open(port);
  try {
    const out: unknown[] = [];
    const own = "+OK\r\n+PONG\r\n+OK\r\n+PONG\r\n" + push("k1", "k2", "k3");
    out.push(
      apart(
        await a.exchange(
          [["SET", "k1", "1"], ["PING"], ["MSET", "k2", "2", "k3", "3"], ["PING"]],
          own.length,
        ),
      ),
    );
    const start = a.text.length;
    await b.exchange([["MSET", "k3", "1", "k1", "2"]], 5);
    out.push(await a.wait(start, push("k1", "k3").length));
    return out;
  } finally {
    a.socket.destroy();
    b.socket.destroy();
  }
}

/** RESP2 with REDIRECT to a subscribed connection: one message per key, in the order written. */
async function redirectMode(port: number): Promise<string[]> {
  const r = await Received.open(port);
  const a = await Received.open(port);
  const b = await Received.open(port);
  try {
    const id = (await r.exchange([["CLIENT", "ID"]], 4)).trim().slice(1);
    await r.exchange([["SUBSCRIBE", "__redis__:invalidate"]], 44);
    const out: string[] = [];
    out.push(
      await a.exchange(
        [
          ["CLIENT", "TRACKING", "ON", "REDIRECT", id],
          ["MGET", "k1", "k2", "k3"],
        ],
        24,
      ),
    );
    let start = r.text.length;
    const own = "+OK\r\n*2\r\n$1\r\n1\r\n$1\r\n2\r\n";
    out.push(
      await a.exchange(
        [
          ["MSET", "k1", "1", "k2", "2", "k3", "3"],
          ["MGET", "k1", "k2"],
        ],
        own.length,
      ),
    );
    out.push(await r.wait(start, ["k1", "k2", "k3"].map(message).join("").length));
    start = r.text.length;
    await b.exchange([["DEL", "k1", "k2", "k3"]], 4);
    out.push(await r.wait(start, ["k1", "k2"].map(message).join("").length));
    return out;
  } finally {
    for (const c of [r, a, b]) c.socket.destroy();
  }
}

describe("qa: client tracking, invalidations among the replies in Redis's order", () => {
  let server: RedisNode;
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await server?.stop();
  });

  for (const [title, run] of [
    ["normal mode: own writes, re-reads, MULTI/EXEC", normalMode],
    ["BCAST: after the PINGs pipelined with the writes", bcastMode],
    ["RESP2 REDIRECT: messages in the order written, re-read keys still tracked", redirectMode],
  ] as const) {
    it(title, async () => {
      const flush = async (): Promise<void> => {
        const c = await Received.open(server.port);
        await c.exchange([["FLUSHALL"]], 5);
        c.socket.destroy();
      };
      await flush();
      const direct = await run(server.port);
      await flush();
      const proxy = await startProxy([{ port: server.port }]);
      try {
        expect(await run(proxy.port)).to.deep.equal(direct);
      } finally {
        await proxy.close();
      }
    });
  }
});
