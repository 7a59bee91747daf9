import net from "node:net";
import tls from "node:tls";
import { TlsFiles } from "./config-tls.js";
import { ClientRegistry } from "./client/registry.js";
import { TrackingTable } from "./client/tracking/table.js";
import type { ProxyContext, ProxyStats, ThreadLink } from "./client/context.js";
import { ClientSession } from "./client/session.js";
import { MemoryGuard, REDIS_PUBSUB_LIMIT, type Eviction } from "./client/memory-guard.js";
import type { ProxyConfig } from "./config.js";
import type { Logger } from "./observability/log.js";
import { GearsEngine } from "./gears/engine.js";
import { findExecutionsElsewhere, GEARS_COMMANDS } from "./gears/commands.js";
import { ExecutionsAcrossProxies } from "./gears/executions-across-proxies.js";
import { loadAccessControl } from "./acl/load.js";
import { flushesInBackground, since72 } from "./client/server-features.js";
import { gearsFigures } from "./gears/metric-figures.js";
import { ClusterTopology } from "./upstream/cluster-topology.js";
import { CommandTable } from "./routing/command-table.js";
import { Isolate } from "./sandbox/isolate.js";
import { WarmIsolates } from "./sandbox/warm-isolates.js";
import { PyodidePool } from "./sandbox/pyodide/pool.js";
import { preparePythonIsolate } from "./gears/python-guest.js";
import { gearsPreload } from "./gears/guest-bundles.js";
import { Router } from "./routing/router.js";
import { Leases } from "./routing/lease.js";
import { connectUpstream } from "./upstream/connect.js";
import { Metrics, serveMetrics, type MetricSources } from "./observability/metrics.js";
import { SlowLog } from "./observability/slowlog.js";
import { upstreamsReady } from "./upstream/readiness.js";
import type http from "node:http";

/** A /readyz probe waits this long for every master's PONG. */
const READY_TIMEOUT_MS = 1000;
/** How often the clients' memory is checked against the limits (see client/memory-guard.ts). */
const MEMORY_CHECK_MS = 100;
const MAX_CLIENTS_REPLY = Buffer.from("-ERR max number of clients reached\r\n");

/**
 * The proxy: connects to its upstream, listens for clients, and owns everything it
 * started, so close() leaves nothing behind.
 */
export class ProxyServer {
  private listener: net.Server | null = null;
  /** The --tls-port listener, beside the plain one. */
  private tlsListener: tls.Server | null = null;
  /** The bound TLS port (useful with --tls-port 0). */
  tlsPort: number | undefined;
  /** The certificate files in use, both sides; null before start. */
  private tlsFiles: TlsFiles | null = null;
  private context: ProxyContext | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  /** Keeps what clients hold under --maxmemory-clients and the per-client output limit. */
  readonly memoryGuard: MemoryGuard;
  /** The warm Python interpreter (--python). */
  private python: PyodidePool | null = null;
  /** A JavaScript isolate started ahead of the next RG.EXECUTE. */
  private warm: WarmIsolates<Isolate> | null = null;
  /** Other proxies' executions, and this one's for them (listening once it holds any). */
  private acrossProxies: ExecutionsAcrossProxies | null = null;
  /** The /metrics, /healthz, /readyz server (--metrics-port). */
  metricsServer: http.Server | null = null;

  constructor(
    readonly config: ProxyConfig,
    readonly log: Logger,
    /** With --threads: this process's link to the other threads (src/threads/). */
    private readonly thread?: ThreadLink,
  ) {
    this.memoryGuard = new MemoryGuard(
      () => this.context?.clients.all() ?? [],
      {
        perClientOutput: config.clientOutputBufferLimit,
        total: config.maxmemoryClients,
        pubsub: { ...REDIS_PUBSUB_LIMIT },
      },
      (eviction) => this.evict(eviction),
      (total) => {
        if (this.context !== null) this.context.stats.clientsMemory = total;
      },
    );
  }

