/**
 * The one place that counts. The rooms only call it (a counter increment, an hrtime read);
 * figures that already exist elsewhere (connections) are read when Prometheus scrapes.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { FastHistogram } from "./fast-histogram.js";

/** Figures the proxy keeps anyway; read at scrape time so the hot path pays nothing for them. */
export interface MetricSources {
  connectionsCurrent(): number;
  connectionsTotal(): number;
  connectionsRejected(): number;
  /** The upstream masters and whether each is reachable now. */
  upstreamNodes(): { id: string; reachable: boolean }[];
}

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
  private readonly bytesIn: Counter;
  private readonly bytesOut: Counter;
  private readonly redirects: Counter<"kind">;
  private readonly roundTrips: FastHistogram;
  /** One observe function per node, handed to each of its connections. */
  private readonly roundTripObservers = new Map<string, (seconds: number) => void>();
  /** One observe function per command name (see FastHistogram for why not prom-client's). */
  private readonly series = new Map<string, (seconds: number) => void>();
  private readonly errorSeries = new Map<string, Counter.Internal>();

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
    new Counter({
      name: "gears_proxy_commands_total",
      help: "Commands answered to clients, by command name.",
      labelNames: ["command"],
      registers,
      collect() {
        this.reset();
        for (const [command, count] of latency.counts()) this.inc({ command }, count);
      },
    });
    this.errors = new Counter({
      name: "gears_proxy_errors_total",
      help: "Error replies sent to clients, by error code (ERR, WRONGTYPE, NOAUTH, ...).",
      labelNames: ["kind"],
      registers,
    });
    this.bytesIn = new Counter({
      name: "gears_proxy_client_bytes_in_total",
      help: "Bytes read from clients.",
      registers,
    });
    this.bytesOut = new Counter({
      name: "gears_proxy_client_bytes_out_total",
      help: "Bytes of replies written to clients.",
      registers,
    });
    this.redirects = new Counter({
      name: "gears_proxy_upstream_redirects_total",
      help: "MOVED and ASK replies the proxy followed for its clients.",
      labelNames: ["kind"],
      registers,
    });
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
    return performance.now();
  }

  /** One reply written for `command`, `seconds` after the command arrived. */
  commandDone(command: string, seconds: number, reply: Buffer): void {
    let observe = this.series.get(command);
    if (observe === undefined) observe = this.newSeries(command);
    observe(seconds);
    if (reply[0] === MINUS) this.errorReply(reply);
  }

  clientBytesIn(n: number): void {
    this.bytesIn.inc(n);
  }

  clientBytesOut(n: number): void {
    this.bytesOut.inc(n);
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

  redirect(kind: "MOVED" | "ASK"): void {
    this.redirects.inc({ kind });
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
      child = this.errors.labels(this.errorSeries.size < MAX_LABELS ? code : "OTHER");
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
      metrics.registry.metrics().then(
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
