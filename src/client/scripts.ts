import { encodeCommand } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import { isScript } from "../routing/command-kinds.js";
import type { Lease } from "../routing/lease.js";
import { borrow, type LaneHost } from "./lane.js";

/**
 * EVAL, FCALL and their kin on a dedicated connection, so that a busy script holds up
 * nobody else (and SCRIPT KILL from another client reaches the server). Scripts pipelined
 * back to back share it; it goes back to the pool once all have answered.
 */
export class ScriptLane {
  private lease: Lease | null = null;
  /** Scripts sent on `lease` still waiting for their reply. */
  private running = 0;

  constructor(private readonly host: LaneHost) {}

  /**
   * Whether `name` is a script that goes on a connection of its own. In front of one
   * server, yes; in a cluster scripts stay on the shared connections, where redirects and
   * NOSCRIPT reloads are handled.
   */
  takes(name: string): boolean {
    return isScript(name) && this.host.ctx.router.topology.mode !== "cluster";
  }

  send(name: string, request: Request): void {
    const host = this.host;
    if (this.lease === null) {
      if (!host.enterLane("script", request)) return;
      this.lease = borrow(host, name, request.argv);
      if (this.lease === null) return;
    }
    const lease = this.lease;
    const slot = host.upstreamSlot();
    this.running++;
    slot.onReply = () => {
      if (--this.running > 0 || this.lease !== lease) return;
      this.lease = null;
      lease.release();
    };
    lease.send(request.raw ?? encodeCommand(request.argv), slot, host.db);
  }

  /** RESET, or the client leaving: a script still running keeps its connection, which closes. */
  drop(): void {
    this.lease?.destroy();
    this.lease = null;
    this.running = 0;
  }
}
