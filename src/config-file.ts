/**
 * The proxy's options in one table: their help text, how a value is checked, and how flags, the
 * environment and a JSON config file merge into a ProxyConfig. The CLI (src/cli.ts) only feeds it.
 */
import fs from "node:fs";
import { DEFAULT_CONFIG, parseHostPort, parseSize, type HostPort, type ProxyConfig } from "./config.js";
import { GearsConfig } from "./gears/config.js";

/** A mistake in the command line or the config file; main() prints it and exits with `exitCode`. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

export const LOG_LEVELS: readonly ProxyConfig["logLevel"][] = [
  "trace",
  "debug",
  "info",
  "warn",
  "error",
  "fatal",
  "silent",
];

type Kind =
  | "port"
  | "listen-port"
  | "plain-port"
  | "host"
  | "text"
  | "count"
  | "positive"
  | "size"
  | "flag"
  | "level"
  | "upstreams"
  | "settings"
  | "choice"
  | "lines";

export interface OptionSpec {
  /** The flag, in kebab-case (the config file also accepts the camelCase key). */
  flag: string;
  key: keyof ProxyConfig;
  kind: Kind;
  describe: string;
  /** Shown as the default in --help. */
  defaultText?: string;
  /** The values a "choice" option accepts. */
  choices?: readonly string[];
}

/** --config itself, which the CLI reads before the options below. */
export const CONFIG_OPTION_DESCRIBE =
  "JSON file holding any of these options (kebab-case or camelCase keys); flags override it.";

