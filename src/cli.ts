#!/usr/bin/env node
/** gears-proxy's command line: flags and config file -> ProxyConfig -> (embedded redis) -> server. */
import fs from "node:fs";
import { pathToFileURL } from "node:url";
import yargs, { type Argv } from "yargs";
import { hideBin } from "yargs/helpers";
import type { HostPort, ProxyConfig } from "./config.js";
import {
  CONFIG_OPTION_DESCRIBE,
  LOG_LEVELS,
  OPTIONS,
  PASSWORD_ENV,
  UsageError,
  convertOption,
  mergeConfig,
  readConfigFile,
  type OptionSpec,
} from "./config-file.js";
import { createLogger, type Logger } from "./observability/log.js";
import type { ProxyServer } from "./server.js";
import { startEmbeddedRedis, type EmbeddedRedis } from "./upstream/embedded-redis.js";
import { isThread, superviseThreads, threadCount, upstreamFromSupervisor } from "./threads/supervisor.js";
import type { ClusterLink } from "./threads/peers.js";

export { UsageError };

type Env = Readonly<Record<string, string | undefined>>;

/** What the command line asks for: run the proxy, or print help/version text and exit 0. */
export type CliAction = { kind: "run"; config: ProxyConfig } | { kind: "print"; text: string };

function packageVersion(): string {
  try {
    const text = fs.readFileSync(new URL("../../package.json", import.meta.url), "utf8");
    const version: unknown = (JSON.parse(text) as Record<string, unknown>).version;
    return typeof version === "string" ? version : "unknown";
  } catch {
    return "unknown";
  }
}

function addOption(parser: Argv, spec: OptionSpec): Argv {
  return parser.option(spec.flag, {
    describe: spec.describe,
    requiresArg: spec.kind !== "flag",
    ...(spec.kind === "flag" ? { type: "boolean" as const } : {}),
    ...(spec.kind === "upstreams" || spec.kind === "settings"
      ? { type: "array" as const, string: true }
      : {}),
    ...(spec.kind === "level" ? { choices: [...LOG_LEVELS] } : {}),
    ...(spec.choices !== undefined ? { choices: [...spec.choices] } : {}),
    ...(spec.defaultText !== undefined ? { defaultDescription: spec.defaultText } : {}),
  });
}

function buildParser(): Argv {
  let parser: Argv = yargs()
    .scriptName("gears-proxy")
    .usage(
      "Usage: gears-proxy [options]\n\nA Redis-protocol proxy with server-side JavaScript (RG.* commands).",
    )
    .locale("en")
    .detectLocale(false)
    // Values stay text so they can be checked (and reported) exactly as typed. A repeated flag
    // arrives as an array: --upstream collects them, other flags take the last (convertOption).
    .parserConfiguration({ "parse-numbers": false })
    .option("config", {
      describe: CONFIG_OPTION_DESCRIBE,
      requiresArg: true,
    });
  for (const spec of OPTIONS) parser = addOption(parser, spec);
  return parser
    .epilogue(
      `The upstream password may also come from the ${PASSWORD_ENV} environment variable.\n` +
        "Examples:\n" +
        "  gears-proxy                               # starts its own redis-server, listens on 6380\n" +
        "  gears-proxy --upstream 10.0.0.5:6379      # in front of a Redis server or cluster node",
    )
    .version(packageVersion())
    .alias("v", "version")
    .help()
    .alias("h", "help")
    .strict()
    .exitProcess(false)
    .wrap(100)
    .fail((msg: string | undefined, err: Error | undefined) => {
      throw err instanceof UsageError ? err : new UsageError(msg ?? err?.message ?? "invalid arguments");
    });
}

function flagSettings(parsed: Record<string, unknown>): Partial<ProxyConfig> {
  const settings: Record<string, unknown> = {};
  for (const spec of OPTIONS) {
    const value = parsed[spec.flag];
    if (value !== undefined) settings[spec.key] = convertOption(spec, value, `--${spec.flag}`);
  }
  return settings as Partial<ProxyConfig>;
}

function envSettings(env: Env): Partial<ProxyConfig> {
  const password = env[PASSWORD_ENV];
  return password ? { upstreamPassword: password } : {};
}

/** Parses the arguments (without node and the script); throws UsageError on a bad command line. */
export function parseCommandLine(argv: readonly string[], env: Env = process.env): CliAction {
  let output = "";
  const parsed = buildParser().parse([...argv], {}, (_err: unknown, _argv: unknown, out: string) => {
    output = out;
  }) as Record<string, unknown>;
  if (parsed.help === true || parsed.version === true) return { kind: "print", text: output };
  const configFile = parsed.config;
  if (configFile !== undefined && typeof configFile !== "string") {
    throw new UsageError("--config: expected one file name");
  }
  const file = configFile === undefined ? {} : readConfigFile(configFile);
  return { kind: "run", config: mergeConfig(file, envSettings(env), flagSettings(parsed)) };
}

/** The ProxyConfig the arguments describe; throws UsageError (exit code 0 for --help/--version). */
export function parseArgs(argv: readonly string[], env: Env = process.env): ProxyConfig {
  const action = parseCommandLine(argv, env);
  if (action.kind === "print") throw new UsageError(action.text, 0);
  return action.config;
}

