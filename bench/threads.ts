/**
 * --threads: redis-benchmark (GET and SET, P=1 and P=16, 50 clients) against gears-proxy
 * --threads 1 and --threads 2 in front of one redis-server, in alternating rounds, medians
 * printed. For each run: requests/s and the proxy's CPU time per request (user + system of the
 * proxy and, with --threads 2, its supervisor and both threads, from /proc). Then the same
 * with redis-benchmark pinned to core 0 (`taskset -c 0`), so that the other core is left to
 * the proxy and redis-server. See `--help`.
 */
import os from "node:os";
import { parseArgs } from "node:util";
import { sendCommand } from "../spec/harness/index.js";
import { startRedis, type RedisNode } from "../spec/harness/redis.js";
import {
  treeCpuSeconds,
  HOST,
  machineLines,
  run,
  runBench,
  stopChildren,
  say,
  sleep,
  startGears,
  table,
} from "./support.js";

const HELP = `Usage: node dist/bench/threads.js [options]

  --rounds N     alternating rounds (default 3)
  --requests N   requests per P=1 run (default 100000; P=16 runs send 4x as many)
  --quick        1 round, 50000 requests
  --help
`;

/** Background CPU of each idle proxy tree, in ms per second, over the same `ms`. */
async function idleCpu(pids: number[], ms: number): Promise<number[]> {
  const before = pids.map((pid) => treeCpuSeconds(pid).total);
  await sleep(ms);
  return pids.map((pid, i) => ((treeCpuSeconds(pid).total - before[i]) * 1000 * 1000) / ms);
}

interface Cell {
  test: "get" | "set";
  pipeline: number;
  pinned: boolean;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)];
};

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string" },
      requests: { type: "string" },
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
  const requests = Number(values.requests ?? (quick ? 50_000 : 100_000));
  const lines = machineLines();
  redis = await startRedis({ args: ["--save", ""] });
  const labels = ["threads 1", "threads 2"] as const;
  const proxies = new Map<string, { port: number; pid: number }>();
  for (const label of labels) {
    const p = await startGears(redis.port, {
      profileDir: undefined,
      nodeArgs: [],
      args: ["--threads", label.split(" ")[1]],
      readyWhen: "ping",
    });
    proxies.set(label, { port: p.port, pid: p.child.proc.pid ?? -1 });
  }
  // PING answers once one thread listens: wait until both do.
  const two = proxies.get("threads 2")!;
  for (const deadline = Date.now() + 15_000; Date.now() < deadline; await sleep(100)) {
    const info = String(await sendCommand(two.port, ["INFO", "proxy"], { host: HOST }));
    if (/^threads:2\r?$/m.test(info)) break;
  }
  const idleMs = quick ? 5000 : 15_000;
  const idle = await idleCpu(
    labels.map((l) => proxies.get(l)!.pid),
    idleMs,
  );
  const cells: Cell[] = [];
  for (const pinned of [false, true])
    for (const pipeline of [1, 16])
      for (const test of ["get", "set"] as const) cells.push({ test, pipeline, pinned });
  const rps = new Map<string, number[]>();
  const cpu = new Map<string, number[]>();
  /** The --threads supervisor's own CPU per request (it accepts and deals connections, relays questions). */
  const supervisorCpu = new Map<string, number[]>();
  const key = (c: Cell, label: string): string => `${c.pinned}/${c.pipeline}/${c.test}/${label}`;
  for (let round = 0; round < rounds; round++) {
    for (const cell of cells) {
      // Alternate which proxy goes first, so that neither always runs on a warmer machine.
      const order = round % 2 === 0 ? labels : [...labels].reverse();
      for (const label of order) {
        const { port, pid } = proxies.get(label)!;
        const n = cell.pipeline > 1 ? requests * 4 : requests;
        const bench = ["redis-benchmark", "-h", HOST, "-p", String(port), "-c", "50", "-n", String(n)];
        bench.push("-P", String(cell.pipeline), "-t", cell.test, "--csv");
        const [cmd, ...args] = cell.pinned ? ["taskset", "-c", "0", ...bench] : bench;
        const cpuBefore = treeCpuSeconds(pid);
        const out = await run("redis-benchmark", cmd, args, 120_000);
        const cpuAfter = treeCpuSeconds(pid);
        const cpuUs = ((cpuAfter.total - cpuBefore.total) * 1e6) / n;
        const supervisorUs = ((cpuAfter.own - cpuBefore.own) * 1e6) / n;
        const row = out.split("\n").find((l) => l.startsWith(`"${cell.test.toUpperCase()}"`));
        const r = Number((row ?? "").split(",")[1]?.replace(/"/g, ""));
        (rps.get(key(cell, label)) ?? rps.set(key(cell, label), []).get(key(cell, label))!).push(r);
        (cpu.get(key(cell, label)) ?? cpu.set(key(cell, label), []).get(key(cell, label))!).push(cpuUs);
        const sup =
          supervisorCpu.get(key(cell, label)) ??
          supervisorCpu.set(key(cell, label), []).get(key(cell, label))!;
        sup.push(supervisorUs);
        say(`round ${round + 1} ${key(cell, label)}: ${Math.round(r)} rps, ${cpuUs.toFixed(2)} µs CPU/req`);
      }
    }
  }
  const rows = cells.map((c) => {
    const r1 = median(rps.get(key(c, labels[0]))!);
    const r2 = median(rps.get(key(c, labels[1]))!);
    const c1 = median(cpu.get(key(c, labels[0]))!);
    const c2 = median(cpu.get(key(c, labels[1]))!);
    return [
      c.pinned ? "taskset -c 0" : "no",
      c.test.toUpperCase(),
      String(c.pipeline),
      Math.round(r1).toLocaleString("en-US"),
      Math.round(r2).toLocaleString("en-US"),
      `${(r2 / r1).toFixed(2)}x`,
      c1.toFixed(2),
      c2.toFixed(2),
      `${(c2 / c1).toFixed(2)}x`,
      median(supervisorCpu.get(key(c, labels[1]))!).toFixed(2),
    ];
  });
  const load = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
  const out = [
    ...lines,
    `command: node dist/bench/threads.js${quick ? " --quick" : ""}; ${rounds} rounds, ${requests} requests per P=1 run (4x at P=16), 50 clients, one redis-server`,
    "",
    table(
      [
        "redis-benchmark pinned",
        "test",
        "P",
        "rps --threads 1",
        "rps --threads 2",
        "2 / 1",
        "CPU µs/req --threads 1",
        "CPU µs/req --threads 2",
        "2 / 1",
        "of which supervisor",
      ],
      rows,
    ),
    "",
    `idle, before the runs, over ${idleMs / 1000} s: ${labels.map((l, i) => `${l} ${idle[i].toFixed(2)} ms CPU/s`).join(", ")}`,
    `load average at the end: ${load}`,
  ];
  process.stdout.write(`${out.join("\n")}\n`);
  return 0;
}

let redis: RedisNode | undefined;

async function cleanup(): Promise<void> {
  await stopChildren();
  await redis?.stop();
}

runBench(main, cleanup);
