/**
 * INFO in front of several masters: one text for the whole cluster, never one shard's figures
 * presented as the whole. Each field is
 * - summed, where a sum means something (clients, memory, stats counters, CPU, keyspace,
 *   command and error stats), with its `_human` twin recomputed;
 * - the largest, for the "recent max" figures;
 * - given once, when every shard says the same (redis_version, os...);
 * - otherwise left to a `# Shard <address>` section per master at the end, labelled with the node.
 */

export interface ShardInfo {
  /** The master's address, host:port. */
  readonly node: string;
  readonly text: string;
}

/** The proxy's own keys in db 0, left out of the keyspace line (DBSIZE through the proxy leaves them out too). */
export interface OwnKeys {
  readonly keys: number;
  readonly expires: number;
}

const SUMMED_SECTIONS = new Set(["clients", "memory", "stats", "cpu"]);
/** Numbers in summed sections that are settings or shares, not amounts. */
const NOT_SUMMED = new Set([
  "maxclients",
  "maxmemory",
  "total_system_memory",
  "active_defrag_running",
  "current_eviction_exceeded_time",
]);
const LARGEST = new Set(["client_recent_max_input_buffer", "client_recent_max_output_buffer"]);
/** Ratios and percentages: they do not add up. */
const SHARE = /(_ratio|_perc)$/;
const NUMBER = /^-?\d+(\.\d+)?$/;

interface Section {
  readonly title: string;
  /** Field names in the order the first shard that has them gives them. */
  readonly order: string[];
  /** Field -> value per shard (undefined where a shard lacks it). */
  readonly values: Map<string, (string | undefined)[]>;
}

function parseSections(texts: readonly string[]): Section[] {
  const sections: Section[] = [];
  const byTitle = new Map<string, Section>();
  texts.forEach((text, shard) => {
    let current: Section | null = null;
    for (const raw of text.split("\n")) {
      const line = raw.replace(/\r$/, "");
      if (line.startsWith("# ")) {
        const title = line.slice(2).trim();
        current = byTitle.get(title) ?? null;
        if (current === null) {
          current = { title, order: [], values: new Map() };
          byTitle.set(title, current);
          sections.push(current);
        }
        continue;
      }
      const colon = line.indexOf(":");
      if (current === null || colon <= 0) continue;
      const name = line.slice(0, colon);
      let values = current.values.get(name);
      if (values === undefined) {
        values = new Array<string | undefined>(texts.length).fill(undefined);
        current.values.set(name, values);
        current.order.push(name);
      }
      values[shard] = line.slice(colon + 1);
    }
  });
  return sections;
}

/** Redis' bytesToHuman. */
function human(bytes: number): string {
  const units = ["B", "K", "M", "G", "T", "P"];
  let n = bytes;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${bytes}B` : `${n.toFixed(2)}${units[i]}`;
}

function sum(values: readonly string[]): string {
  const total = values.reduce((acc, v) => acc + Number(v), 0);
  return values.some((v) => v.includes(".")) ? total.toFixed(6) : String(total);
}

/** `k=v,k=v` lines (keyspace, cmdstat_*, errorstat_*): numeric parts summed, per-call figures recomputed. */
function mergeAttributes(values: readonly string[], own: OwnKeys | null): string {
  const totals = new Map<string, number>();
  const weightedTtl = { sum: 0, weight: 0 };
  for (const value of values) {
    const parts = new Map(value.split(",").map((kv) => kv.split("=") as [string, string]));
    for (const [k, v] of parts) totals.set(k, (totals.get(k) ?? 0) + Number(v));
    if (parts.has("avg_ttl")) {
      const expires = Number(parts.get("expires") ?? 0);
      weightedTtl.sum += Number(parts.get("avg_ttl")) * expires;
      weightedTtl.weight += expires;
    }
  }
  if (totals.has("avg_ttl")) {
    totals.set("avg_ttl", weightedTtl.weight === 0 ? 0 : Math.round(weightedTtl.sum / weightedTtl.weight));
  }
  if (own !== null && totals.has("keys")) {
    totals.set("keys", Math.max(0, totals.get("keys")! - own.keys));
    totals.set("expires", Math.max(0, (totals.get("expires") ?? 0) - own.expires));
  }
  return [...totals]
    .map(([k, v]) => {
      if (k !== "usec_per_call") return `${k}=${v}`;
      const calls = totals.get("calls") ?? 0;
      return `${k}=${(calls === 0 ? 0 : (totals.get("usec") ?? 0) / calls).toFixed(2)}`;
    })
    .join(",");
}

/**
 * One INFO text for the masters' texts. `own` (the proxy's own keys) is taken out of db0's
 * keyspace line; a keyspace line left with no key is dropped, as Redis drops empty databases.
 */
export function mergeInfo(shards: readonly ShardInfo[], own: OwnKeys | null = null): string {
  const sections = parseSections(shards.map((s) => s.text));
  const perShard: string[][] = shards.map(() => []);
  const out: string[] = [];
  for (const section of sections) {
    const lines: string[] = [];
    const summed = SUMMED_SECTIONS.has(section.title.toLowerCase());
    const merged = new Map<string, string>();
    for (const name of section.order) {
      const values = section.values.get(name)!;
      const present = values.filter((v): v is string => v !== undefined);
      const allNumbers = present.length === values.length && present.every((v) => NUMBER.test(v));
      if (
        section.title === "Keyspace" ||
        section.title === "Errorstats" ||
        section.title === "Commandstats"
      ) {
        const value = mergeAttributes(present, name === "db0" ? own : null);
        if (section.title === "Keyspace" && /(^|,)keys=0(,|$)/.test(value)) continue;
        merged.set(name, value);
      } else if (summed && allNumbers && LARGEST.has(name)) {
        merged.set(name, String(Math.max(...present.map(Number))));
      } else if (summed && allNumbers && !NOT_SUMMED.has(name) && !SHARE.test(name)) {
        merged.set(name, sum(present));
      } else if (name.endsWith("_human") && merged.has(name.slice(0, -6))) {
        merged.set(name, human(Number(merged.get(name.slice(0, -6)))));
      } else if (present.length === values.length && present.every((v) => v === present[0])) {
        merged.set(name, present[0]);
      } else {
        values.forEach((v, i) => {
          if (v !== undefined) perShard[i].push(`${name}:${v}`);
        });
        continue;
      }
      lines.push(`${name}:${merged.get(name)}`);
    }
    out.push(`# ${section.title}`, ...lines, "");
  }
  if (shards.length > 1) {
    shards.forEach((shard, i) => {
      if (perShard[i].length > 0) out.push(`# Shard ${shard.node}`, ...perShard[i], "");
    });
  }
  return out.join("\r\n");
}
