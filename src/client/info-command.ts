import { encodeError, encodeValue } from "../resp/encode.js";
import { RespError, RespVerbatim, type RespValue } from "../resp/values.js";
import type { LocalCommand } from "./command-host.js";
import type { ProxyContext } from "./context.js";
import { proxyKeysAndExpires } from "../routing/hidden-keys.js";
import { mergeInfo, type OwnKeys } from "../routing/info-merge.js";

const PROXY_VERSION = "0.1.0";

/** The "# Proxy" section of INFO: the proxy's own clients, commands and upstreams. */
export function proxySection(ctx: ProxyContext): string {
  const s = ctx.stats;
  const topology = ctx.router.topology;
  const lines = [
    "# Proxy",
    `proxy_version:${PROXY_VERSION}`,
    `proxy_mode:${topology.mode}`,
    `uptime_in_seconds:${Math.floor((Date.now() - s.startedAt) / 1000)}`,
    `process_id:${process.pid}`,
    `tcp_port:${ctx.config.port ?? 0}`,
    `connected_clients:${ctx.clients.size}`,
    `maxclients:${ctx.config.maxclients}`,
    `total_connections_received:${s.connectionsReceived}`,
    `rejected_connections:${s.rejectedConnections}`,
    `total_commands_processed:${s.commandsProcessed}`,
    `protocol_errors:${s.protocolErrors}`,
    `client_output_limit_disconnections:${s.outputLimitDisconnections}`,
    `evicted_clients:${s.evictedClients}`,
    `maxmemory_clients:${ctx.config.maxmemoryClients}`,
    `clients_memory:${s.clientsMemory}`,
    `used_memory_rss:${process.memoryUsage.rss()}`,
  ];
  const masters = topology.masters();
  lines.push(`upstream_nodes:${masters.length}`);
  masters.forEach((node, i) => {
    lines.push(
      `upstream${i}:addr=${node.id},role=master,connections=${node.connectionCount},down=${node.down ? 1 : 0}`,
    );
  });
  lines.push(...(topology.infoLines?.() ?? []));
  return lines.join("\r\n") + "\r\n";
}

const PROXY_ONLY = new Set(["proxy"]);
const WITH_PROXY = new Set(["", "default", "all", "everything", "proxy"]);

function field(info: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim();
}

/** The proxy's own keys in db 0 and how many expire, for the keyspace line; null when none or unknown. */
async function ownKeys(ctx: ProxyContext): Promise<OwnKeys | null> {
  const query = proxyKeysAndExpires();
  if (query === null) return null;
  // In front of one server the control connection asks: a shared one would have to SELECT 0
  // and back, which shows in the server's command stats. A cluster has db 0 only.
  const count = async (argv: string[]): Promise<RespValue | null> =>
    ctx.router.topology.mode === "cluster"
      ? ctx.router.call(argv).catch(() => null)
      : ((await ctx.router.callControl(argv).catch(() => null))?.[0] ?? null);
  const [keys, expires] = await Promise.all([
    count(query.keys),
    query.expiring === null ? 0 : count(query.expiring),
  ]);
  return typeof keys === "number" && typeof expires === "number" ? { keys, expires } : null;
}

/**
 * The masters' own sections, merged into one text (routing/info-merge.ts); in front of a
 * cluster, after a one-line-per-shard summary.
 */
async function upstreamInfo(ctx: ProxyContext, sections: string[]): Promise<string> {
  const wantsKeyspace = sections.length === 0 || sections.some((s) => KEYSPACE_SECTIONS.has(s));
  const [replies, own] = await Promise.all([
    ctx.router.callControl(["INFO", ...sections]),
    wantsKeyspace ? ownKeys(ctx) : null,
  ]);
  const failed = replies.find((r) => r instanceof RespError);
  if (failed instanceof RespError) throw new Error(failed.message);
  const masters = ctx.router.topology.masters();
  const shards = replies.map((r, i) => ({
    node: masters[i]?.id ?? `shard${i}`,
    text: Buffer.isBuffer(r) ? r.toString() : "",
  }));
  const merged = mergeInfo(shards, own);
  if (ctx.router.topology.mode !== "cluster") return merged;
  const shardLines = shards.map(({ node, text }, i) => {
    const keys = /^db0:keys=(\d+)/m.exec(text)?.[1] ?? "0";
    return `shard${i}:addr=${node},keys=${keys},used_memory=${field(text, "used_memory") ?? "?"}`;
  });
  return `# Shards\r\n${shardLines.join("\r\n")}\r\n\r\n${merged}`;
}

const KEYSPACE_SECTIONS = new Set(["keyspace", "default", "all", "everything"]);

/** The server counts its own tracking (the proxy's streams): its clients' figures replace them. */
function withTracking(ctx: ProxyContext, text: string): string {
  const t = ctx.tracking.stats;
  const ours: [string, number][] = [
    ["tracking_clients", t.clients],
    ["tracking_total_keys", t.keys],
    ["tracking_total_items", t.items],
    ["tracking_total_prefixes", t.prefixes],
  ];
  for (const [name, value] of ours) text = text.replace(new RegExp(`^${name}:\\d+`, "m"), `${name}:${value}`);
  return text;
}

/** INFO: the proxy's section first, then the server's own sections. */
export const infoCommand: LocalCommand = (session, { argv }) => {
  const ctx = session.ctx;
  const sections = argv.slice(1).map((a) => a.toString().toLowerCase());
  const wantsProxy = sections.length === 0 || sections.some((s) => WITH_PROXY.has(s));
  // With --threads, the proxy section sums every thread's (src/threads/).
  const oursLater = wantsProxy && ctx.threads !== undefined ? ctx.threads.proxySection() : null;
  const ours = wantsProxy && oursLater === null ? proxySection(ctx) : "";
  const upstreamSections = sections.filter((s) => !PROXY_ONLY.has(s));
  const proxyOnly = sections.length > 0 && upstreamSections.length === 0;
  if (proxyOnly && oursLater === null) {
    session.replyText(ours);
    return;
  }
  const slot = session.laterSlot();
  const theirs = Promise.all([oursLater ?? ours, proxyOnly ? "" : upstreamInfo(ctx, upstreamSections)]);
  theirs.then(
    ([mine, text]) =>
      slot.reply(
        encodeValue(
          new RespVerbatim("txt", Buffer.from(mine + (mine && text ? "\r\n" : "") + withTracking(ctx, text))),
          session.proto,
        ),
      ),
    (err: Error) => slot.reply(encodeError(err.message)),
  );
};