export const OPTIONS: readonly OptionSpec[] = [
  {
    flag: "port",
    key: "port",
    kind: "plain-port",
    describe:
      "TCP port the proxy listens on for Redis clients (0 picks a free one; off: none, TLS clients only, with --tls-port).",
    defaultText: String(DEFAULT_CONFIG.port),
  },
  {
    flag: "bind",
    key: "bind",
    kind: "host",
    describe: "Address the proxy listens on; use 0.0.0.0 to accept clients from other machines.",
    defaultText: DEFAULT_CONFIG.bind,
  },
  {
    flag: "upstream",
    key: "upstreams",
    kind: "upstreams",
    describe:
      "A Redis server or any node of a Redis Cluster, as host:port; repeat it (or separate with commas) " +
      "for several seeds. Without it, the proxy starts its own redis-server from PATH.",
  },
  {
    flag: "sentinel",
    key: "sentinels",
    kind: "upstreams",
    describe:
      "A Redis Sentinel, as host:port; repeat it (or separate with commas) for several. The proxy asks them " +
      "for the master named by --sentinel-master and follows their failovers. Not with --upstream.",
  },
  {
    flag: "sentinel-master",
    key: "sentinelMaster",
    kind: "text",
    describe: "The name the sentinels monitor the master under (required with --sentinel).",
  },
  {
    flag: "sentinel-user",
    key: "sentinelUser",
    kind: "text",
    describe: "ACL user name the proxy authenticates with on the sentinels.",
  },
  {
    flag: "sentinel-password",
    key: "sentinelPassword",
    kind: "text",
    describe:
      "Password the proxy authenticates with on the sentinels (the upstream password is for the data nodes).",
  },
  {
    flag: "upstream-user",
    key: "upstreamUser",
    kind: "text",
    describe: "ACL user name the proxy authenticates with on the upstreams.",
  },
  {
    flag: "upstream-password",
    key: "upstreamPassword",
    kind: "text",
    describe:
      "Password the proxy authenticates with on the upstreams (better: set GEARS_PROXY_UPSTREAM_PASSWORD).",
  },
  {
    flag: "upstream-connections",
    key: "upstreamConnections",
    kind: "positive",
    describe: "Shared pipelined connections the proxy keeps open to each upstream node.",
    defaultText: String(DEFAULT_CONFIG.upstreamConnections),
  },
  {
    flag: "connect-timeout",
    key: "connectTimeoutMs",
    kind: "count",
    describe: "Milliseconds to wait for an upstream TCP connect before failing the queued commands.",
    defaultText: String(DEFAULT_CONFIG.connectTimeoutMs),
  },
  {
    flag: "cluster-retry-timeout",
    key: "clusterRetryTimeoutMs",
    kind: "count",
    describe:
      "Milliseconds a command keeps being retried while a cluster heals (failover, CLUSTERDOWN, TRYAGAIN), or waits for an unreachable Sentinel master to be replaced or come back, before its error is returned.",
    defaultText: String(DEFAULT_CONFIG.clusterRetryTimeoutMs),
  },
  {
    flag: "requirepass",
    key: "requirepass",
    kind: "text",
    describe: "Password clients must send with AUTH before running commands; none by default.",
  },
  {
    flag: "aclfile",
    key: "aclfile",
    kind: "text",
    describe:
      "Redis ACL file of the proxy's own users (user <name> <rules...> lines): AUTH, HELLO AUTH and ACL answer for them, and their permissions are checked by the proxy.",
  },
  {
    flag: "user",
    key: "users",
    kind: "lines",
    describe:
      'A user as an aclfile line, e.g. "alice on >secret ~app:* +@read"; repeat it for several (not with --aclfile).',
  },
  {
    flag: "maxclients",
    key: "maxclients",
    kind: "positive",
    describe: "Most client connections accepted at once; further clients get an error and are closed.",
    defaultText: String(DEFAULT_CONFIG.maxclients),
  },
  {
    flag: "timeout",
    key: "timeout",
    kind: "count",
    describe: "Seconds a client may stay idle before the proxy closes it; 0 never closes idle clients.",
    defaultText: String(DEFAULT_CONFIG.timeout),
  },
  {
    flag: "log-level",
    key: "logLevel",
    kind: "level",
    describe: "Least severe log lines written (on stderr).",
    defaultText: DEFAULT_CONFIG.logLevel,
  },
  {
    flag: "log-format",
    key: "logFormat",
    kind: "choice",
    choices: ["pretty", "json"],
    describe: "How log lines are written: pretty (human-readable) or json (one JSON object a line).",
    defaultText: "pretty on a terminal, json otherwise",
  },
  {
    flag: "data-dir",
    key: "dataDir",
    kind: "text",
    describe: "Directory where the embedded redis-server keeps its data (used only without --upstream).",
    defaultText: DEFAULT_CONFIG.dataDir,
  },
  {
    flag: "proto-max-bulk-len",
    key: "protoMaxBulkLen",
    kind: "size",
    describe: "Largest string argument a client may send, in bytes or with a unit (512mb, 1gb).",
    defaultText: "512mb",
  },
  {
    flag: "client-output-buffer-limit",
    key: "clientOutputBufferLimit",
    kind: "size",
    describe: "Replies that may wait for a slow client before it is disconnected, in bytes or 256mb style.",
    defaultText: "256mb",
  },
  {
    flag: "maxmemory-clients",
    key: "maxmemoryClients",
    kind: "size",
    describe:
      "Memory all clients together may hold (query buffers, replies not yet written); over it the largest are disconnected. 0: no bound.",
    defaultText: "1gb",
  },
  {
    flag: "threads",
    key: "threads",
    kind: "text",
    describe:
      "Processes sharing the port, each a whole proxy with its own upstream connections; `auto`: one per core. Works without --upstream.",
    defaultText: "1",
  },
  {
    flag: "shutdown-timeout",
    key: "shutdownTimeoutMs",
    kind: "count",
    describe: "ms a SIGTERM/SIGINT shutdown may take to deliver the replies in flight before exiting anyway.",
    defaultText: String(DEFAULT_CONFIG.shutdownTimeoutMs),
  },
  {
    flag: "read-from-replicas",
    key: "readFromReplicas",
    kind: "flag",
    describe:
      "Send read-only commands to replicas (cluster mode); writes and everything else still go to masters.",
    defaultText: "false",
  },
  {
    flag: "cluster-emulation",
    key: "clusterEmulation",
    kind: "flag",
    describe:
      "Present the proxy as a one-node Redis Cluster to clients that only speak cluster mode; --no-cluster-emulation passes a cluster's real topology through.",
    defaultText: "on in front of a cluster, off in front of one server",
  },
  {
    flag: "announce-host",
    key: "announceHost",
    kind: "host",
    describe: "Host the emulated cluster tells clients to connect to (default: the bind address).",
  },
  {
    flag: "announce-port",
    key: "announcePort",
    kind: "port",
    describe: "Port the emulated cluster tells clients to connect to (default: --port).",
  },
  {
    flag: "gears-config",
    key: "gearsConfig",
    kind: "settings",
    describe:
      "A gears setting as Name=Value, as RG.CONFIGSET takes it (ScriptTimeoutMS=10000, EventLeaseMS=5000...); repeat it for several.",
  },
  {
    flag: "python",
    key: "python",
    kind: "flag",
    describe:
      "Run RG.PYEXECUTE's Python scripts (Pyodide). Python scripts are trusted code: switch it on only for scripts you trust.",
    defaultText: "false",
  },
  {
    flag: "python-max-memory",
    key: "pythonMaxMemoryMb",
    kind: "count",
    describe:
      "MB of memory all Python interpreters may hold together (each takes 30-50 MB, and at most 64 MB + ScriptMemoryLimitMB); 0 for no cap.",
    defaultText: String(DEFAULT_CONFIG.pythonMaxMemoryMb),
  },
  {
    flag: "metrics-port",
    key: "metricsPort",
    kind: "listen-port",
    describe: "HTTP port serving /metrics (Prometheus), /healthz and /readyz; off unless given.",
    defaultText: "off",
  },
  {
    flag: "metrics-bind",
    key: "metricsBind",
    kind: "host",
    describe: "Address the metrics HTTP server listens on.",
    defaultText: DEFAULT_CONFIG.metricsBind,
  },
  {
    flag: "slowlog-log-slower-than",
    key: "slowlogLogSlowerThan",
    kind: "count",
    describe: "Microseconds a command must take, as its client saw it, to enter the proxy's SLOWLOG.",
    defaultText: String(DEFAULT_CONFIG.slowlogLogSlowerThan),
  },
  {
    flag: "slowlog-max-len",
    key: "slowlogMaxLen",
    kind: "count",
    describe: "Entries the proxy's SLOWLOG keeps; 0 keeps none.",
    defaultText: String(DEFAULT_CONFIG.slowlogMaxLen),
  },
  {
    flag: "tls-port",
    key: "tlsPort",
    kind: "listen-port",
    describe:
      "TCP port for TLS clients, open beside --port (0 picks a free one); needs --tls-cert-file and --tls-key-file.",
    defaultText: "off",
  },
  {
    flag: "tls-cert-file",
    key: "tlsCertFile",
    kind: "text",
    describe: "PEM file holding the certificate (and chain) the proxy shows TLS clients.",
  },
  {
    flag: "tls-key-file",
    key: "tlsKeyFile",
    kind: "text",
    describe: "PEM file holding the private key of --tls-cert-file.",
  },
  {
    flag: "tls-ca-cert-file",
    key: "tlsCaCertFile",
    kind: "text",
    describe: "PEM file of the CA certificates that client certificates must chain to.",
  },
  {
    flag: "tls-auth-clients",
    key: "tlsAuthClients",
    kind: "choice",
    choices: ["yes", "no", "optional"],
    describe:
      "yes: TLS clients must present a certificate from --tls-ca-cert-file; optional: a certificate is checked if presented; no: none is asked for.",
    defaultText: DEFAULT_CONFIG.tlsAuthClients,
  },
  {
    flag: "upstream-tls",
    key: "upstreamTls",
    kind: "flag",
    describe: "Connect to every upstream node (cluster nodes and redirect targets included) over TLS.",
    defaultText: "false",
  },
  {
    flag: "upstream-tls-ca-cert-file",
    key: "upstreamTlsCaCertFile",
    kind: "text",
    describe:
      "PEM file of the CA certificates upstream certificates must chain to (default: the system's roots).",
  },
  {
    flag: "upstream-tls-servername",
    key: "upstreamTlsServername",
    kind: "host",
    describe:
      "Server name sent to the upstreams (SNI) and checked against their certificates (default: the host).",
  },
  {
    flag: "upstream-tls-cert-file",
    key: "upstreamTlsCertFile",
    kind: "text",
    describe: "PEM file of the client certificate the proxy presents to upstreams that ask for one.",
  },
  {
    flag: "upstream-tls-key-file",
    key: "upstreamTlsKeyFile",
    kind: "text",
    describe: "PEM file holding the private key of --upstream-tls-cert-file.",
  },
];

