/**
 * The one place that counts. The rooms only call it (a counter increment, an hrtime read);
 * figures that already exist elsewhere (connections) are read when Prometheus scrapes.
 */
import { callbackNow } from "./callback-clock.js";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { FastHistogram } from "./fast-histogram.js";
import { gearsMetrics, type GearsFigures } from "./gears-metrics.js";

/** Figures the proxy keeps anyway; read at scrape time so the hot path pays nothing for them. */
export interface MetricSources {
  connectionsCurrent(): number;
  connectionsTotal(): number;
  connectionsRejected(): number;
  /** The upstream masters, whether each is reachable now and its requests awaiting a reply. */
  upstreamNodes(): { id: string; reachable: boolean; inFlight: number }[];
  /** Slot map reads started, by cause; null when the upstream is not a cluster. */
  topologyRefreshes(): { periodic: number; requested: number } | null;
  /** Reply bytes all clients hold in the proxy now (output buffers and replies waiting their turn). */
  clientsOutputBytes(): number;
  /** Clients disconnected for a memory limit, by reason. */
  clientEvictions(): { outputBufferLimit: number; maxmemoryClients: number };
  gears(): GearsFigures;
  /** The certificates the proxy shows (TLS clients' side, upstream side) and when each expires (ms). */
  tlsCertificates(): readonly { side: string; expiresAt: number }[];
}

/** What the metrics need of a finished gears execution (src/gears/execution.ts). */
interface FinishedExecution {
  readonly status: string;
  readonly errors: readonly string[];
  readonly createdAt: number;
  readonly startedAt: number;
  readonly finishedAt: number;
}

/**
 * A redirect reply handled or a retry sent: src/routing/redirect.ts's RedirectEvent, restated
 * because observability imports nothing above it; server.ts hands one to the other, so the
 * compiler catches a difference.
 */
type RedirectEvent = "MOVED" | "ASK" | "TRYAGAIN" | "retry:TRYAGAIN" | "retry:CLUSTERDOWN" | "retry:connect";

/** Seconds, from 50 µs (a pipelined GET) to 10 s (a blocking call or a slow script). */
const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
];
/** Clients choose command names: beyond this many distinct labels, the rest count as "other". */
const MAX_LABELS = 512;
const MINUS = 0x2d;

