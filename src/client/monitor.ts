import { encodeCommand, OK } from "../resp/encode.js";
import type { Lease } from "../routing/lease.js";
import type { LaneHost } from "./lane.js";

const MONITOR = encodeCommand(["MONITOR"]);

/** What MONITOR needs beyond a lane: where the lines go, and how the client ends. */
export interface MonitorHost extends Pick<LaneHost, "ctx" | "proto" | "upstreamSlot"> {
  /** A frame the client did not ask for: written after what is queued. */
  pushed(frame: Buffer): void;
  kill(reason: string): void;
}

/**
 * MONITOR: each master's stream on a connection per master, relayed as it comes (commands
 * the proxy sends on its clients' behalf, this client's own included). The first master's
 * OK answers the client.
 */
export class Monitor {
  private leases: Lease[] = [];
  /** Counted in the router's monitors (dbFor) until dropped. */
  private monitoring = false;

  constructor(private readonly host: MonitorHost) {}

  get active(): boolean {
    return this.leases.length > 0;
  }

  start(): void {
    const host = this.host;
    const slot = host.upstreamSlot();
    if (this.active) return slot.reply(OK);
    if (!this.monitoring) host.ctx.router.monitors++;
    this.monitoring = true;
    const ignore = { reply() {}, fail() {} };
    host.ctx.leases.onEveryMaster(host.proto).forEach((lease, i) => {
      if (typeof lease === "string") {
        if (i === 0) slot.fail(lease);
        return;
      }
      lease.onMonitorLine((line) => host.pushed(line));
      lease.onLost(() => host.kill("monitor connection lost"));
      this.leases.push(lease);
      lease.send(MONITOR, i === 0 ? slot : ignore);
    });
  }

  drop(): void {
    if (this.monitoring) this.host.ctx.router.monitors--;
    this.monitoring = false;
    for (const lease of this.leases.splice(0)) lease.destroy();
  }
}
