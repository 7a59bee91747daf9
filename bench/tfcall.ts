/**
 * T&F benchmark (issue 11): calls per second of a function that does one INCR,
 *   TFCALL lib.incr 1 <key>           through gears-proxy (a T&F library, QuickJS isolate)
 *   TFCALLASYNC lib.incrAsync 1 <key> the same through an async function awaiting callAsync
 *   FCALL incr 1 <key>                straight to Redis (the same function as a Lua library)
 * in the same run, alternating rounds, with C concurrent clients each keeping P calls in flight.
 * `--beside-long` adds rows of the same TFCALL and TFCALLASYNC while one more client keeps a
 * long coroutine of the library running (`lib.long`: 2,000 INCRs, one await each, again and
 * again): what the library still serves while one of its coroutines goes on.
 * `--quick` runs one short round.
 */
import fs from "node:fs";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { startRedis, type RedisNode } from "../spec/harness/redis.js";
import {
  cpuSeconds,
  HOST,
  machineLines,
  runBench,
  stopChildren,
  say,
  startGears,
  table,
  type Proxy,
  median,
} from "./support.js";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    clients: { type: "string", default: "8" },
    pipeline: { type: "string", default: "8" },
    /** Writes the proxy's CPU profiles (node --cpu-prof, one per thread) to this directory. */
    profile: { type: "string" },
    /** Another build's dist/src/cli.js: its TFCALL is measured too, in the same rounds (before/after). */
    base: { type: "string" },
    /** Extra node flags for the proxy process (e.g. --proxy-node-args=--single-threaded-gc). */
    "proxy-node-args": { type: "string" },
    /**
     * Node flags for the --base build's proxy instead of --proxy-node-args: with `--base
     * dist/src/cli.js`, an A/B of node flags on one build (the library's worker thread is in
     * the proxy's process, so its GC follows these flags too).
     */
    "base-node-args": { type: "string" },
    "beside-long": { type: "boolean", default: false },
    /** Which rows to run: "sync" (TFCALL only), "async" (TFCALLASYNC only) or "both". */
    kinds: { type: "string", default: "both" },
  },
});
const words = (s: string | undefined): string[] => (s ?? "").split(/\s+/).filter((a) => a !== "");
const proxyNodeArgs = words(values["proxy-node-args"]);
const baseNodeArgs = values["base-node-args"] === undefined ? proxyNodeArgs : words(values["base-node-args"]);
const quick = values.quick === true;
const seconds = quick ? 2 : Number(values.seconds);
const rounds = quick ? 1 : Number(values.rounds);
const clients = Number(values.clients);
const pipeline = Number(values.pipeline);

const TF_LIB = `#!js api_version=1.0 name=bench
redis.registerFunction('incr', function(client, key){ return client.call('INCR', key); });
redis.registerAsyncFunction('incrAsync', async function(client, key){ return await client.callAsync('INCR', key); });
redis.registerAsyncFunction('long', async function(client, key){
  for (let i = 0; i < 2000; i++) await client.callAsync('INCR', key);
  return 'done';
});`;
const LUA_LIB = `#!lua name=bench
redis.register_function('incr', function(keys) return redis.call('INCR', keys[1]) end)`;

/** A process's CPU time (user + system, all threads) in µs: the load-independent cost. */
const cpuMicros = (pid: number): number => cpuSeconds(pid) * 1e6;

/** Clock ticks (user + system) of a /proc stat file: the process's (all threads) or one thread's. */
function ticks(path: string): number {
  try {
    const stat = fs.readFileSync(path, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return NaN;
  }
}

/** Clock ticks of each thread of process `pid`, by thread id. */
function threadTicks(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) out.set(tid, ticks(`/proc/${pid}/task/${tid}/stat`));
  return out;
}

/**
 * Calls per second, the CPU µs per call of process `pid` over the same time, the part of it
 * on the process's main thread, and the part on its busiest other thread (for the proxy, the
 * library's isolate worker; the rest is Node's helpers, V8's GC threads among them).
 * With `besideLong`, one more client runs `lib.long` meanwhile (its CPU counts in the figures).
 */
