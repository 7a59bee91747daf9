/**
 * Pub/sub fan-out: one publisher pipelines PUBLISHes of 64-byte messages to one channel, S raw
 * subscribers each receive every message; delivered messages per second through gears-proxy
 * against the same straight to Redis, in alternating rounds, medians printed, with the proxy's
 * CPU time per delivered message (from /proc). Standalone: one redis-server. Cluster: a
 * 3-master cluster, where the proxy puts channel pub/sub on slot 0's master and the baseline
 * connects publisher and subscribers straight to that master (the cluster's best case: no
 * bus). The subscribers count bytes only, so the client side costs the two runs the same.
 */
import net from "node:net";
import { parseArgs } from "node:util";
import calculateSlot from "cluster-key-slot";
import { startCluster, type RedisCluster } from "../spec/harness/cluster.js";
import { startRedis, type RedisNode } from "../spec/harness/redis.js";
import {
  HOST,
  machineLines,
  median,
  runBench,
  say,
  startGears,
  stopChildren,
  table,
  treeCpuSeconds,
} from "./support.js";

const HELP = `Usage: node dist/bench/pubsub.js [options]

  --rounds N        alternating rounds (default 3)
  --messages N      messages per run (default 100000)
  --subscribers N   subscribers (default 10)
  --no-cluster      standalone only
  --quick           1 round, 30000 messages
  --help
`;

const CHANNEL = "bench:pubsub";
const PAYLOAD = "x".repeat(64);
/** The bytes a subscriber receives per message (RESP2 `message` frame). */
const FRAME = Buffer.from(
  `*3\r\n$7\r\nmessage\r\n$${CHANNEL.length}\r\n${CHANNEL}\r\n$${PAYLOAD.length}\r\n${PAYLOAD}\r\n`,
).length;
const BATCH = 200;

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST, () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Subscribers on `port`, each counting the bytes it has received since subscribing. */
async function subscribe(
  port: number,
  count: number,
): Promise<{ sockets: net.Socket[]; received: number[] }> {
  const sockets: net.Socket[] = [];
  const received = new Array<number>(count).fill(0);
  const confirmation = `*3\r\n$9\r\nsubscribe\r\n$${CHANNEL.length}\r\n${CHANNEL}\r\n:1\r\n`.length;
  for (let i = 0; i < count; i++) {
    const socket = await connect(port);
    received[i] = -confirmation;
    socket.on("data", (chunk: Buffer) => (received[i] += chunk.length));
    socket.write(`SUBSCRIBE ${CHANNEL}\r\n`);
    sockets.push(socket);
  }
  while (received.some((n) => n < 0)) await new Promise((resolve) => setTimeout(resolve, 5));
  return { sockets, received };
}

/** Publishes `messages` in pipelined batches; resolves when every subscriber has them all. */
async function runOnce(port: number, subscribers: number, messages: number): Promise<number> {
  const { sockets, received } = await subscribe(port, subscribers);
  const publisher = await connect(port);
  publisher.on("data", () => {});
  const command = `*3\r\n$7\r\nPUBLISH\r\n$${CHANNEL.length}\r\n${CHANNEL}\r\n$${PAYLOAD.length}\r\n${PAYLOAD}\r\n`;
  const batch = command.repeat(BATCH);
  const want = messages * FRAME;
  const started = process.hrtime.bigint();
  for (let sent = 0; sent < messages; sent += BATCH) {
    // Stay at most a few batches ahead of the slowest subscriber (no unbounded buffers).
    while (Math.min(...received) < (sent - 4 * BATCH) * FRAME) await new Promise((r) => setImmediate(r));
    if (!publisher.write(batch)) await new Promise((r) => publisher.once("drain", r));
  }
  while (Math.min(...received) < want) await new Promise((r) => setImmediate(r));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  for (const s of [publisher, ...sockets]) s.destroy();
  return (messages * subscribers) / seconds;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string" },
      messages: { type: "string" },
      subscribers: { type: "string" },
      "no-cluster": { type: "boolean" },
      quick: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help === true) {
    process.stdout.write(HELP);
    return 0;
  }
  const quick = values.quick === true;
  const rounds = Number(values.rounds ?? (quick ? 1 : 3));
  const messages = Math.ceil(Number(values.messages ?? (quick ? 30_000 : 100_000)) / BATCH) * BATCH;
  const subscribers = Number(values.subscribers ?? 10);
  const setups: { name: string; direct: number; proxy: number; pid: number }[] = [];
  redis = await startRedis({ args: ["--save", ""] });
  const standalone = await startGears(redis.port, {
    profileDir: undefined,
    nodeArgs: [],
    args: [],
    readyWhen: "ping",
  });
  setups.push({
    name: "standalone",
    direct: redis.port,
    proxy: standalone.port,
    pid: standalone.child.proc.pid ?? -1,
  });
  if (values["no-cluster"] !== true) {
    cluster = await startCluster({ masters: 3, args: ["--save", ""] });
    let key = 0;
    while (calculateSlot(String(key)) !== 0) key++;
    const home = await cluster.nodeForSlot(0);
    const proxy = await startGears(cluster.nodes[0].port, {
      profileDir: undefined,
      nodeArgs: [],
      args: [],
      readyWhen: "keyed",
    });
    setups.push({ name: "cluster", direct: home.port, proxy: proxy.port, pid: proxy.child.proc.pid ?? -1 });
  }
  const rates = new Map<string, number[]>();
  const cpu = new Map<string, number[]>();
  const add = (map: Map<string, number[]>, key: string, value: number): void => {
    (map.get(key) ?? map.set(key, []).get(key)!).push(value);
  };
  for (let round = 0; round < rounds; round++) {
    for (const setup of setups) {
      const order = round % 2 === 0 ? (["direct", "proxy"] as const) : (["proxy", "direct"] as const);
      for (const side of order) {
        const before = treeCpuSeconds(setup.pid).total;
        const rate = await runOnce(side === "direct" ? setup.direct : setup.proxy, subscribers, messages);
        const used = treeCpuSeconds(setup.pid).total - before;
        add(rates, `${setup.name}/${side}`, rate);
        if (side === "proxy") add(cpu, setup.name, (used * 1e6) / (messages * subscribers));
        say(`round ${round + 1} ${setup.name} ${side}: ${Math.round(rate)} messages delivered/s`);
      }
    }
  }
  const rows = setups.map((setup) => {
    const direct = median(rates.get(`${setup.name}/direct`)!);
    const proxy = median(rates.get(`${setup.name}/proxy`)!);
    return [
      setup.name,
      Math.round(direct).toLocaleString("en-US"),
      Math.round(proxy).toLocaleString("en-US"),
      `${(proxy / direct).toFixed(2)}x`,
      median(cpu.get(setup.name)!).toFixed(2),
    ];
  });
  const header = ["setup", "direct msg/s", "proxy msg/s", "proxy/direct", "proxy CPU µs/msg"];
  process.stdout.write(
    [
      ...machineLines(),
      `pub/sub fan-out: ${subscribers} subscribers, ${messages} PUBLISHes of ${PAYLOAD.length} bytes in batches of ${BATCH}, ${rounds} rounds (medians)`,
      "",
      table(header, rows),
      "",
    ].join("\n"),
  );
  return 0;
}

let redis: RedisNode | null = null;
let cluster: RedisCluster | null = null;

runBench(main, async () => {
  await stopChildren();
  await redis?.stop();
  await cluster?.stop();
});
