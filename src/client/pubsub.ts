import { encodeCommand } from "../resp/encode.js";
import type { Protocol } from "../resp/values.js";
import type { Request } from "../resp/request-parser.js";
import type { Lease } from "../routing/lease.js";
import { borrow, type Lane, type LaneHost } from "./lane.js";
import { subscriptionCount } from "./subscription-frames.js";

const PING = encodeCommand(["PING"]);

/** What a client's subscriptions need from the session. */
export interface SubscriberHost extends LaneHost {
  /** Moves to `lane` at once, without waiting for replies due on the one before. */
  markLane(lane: Lane): void;
  /** A message (or a confirmation outside any marked command): written after what is queued. */
  pushed(frame: Buffer): void;
  /** The subscription connection died: the client must reconnect and resubscribe. */
  kill(reason: string): void;
}

/**
 * One client's SUBSCRIBE, PSUBSCRIBE and SSUBSCRIBE, on a leased connection that carries
 * nothing else; its frames are relayed as the server sends them.
 */
export class Subscriber {
  private lease: Lease | null = null;
  /** Channels and patterns subscribed, as the server last counted them. */
  count = 0;
  /** Push frames that answer the (un)subscribe commands still marked, in arrival order. */
  private marked: Buffer[] = [];
  /** (Un)subscribe commands whose PING marker has not come back yet. */
  private marks = 0;

  constructor(private readonly host: SubscriberHost) {}

  /** SUBSCRIBE and its kin, and PING in RESP2 while subscribed: on the subscription connection. */
  route(name: string, request: Request): void {
    const host = this.host;
    if (host.proto === 3 && !host.enterLane("subscribed", request)) return;
    if (this.needsLease(host.proto)) {
      if (!host.enterLane("subscribed", request)) return;
      const lease = borrow(host, name, request.argv);
      if (lease === null) return;
      this.attach(lease);
    }
    host.markLane("subscribed");
    this.send(name, request);
  }

  /**
   * Whether a connection must be leased first. Even an UNSUBSCRIBE with nothing to leave
   * takes one: the server answers it with one frame per channel, which a shared
   * connection would mismatch. A connection left in another protocol (HELLO since the
   * last subscription) goes: its frames would come in the old one.
   */
  private needsLease(proto: Protocol): boolean {
    if (this.lease !== null && this.count === 0 && this.lease.proto !== proto) this.drop();
    return this.lease === null;
  }

  private attach(lease: Lease): void {
    this.lease = lease;
    lease.onPush((frame) => this.onFrame(frame));
    lease.onLost(() => this.host.kill("subscription connection lost"));
  }

  private send(name: string, request: Request): void {
    // Count the subscription now, so a command pipelined behind it is refused as Redis would.
    if (name !== "ping" && !name.includes("unsubscribe")) this.count = Math.max(this.count, 1);
    this.lease!.sendUnmatched(request.raw ?? encodeCommand(request.argv));
    if (this.host.proto === 3) this.mark();
  }

  /**
   * In RESP3 the confirmations of (un)subscribe commands are pushes, while PING's reply is
   * not: a PING sent behind the command marks where its confirmations end, so they take
   * the command's place among the client's replies, whatever else it pipelined.
   */
  private mark(): void {
    const slot = this.host.upstreamSlot();
    // Pub/sub frames are pushed even under CLIENT REPLY OFF, as Redis pushes them.
    slot.silent = false;
    this.marks++;
    slot.onReply = () => {
      this.marks--;
      return Buffer.concat(this.marked.splice(0));
    };
    this.lease!.send(PING, slot);
  }

  private onFrame(frame: Buffer): void {
    const total = subscriptionCount(frame);
    if (total !== null) this.count = total;
    if (this.marks > 0) this.marked.push(frame);
    else this.host.pushed(frame);
  }

  /** RESET, or the client leaving: the connection closes with its subscriptions. */
  drop(): void {
    this.lease?.destroy();
    this.lease = null;
    this.count = 0;
    this.marks = 0;
    this.marked = [];
  }
}
