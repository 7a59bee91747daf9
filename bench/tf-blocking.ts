/**
 * T&F `callAsync` of blocking commands (issue 11): what a job-queue consumer costs.
 *   drain:  one TFCALLASYNC pops N jobs from a full list, one `await callAsync('BLPOP', q, '0')`
 *           after another: µs per job (each BLPOP answers at once, so this is the cost of a hop)
 *   beside: the same while another coroutine of the library waits in BLPOP on an empty list,
 *           started in the same batch: on a build where a round's calls come back together,
 *           the consumer's first BLPOP waits for the idle one (whose job comes 300 ms later)
 * in the same run with `--base` (another build's dist/src/cli.js), the builds taking turns.
 */
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
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
  type Proxy,
} from "./support.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "5" },
    jobs: { type: "string", default: "3000" },
    base: { type: "string" },
  },
});
const rounds = Number(values.rounds);
const jobs = Number(values.jobs);

const LIB = `#!js api_version=1.0 name=qbench
redis.registerAsyncFunction('drain', async function(client, key, n){
  let got = 0;
  for (let i = 0; i < Number(n); i++) if (await client.callAsync('BLPOP', key, '0')) got++;
  return got;
});
redis.registerFunction('spin', function(client, ms){
  const until = Date.now() + Number(ms);
  while (Date.now() < until) {}
  return 'spun';
});`;

/** When the idle consumer's job comes, after the drain began. */
const IDLE_MS = 300;

let redis: RedisNode | undefined;

async function start(cli: string | undefined): Promise<Proxy> {
  const proxy = await startGears(redis!.port, {
    profileDir: undefined,
    nodeArgs: [],
    args: [],
    readyWhen: "ping",
    cli,
  });
  const c = new Redis({ port: proxy.port, host: HOST });
  await c.call("TFUNCTION", "LOAD", "REPLACE", LIB);
  c.disconnect();
  return proxy;
}

/** µs per job of one drain of `jobs` jobs; with `beside`, an idle consumer goes in with it. */
async function drain(proxy: Proxy, key: string, beside: boolean): Promise<number> {
  const direct = new Redis({ port: redis!.port, host: HOST });
  const clients = [0, 1, 2].map(() => new Redis({ port: proxy.port, host: HOST }));
  try {
    await direct.del(key, `${key}:idle`);
    for (let i = 0; i < jobs; i += 1000)
      await direct.rpush(key, ...Array.from({ length: Math.min(1000, jobs - i) }, (_, k) => String(i + k)));
    // The library busy for a moment: the two TFCALLASYNCs queue and go in as one batch.
    const spin = beside ? clients[2].call("TFCALL", "qbench.spin", "0", "100") : null;
    if (spin !== null) await new Promise((resolve) => setTimeout(resolve, 20));
    const idle = beside ? clients[1].call("TFCALLASYNC", "qbench.drain", "1", `${key}:idle`, "1") : null;
    // The idle consumer's job comes IDLE_MS after the drain began (a build that holds the
    // drain behind it shows it in the drain's time).
    const wake = idle === null ? null : setTimeout(() => void direct.rpush(`${key}:idle`, "x"), IDLE_MS);
    const started = performance.now();
    const got = await clients[0].call("TFCALLASYNC", "qbench.drain", "1", key, String(jobs));
    const us = ((performance.now() - started) * 1000) / jobs;
    if (Number(got) !== jobs) throw new Error(`drained ${String(got)} of ${jobs}`);
    await spin;
    await idle;
    clearTimeout(wake ?? undefined);
    return us;
  } finally {
    direct.disconnect();
    for (const c of clients) c.disconnect();
  }
}

async function main(): Promise<number> {
  redis = await startRedis();
  const proxy = await start(undefined);
  const base = values.base === undefined ? null : await start(values.base);
  const rows: string[][] = [];
  for (let r = 1; r <= rounds; r++) {
    const row = [String(r)];
    for (const beside of [false, true]) {
      const sides: [string, Proxy][] = [["this", proxy]];
      if (base !== null) sides.push(["base", base]);
      if (r % 2 === 0) sides.reverse();
      const got = new Map<string, number>();
      for (const [name, p] of sides)
        got.set(name, await drain(p, `q:${name}:${r}:${String(beside)}`, beside));
      row.push(got.get("this")!.toFixed(1));
      if (base !== null) row.push(got.get("base")!.toFixed(1));
      say(
        `round ${r}${beside ? " beside an idle consumer" : ""}: ${[...got].map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ")} µs/job`,
      );
    }
    rows.push(row);
  }
  if (rows.length > 1)
    rows.push([
      "median",
      ...rows[0].slice(1).map((_, c) => median(rows.map((x) => Number(x[c + 1]))).toFixed(1)),
    ]);
  const header = ["round", "drain µs/job"];
  if (base !== null) header.push("base drain µs/job");
  header.push("beside an idle consumer µs/job");
  if (base !== null) header.push("base beside µs/job");
  const out = [
    "## T&F job-queue consumer: `await callAsync('BLPOP', q, '0')` in a loop (a full queue)",
    "",
    ...machineLines(),
    `${jobs} jobs per drain; ${rounds} rounds${base === null ? "" : `, the builds taking turns; base: ${values.base}`}.`,
    "",
    table(header, rows),
  ].join("\n");
  process.stdout.write(`${out}\n`);
  return 0;
}

async function cleanup(): Promise<void> {
  await stopChildren();
  await redis?.stop();
}

runBench(main, cleanup);