export const PASSWORD_ENV = "GEARS_PROXY_UPSTREAM_PASSWORD";

function asText(value: unknown): string {
  if (typeof value === "string" && value !== "") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  throw new Error("expected a value");
}

function asInteger(value: unknown, min: number, max: number): number {
  const text = asText(value).trim();
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) {
    throw new Error(`'${text}' is not an integer from ${min} to ${max}`);
  }
  return n;
}

function asFlag(value: unknown): boolean {
  if (typeof value === "boolean") return value;
  const text = typeof value === "string" ? value.toLowerCase() : "";
  if (["true", "yes", "1"].includes(text)) return true;
  if (["false", "no", "0"].includes(text)) return false;
  throw new Error(`'${String(value)}' is not true or false`);
}

function asHost(value: unknown): string {
  const text = asText(value);
  if (/\s/.test(text)) throw new Error(`'${text}' is not a host name or address`);
  return text;
}

function asLevel(value: unknown): ProxyConfig["logLevel"] {
  const found = LOG_LEVELS.find((level) => level === value);
  if (!found) throw new Error(`'${String(value)}' is not one of ${LOG_LEVELS.join(", ")}`);
  return found;
}

/** Name=Value pairs (a list of them, or an object in the config file). */
function asSettings(value: unknown): Record<string, string> {
  if (typeof value === "object" && value !== null && !Array.isArray(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, asText(v)]));
  }
  const items = Array.isArray(value) ? value : [value];
  const settings: Record<string, string> = {};
  for (const item of items) {
    const text = asText(item);
    const eq = text.indexOf("=");
    if (eq <= 0) throw new Error(`'${text}' is not Name=Value`);
    settings[text.slice(0, eq)] = text.slice(eq + 1);
  }
  // Checked now, as the proxy will apply them, so that a typo stops it before it waits for
  // an upstream (they were only checked once one answered).
  const check = new GearsConfig();
  for (const [name, value] of Object.entries(settings)) {
    const error = check.settingError(name, value);
    if (error !== null) throw new Error(`${name}=${value}: ${error}`);
  }
  return settings;
}

