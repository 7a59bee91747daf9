import { encodeError, encodeValue } from "../resp/encode.js";
import { RespError, RespVerbatim } from "../resp/values.js";
import type { LocalCommand } from "./command-host.js";
import type { ProxyContext } from "./context.js";

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
    `tcp_port:${ctx.config.port}`,
    `connected_clients:${ctx.clients.size}`,
    `maxclients:${ctx.config.maxclients}`,
    `total_connections_received:${s.connectionsReceived}`,
    `rejected_connections:${s.rejectedConnections}`,
    `total_commands_processed:${s.commandsProcessed}`,
    `protocol_errors:${s.protocolErrors}`,
    `client_output_limit_disconnections:${s.outputLimitDisconnections}`,
    `used_memory_rss:${process.memoryUsage.rss()}`,
  ];
  const masters = topology.masters();
  lines.push(`upstream_nodes:${masters.length}`);
  masters.forEach((node, i) => {
    lines.push(
      `upstream${i}:addr=${node.id},role=master,connections=${node.connectionCount},down=${node.down ? 1 : 0}`,
    );
  });
  return lines.join("\r\n") + "\r\n";
}

const PROXY_ONLY = new Set(["proxy"]);
const WITH_PROXY = new Set(["", "default", "all", "everything", "proxy"]);

function field(info: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim();
}

/**
 * In front of a cluster: one line per shard, then the first master's own sections with
 * the Keyspace section summed over every shard.
 */
async function clusterInfo(ctx: ProxyContext, sections: string[]): Promise<string> {
  const replies = await ctx.router.callControl(["INFO", ...sections]);
  const texts = replies.map((r) => (Buffer.isBuffer(r) ? r.toString() : ""));
  const masters = ctx.router.topology.masters();
  const shardLines = texts.map((t, i) => {
    const keys = /^db0:keys=(\d+)/m.exec(t)?.[1] ?? "0";
    return `shard${i}:addr=${masters[i]?.id},keys=${keys},used_memory=${field(t, "used_memory") ?? "?"}`;
  });
  const totals = new Map<string, number>();
  for (const t of texts) {
    for (const m of t.matchAll(/^(db\d+):keys=(\d+)/gm))
      totals.set(m[1], (totals.get(m[1]) ?? 0) + Number(m[2]));
  }
  let first = texts[0] ?? "";
  if (/^# Keyspace/m.test(first)) {
    const keyspace = [...totals].map(([db, n]) => `${db}:keys=${n}`).join("\r\n");
    first = first.replace(/# Keyspace\r\n[\s\S]*$/, `# Keyspace\r\n${keyspace}${keyspace ? "\r\n" : ""}`);
  }
  return `# Shards\r\n${shardLines.join("\r\n")}\r\n\r\n${first}`;
}

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
  const ours = wantsProxy ? proxySection(ctx) : "";
  const upstreamSections = sections.filter((s) => !PROXY_ONLY.has(s));
  if (sections.length > 0 && upstreamSections.length === 0) {
    session.replyText(ours);
    return;
  }
  const slot = session.laterSlot();
  const theirs =
    ctx.router.topology.mode === "cluster"
      ? clusterInfo(ctx, upstreamSections)
      : ctx.router.callControl(["INFO", ...upstreamSections]).then(([reply]) => {
          if (reply instanceof RespError) throw new Error(reply.message);
          return Buffer.isBuffer(reply) ? reply.toString() : "";
        });
  theirs.then(
    (text) =>
      slot.reply(
        encodeValue(
          new RespVerbatim("txt", Buffer.from(ours + (ours && text ? "\r\n" : "") + withTracking(ctx, text))),
          session.proto,
        ),
      ),
    (err: Error) => slot.reply(encodeError(err.message)),
  );
};
