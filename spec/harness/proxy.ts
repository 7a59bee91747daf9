import { DEFAULT_CONFIG, type ProxyConfig } from "../../src/config.js";
import { createLogger } from "../../src/observability/log.js";
import { ProxyServer } from "../../src/server.js";

export interface RunningProxy {
  readonly port: number;
  readonly server: ProxyServer;
  close(): Promise<void>;
}

const running = new Set<RunningProxy>();

/**
 * Starts a proxy in this process on a free port in front of `upstreams`. Logs are silent
 * unless GEARS_PROXY_TEST_LOG names a level.
 */
export async function startProxy(
  upstreams: { host?: string; port: number }[],
  overrides: Partial<ProxyConfig> = {},
): Promise<RunningProxy> {
  const level = (process.env.GEARS_PROXY_TEST_LOG ?? "silent") as ProxyConfig["logLevel"];
  const config: ProxyConfig = {
    ...DEFAULT_CONFIG,
    port: 0,
    logLevel: level,
    upstreams: upstreams.map((u) => ({ host: u.host ?? "127.0.0.1", port: u.port })),
    ...overrides,
  };
  const server = new ProxyServer(config, createLogger(level));
  const { port } = await server.start();
  const proxy: RunningProxy = {
    port,
    server,
    close: async () => {
      running.delete(proxy);
      // Specs close proxies with clients still open; a short drain keeps teardown quick
      // (spec/shutdown.spec.ts tests the real drain in a child process).
      await server.close(1000);
    },
  };
  running.add(proxy);
  return proxy;
}

/** Closes every proxy a test left open (called from the root hooks). */
export async function closeAllProxies(): Promise<void> {
  await Promise.all([...running].map((p) => p.close()));
}