function asUpstreams(value: unknown): HostPort[] {
  const items = Array.isArray(value) ? value : [value];
  const texts = items.flatMap((item) => asText(item).split(/[\s,]+/)).filter((t) => t !== "");
  if (texts.length === 0) throw new Error("expected host:port");
  return texts.map((text) => parseHostPort(text));
}

type OptionValue = ProxyConfig[keyof ProxyConfig];

function asChoice(value: unknown, choices: readonly string[]): string {
  const text = typeof value === "boolean" ? (value ? "yes" : "no") : asText(value).toLowerCase();
  if (!choices.includes(text)) throw new Error(`'${String(value)}' is not one of ${choices.join(", ")}`);
  return text;
}

function convert(spec: OptionSpec, value: unknown): OptionValue {
  switch (spec.kind) {
    case "port":
      return asInteger(value, 1, 65535);
    case "listen-port":
      return asInteger(value, 0, 65535);
    case "plain-port":
      // Not Redis' `port 0`: 0 picks a free port here (tests and scripts rely on it).
      return value === false || asText(value).trim().toLowerCase() === "off"
        ? null
        : asInteger(value, 0, 65535);
    case "count":
      return asInteger(value, 0, Number.MAX_SAFE_INTEGER);
    case "positive":
      return asInteger(value, 1, Number.MAX_SAFE_INTEGER);
    case "size":
      return typeof value === "number"
        ? asInteger(value, 0, Number.MAX_SAFE_INTEGER)
        : parseSize(asText(value));
    case "flag":
      return asFlag(value);
    case "host":
      return asHost(value);
    case "level":
      return asLevel(value);
    case "upstreams":
      return asUpstreams(value);
    case "settings":
      return asSettings(value);
    case "choice":
      return asChoice(value, spec.choices ?? []);
    case "text":
      return asText(value);
    case "lines":
      return (Array.isArray(value) ? value : [value]).map(asText);
  }
}

