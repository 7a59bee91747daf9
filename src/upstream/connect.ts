import type { ProxyConfig } from "../config.js";
import type { Logger } from "../observability/log.js";
import { RespError } from "../resp/values.js";
import { UpstreamNode } from "./node.js";
import { StandaloneTopology, type Topology } from "./topology.js";

/** What the proxy learned about its upstream when it connected. */
export interface UpstreamInfo {
  topology: Topology;
  /** redis_version of the upstream, reported in HELLO. */
  version: string;
}

const STARTUP_RETRY_MS = 10_000;

/**
 * Connects to the configured upstreams and finds out what they are. Waits a while for a
 * server that is still starting, then fails with a message that says which address.
 */
export async function connectUpstream(config: ProxyConfig, log: Logger): Promise<UpstreamInfo> {
  if (config.upstreams.length === 0) throw new Error("no upstream configured");
  const seed = config.upstreams[0];
  const options = {
    user: config.upstreamUser,
    password: config.upstreamPassword,
    connectTimeoutMs: config.connectTimeoutMs,
    sharedConnections: config.upstreamConnections,
  };
  const deadline = Date.now() + STARTUP_RETRY_MS;
  for (;;) {
    const node = new UpstreamNode(seed, options);
    try {
      const info = await node.call(["INFO", "server"]);
      if (info instanceof RespError) throw new Error(info.message);
      const text = info === null ? "" : info.toString();
      const version = /redis_version:([^\r\n]+)/.exec(text)?.[1] ?? "7.0.0";
      const cluster = await node.call(["INFO", "cluster"]);
      if (
        cluster !== null &&
        !(cluster instanceof RespError) &&
        /cluster_enabled:1/.test(cluster.toString())
      ) {
        node.close();
        throw new Error("Redis Cluster upstreams are not supported yet");
      }
      log.info({ upstream: node.id, version, mode: "standalone" }, "connected to upstream");
      return { topology: new StandaloneTopology(node), version };
    } catch (err) {
      node.close();
      const message = err instanceof Error ? err.message : String(err);
      if (/not supported|credentials|NOAUTH|WRONGPASS/.test(message) || Date.now() > deadline) {
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
