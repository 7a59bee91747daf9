import { encodeError, encodeValue } from "../resp/encode.js";
import { RespError, RespVerbatim } from "../resp/values.js";
import type { LocalCommand } from "./command-host.js";
import type { ProxyContext } from "./context.js";
import { mergeClusterInfo } from "../observability/cluster-info.js";
import { PROXY_KEYS_SLOT, proxyKeysCount } from "../routing/hidden-keys.js";
import { PromiseSink } from "../upstream/reply-sink.js";

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

/**
 * In front of a cluster: every master's INFO, summed where a sum means something and per
 * shard otherwise (src/observability/cluster-info.ts), db0 less the proxy's own keys.
 */
async function clusterInfo(ctx: ProxyContext, sections: string[]): Promise<string> {
  const [replies, hidden] = await Promise.all([
    ctx.router.callControl(["INFO", ...sections]),
    hiddenKeyCount(ctx),
  ]);
  const error = replies.find((r): r is RespError => r instanceof RespError);
  if (error !== undefined) throw new Error(error.message);
  const texts = replies.map((r) => (Buffer.isBuffer(r) ? r.toString() : ""));
  return mergeClusterInfo(
    texts,
    ctx.router.topology.masters().map((n) => n.id),
    hidden,
  );
}

/** How many of the proxy's lasting keys exist (DBSIZE through the proxy leaves them out too). */
async function hiddenKeyCount(ctx: ProxyContext): Promise<number> {
  const payload = proxyKeysCount();
  if (payload === null) return 0;
  const sink = new PromiseSink();
  ctx.router.sendTo(ctx.router.routeSlot(PROXY_KEYS_SLOT, 0), payload, sink, 0, PROXY_KEYS_SLOT);
  const count = await sink.promise;
  return typeof count === "number" ? count : 0;
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
          new RespVerbatim("txt", Buffer.from(ours + (ours && text ? "\r\n" : "") + text)),
          session.proto,
        ),
      ),
    (err: Error) => slot.reply(encodeError(err.message)),
  );
};