/** Checks one value; the error names where it came from ("--port", or the file and its key). */
export function convertOption(spec: OptionSpec, value: unknown, where: string): OptionValue {
  // A repeated single-valued flag arrives as an array: the last one wins, as in redis-server.
  const many = spec.kind === "upstreams" || spec.kind === "settings" || spec.kind === "lines";
  const single = Array.isArray(value) && !many ? value[value.length - 1] : value;
  try {
    return convert(spec, single);
  } catch (err) {
    throw new UsageError(`${where}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function camelCase(flag: string): string {
  return flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** The option a config-file key names: kebab-case or camelCase; "upstreams" is also accepted. */
export function optionForKey(key: string): OptionSpec | undefined {
  return OPTIONS.find((o) => o.flag === key || camelCase(o.flag) === key || o.key === key);
}

/** Reads a JSON config file into checked partial settings; unknown keys are refused. */
export function readConfigFile(file: string): Partial<ProxyConfig> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new UsageError(`config file ${file} must hold a JSON object of options`);
  }
  return settingsFromFile(file, data as Record<string, unknown>);
}

function settingsFromFile(file: string, data: Record<string, unknown>): Partial<ProxyConfig> {
  const settings: Record<string, OptionValue> = {};
  for (const [key, value] of Object.entries(data)) {
    const spec = optionForKey(key);
    if (!spec) throw new UsageError(`config file ${file}: unknown option "${key}"`);
    if (value === null) continue;
    settings[spec.key] = convertOption(spec, value, `config file ${file}, "${key}"`);
  }
  return settings as Partial<ProxyConfig>;
}

/** Flags override the environment, which overrides the file, which overrides the defaults. */
export function mergeConfig(
  file: Partial<ProxyConfig>,
  env: Partial<ProxyConfig>,
  flags: Partial<ProxyConfig>,
): ProxyConfig {
  const config = { ...DEFAULT_CONFIG, ...file, ...env, ...flags };
  checkTls(config);
  checkSentinel(config);
  return config;
}

/** --sentinel names where to find the master: it needs the master's name and excludes --upstream. */
function checkSentinel(config: ProxyConfig): void {
  if (config.sentinels.length === 0) {
    const given: Record<string, string | undefined> = {
      "--sentinel-master": config.sentinelMaster,
      "--sentinel-user": config.sentinelUser,
      "--sentinel-password": config.sentinelPassword,
    };
    const stray = Object.keys(given).find((flag) => given[flag] !== undefined);
    if (stray !== undefined) throw new UsageError(`${stray} needs --sentinel (the sentinels to ask)`);
    return;
  }
  if (config.upstreams.length > 0) {
    throw new UsageError(
      "--sentinel and --upstream exclude each other: the sentinels name the master to use",
    );
  }
  if (config.sentinelMaster === undefined) {
    throw new UsageError(
      "--sentinel needs --sentinel-master <name>: the name the sentinels monitor the master under",
    );
  }
}

/** Options that only make sense together, refused at start rather than at the first handshake. */
function checkTls(config: ProxyConfig): void {
  if (config.port === null && config.tlsPort === undefined) {
    throw new UsageError("--port off needs --tls-port: the proxy would have no port for clients");
  }
  if (config.tlsPort !== undefined && (config.tlsCertFile === undefined || config.tlsKeyFile === undefined)) {
    throw new UsageError("--tls-port needs --tls-cert-file and --tls-key-file");
  }
  if (config.tlsPort !== undefined && config.tlsAuthClients !== "no" && config.tlsCaCertFile === undefined) {
    throw new UsageError(
      `--tls-auth-clients ${config.tlsAuthClients} needs --tls-ca-cert-file to check client certificates`,
    );
  }
  const upstreamTlsFiles = [
    config.upstreamTlsCaCertFile,
    config.upstreamTlsServername,
    config.upstreamTlsCertFile,
  ];
  if (!config.upstreamTls && upstreamTlsFiles.some((v) => v !== undefined)) {
    throw new UsageError("the --upstream-tls-* options need --upstream-tls");
  }
  if ((config.upstreamTlsCertFile === undefined) !== (config.upstreamTlsKeyFile === undefined)) {
    throw new UsageError("--upstream-tls-cert-file and --upstream-tls-key-file go together");
  }
}
