/**
 * Large results: `GB('KeysOnlyReader').run()` over N keys (default 1,000,000, made with DEBUG
 * POPULATE) through gears-proxy at its default settings, against one redis-server. For each
 * run: the reply's size in bytes (RESP, as the proxy writes it), the proxy's RSS before, its
 * peak during the run (sampled every 10 ms from /proc, worker threads included) and after
 * (right after the reply, and 2 s later), in the same process and run. Run 0 is a one-result
 * execution on the fresh proxy (the fixed cost of a first execution: an isolate and its
 * spare); the large runs follow it. The bench fails unless every run returns exactly N keys.
 * See `--help`.
 */
import os from "node:os";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { startRedis, type RedisNode } from "../spec/harness/redis.js";
import { sendCommand } from "../spec/harness/resp.js";
import {
  HOST,
  children,
  machineLines,
  mb,
  runBench,
  sampleRss,
  say,
  sleep,
  startGears,
  statusKb,
  stopChild,
  table,
} from "./support.js";

const HELP = `Usage: node dist/bench/large-results.js [options]

  --keys N     keys in the database (default 1000000)
  --runs N     executions, one after the other on the same proxy (default 3)
  --quick      100,000 keys, 2 runs
  --script S   the script of the large runs (default GB('KeysOnlyReader').run()); e.g.
               GB('KeysOnlyReader').count().run() for what reading alone costs
  --cli PATH          another build's dist/src/cli.js (e.g. one from before results streamed)
  --proxy-args "..."  extra gears-proxy flags, e.g. "--gears-config ScriptMemoryLimitMB=512"
  --node-args="..."   extra node flags for the proxy process, e.g. --node-args=--max-semi-space-size=2
  --help
`;

/** Bytes of a bulk string of `len` bytes in RESP. */
const bulkBytes = (len: number): number => 1 + String(len).length + 2 + len + 2;

/** The RESP size of `[results, errors]` as ioredis decoded it (results and errors are bulk strings). */
function replySize(reply: Buffer[][]): number {
  const [results, errors] = reply;
  let size = 4 + 1 + String(results.length).length + 2 + 1 + String(errors.length).length + 2;
  for (const r of results) size += bulkBytes(r.length);
  for (const e of errors) size += bulkBytes(e.length);
  return size;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      keys: { type: "string" },
      runs: { type: "string" },
      quick: { type: "boolean" },
      script: { type: "string" },
      cli: { type: "string" },
      "proxy-args": { type: "string" },
      "node-args": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help === true) {
    process.stdout.write(HELP);
    return 0;
  }
  const keys = Number(values.keys ?? (values.quick === true ? 100_000 : 1_000_000));
  const runs = Number(values.runs ?? (values.quick === true ? 2 : 3));
  const script = values.script ?? "GB('KeysOnlyReader').run()";
  const started = Date.now();
  const lines = machineLines();
  redis = await startRedis({ args: ["--enable-debug-command", "yes", "--save", ""] });
  // A million keys can take longer than call()'s 2 s on a loaded machine.
  await sendCommand(redis.port, ["DEBUG", "POPULATE", String(keys)], { host: HOST, timeoutMs: 60_000 });
  const words = (s: string | undefined): string[] => (s ?? "").split(" ").filter((a) => a !== "");
  const proxyArgs = words(values["proxy-args"]);
  const nodeArgs = words(values["node-args"]);
  const proxy = await startGears(redis.port, {
    profileDir: undefined,
    nodeArgs,
    args: proxyArgs,
    cli: values.cli,
    readyWhen: "ping",
  });
  const pid = proxy.child.pid;
  const client = new Redis({ port: proxy.port, host: HOST, maxRetriesPerRequest: 0 });
  // The ready check's key is a user key too.
  await client.del("bench:ready");
  const rows: string[][] = [];
  let failed = false;
  {
    // What any first execution costs a fresh proxy, whatever its result: an isolate and the
    // spare started when it is taken. Measured apart, so the runs below show what the size adds.
    await sleep(1000);
    const beforeKb = statusKb(pid, "VmRSS");
    const stop = sampleRss(pid, 10);
    const reply = (await client.callBuffer("RG.EXECUTE", "GB('ShardsIDReader').run()")) as Buffer[][];
    const peakKb = stop();
    const afterKb = statusKb(pid, "VmRSS");
    await sleep(2000);
    const size = replySize(reply);
    rows.push([
      "0: first execution, 1 result (fixed cost)",
      String(reply[0].length),
      `${size} B`,
      "",
      mb(beforeKb),
      mb(peakKb),
      mb(afterKb),
      mb(statusKb(pid, "VmRSS")),
      mb(peakKb - beforeKb),
      "",
    ]);
  }
  for (let i = 0; i < runs; i++) {
    await sleep(1000);
    const beforeKb = statusKb(pid, "VmRSS");
    const stop = sampleRss(pid, 10);
    const t0 = Date.now();
    const reply = (await client.callBuffer("RG.EXECUTE", script)) as Buffer[][];
    const ms = Date.now() - t0;
    const peakKb = stop();
    const afterKb = statusKb(pid, "VmRSS");
    await sleep(2000);
    const laterKb = statusKb(pid, "VmRSS");
    const size = replySize(reply);
    const count = reply[0].length;
    if ((values.script === undefined && count !== keys) || reply[1].length !== 0) {
      failed = true;
      say(`run ${i + 1}: ${count} results of ${keys}, errors ${reply[1].map(String).join("; ")}`);
    }
    const growthKb = peakKb - beforeKb;
    rows.push([
      `${i + 1}${i === 0 ? ": first large result" : ""}`,
      count.toLocaleString("en-US"),
      `${(size / 2 ** 20).toFixed(1)} MB`,
      `${ms} ms`,
      mb(beforeKb),
      mb(peakKb),
      mb(afterKb),
      mb(laterKb),
      mb(growthKb),
      size >= 1024 ? `${(growthKb / (size / 1024)).toFixed(2)}x` : "",
    ]);
    say(
      `run ${i + 1}: ${count} keys, ${size} bytes, ${ms} ms, RSS ${mb(beforeKb)} -> ${mb(peakKb)} -> ${mb(laterKb)}`,
    );
  }
  client.disconnect();
  const load = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
  const out = [
    ...lines,
    `command: node dist/bench/large-results.js${values.quick === true ? " --quick" : ""}; ${keys.toLocaleString("en-US")} keys (DEBUG POPULATE), one redis-server; script ${script}; proxy ${values.cli ?? "this build"} ${proxyArgs.join(" ") || "(default gears settings)"}${nodeArgs.length > 0 ? `; node ${nodeArgs.join(" ")}` : ""}`,
    "",
    table(
      [
        "run",
        "results",
        "reply size (RESP)",
        "RG.EXECUTE time",
        "proxy RSS before",
        "peak during the run",
        "right after the reply",
        "2 s later",
        "peak growth",
        "peak growth / reply size",
      ],
      rows,
    ),
    "",
    `total time: ${Math.round((Date.now() - started) / 1000)} s; load average at the end: ${load}`,
  ];
  process.stdout.write(`${out.join("\n")}\n`);
  return failed ? 1 : 0;
}

let redis: RedisNode | undefined;

async function cleanup(): Promise<void> {
  for (const child of [...children]) await stopChild(child, 2000);
  await redis?.stop();
}

runBench(async () => {
  try {
    return await main();
  } finally {
    await cleanup();
  }
}, cleanup);
