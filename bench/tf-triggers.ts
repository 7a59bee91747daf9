/**
 * T&F keyspace triggers fed by writes made straight on Redis (issue 11): a burst of N SETs
 * pipelined to the server, then the time until every key is in a set, for
 *   - a T&F library's keyspace trigger, run by gears-proxy from the keyspace notifications
 *     (`client.call('SADD', ...)` for each event), and
 *   - a hand-written ioredis consumer doing the same SADD on each notification (the baseline),
 * and, with `--base CLI`, another build of the proxy. Each side has a redis-server of its own
 * (proxies in front of one server share libraries and hand events to one of them), and the
 * sides take turns, alternating who goes first. The figure is events per second; beside it the
 * proxy's CPU (all threads) per event.
 */
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { startRedis, type RedisNode } from "../spec/harness/redis.js";
import {
  cpuSeconds,
  HOST,
  machineLines,
  median,
  runBench,
  say,
  sleep,
  startGears,
  stopChildren,
  table,
  type Proxy,
} from "./support.js";

const { values } = parseArgs({
  options: {
    writes: { type: "string", default: "100000" },
    rounds: { type: "string", default: "3" },
    /** Another build's dist/src/cli.js, measured in the same rounds. */
    base: { type: "string" },
  },
});
const writes = Number(values.writes);
const rounds = Number(values.rounds);

const PREFIX = "kt:";
const SET = "{kt}:all";
const LIBRARY = `#!js api_version=1.0 name=ktbench
redis.registerKeySpaceTrigger('add', '${PREFIX}', function(client, data) { client.call('SADD', '${SET}', data.key); });`;
/** How often the bench asks SCARD while it waits for the last event. */
const POLL_MS = 5;
const GIVE_UP_MS = 300_000;

interface Side {
  name: string;
  redis: RedisNode;
  /** The proxy handling the events, or null for the hand-written consumer. */
  proxy: Proxy | null;
  stop(): Promise<void>;
}

/** The baseline: on each keyspace notification of a key under the prefix, SADD it. */
async function consumerSide(redis: RedisNode): Promise<Side> {
  const setup = new Redis({ port: redis.port, host: HOST });
  await setup.config("SET", "notify-keyspace-events", "KEA");
  setup.disconnect();
  const sub = new Redis({ port: redis.port, host: HOST });
  const writer = new Redis({ port: redis.port, host: HOST, enableAutoPipelining: true });
  await sub.psubscribe("__keyspace@0__:*");
  const skip = "__keyspace@0__:".length;
  sub.on("pmessage", (_pattern: string, channel: string) => {
    const key = channel.slice(skip);
    if (key.startsWith(PREFIX)) void writer.sadd(SET, key);
  });
  return {
    name: "hand-written consumer",
    redis,
    proxy: null,
    stop: async () => {
      sub.disconnect();
      writer.disconnect();
    },
  };
}

async function proxySide(name: string, redis: RedisNode, cli: string | undefined): Promise<Side> {
  const proxy = await startGears(redis.port, {
    profileDir: undefined,
    nodeArgs: [],
    args: [],
    readyWhen: "ping",
    cli,
  });
  const c = new Redis({ port: proxy.port, host: HOST });
  await c.call("TFUNCTION", "LOAD", "REPLACE", LIBRARY);
  c.disconnect();
  return { name, redis, proxy, stop: async () => {} };
}

/** One burst on `side`: events per second, and the proxy's CPU µs per event (NaN for the consumer). */
async function burst(side: Side, round: number): Promise<[number, number]> {
  const direct = new Redis({ port: side.redis.port, host: HOST });
  await direct.del(SET);
  await sleep(200);
  const cpu0 = side.proxy === null ? 0 : cpuSeconds(side.proxy.child.pid!);
  const started = Date.now();
  for (let i = 0; i < writes; i += 1000) {
    const p = direct.pipeline();
    for (let j = i; j < Math.min(writes, i + 1000); j++) p.set(`${PREFIX}${round}:${j}`, "v");
    await p.exec();
  }
  while ((await direct.scard(SET)) < writes) {
    if (Date.now() - started > GIVE_UP_MS) throw new Error(`${side.name}: not every event handled`);
    await sleep(POLL_MS);
  }
  const seconds = (Date.now() - started) / 1000;
  const cpu = side.proxy === null ? NaN : ((cpuSeconds(side.proxy.child.pid!) - cpu0) * 1e6) / writes;
  direct.disconnect();
  return [writes / seconds, cpu];
}

const redises: RedisNode[] = [];

async function main(): Promise<number> {
  const sides: Side[] = [];
  const redisFor = async (): Promise<RedisNode> => {
    const r = await startRedis();
    redises.push(r);
    return r;
  };
  sides.push(await proxySide("gears-proxy", await redisFor(), undefined));
  if (values.base !== undefined) sides.push(await proxySide("base", await redisFor(), values.base));
  sides.push(await consumerSide(await redisFor()));
  const rates = sides.map(() => [] as number[]);
  const cpus = sides.map(() => [] as number[]);
  for (let r = 1; r <= rounds; r++) {
    const order = sides.map((_, i) => i);
    if (r % 2 === 0) order.reverse();
    for (const i of order) {
      const [rate, cpu] = await burst(sides[i], r);
      rates[i].push(rate);
      cpus[i].push(cpu);
      say(
        `round ${r} ${sides[i].name}: ${rate.toFixed(0)} events/s${Number.isNaN(cpu) ? "" : `, ${cpu.toFixed(1)} µs CPU per event`}`,
      );
    }
  }
  const consumer = rates[rates.length - 1];
  const rows = sides.map((side, i) => [
    side.name,
    median(rates[i]).toFixed(0),
    i === sides.length - 1 ? "1.00" : median(rates[i].map((x, k) => x / consumer[k])).toFixed(2),
    Number.isNaN(cpus[i][0]) ? "" : median(cpus[i]).toFixed(1),
  ]);
  const out = [
    "## T&F keyspace trigger fed by writes straight to Redis",
    "",
    ...machineLines(),
    `command: node dist/bench/tf-triggers.js ${process.argv.slice(2).join(" ")}`,
    `${writes} SETs pipelined to the server per burst (1,000 per write), timed until SCARD of the set is ${writes}; ${rounds} alternating rounds, medians.`,
    "",
    table(["side", "events/s", "ratio to the consumer (per round, median)", "proxy CPU µs per event"], rows),
  ].join("\n");
  process.stdout.write(`${out}\n`);
  for (const side of sides) await side.stop();
  return 0;
}

async function cleanup(): Promise<void> {
  await stopChildren();
  for (const r of redises) await r.stop();
}

runBench(main, cleanup);
