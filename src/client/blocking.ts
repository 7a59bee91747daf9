import { encodeCommand } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import type { Lease } from "../routing/lease.js";
import { borrow, type LaneHost } from "./lane.js";
import { WaitCall } from "./wait-call.js";

/**
 * A blocking command (BLPOP, XREAD BLOCK, WAIT...) on a connection of its own, so that
 * the shared connections never wait behind it. The client's next command waits for it.
 */
export class BlockingCall {
  private lease: Lease | null = null;
  private readonly wait: WaitCall;

  constructor(private readonly host: LaneHost) {
    this.wait = new WaitCall(host);
  }

  /** A blocking command is waiting for its reply. */
  get active(): boolean {
    return this.lease !== null || this.wait.active;
  }

  send(name: string, request: Request): void {
    if (name === "wait" && WaitCall.handles(request)) {
      this.wait.send(request);
      return;
    }
    const host = this.host;
    if (!host.enterLane("blocking", request)) return;
    const lease = borrow(host, name, request.argv);
    if (lease === null) return;
    this.lease = lease;
    const slot = host.upstreamSlot();
    slot.onReply = () => {
      this.lease = null;
      lease.release();
    };
    lease.send(request.raw ?? encodeCommand(request.argv), slot, host.db);
  }

  /** CLIENT UNBLOCK: how many clients the server unblocked (0 when none is waiting). */
  unblock(withError: boolean): Promise<number> {
    if (this.wait.active) return this.wait.unblock(withError);
    return this.lease?.unblock(withError) ?? Promise.resolve(0);
  }

  /** RESET, or the client leaving: the connection closes with the command on it. */
  drop(): void {
    this.lease?.destroy();
    this.lease = null;
    this.wait.drop();
  }
}