  /** Resolves once listening; the port is the bound one (useful with port 0), the TLS one with `--port off`. */
  async start(): Promise<{ host: string; port: number }> {
    // Read before anything starts, so a missing certificate stops the proxy at once.
    const tlsFiles = new TlsFiles(this.config);
    this.tlsFiles = tlsFiles;
    const stats: ProxyStats = {
      startedAt: Date.now(),
      connectionsReceived: 0,
      rejectedConnections: 0,
      commandsProcessed: 0,
      protocolErrors: 0,
      outputLimitDisconnections: 0,
      evictedClients: 0,
      clientsMemory: 0,
    };
    // Made before the upstream connections, which it times.
    const metrics =
      this.config.metricsPort === undefined
        ? null
        : new Metrics(
            metricSources(
              stats,
              () => this.context,
              () => tlsFiles.expiries(),
            ),
          );
    const upstream = await connectUpstream(this.config, this.log, metrics ?? undefined, tlsFiles.upstream);
    this.config.clusterEmulation ??= upstream.topology.mode === "cluster";
    if (upstream.outputLimits !== null) this.memoryGuard.followOutputLimits(upstream.outputLimits);
    const commands = upstream.commands === null ? null : new CommandTable(upstream.commands);
    const acl = loadAccessControl(this.config, {
      commands: commands === null ? null : commands.all(),
      keys: { keyAccess: (name, argv) => commands?.keyAccess(name, argv) ?? [] },
      gearsCommands: GEARS_COMMANDS,
      namedRefusals: since72(upstream.server),
    });
    const router = new Router(
      upstream.topology,
      commands,
      this.config.clusterRetryTimeoutMs,
      this.config.readFromReplicas,
    );
    const python = this.config.python
      ? new PyodidePool({
          limits: () => ({
            memoryLimitMb: ctx.gears.config.number("ScriptMemoryLimitMB"),
            timeoutMs: ctx.gears.config.number("ScriptTimeoutMS"),
          }),
          maxMemoryMb: this.config.pythonMaxMemoryMb,
          dataDir: this.config.dataDir,
          prepare: preparePythonIsolate,
        })
      : null;
    this.python = python;
    const warm = new WarmIsolates((limits, bridge) => Isolate.create(limits, bridge));
    this.warm = warm;
    const ctx: ProxyContext = {
      config: this.config,
      log: this.log,
      router,
      leases: new Leases(router),
      clients: new ClientRegistry((this.thread?.index ?? 0) + 1, this.thread?.count ?? 1),
      stats,
      upstreamServer: upstream.server,
      gears: new GearsEngine(
        router,
        this.log.child({ component: "gears" }),
        (limits, bridge, preload) => warm.take(limits, bridge, preload ?? null),
        python === null ? null : (limits, bridge) => python.take(limits, bridge),
      ),
      metrics,
      slowlog: new SlowLog(this.config.slowlogLogSlowerThan, this.config.slowlogMaxLen),
      tracking: new TrackingTable(router, (id) => ctx.clients.get(id), flushesInBackground(upstream.server)),
      acl,
      memoryGuard: this.memoryGuard,
      ...(this.thread === undefined ? {} : { threads: this.thread }),
    };
    ctx.gears.onLargeExecution = (isolate) => warm.hold(isolate);
    // Not with the proxy's own ACL users: the proxies' channel takes questions from anyone who
    // can PUBLISH to it (a client of the proxy too), which would get round the check that a user
    // reads only its own executions. Without them every client may read every execution anyway.
    const acrossProxies =
      acl === null ? new ExecutionsAcrossProxies(ctx.gears, this.log.child({ component: "gears" })) : null;
    this.acrossProxies = acrossProxies;
    if (acrossProxies !== null) ctx.gears.onExecutionId = () => acrossProxies.listen();
    if (acl !== null) {
      ctx.gears.guardFor = (user) => acl.guardFor(user);
      ctx.gears.tf.libraries.guardFor = (user) => acl.guardFor(user);
    }
    this.context = ctx;
    for (const [name, value] of Object.entries(this.config.gearsConfig)) {
      const reply = ctx.gears.config.set([[name, value]]).toString();
      if (reply.includes("\r\n-"))
        throw new Error(`--gears-config ${name}=${value}: ${reply.split("\r\n-")[1].trim()}`);
    }
    // Started now, with the settings applied, so that the first RG.PYEXECUTE finds it loaded.
    python?.prime();
    warm.prepare(
      {
        memoryLimitMb: ctx.gears.config.number("ScriptMemoryLimitMB"),
        timeoutMs: ctx.gears.config.number("ScriptTimeoutMS"),
      },
      gearsPreload(),
    );
    await ctx.gears.restore();
    let bound: net.AddressInfo | null = null;
    if (this.config.port !== null) {
      // Accepted paused so that the client's socket can read without the stream machinery (io/socket-reader.ts).
      const listener = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(ctx, socket));
      this.listener = listener;
      bound = await this.listen(listener, this.config.port);
    }
    if (tlsFiles.client !== undefined) {
      const tlsListener = tls.createServer(tlsFiles.client, (socket) => this.acceptTls(ctx, socket));
      // A failed handshake (no certificate, another CA) never becomes a client: noted, not fatal.
      tlsListener.on("tlsClientError", (err, socket) =>
        this.log.info({ err: err.message, client: socket.remoteAddress }, "TLS handshake refused"),
      );
      this.tlsListener = tlsListener;
      const tlsBound = await this.listen(tlsListener, this.config.tlsPort ?? 0);
      this.tlsPort = tlsBound.port;
      bound ??= tlsBound;
    }
    // Counted among the threads once it takes connections (the spec waits for that).
    this.thread?.serve(ctx);
    // After the threads: another thread of this proxy answers before the other proxies are asked.
    if (acrossProxies !== null) findExecutionsElsewhere(ctx.gears, acrossProxies);
    this.memoryGuard.start(MEMORY_CHECK_MS);
    if (this.config.timeout > 0) {
      this.sweeper = setInterval(() => this.closeIdleClients(ctx), 1000);
      this.sweeper.unref();
    }
    if (ctx.metrics !== null) {
      const metrics = ctx.metrics;
      router.onRedirect = (event) => metrics.redirect(event);
      ctx.gears.observer = metrics;
      ctx.gears.tf.onCall = (target, failed) => metrics.tfCall(target, failed);
      const ready = (): Promise<boolean> => upstreamsReady(router.topology, READY_TIMEOUT_MS);
      this.metricsServer = await serveMetrics(
        ctx.metrics,
        this.config.metricsBind,
        this.config.metricsPort ?? 0,
        ready,
        this.thread === undefined ? undefined : () => this.thread!.metricsText(),
      );
    }
    // checkTls refuses a config with neither port.
    if (bound === null) throw new Error("no port to listen on: --port off needs --tls-port");
    // A client asking INFO should see the port it actually connected to.
    if (this.config.port !== null) this.config.port = bound.port;
    return { host: bound.address, port: bound.port };
  }

  private async listen(listener: net.Server, port: number): Promise<net.AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(port, this.config.bind, () => {
        listener.off("error", reject);
        resolve();
      });
    });
    listener.on("error", (err) => this.log.error({ err: err.message }, "listener error"));
    return listener.address() as net.AddressInfo;
  }

  /**
   * Re-reads the certificate files (SIGHUP): new TLS clients get the new certificate, new
   * upstream connections show and check the new ones; open connections keep their session.
   * A file that cannot be read leaves everything as it was, logged.
   */
  reloadTls(): void {
    const files = this.tlsFiles;
    if (files === null || !files.inUse)
      return void this.log.info("SIGHUP: no TLS certificate files to reload");
    try {
      files.reload();
    } catch (err) {
      this.log.error(
        { err: err instanceof Error ? err.message : String(err) },
        "TLS certificates not reloaded: the old ones stay in use",
      );
      return;
    }
    if (this.tlsListener !== null && files.client !== undefined)
      this.tlsListener.setSecureContext(files.client);
    this.log.info("TLS certificates reloaded");
  }

  /** --tls-auth-clients optional: no certificate is fine, a certificate that fails its checks is not. */
  private acceptTls(ctx: ProxyContext, socket: tls.TLSSocket): void {
    if (
      !socket.authorized &&
      Object.keys(socket.getPeerCertificate()).length > 0 &&
      this.config.tlsAuthClients !== "no"
    ) {
      this.log.info(
        {
          err: socket.authorizationError?.message ?? String(socket.authorizationError),
          client: socket.remoteAddress,
        },
        "TLS client certificate refused",
      );
      socket.destroy();
      return;
    }
    this.accept(ctx, socket);
  }

  private accept(ctx: ProxyContext, socket: net.Socket): void {
    ctx.stats.connectionsReceived++;
    if (ctx.clients.size >= this.config.maxclients) {
      ctx.stats.rejectedConnections++;
      this.log.warn(
        { client: socket.remoteAddress, maxclients: this.config.maxclients },
        "client refused: max number of clients reached",
      );
      // Whatever the client already sent is never read: destroy once the reply is out.
      socket.on("error", () => {});
      socket.end(MAX_CLIENTS_REPLY, () => socket.destroy());
      return;
    }
    ctx.clients.add(new ClientSession(socket, ctx));
  }

  private evict({ client, reason, bytes }: Eviction): void {
    const stats = this.context?.stats;
    if (stats !== undefined) {
      if (reason === "maxmemory-clients") stats.evictedClients++;
      else stats.outputLimitDisconnections++;
    }
    this.log.warn(
      { client: client.id, addr: client.addr, bytes, reason },
      "client disconnected for a memory limit",
    );
    client.kill(reason);
  }

  private closeIdleClients(ctx: ProxyContext): void {
    const limitMs = this.config.timeout * 1000;
    for (const client of ctx.clients.all()) {
      if (client.idleMs > limitMs && !client.exemptFromTimeout) client.kill("idle timeout");
    }
  }

  /** The JavaScript isolates started ahead, and the large jobs holding them back now. */
  get warmIsolates(): { spares: number; holding: number } {
    return { spares: this.warm?.spareCount ?? 0, holding: this.warm?.holding ?? 0 };
  }

  /** Settles once the warm Python interpreter is ready (at once without --python). */
  async pythonWarm(): Promise<void> {
    await this.python?.warmed();
  }

  /**
   * Stops listening, lets every client get the replies to what it already sent, then stops
   * gears and the upstreams. Whatever is still pending at `timeoutMs` is cut off.
   */
  async close(timeoutMs = this.config.shutdownTimeoutMs): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.memoryGuard.stop();
    const listeners = [this.listener, this.tlsListener].filter((l): l is net.Server => l !== null);
    this.listener = null;
    this.tlsListener = null;
    // Closed before the clients drain so no new one arrives; resolves once the last has gone.
    const listenerClosed = Promise.all(
      listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve()))),
    );
    const ctx = this.context;
    if (ctx !== null) {
      // T&F calls waiting in a blocking command are answered as timed out, so their
      // functions finish and their clients get a reply within the drain.
      void ctx.gears.tf.blocking.unblockAll();
      // Gears need a share of the time to hand their leases back, so clients get most of it.
      const drained = Promise.all([...ctx.clients.all()].map((client) => client.shutdown()));
      await untilOr(drained, Math.max(0, deadline - Date.now()) * 0.7);
      for (const client of [...ctx.clients.all()]) client.kill("proxy shutting down");
      // Leases go back to Redis so another proxy takes the shards over at once; a dead
      // upstream must not hold the shutdown up.
      await untilOr(
        ctx.gears.close().catch(() => {}),
        Math.min(1000, Math.max(0, deadline - Date.now())),
      );
      this.acrossProxies?.close();
      ctx.tracking.close();
      ctx.router.topology.close();
    }
    await this.python?.close();
    await this.warm?.close();
    const metricsServer = this.metricsServer;
    this.metricsServer = null;
    metricsServer?.close();
    metricsServer?.closeAllConnections();
    await listenerClosed;
  }
}

/** Waits for `work`, or `ms` at most; what is left keeps running unawaited. */
function untilOr(work: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

function metricSources(
  stats: ProxyStats,
  context: () => ProxyContext | null,
  tlsCertificates: MetricSources["tlsCertificates"],
): MetricSources {
  return {
    tlsCertificates,
    connectionsCurrent: () => context()?.clients.size ?? 0,
    connectionsTotal: () => stats.connectionsReceived,
    connectionsRejected: () => stats.rejectedConnections,
    upstreamNodes: () =>
      (context()?.router.topology.masters() ?? []).map((n) => ({
        id: n.id,
        reachable: n.reachable,
        inFlight: n.inFlight,
      })),
    topologyRefreshes: () => {
      const topology = context()?.router.topology;
      return topology instanceof ClusterTopology ? topology.refreshCounts : null;
    },
    clientsOutputBytes: () => {
      let bytes = 0;
      for (const client of context()?.clients.all() ?? []) bytes += client.memory().output;
      return bytes;
    },
    clientEvictions: () => ({
      outputBufferLimit: stats.outputLimitDisconnections,
      maxmemoryClients: stats.evictedClients,
    }),
    gears: () => gearsFigures(context()?.gears ?? null),
  };
}
