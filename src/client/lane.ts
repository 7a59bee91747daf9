import type { Request } from "../resp/request-parser.js";
import type { Protocol } from "../resp/values.js";
import type { Lease } from "../routing/lease.js";
import type { ProxyContext } from "./context.js";
import type { ReplySlot } from "./reply-slot.js";

/** Where a client's commands currently go. Switching lanes waits for replies in flight. */
export type Lane = "shared" | "pinned" | "blocking" | "script" | "subscribed" | "paused" | "idle";

/**
 * What a command on a dedicated connection (blocking, script, paused, MONITOR, a server
 * user's) needs from the client session: its place in the reply order, and the lane switch.
 */
export interface LaneHost {
  readonly id: number;
  readonly ctx: ProxyContext;
  readonly db: number;
  readonly proto: Protocol;
  /** A place in the reply order that an upstream fills. */
  upstreamSlot(): ReplySlot;
  replyError(message: string): void;
  /** Switches to `lane`, or false when replies on another lane are due: the request runs again then. */
  enterLane(lane: Lane, request: Request): boolean;
}

/** Borrows a connection to the node for argv, or answers the error and returns null. */
export function borrow(host: LaneHost, name: string, argv: readonly Buffer[]): Lease | null {
  const lease = host.ctx.leases.forCommand(name, argv, host.id, host.proto, host.db);
  if (typeof lease === "string") {
    host.replyError(lease);
    return null;
  }
  return lease;
}
