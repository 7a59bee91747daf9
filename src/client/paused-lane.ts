import { encodeCommand } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import { dbFor } from "../routing/command-kinds.js";
import type { Lease } from "../routing/lease.js";
import { borrow, type LaneHost } from "./lane.js";

/** What the paused lane needs beyond a lane. */
export interface PausedHost extends LaneHost {
  /** Sends the pending run of pipelined requests, to keep the order. */
  flushRuns(): void;
}

/**
 * Ordinary commands while the servers are paused (CLIENT PAUSE): on a connection of this
 * client's own, so the server holds it as one paused client of its own, and other clients'
 * reads on the shared connections never wait behind it.
 */
export class PausedLane {
  private lease: Lease | null = null;

  constructor(private readonly host: PausedHost) {}

  /** Whether the servers are paused; control commands and key listings still take the router. */
  takes(name: string, request: Request): boolean {
    const ctx = this.host.ctx;
    return ctx.leases.pause.active && !ctx.router.needsRouting(name, request, this.host.db);
  }

  send(name: string, request: Request): void {
    const host = this.host;
    host.flushRuns();
    const target = host.ctx.leases.nodeIdFor(name, request.argv, host.id);
    if (typeof target === "string") {
      // Keys across slots: the router splits the command over the shared connections.
      host.ctx.router.forward(name, request.argv, request.raw, host.upstreamSlot(), {
        db: host.db,
        affinity: host.id,
        proto: host.proto,
      });
      return;
    }
    // Another node: every reply on this one first (entering "idle" gives it back).
    if (this.lease !== null && this.lease.nodeId !== target.id && !host.enterLane("idle", request)) return;
    if (!host.enterLane("paused", request)) return;
    if (this.lease === null || this.lease.closed || this.lease.nodeId !== target.id) {
      this.lease?.release();
      this.lease = borrow(host, name, request.argv);
      if (this.lease === null) return;
    }
    this.lease.send(
      request.raw ?? encodeCommand(request.argv),
      host.upstreamSlot(),
      dbFor(name, host.db, host.ctx.router.monitors > 0),
    );
  }

  /** The client left the lane with every reply in: the connection goes back. */
  leave(): void {
    this.lease?.release();
    this.lease = null;
  }

  drop(): void {
    this.lease?.destroy();
    this.lease = null;
  }
}
