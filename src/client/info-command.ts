import { encodeBulk, encodeError } from "../resp/encode.js";
import { RespError } from "../resp/values.js";
import type { ProxyContext } from "./context.js";
import type { LocalCommand } from "./local-commands.js";

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

/** INFO: the proxy's section first, then the server's own sections. */
export const infoCommand: LocalCommand = (session, { argv }) => {
  const sections = argv.slice(1).map((a) => a.toString().toLowerCase());
  const wantsProxy = sections.length === 0 || sections.some((s) => WITH_PROXY.has(s));
  const ours = wantsProxy ? proxySection(session.ctx) : "";
  const upstreamSections = sections.filter((s) => !PROXY_ONLY.has(s));
  if (sections.length > 0 && upstreamSections.length === 0) {
    session.replyNow(encodeBulk(ours));
    return;
  }
  const slot = session.laterSlot();
  session.ctx.router.call(["INFO", ...upstreamSections]).then(
    (reply) => {
      if (reply instanceof RespError) slot.reply(encodeError(reply.message));
      else {
        const theirs = Buffer.isBuffer(reply) ? reply.toString() : "";
        slot.reply(encodeBulk(ours + (ours && theirs ? "\r\n" : "") + theirs));
      }
    },
    (err: Error) => slot.fail(err.message),
  );
};
