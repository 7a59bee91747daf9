import { describe as describeBursts, generateSequence, type Burst, type Mode } from "./command-generator.js";
import {
  firstDivergence,
  resetServer,
  runSequence,
  shorten,
  type Divergence,
} from "./differential-runner.js";

// One sequence against Redis directly and through the proxy, from the same empty state; the
// first reply that differs, and a shrinker that drops commands while the difference stays.

export interface Ports {
  /** A redis-server, talked to directly. */
  direct: number;
  /** The proxy, in front of another (fresh) Redis or a cluster; reset through itself. */
  proxy: number;
}

export interface Found {
  divergence: Divergence;
  /** The command whose reply differed, as sent. */
  command: string;
}

/** The command behind an entry "burst.command conn: ...". */
function commandAt(bursts: Burst[], entry: string): string {
  const m = /^(\d+)(?:\.(\d+))? /.exec(entry);
  if (m === null) return "?";
  const burst = bursts[Number(m[1])];
  const c = burst?.commands[Number(m[2] ?? 0)];
  return c === undefined ? "?" : describeBursts([{ conn: burst.conn, commands: [c] }]);
}

/** Both sides reset, the sequence run on each: the first divergence, or null. */
export async function check(ports: Ports, bursts: Burst[]): Promise<Found | null> {
  await Promise.all([resetServer(ports.direct), resetServer(ports.proxy)]);
  const direct = await runSequence(ports.direct, bursts);
  const proxy = await runSequence(ports.proxy, bursts);
  const divergence = firstDivergence(direct, proxy);
  if (divergence === null) return null;
  const entry = divergence.direct !== "<nothing>" ? divergence.direct : divergence.proxy;
  return { divergence, command: commandAt(bursts, entry) };
}

/** The command's name, upper case. */
function nameOf(command: string): string {
  return (command.split(": ")[1] ?? "").split(/[ |]/)[0].toUpperCase();
}

/** A reply's kind: an error's text, or its RESP type. */
function kindOf(entry: string): string {
  const reply = entry.replace(/^[^:]*: /, "");
  return reply.startsWith("-") ? reply : reply.slice(0, 1);
}

/**
 * The shrinker's sign that a divergence is the same one: the command's name and what each
 * side answered, by kind (a sequence shrunk past sense diverges for other reasons, such as a
 * WATCH left for a transaction of another slot).
 */
export function signature(found: Found): string {
  return `${nameOf(found.command)} ${kindOf(found.divergence.direct)} ${kindOf(found.divergence.proxy)}`;
}

/**
 * Drops bursts, then single commands, while the first divergence keeps its signature. `budget` bounds the runs.
 */
export async function shrink(
  ports: Ports,
  bursts: Burst[],
  found: Found,
  budget = 400,
): Promise<{ bursts: Burst[]; found: Found }> {
  const sign = signature(found);
  let best = bursts;
  let bestFound = found;
  let runs = 0;
  const attempt = async (candidate: Burst[]): Promise<boolean> => {
    if (runs++ >= budget) return false;
    const f = await check(ports, candidate);
    if (f === null || signature(f) !== sign) return false;
    best = candidate;
    bestFound = f;
    return true;
  };
  // Chunks of bursts, halving.
  for (let size = Math.max(1, Math.floor(best.length / 2)); size >= 1; size = Math.floor(size / 2)) {
    for (let at = 0; at < best.length;) {
      if (!(await attempt([...best.slice(0, at), ...best.slice(at + size)]))) at += size;
    }
    if (size === 1) break;
  }
  // Single commands inside bursts.
  for (let b = 0; b < best.length; b++) {
    for (let i = 0; i < best[b].commands.length && best[b].commands.length > 1;) {
      const burst = { ...best[b], commands: best[b].commands.filter((_, j) => j !== i) };
      if (!(await attempt([...best.slice(0, b), burst, ...best.slice(b + 1)]))) i++;
    }
  }
  return { bursts: best, found: bestFound };
}

/** A report of one divergence: seed, the minimal sequence, and both replies. */
export function report(seed: number, mode: Mode, bursts: Burst[], found: Found): string {
  return [
    `divergence (${mode}, seed ${seed}) at ${found.command}`,
    `  direct: ${shorten(found.divergence.direct)}`,
    `  proxy:  ${shorten(found.divergence.proxy)}`,
    "sequence:",
    describeBursts(bursts)
      .split("\n")
      .map((l) => `  ${l}`)
      .join("\n"),
  ].join("\n");
}

/** Generates the sequence of `seed`, checks it, and shrinks and reports what diverged. */
export async function fuzzSeed(
  ports: Ports,
  mode: Mode,
  seed: number,
  bursts: number,
): Promise<string | null> {
  const sequence = generateSequence({ seed, bursts, mode });
  const found = await check(ports, sequence);
  if (found === null) return null;
  const small = await shrink(ports, sequence, found);
  return report(seed, mode, small.bursts, small.found);
}