function formatAddress({ host, port }: HostPort): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function describeUpstreams(config: ProxyConfig, embedded: EmbeddedRedis | undefined): string {
  if (embedded) {
    return `embedded redis-server at ${formatAddress(embedded)} (pid ${embedded.pid}, data in ${embedded.dataDir})`;
  }
  if (config.sentinels.length > 0) {
    return `master '${config.sentinelMaster}' of sentinels ${config.sentinels.map(formatAddress).join(", ")}`;
  }
  return `upstream ${config.upstreams.map(formatAddress).join(", ")}`;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Owns what main() started, so a signal or a failed start can take it down in order. */
class Running {
  embedded?: EmbeddedRedis;
  server?: ProxyServer;
  private stopping = false;

  constructor(
    readonly log: Logger,
    readonly shutdownTimeoutMs: number,
  ) {}

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    try {
      await this.server?.close(this.shutdownTimeoutMs);
    } catch (err) {
      this.log.error({ err }, "error while closing the proxy");
    }
    await this.embedded?.stop();
  }

  get isStopping(): boolean {
    return this.stopping;
  }
}

function onSignals(running: Running): (signal: NodeJS.Signals) => void {
  const handler = (signal: NodeJS.Signals): void => {
    if (running.isStopping) {
      running.log.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    running.log.info({ signal }, "shutting down");
    // The bound holds even if something below ignores its own timeout.
    setTimeout(() => {
      running.log.error({ timeoutMs: running.shutdownTimeoutMs }, "shutdown timed out: exiting now");
      process.exit(1);
    }, running.shutdownTimeoutMs).unref();
    running.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`gears-proxy: error while shutting down: ${errorMessage(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  // SIGHUP re-reads the TLS certificate files (renewed ones without a restart), as proxies
  // conventionally do; it no longer ends the process (redis-server ignores it too).
  process.on("SIGHUP", () => running.server?.reloadTls());
  // One failed background task (an event batch, a timer) must not take every client down.
  process.on("unhandledRejection", (reason: unknown) => {
    running.log.error({ err: errorMessage(reason) }, "unhandled rejection");
  });
  return handler;
}

async function start(running: Running, config: ProxyConfig, thread?: ClusterLink): Promise<void> {
  let effective = config;
  const shared = thread === undefined ? null : upstreamFromSupervisor();
  // With --sentinel the sentinels name the upstream: no embedded redis-server.
  const noUpstream = config.upstreams.length === 0 && config.sentinels.length === 0;
  if (noUpstream && shared !== null) effective = { ...config, upstreams: [shared] };
  else if (noUpstream) {
    running.embedded = await startEmbeddedRedis(config.dataDir, running.log, [config.port, config.tlsPort]);
    const { host, port } = running.embedded;
    effective = { ...config, upstreams: [{ host, port }] };
  }
  // Loaded here, not at the top: a --threads supervisor serves no client and needs none of it.
  const { ProxyServer } = await import("./server.js");
  running.server = new ProxyServer(effective, running.log, thread);
  const address = await running.server.start();
  const tlsPort = running.server.tlsPort;
  const tlsText =
    tlsPort === undefined ? "" : effective.port === null ? " (TLS only)" : ` (TLS on port ${tlsPort})`;
  running.log.info(
    { address, tlsPort, upstreams: effective.upstreams, embedded: running.embedded !== undefined },
    `gears-proxy listening on ${formatAddress(address)}${tlsText}, in front of ${describeUpstreams(effective, running.embedded)}`,
  );
}

/** --threads N > 1: the supervisor starts the one embedded redis-server (if no --upstream) for all threads. */
async function supervise(threads: number, config: ProxyConfig, log: Logger): Promise<void> {
  let embedded: EmbeddedRedis | undefined;
  if (config.upstreams.length === 0 && config.sentinels.length === 0) {
    try {
      embedded = await startEmbeddedRedis(config.dataDir, log, [config.port, config.tlsPort]);
    } catch (err) {
      process.stderr.write(`gears-proxy: could not start: ${errorMessage(err)}\n`);
      process.exit(1);
    }
  }
  const shared = embedded && { upstream: { host: embedded.host, port: embedded.port }, stop: embedded.stop };
  superviseThreads(threads, log, config.shutdownTimeoutMs, shared);
}

async function main(): Promise<void> {
  let action: CliAction;
  try {
    action = parseCommandLine(hideBin(process.argv), process.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`gears-proxy: ${err.message}\nRun 'gears-proxy --help' to see the options.\n`);
    process.exit(err.exitCode);
  }
  if (action.kind === "print") {
    process.stdout.write(`${action.text}\n`);
    return;
  }
  const threads = threadCount(action.config.threads);
  if (threads === null) {
    process.stderr.write("gears-proxy: --threads takes a positive number or auto\n");
    process.exit(2);
  }
  const log = createLogger(action.config.logLevel, action.config.logFormat);
  if (threads > 1 && !isThread()) {
    await supervise(threads, action.config, log);
    return;
  }
  const thread = isThread()
    ? ((await import("./threads/peers.js")).threadLinkFromEnv() ?? undefined)
    : undefined;
  const running = new Running(
    thread === undefined ? log : log.child({ thread: thread.index }),
    action.config.shutdownTimeoutMs,
  );
  const stop = onSignals(running);
  if (thread !== undefined)
    thread.onStop = () => {
      if (!running.isStopping) stop("SIGTERM");
    };
  try {
    await start(running, action.config, thread);
  } catch (err) {
    await running.stop();
    process.stderr.write(`gears-proxy: could not start: ${errorMessage(err)}\n`);
    process.exit(1);
  }
}

function isMainModule(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return import.meta.url === pathToFileURL(fs.realpathSync(entry)).href;
  } catch {
    return false;
  }
}

if (isMainModule()) {
  main().catch((err: unknown) => {
    process.stderr.write(`gears-proxy: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
