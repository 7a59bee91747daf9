/** Everything the proxy can be told, after flags and the config file are merged. */
export interface HostPort {
  host: string;
  port: number;
}

export interface ProxyConfig {
  /** Where clients connect; null (`--port off`) when only the TLS port is open. */
  port: number | null;
  bind: string;
  /** Redis servers or cluster seed nodes. Empty (and no sentinels): start an embedded redis-server. */
  upstreams: HostPort[];
  /**
   * Redis Sentinels that name the master to use (instead of `upstreams`): the proxy asks them
   * at start and follows their failovers.
   */
  sentinels: HostPort[];
  /** The name the sentinels monitor the master under (required with `sentinels`). */
  sentinelMaster?: string;
  /** Credentials for the sentinels themselves (the upstream ones stay for the data nodes). */
  sentinelUser?: string;
  sentinelPassword?: string;
  upstreamUser?: string;
  upstreamPassword?: string;
  /** Shared pipelined connections per upstream node. */
  upstreamConnections: number;
  /** Milliseconds to wait for an upstream TCP connect before failing the queued commands. */
  connectTimeoutMs: number;
  /** Milliseconds a cluster command keeps being retried (failover, CLUSTERDOWN, TRYAGAIN). */
  clusterRetryTimeoutMs: number;
  /** Password clients must AUTH with; none when undefined. */
  requirepass?: string;
  /** Redis ACL file of the proxy's users (`user <name> <rules...>` lines). */
  aclfile?: string;
  /** Users as aclfile lines given directly (--user, or "user" in the config file). */
  users?: string[];
  maxclients: number;
  /** Idle seconds before a client is closed; 0 disables. */
  timeout: number;
  logLevel: "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";
  /** Data directory for the embedded redis-server. */
  dataDir: string;
  /** Largest bulk string a client may send, in bytes (Redis' proto-max-bulk-len). */
  protoMaxBulkLen: number;
  /**
   * Bytes of replies waiting for a slow client before it is disconnected (Redis'
   * client-output-buffer-limit). Reading from the client pauses at a much smaller
   * mark, so this mainly bounds pub/sub clients, which cannot be paused.
   */
  clientOutputBufferLimit: number;
  /**
   * Bytes all clients together may hold in query buffers, output buffers and replies waiting to
   * be written (Redis 7's maxmemory-clients); over it the largest clients are disconnected. 0: no bound.
   */
  maxmemoryClients: number;
  /**
   * Milliseconds a SIGTERM/SIGINT shutdown may take: clients get their replies in flight,
   * gears hand their leases back, then the process exits whatever is left.
   */
  shutdownTimeoutMs: number;
  /**
   * Event loops serving the one listening port (--threads): a number, or "auto" for the cores
   * available. Each is a process with its own upstream connections (src/threads/).
   */
  threads: string;
  /** Send read-only commands to replicas (cluster mode). */
  readFromReplicas: boolean;
  /**
   * Present the proxy as a one-node cluster to cluster-mode clients. Unset: on in front of
   * a cluster (so cluster clients cannot slip past the proxy to the shards), off otherwise.
   */
  clusterEmulation?: boolean;
  /** Address announced by the emulated cluster (defaults to bind:port). */
  announceHost?: string;
  announcePort?: number;
  /** Gears settings (RG.CONFIGSET names) applied at start. */
  gearsConfig: Record<string, string>;
  /** RG.PYEXECUTE runs Python (Pyodide): trusted code, off unless the operator says so. */
  python: boolean;
  /** Total WebAssembly memory of all Python interpreters, in MB (0: no cap). */
  pythonMaxMemoryMb: number;
  /** HTTP port for /metrics, /healthz and /readyz; off when undefined. */
  metricsPort?: number;
  metricsBind: string;
  /** Microseconds a command must take, as its client saw it, to enter the proxy's SLOWLOG. */
  slowlogLogSlowerThan: number;
  /** Entries SLOWLOG keeps; 0 keeps none (and commands are not timed). */
  slowlogMaxLen: number;
  /** "pretty": human-readable lines; "json": JSON lines; unset: pretty on a terminal only. */
  logFormat?: "pretty" | "json";
  /** TLS port for clients, beside the plain one; off when undefined. */
  tlsPort?: number;
  /** PEM files of the proxy's certificate, its key, and the CA that client certificates must chain to. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsCaCertFile?: string;
  /** Whether TLS clients must present a certificate (Redis' tls-auth-clients). */
  tlsAuthClients: "yes" | "no" | "optional";
  /** Speak TLS to every upstream node (cluster nodes included). */
  upstreamTls: boolean;
  /** CA bundle upstream certificates must chain to (default: Node's trusted roots). */
  upstreamTlsCaCertFile?: string;
  /** Server name sent (SNI) and checked against the upstream certificates. */
  upstreamTlsServername?: string;
  /** Client certificate and key the proxy presents to upstreams that ask for one. */
  upstreamTlsCertFile?: string;
  upstreamTlsKeyFile?: string;
}

export const DEFAULT_CONFIG: ProxyConfig = {
  port: 6380,
  bind: "127.0.0.1",
  upstreams: [],
  sentinels: [],
  upstreamConnections: 2,
  connectTimeoutMs: 2000,
  clusterRetryTimeoutMs: 10_000,
  maxclients: 10000,
  timeout: 0,
  logLevel: "info",
  dataDir: "./data",
  protoMaxBulkLen: 512 * 1024 * 1024,
  clientOutputBufferLimit: 256 * 1024 * 1024,
  maxmemoryClients: 1024 * 1024 * 1024,
  shutdownTimeoutMs: 10_000,
  threads: "1",
  readFromReplicas: false,
  gearsConfig: {},
  python: false,
  pythonMaxMemoryMb: 1024,
  metricsBind: "127.0.0.1",
  slowlogLogSlowerThan: 10_000,
  slowlogMaxLen: 128,
  tlsAuthClients: "yes",
  upstreamTls: false,
};

/** Parses "host:port", "[v6]:port" or a bare port; throws with a message fit for a user. */
export function parseHostPort(text: string): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]*):(\d+)$/.exec(text);
  const host = m ? m[1] || "127.0.0.1" : "127.0.0.1";
  const portText = m ? m[2] : text;
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535) {
    throw new Error(`invalid address '${text}': expected host:port`);
  }
  return { host, port };
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1000,
  kb: 1024,
  m: 1000 ** 2,
  mb: 1024 ** 2,
  g: 1000 ** 3,
  gb: 1024 ** 3,
};

/** "256mb" -> 268435456, Redis' units: k/m/g are powers of 1000, kb/mb/gb powers of 1024. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new Error(`'${text}' is not a size: expected bytes or a number with k, kb, m, mb, g or gb`);
  }
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes)) throw new Error(`'${text}' is too large`);
  return bytes;
}