export class Metrics {
  readonly registry = new Registry();
  private readonly latency: FastHistogram;
  private readonly errors: Counter<"kind">;
  /** Plain numbers, read at scrape time: a prom-client inc() per read and per reply costs too much. */
  private bytesIn = 0;
  private bytesOut = 0;
  /** One prepared counter child per redirect event, so counting one hashes no label. */
  private readonly redirectChildren: Record<RedirectEvent, Counter.Internal>;
  /** Gears execution durations by final state (done, failed, aborted); their counts are the executions. */
  private readonly executionObservers: Record<"done" | "failed" | "aborted", (seconds: number) => void>;
  private readonly tfCalls: Counter<"library" | "function">;
  private readonly tfErrors: Counter<"library" | "function">;
  /** Prepared children per "<lib>.<fn>": [calls, errors]. */
  private readonly tfSeries = new Map<string, [Counter.Internal, Counter.Internal]>();
  private readonly roundTrips: FastHistogram;
  private readonly sentinelSwitches: Counter<"master">;
  /** One observe function per node, handed to each of its connections. */
  private readonly roundTripObservers = new Map<string, (seconds: number) => void>();
  /** One observe function per command name (see FastHistogram for why not prom-client's). */
  private readonly series = new Map<string, (seconds: number) => void>();
  private readonly errorSeries = new Map<string, Counter.Internal>();
  /** Errors of codes past MAX_LABELS, all in one series. */
  private otherErrors: Counter.Internal | null = null;

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    const latency = new FastHistogram(
      "gears_proxy_command_duration_seconds",
      "Time from a command's arrival to its reply being written, as the client sees it.",
      "command",
      LATENCY_BUCKETS,
      this.registry,
    );
    this.latency = latency;
    // The histogram's counts are the commands answered: counted once, read at scrape time.
    countsOf(
      latency,
      "gears_proxy_commands_total",
      "Commands answered to clients, by command name.",
      "command",
    );
    this.errors = new Counter({
      name: "gears_proxy_errors_total",
      help: "Error replies sent to clients, by error code (ERR, WRONGTYPE, NOAUTH, ...).",
      labelNames: ["kind"],
      registers,
    });
    scrapedCounter("gears_proxy_client_bytes_in_total", "Bytes read from clients.", () => this.bytesIn);
    scrapedCounter(
      "gears_proxy_client_bytes_out_total",
      "Bytes of replies written to clients.",
      () => this.bytesOut,
    );
    const redirects = new Counter({
      name: "gears_proxy_upstream_redirects_total",
      help: "MOVED, ASK and TRYAGAIN replies the proxy handled for its clients.",
      labelNames: ["kind"],
      registers,
    });
    const retries = new Counter({
      name: "gears_proxy_upstream_retries_total",
      help: "Commands sent again after a wait, by reason (TRYAGAIN, CLUSTERDOWN, connect: a node unreachable).",
      labelNames: ["reason"],
      registers,
    });
    this.redirectChildren = {
      MOVED: redirects.labels("MOVED"),
      ASK: redirects.labels("ASK"),
      TRYAGAIN: redirects.labels("TRYAGAIN"),
      "retry:TRYAGAIN": retries.labels("TRYAGAIN"),
      "retry:CLUSTERDOWN": retries.labels("CLUSTERDOWN"),
      "retry:connect": retries.labels("connect"),
    };
    this.sentinelSwitches = new Counter({
      name: "gears_proxy_sentinel_switches_total",
      help: "Times the master followed through Redis Sentinel moved to another node (a failover the proxy followed), by master name.",
      labelNames: ["master"],
      // With --threads every thread follows the same master and counts the same switch.
      aggregator: "max",
      registers,
    });
    new Gauge({
      name: "gears_proxy_upstream_in_flight",
      help: "Requests sent to an upstream master and awaiting its reply, read at scrape time.",
      labelNames: ["node"],
      registers,
      collect() {
        this.reset();
        for (const node of sources.upstreamNodes()) this.set({ node: node.id }, node.inFlight);
      },
    });
    new Counter({
      name: "gears_proxy_topology_refreshes_total",
      help: "Cluster slot map reads started, by cause (periodic, or requested by a redirect, a lost node, a command).",
      labelNames: ["cause"],
      registers,
      collect() {
        this.reset();
        const counts = sources.topologyRefreshes();
        if (counts === null) return;
        this.inc({ cause: "periodic" }, counts.periodic);
        this.inc({ cause: "requested" }, counts.requested);
      },
    });
    new Gauge({
      name: "gears_proxy_clients_output_bytes",
      help: "Reply bytes held in the proxy for all clients now (output buffers and replies waiting their turn).",
      registers,
      collect() {
        this.set(sources.clientsOutputBytes());
      },
    });
    new Counter({
      name: "gears_proxy_client_evictions_total",
      help: "Clients disconnected for a memory limit (output-buffer-limit, maxmemory-clients).",
      labelNames: ["reason"],
      registers,
      collect() {
        this.reset();
        const evictions = sources.clientEvictions();
        this.inc({ reason: "output-buffer-limit" }, evictions.outputBufferLimit);
        this.inc({ reason: "maxmemory-clients" }, evictions.maxmemoryClients);
      },
    });
    const executionDurations = new FastHistogram(
      "gears_proxy_gears_execution_duration_seconds",
      "Gears executions (RG.EXECUTE and registrations' runs) from creation to end, by final state.",
      "state",
      LATENCY_BUCKETS,
      this.registry,
    );
    this.executionObservers = {
      done: executionDurations.observer("done"),
      failed: executionDurations.observer("failed"),
      aborted: executionDurations.observer("aborted"),
    };
    countsOf(
      executionDurations,
      "gears_proxy_gears_executions_total",
      "Gears executions finished, by final state (done, failed: done with errors, aborted).",
      "state",
    );
    this.tfCalls = new Counter({
      name: "gears_proxy_tf_function_calls_total",
      help: "TFCALL/TFCALLASYNC calls of an existing function, by library and function.",
      labelNames: ["library", "function"],
      registers,
    });
    this.tfErrors = new Counter({
      name: "gears_proxy_tf_function_errors_total",
      help: "TFCALL/TFCALLASYNC calls that ended in an error, by library and function.",
      labelNames: ["library", "function"],
      registers,
    });
    gearsMetrics(registers, () => sources.gears());
    this.roundTrips = new FastHistogram(
      "gears_proxy_upstream_round_trip_seconds",
      "Time from a request written to an upstream node to its reply, by node (pipelining included).",
      "node",
      LATENCY_BUCKETS,
      this.registry,
    );
    new Gauge({
      name: "gears_proxy_upstream_up",
      help: "1 while an upstream master is reachable, 0 from a lost connection until one succeeds again.",
      labelNames: ["node"],
      registers,
      collect() {
        // Rebuilt at each scrape, so masters that left the cluster disappear.
        this.reset();
        for (const node of sources.upstreamNodes()) this.set({ node: node.id }, node.reachable ? 1 : 0);
      },
    });
    new Gauge({
      name: "gears_proxy_tls_certificate_expiry_timestamp_seconds",
      help: "When the certificate the proxy shows expires (Unix time), by side: clients (--tls-cert-file) or upstream (--upstream-tls-cert-file).",
      labelNames: ["side"],
      // With --threads, the earliest over the threads: one whose reload failed still shows the old one.
      aggregator: "min",
      registers,
      collect() {
        this.reset();
        for (const c of sources.tlsCertificates()) this.set({ side: c.side }, Math.floor(c.expiresAt / 1000));
      },
    });
    new Gauge({
      name: "gears_proxy_connections_current",
      help: "Client connections open now.",
      registers,
      collect() {
        this.set(sources.connectionsCurrent());
      },
    });
    scrapedCounter("gears_proxy_connections_total", "Client connections accepted.", sources.connectionsTotal);
    scrapedCounter(
      "gears_proxy_connections_rejected_total",
      "Client connections refused (maxclients).",
      sources.connectionsRejected,
    );