async function measureCpu(
  port: number,
  command: string[],
  pid: number,
  besideLong = false,
): Promise<[number, number, number, number]> {
  const before = cpuMicros(pid);
  const all0 = ticks(`/proc/${pid}/stat`);
  const threads0 = threadTicks(pid);
  const long = besideLong ? runLong(port) : null;
  const rate = await measure(port, command);
  if (long !== null) say(`  (beside it: ${await long.stop()} long coroutines of 2,000 awaits ended)`);
  const perCall = (cpuMicros(pid) - before) / (rate * seconds);
  const all1 = ticks(`/proc/${pid}/stat`);
  const threads1 = threadTicks(pid);
  const delta = (tid: string): number => (threads1.get(tid) ?? 0) - (threads0.get(tid) ?? 0);
  let busiest = 0;
  for (const tid of threads1.keys()) if (tid !== String(pid)) busiest = Math.max(busiest, delta(tid));
  const share = (t: number): number => (perCall * t) / (all1 - all0);
  return [rate, perCall, share(delta(String(pid))), share(busiest)];
}

/** Calls per second of `call` from C clients with P calls in flight each, for `seconds`. */
async function measure(port: number, command: string[]): Promise<number> {
  const conns = Array.from({ length: clients }, () => new Redis({ port, host: HOST, lazyConnect: false }));
  await Promise.all(conns.map((c) => c.ping()));
  const deadline = Date.now() + seconds * 1000;
  let done = 0;
  await Promise.all(
    conns.flatMap((c, i) =>
      Array.from({ length: pipeline }, async (_, j) => {
        const key = `bench:{k${i}-${j}}`;
        while (Date.now() < deadline) {
          await c.call(command[0], ...command.slice(1).map((a) => (a === "$key" ? key : a)));
          done++;
        }
      }),
    ),
  );
  for (const c of conns) c.disconnect();
  return done / seconds;
}

/** Runs `lib.long` again and again on one more client until stop(), which tells how many ended. */
function runLong(port: number): { stop: () => Promise<number> } {
  const c = new Redis({ port, host: HOST });
  let going = true;
  let ended = 0;
  const loop = (async () => {
    while (going) {
      await c.call("TFCALLASYNC", "bench.long", "1", "bench:{long}");
      ended++;
    }
  })();
  return {
    stop: async () => {
      going = false;
      // The one under way finishes first (a client's next command waits for it anyway).
      await loop.catch(() => {});
      c.disconnect();
      return ended;
    },
  };
}

let redis: RedisNode | null = null;
let proxy: Proxy | null = null;

async function loadTf(port: number): Promise<void> {
  const c = new Redis({ port, host: HOST });
  await c.call("TFUNCTION", "LOAD", "REPLACE", TF_LIB);
  c.disconnect();
}

