/**
 * Small RG.EXECUTEs back to back: what a job costs when its work is nothing, so that only the
 * fixed cost of an execution shows (taking an isolate, loading the gears library into it,
 * running, and making the isolate the next job will take). One client sends `--jobs` jobs one
 * after another; per job: the wall time the client waits, and the proxy's CPU (every thread,
 * from /proc) from the first job's send until `--settle` ms after the last reply, so work a
 * job leaves behind (the next spare's start) is counted. With `--b-cli`, another build is
 * measured the same way in each round, a fresh proxy per build and round, the order
 * alternating, against the same redis-server; medians and B/A ratios at the end.
 */
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { startRedis, type RedisNode } from "../spec/harness/redis.js";
import {
  HOST,
  cpuSeconds,
  machineLines,
  runBench,
  say,
  sleep,
  startGears,
  stopChild,
  table,
  median,
} from "./support.js";

const HELP = `Usage: node dist/bench/small-jobs.js [options]

  --jobs N      RG.EXECUTEs per round and build, one after another (default 20)
  --rounds N    fresh proxies per build, alternating A-B / B-A (default 3)
  --settle MS   how long after the last reply the proxy's CPU is still counted (default 1500)
  --gap MS      a pause between one job's reply and the next job (default 0: back to back);
                the wall time per job leaves the pauses out
  --script S    the job (default GB().map(r => r.key).run('nosuch:*'): a KeysReader over no key)
  --b-cli PATH  a second build's dist/src/cli.js, measured beside this one in each round
  --help
`;

interface Build {
  label: string;
  cli: string | undefined;
}

interface Round {
  wallMs: number;
  cpuMs: number;
}

async function measure(
  redis: RedisNode,
  build: Build,
  o: { jobs: number; settleMs: number; gapMs: number; script: string },
): Promise<Round> {
  const proxy = await startGears(redis.port, {
    profileDir: undefined,
    nodeArgs: [],
    args: [],
    cli: build.cli,
    readyWhen: "ping",
  });
  const client = new Redis({ port: proxy.port, host: HOST, maxRetriesPerRequest: 0 });
  try {
    // The proxy's first execution (its first isolate, the JIT's first pass) is not what is measured.
    await client.call("RG.EXECUTE", "GB('ShardsIDReader').run()");
    await sleep(o.settleMs);
    const cpu0 = cpuSeconds(proxy.child.pid);
    let waited = 0;
    for (let i = 0; i < o.jobs; i++) {
      if (i > 0 && o.gapMs > 0) await sleep(o.gapMs);
      const t0 = performance.now();
      const reply = (await client.call("RG.EXECUTE", o.script)) as unknown[];
      waited += performance.now() - t0;
      if (!Array.isArray(reply) || !Array.isArray(reply[1]) || reply[1].length !== 0) {
        throw new Error(`${build.label}: job ${i + 1} answered ${JSON.stringify(reply)}`);
      }
    }
    const wallMs = waited / o.jobs;
    await sleep(o.settleMs);
    const cpuMs = ((cpuSeconds(proxy.child.pid) - cpu0) * 1000) / o.jobs;
    return { wallMs, cpuMs };
  } finally {
    client.disconnect();
    await stopChild(proxy.child, 2000);
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      jobs: { type: "string" },
      rounds: { type: "string" },
      settle: { type: "string" },
      gap: { type: "string" },
      script: { type: "string" },
      "b-cli": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help === true) {
    process.stdout.write(HELP);
    return 0;
  }
  const o = {
    jobs: Number(values.jobs ?? 20),
    settleMs: Number(values.settle ?? 1500),
    gapMs: Number(values.gap ?? 0),
    script: values.script ?? "GB().map(r => r.key).run('nosuch:*')",
  };
  const rounds = Number(values.rounds ?? 3);
  const lines = machineLines();
  const builds: Build[] = [{ label: "A", cli: undefined }];
  if (values["b-cli"] !== undefined) builds.push({ label: "B", cli: values["b-cli"] });
  redis = await startRedis({ args: ["--save", ""] });
  const results = new Map<string, Round[]>(builds.map((b) => [b.label, []]));
  const rows: string[][] = [];
  for (let round = 0; round < rounds; round++) {
    for (const build of round % 2 === 0 ? builds : [...builds].reverse()) {
      const r = await measure(redis, build, o);
      results.get(build.label)!.push(r);
      rows.push([String(round + 1), build.label, r.wallMs.toFixed(1), r.cpuMs.toFixed(1)]);
      say(
        `round ${round + 1} ${build.label}: ${r.wallMs.toFixed(1)} ms per job, proxy CPU ${r.cpuMs.toFixed(1)} ms per job`,
      );
    }
  }
  const summary = builds.map((b) => {
    const rs = results.get(b.label)!;
    return [
      b.label,
      b.cli ?? "this build",
      median(rs.map((r) => r.wallMs)).toFixed(1),
      median(rs.map((r) => r.cpuMs)).toFixed(1),
    ];
  });
  const out = [
    ...lines,
    `command: node dist/bench/small-jobs.js --jobs ${o.jobs} --rounds ${rounds} --settle ${o.settleMs} --gap ${o.gapMs}${values["b-cli"] !== undefined ? ` --b-cli ${values["b-cli"]}` : ""}; script ${o.script}; one redis-server`,
    "",
    table(["round", "build", "wall ms per job", "proxy CPU ms per job"], rows),
    "",
    table(["build", "proxy", "median wall ms per job", "median proxy CPU ms per job"], summary),
  ];
  if (builds.length === 2) {
    const [a, b] = builds.map((x) => results.get(x.label)!);
    out.push(
      "",
      `B/A, median of per-round ratios: wall ${median(a.map((r, i) => b[i].wallMs / r.wallMs)).toFixed(2)}x, CPU ${median(a.map((r, i) => b[i].cpuMs / r.cpuMs)).toFixed(2)}x`,
    );
  }
  process.stdout.write(`${out.join("\n")}\n`);
  return 0;
}

let redis: RedisNode | undefined;

runBench(main, async () => {
  await redis?.stop();
});
