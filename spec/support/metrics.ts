import type { AddressInfo } from "node:net";
import type { RunningProxy } from "../harness/index.js";

/** The value of one sample line (`name{labels} value`) in a Prometheus text page; 0 when absent. */
export function sample(page: string, series: string): number {
  const line = page.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** Whether the page has a sample line for `series` at all. */
export function hasSample(page: string, series: string): boolean {
  return page.split("\n").some((l) => l.startsWith(`${series} `));
}

/** The proxy's /metrics page (it must run with --metrics-port). */
export async function metricsPage(proxy: RunningProxy): Promise<string> {
  const address = proxy.server.metricsServer?.address() as AddressInfo;
  return (await fetch(`http://127.0.0.1:${address.port}/metrics`)).text();
}