    /** A counter of the observations of a FastHistogram, per label value. */
    function countsOf(histogram: FastHistogram, name: string, help: string, labelName: string): void {
      new Counter({
        name,
        help,
        labelNames: [labelName],
        registers,
        collect() {
          this.reset();
          for (const [value, count] of histogram.counts()) this.inc({ [labelName]: value }, count);
        },
      });
    }

    function scrapedCounter(name: string, help: string, read: () => number): void {
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    }
  }

  /** A start mark for commandDone: milliseconds on the monotonic clock. */
  static now(): number {
    return callbackNow();
  }

  /** One reply written for `command`, `seconds` after the command arrived. */
  commandDone(command: string, seconds: number, reply: Buffer): void {
    let observe = this.series.get(command);
    if (observe === undefined) observe = this.newSeries(command);
    observe(seconds);
    if (reply[0] === MINUS) this.errorReply(reply);
  }

  clientBytesIn(n: number): void {
    this.bytesIn += n;
  }

  clientBytesOut(n: number): void {
    this.bytesOut += n;
  }

  /** NodeObserver (src/upstream/node.ts): the Sentinel master `master` moved to another node. */
  sentinelSwitch(master: string): void {
    this.sentinelSwitches.inc({ master });
  }

  /** NodeObserver (src/upstream/node.ts): the function that times requests to node `id`. */
  roundTripFor(id: string): (seconds: number) => void {
    let observe = this.roundTripObservers.get(id);
    if (observe === undefined) {
      observe = this.roundTrips.observer(id);
      this.roundTripObservers.set(id, observe);
    }
    return observe;
  }

  redirect(event: RedirectEvent): void {
    this.redirectChildren[event].inc();
  }

  /** ExecutionObserver (src/gears/execution.ts). */
  executionFinished(execution: FinishedExecution): void {
    const state =
      execution.status === "aborted" ? "aborted" : execution.errors.length > 0 ? "failed" : "done";
    this.executionObservers[state]((execution.finishedAt - execution.createdAt) / 1000);
  }

  /** A T&F function called as "<lib>.<fn>" (src/gears/tf/tf-engine.ts onCall). */
  tfCall(target: string, failed: boolean): void {
    let series = this.tfSeries.get(target);
    if (series === undefined) {
      const dot = target.indexOf(".");
      const labels =
        this.tfSeries.size < MAX_LABELS ? [target.slice(0, dot), target.slice(dot + 1)] : ["other", "other"];
      series = [this.tfCalls.labels(...labels), this.tfErrors.labels(...labels)];
      this.tfSeries.set(target, series);
    }
    series[0].inc();
    if (failed) series[1].inc();
  }

  private newSeries(command: string): (seconds: number) => void {
    const label = this.series.size < MAX_LABELS ? command : "other";
    const observe = this.series.get(label) ?? this.latency.observer(label);
    this.series.set(label, observe);
    return observe;
  }

  private errorReply(reply: Buffer): void {
    let end = reply.indexOf(0x20);
    const lineEnd = reply.indexOf(0x0d);
    if (end < 0 || (lineEnd >= 0 && lineEnd < end)) end = lineEnd;
    const code = reply.toString("latin1", 1, end < 0 ? reply.length : end);
    let child = this.errorSeries.get(code);
    if (child === undefined) {
      // Past the cap, one OTHER series, and no entry per new code: a script throwing
      // `'x' + Math.random()` must not grow the map without bound.
      if (this.errorSeries.size >= MAX_LABELS) {
        this.otherErrors ??= this.errors.labels("OTHER");
        this.otherErrors.inc();
        return;
      }
      child = this.errors.labels(code);
      this.errorSeries.set(code, child);
    }
    child.inc();
  }
}

/**
 * /metrics, /healthz (the process answers) and /readyz (`ready()` says the upstreams answer
 * and the topology is known). Resolves once listening.
 */
export async function serveMetrics(
  metrics: Metrics,
  bind: string,
  port: number,
  ready: () => Promise<boolean>,
  /** With --threads: the exposition summed over the threads (src/threads/). */
  gather?: () => Promise<string>,
): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, body: string, type = "text/plain; charset=utf-8"): void => {
      res.writeHead(status, { "content-type": type });
      res.end(body);
    };
    if (path === "/healthz") return send(200, "ok\n");
    if (path === "/readyz") {
      ready().then(
        (ok) => send(ok ? 200 : 503, ok ? "ready\n" : "not ready\n"),
        () => send(503, "not ready\n"),
      );
      return;
    }
    if (path === "/metrics") {
      (gather ?? (() => metrics.registry.metrics()))().then(
        (text) => send(200, text, metrics.registry.contentType),
        (err: Error) => send(500, `${err.message}\n`),
      );
      return;
    }
    send(404, "not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, bind, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server;
}

export function metricsAddress(server: http.Server): AddressInfo {
  return server.address() as AddressInfo;
}