async function main(): Promise<number> {
  redis = await startRedis();
  proxy = await startGears(redis.port, {
    profileDir: values.profile,
    nodeArgs: proxyNodeArgs,
    args: [],
    readyWhen: "ping",
  });
  const base =
    values.base === undefined
      ? null
      : await startGears(redis.port, {
          profileDir: undefined,
          nodeArgs: baseNodeArgs,
          args: [],
          readyWhen: "ping",
          cli: values.base,
        });
  const direct = new Redis({ port: redis.port, host: HOST });
  await loadTf(proxy.port);
  if (base !== null) await loadTf(base.port);
  await direct.call("FUNCTION", "LOAD", LUA_LIB);
  direct.disconnect();
  const only = values.kinds;
  const kinds = [
    { name: "TFCALL", command: ["TFCALL", "bench.incr", "1", "$key"], rows: [] as string[][], long: false },
    {
      name: "TFCALLASYNC",
      command: ["TFCALLASYNC", "bench.incrAsync", "1", "$key"],
      rows: [] as string[][],
      long: false,
    },
  ].filter((k) => only === "both" || (only === "async") === k.name.endsWith("ASYNC"));
  if (values["beside-long"] === true)
    kinds.push(
      {
        name: "TFCALL beside a long coroutine",
        command: ["TFCALL", "bench.incr", "1", "$key"],
        rows: [],
        long: true,
      },
      {
        name: "TFCALLASYNC beside a long coroutine",
        command: ["TFCALLASYNC", "bench.incrAsync", "1", "$key"],
        rows: [],
        long: true,
      },
    );
  for (let r = 1; r <= rounds; r++) {
    const [fcall, redisCpu] = await measureCpu(redis.port, ["FCALL", "incr", "1", "$key"], redis.pid);
    for (const kind of kinds) {
      // The builds take turns going first: the machine's load drifts within a round.
      const measureBase = (): Promise<[number | null, number, number, number]> =>
        base === null
          ? Promise.resolve([null, 0, 0, 0])
          : measureCpu(base.port, kind.command, base.child.pid, kind.long);
      const baseFirst = r % 2 === 1;
      const first = baseFirst ? await measureBase() : null;
      const [tf, cpu, cpuMain, cpuWorker] = await measureCpu(
        proxy.port,
        kind.command,
        proxy.child.pid,
        kind.long,
      );
      const [baseTf, baseCpu, baseCpuMain, baseCpuWorker] = first ?? (await measureBase());
      const row = [
        String(r),
        tf.toFixed(0),
        fcall.toFixed(0),
        (tf / fcall).toFixed(2),
        cpu.toFixed(0),
        cpuMain.toFixed(0),
        cpuWorker.toFixed(0),
        redisCpu.toFixed(0),
      ];
      if (baseTf !== null)
        row.push(
          baseTf.toFixed(0),
          (baseTf / fcall).toFixed(2),
          (tf / baseTf).toFixed(2),
          baseCpu.toFixed(0),
          baseCpuMain.toFixed(0),
          baseCpuWorker.toFixed(0),
        );
      kind.rows.push(row);
      say(
        `round ${r}: ${kind.name} ${tf.toFixed(0)}/s, FCALL ${fcall.toFixed(0)}/s${baseTf === null ? "" : `, base ${kind.name} ${baseTf.toFixed(0)}/s`}`,
      );
    }
  }
  const tables: string[] = [];
  for (const { name, rows } of kinds) {
    if (rows.length > 1) {
      // Each column's median (of the rounds' own figures, so the ratios are not recomputed).
      const digits = rows[0].map((cell) => (cell.includes(".") ? 2 : 0));
      rows.push([
        "median",
        ...rows[0]
          .slice(1)
          .map((_, c) => median(rows.map((row) => Number(row[c + 1]))).toFixed(digits[c + 1])),
      ]);
    }
    const header = [
      "round",
      `${name} via proxy (calls/s)`,
      "FCALL direct (calls/s)",
      "ratio",
      `proxy CPU µs/${name}`,
      "of it main thread",
      "of it isolate worker",
      "Redis CPU µs/FCALL",
    ];
    if (base !== null)
      header.push(
        `base ${name} (calls/s)`,
        "base ratio",
        "this/base",
        `base proxy CPU µs/${name}`,
        "of it main thread",
        "of it isolate worker",
      );
    tables.push(`${name}:`, "", table(header, rows), "");
  }
  const out = [
    `## TFCALL and TFCALLASYNC vs FCALL (one INCR per call)${quick ? " — quick round" : ""}`,
    "",
    ...machineLines(),
    `${clients} clients x ${pipeline} calls in flight, ${seconds} s per side and round.`,
    "",
    base === null
      ? ""
      : `base: ${values.base}${baseNodeArgs.length > 0 ? ` (node ${baseNodeArgs.join(" ")})` : ""}`,
    proxyNodeArgs.length > 0 ? `this build's proxy: node ${proxyNodeArgs.join(" ")}` : "",
    ...tables,
  ].join("\n");
  process.stdout.write(`${out}\n`);
  return 0;
}

async function cleanup(): Promise<void> {
  await stopChildren();
  await redis?.stop();
}

runBench(main, cleanup);
