import type { HostPort, ProxyConfig } from "../config.js";
import type tls from "node:tls";
import type { Logger } from "../observability/log.js";
import { RespError, RespMap, type RespValue } from "../resp/values.js";
import { ClusterTopology } from "./cluster-topology.js";
import { connectViaSentinels } from "./sentinel-topology.js";
import { UpstreamNode, type NodeObserver } from "./node.js";
import { StandaloneTopology, type Topology } from "./topology.js";

/** What the proxy learned about its upstream when it connected. */
export interface UpstreamInfo {
  topology: Topology;
  /** What the upstream says it is, which HELLO reports as its own. */
  server: ServerIdentity;
  /** The reply of COMMAND (the upstream's command table), or null when it refused. */
  commands: RespValue;
  /**
   * The seed's client-output-buffer-limit ("normal 0 0 0 replica ... pubsub 32mb 8mb 60"), so
   * the proxy holds its subscribers to what redis.conf set; null where CONFIG is refused
   * (renamed or denied on managed services).
   */
  outputLimits: string | null;
}

/**
 * HELLO's `server` and `version`: "redis" and redis_version, or e.g. "valkey" and
 * valkey_version; and its `modules`: the modules the server loaded, whose commands pass
 * through the proxy (Redis 8.0 loads `vectorset`).
 */
export interface ServerIdentity {
  name: string;
  version: string;
  /** One map per module (name, ver, path, args), as HELLO gives them; none where MODULE LIST is refused. */
  modules: RespMap[];
}

/**
 * Reads INFO server. Valkey says `server_name:valkey` and its own `valkey_version` beside a
 * `redis_version` it keeps for compatibility (7.2.4), and its HELLO answers with the former.
 */
export function serverIdentity(info: string, moduleList: RespValue = []): ServerIdentity {
  const fields = new Map<string, string>();
  for (const line of info.split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1));
  }
  const name = fields.get("server_name") ?? "redis";
  return {
    name,
    version: fields.get(`${name}_version`) ?? fields.get("redis_version") ?? "7.0.0",
    modules: moduleMaps(moduleList),
  };
}

/** MODULE LIST's reply (RESP2: flat name, value lists) as maps; none when it is an error. */
function moduleMaps(reply: RespValue): RespMap[] {
  if (!Array.isArray(reply)) return [];
  const maps: RespMap[] = [];
  for (const module of reply) {
    if (module instanceof RespMap) maps.push(module);
    else if (Array.isArray(module)) {
      const entries: [RespValue, RespValue][] = [];
      for (let i = 0; i + 1 < module.length; i += 2) entries.push([module[i], module[i + 1]]);
      maps.push(new RespMap(entries));
    }
  }
  return maps;
}

const STARTUP_RETRY_MS = 10_000;

type NodeOptions = ReturnType<typeof nodeOptions>;

/** `tlsOptions`: one object for every node, which a reload of the certificates changes in place (config-tls.ts). */
function nodeOptions(
  config: ProxyConfig,
  log: Logger,
  observer: NodeObserver | undefined,
  tlsOptions: tls.ConnectionOptions | undefined,
) {
  return {
    log,
    observer,
    tls: tlsOptions,
    user: config.upstreamUser,
    password: config.upstreamPassword,
    connectTimeoutMs: config.connectTimeoutMs,
    sharedConnections: config.upstreamConnections,
  };
}

async function ask(node: UpstreamNode, argv: string[]): Promise<RespValue> {
  const reply = await node.call(argv);
  if (reply instanceof RespError) throw new Error(reply.message);
  return reply;
}

/** Probes one seed: its version, whether it is a cluster node, and its command table. */
async function probe(seed: HostPort, options: NodeOptions) {
  // Not logged as lost: connectUpstream says itself that a seed is not reachable yet.
  const node = new UpstreamNode(seed, { ...options, log: undefined });
  try {
    const server = String(await ask(node, ["INFO", "server"]));
    const cluster = String(await ask(node, ["INFO", "cluster"]));
    const commands = await node.call(["COMMAND"]);
    const limits = await node.call(["CONFIG", "GET", "client-output-buffer-limit"]);
    // An error (MODULE denied by ACL or renamed) reads as no module.
    const modules = await node.call(["MODULE", "LIST"]);
    return {
      outputLimits: Array.isArray(limits) && limits.length === 2 ? String(limits[1]) : null,
      server: serverIdentity(server, modules),
      isCluster: /cluster_enabled:1/.test(cluster),
      commands: commands instanceof RespError ? null : commands,
      node,
    };
  } catch (err) {
    node.close();
    throw err;
  }
}

/**
 * Connects to the configured upstreams and finds out what they are: one server, or a
 * cluster whose slot map is then loaded. Waits a while for a server that is still
 * starting, then fails with a message that says which address.
 */
export async function connectUpstream(
  config: ProxyConfig,
  log: Logger,
  observer: NodeObserver | undefined,
  tlsOptions: tls.ConnectionOptions | undefined,
): Promise<UpstreamInfo> {
  const options = nodeOptions(config, log, observer, tlsOptions);
  if (config.sentinels.length > 0) {
    const { topology, found } = await connectViaSentinels(
      config,
      options,
      log,
      (at) => probe(at, options),
      STARTUP_RETRY_MS,
    );
    return { topology, server: found.server, commands: found.commands, outputLimits: found.outputLimits };
  }
  if (config.upstreams.length === 0) throw new Error("no upstream configured");
  const deadline = Date.now() + STARTUP_RETRY_MS;
  for (let attempt = 0; ; attempt++) {
    const seed = config.upstreams[attempt % config.upstreams.length];
    try {
      const found = await probe(seed, options);
      if (!found.isCluster) {
        found.node.log = log;
        log.info(
          {
            upstream: found.node.id,
            server: found.server.name,
            version: found.server.version,
            mode: "standalone",
          },
          "connected to upstream",
        );
        return {
          topology: new StandaloneTopology(found.node),
          server: found.server,
          commands: found.commands,
          outputLimits: found.outputLimits,
        };
      }
      found.node.close();
      const topology = new ClusterTopology(config.upstreams, options, log);
      try {
        await topology.refresh();
      } catch (err) {
        topology.close();
        throw err;
      }
      log.info(
        {
          masters: topology.masters().map((n) => n.id),
          server: found.server.name,
          version: found.server.version,
          mode: "cluster",
        },
        "connected to upstream cluster",
      );
      return { topology, server: found.server, commands: found.commands, outputLimits: found.outputLimits };
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      // A refused certificate will not be accepted on a retry either.
      if (/credentials|NOAUTH|WRONGPASS|certificate/i.test(message) || Date.now() > deadline) {
        throw new Error(`cannot use upstream ${seed.host}:${seed.port}: ${message}`, { cause: err });
      }
      log.warn(
        { upstream: `${seed.host}:${seed.port}`, err: message },
        "upstream not reachable yet; retrying",
      );
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
