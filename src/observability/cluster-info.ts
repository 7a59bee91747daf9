/**
 * INFO in front of a cluster: the shards' INFO replies made into one honest reply. Figures that
 * add up across shards (clients, memory, stats counters, keys) are summed under the sections'
 * own names, so a client reading `used_memory` or `db0` gets the cluster's figure; every other
 * figure (versions, roles, peaks, ratios) is shown per shard, in a copy of its section whose
 * first field, shard_addr, names the node. Never one shard's figures as if they were the whole.
 */

/** The sections whose counters are summed; the rest of INFO is per shard. */
const SUMMED_SECTIONS = new Set(["clients", "memory", "stats", "keyspace"]);

/**
 * Figures of a summed section that do not add up: limits, peaks, ratios, percentages, texts for
 * humans, the machine's memory, flags, and the latest duration of one event.
 */
const NOT_A_SUM =
  /_human$|_perc$|_ratio$|peak|^maxmemory|^maxclients$|_max_|^total_system_memory$|^latest_|_running$|_policy$|allocator$/;

interface Section {
  name: string;
  fields: [string, string][];
}

/** "# Name" headers and "field:value" lines, in order. */
export function parseInfo(text: string): Section[] {
  const sections: Section[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith("# ")) sections.push({ name: line.slice(2).trim(), fields: [] });
    else if (line.includes(":") && sections.length > 0) {
      const colon = line.indexOf(":");
      sections[sections.length - 1].fields.push([line.slice(0, colon), line.slice(colon + 1)]);
    }
  }
  return sections;
}

function isSummable(field: string, value: string): boolean {
  return /^-?\d+(\.\d+)?$/.test(value) && !NOT_A_SUM.test(field);
}

/** The sum of decimal texts, written with as many decimals as the first has. */
function sum(values: string[]): string {
  const decimals = values[0].split(".")[1]?.length ?? 0;
  const total = values.reduce((acc, v) => acc + Number(v), 0);
  return decimals === 0 ? String(Math.round(total)) : total.toFixed(decimals);
}

interface DbFigures {
  keys: number;
  expires: number;
  ttlWeight: number;
}

/** dbN:keys=..,expires=..,avg_ttl=.. summed; avg_ttl is the mean weighted by expiring keys. */
function keyspace(shards: Section[][], hiddenKeys: number): [string, string][] {
  const dbs = new Map<string, DbFigures>();
  for (const sections of shards) {
    for (const [db, value] of sections.find((s) => s.name.toLowerCase() === "keyspace")?.fields ?? []) {
      const figure = (name: string): number => Number(new RegExp(`${name}=(\\d+)`).exec(value)?.[1] ?? 0);
      const total = dbs.get(db) ?? { keys: 0, expires: 0, ttlWeight: 0 };
      total.keys += figure("keys");
      total.expires += figure("expires");
      total.ttlWeight += figure("avg_ttl") * figure("expires");
      dbs.set(db, total);
    }
  }
  const db0 = dbs.get("db0");
  // The proxy's own keys (sessions, libraries, leases) are not the users': DBSIZE leaves them out too.
  if (db0 !== undefined) db0.keys = Math.max(0, db0.keys - hiddenKeys);
  return [...dbs]
    .filter(([, t]) => t.keys > 0)
    .map(([db, t]) => {
      const avgTtl = t.expires === 0 ? 0 : Math.round(t.ttlWeight / t.expires);
      return [db, `keys=${t.keys},expires=${t.expires},avg_ttl=${avgTtl}`];
    });
}

function render(name: string, fields: [string, string][]): string {
  return [`# ${name}`, ...fields.map(([f, v]) => `${f}:${v}`)].join("\r\n") + "\r\n";
}

/**
 * One INFO text from the masters' replies (`texts[i]` from `nodes[i]`), less `hiddenKeys`
 * proxy keys in db0: first the summed sections, then each shard's own, labelled with its node.
 */
export function mergeClusterInfo(texts: string[], nodes: string[], hiddenKeys: number): string {
  const shards = texts.map(parseInfo);
  const order = shards[0]?.map((s) => s.name) ?? [];
  // One line per shard, Redis' compound-value style: which node, its keys, its memory.
  const summary = shards.map((sections, i): [string, string] => {
    const find = (section: string, field: string): string | undefined =>
      sections.find((s) => s.name.toLowerCase() === section)?.fields.find(([f]) => f === field)?.[1];
    const keys = /keys=(\d+)/.exec(find("keyspace", "db0") ?? "")?.[1] ?? "0";
    return [`shard${i}`, `addr=${nodes[i]},keys=${keys},used_memory=${find("memory", "used_memory") ?? "?"}`];
  });
  const blocks: string[] = [render("Shards", summary)];
  for (const name of order) {
    const key = name.toLowerCase();
    if (!SUMMED_SECTIONS.has(key)) continue;
    if (key === "keyspace") {
      blocks.push(render(name, keyspace(shards, hiddenKeys)));
      continue;
    }
    const fields: [string, string][] = [];
    for (const [field, value] of shards[0].find((s) => s.name === name)!.fields) {
      if (!isSummable(field, value)) continue;
      const values = shards.map(
        (sections) => sections.find((s) => s.name === name)?.fields.find(([f]) => f === field)?.[1] ?? "0",
      );
      fields.push([field, sum(values)]);
    }
    blocks.push(render(name, fields));
  }
  shards.forEach((sections, i) => {
    for (const section of sections) {
      const key = section.name.toLowerCase();
      if (key === "keyspace") continue;
      const fields = SUMMED_SECTIONS.has(key)
        ? section.fields.filter(([f, v]) => !isSummable(f, v))
        : section.fields;
      if (SUMMED_SECTIONS.has(key) && fields.length === 0) continue;
      // The section keeps its own name (tools group fields by it); its first field names the node.
      blocks.push(render(section.name, [["shard_addr", nodes[i]], ...fields]));
    }
  });
  return blocks.join("\r\n");
}
