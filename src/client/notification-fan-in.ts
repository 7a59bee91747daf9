import { decodeReply } from "../resp/decode.js";
import { encodeCommand, encodeValue } from "../resp/encode.js";
import { RespPush, type Protocol } from "../resp/values.js";
import { isProxyKeyNotification } from "../routing/hidden-keys.js";
import type { Lease } from "../routing/lease.js";

/** Keyspace notifications' channels: `__keyspace@<db>__:<key>` and `__keyevent@<db>__:<event>`. */
const NOTIFICATION_PREFIXES = ["__keyspace@", "__keyevent@"];
/** Characters that make the rest of a PSUBSCRIBE pattern match more than itself. */
const GLOB = /[*?[\\]/;

const text = (value: unknown): string => (Buffer.isBuffer(value) ? value.toString("latin1") : String(value));

/** Whether a channel is a keyspace notification's. */
function isNotificationChannel(channel: string): boolean {
  return NOTIFICATION_PREFIXES.some((prefix) => channel.startsWith(prefix));
}

/**
 * Whether a SUBSCRIBE channel or PSUBSCRIBE pattern may receive keyspace notifications. A
 * pattern is judged by its literal start, which errs toward yes (`*x` may match
 * `__keyevent@0__:x`; so may `__k*`).
 */
export function mayReceiveNotifications(kind: "subscribe" | "psubscribe", name: string): boolean {
  if (kind === "subscribe") return isNotificationChannel(name);
  const glob = name.search(GLOB);
  if (glob === -1) return isNotificationChannel(name);
  const literal = name.slice(0, glob);
  return NOTIFICATION_PREFIXES.some((prefix) => prefix.startsWith(literal) || literal.startsWith(prefix));
}

/** What the fan-in needs from the client's subscriptions. */
export interface FanInHost {
  /** The client's protocol now (a RESP3 client gets pushes). */
  readonly proto: Protocol;
  /** A connection on each master but `except` (the one the client's main subscription is on). */
  leasesBut(except: string): (Lease | string)[];
  /** A message for the client: written after what is queued. */
  pushed(frame: Buffer): void;
  /** A connection died: the client must reconnect and subscribe again, as for its own. */
  kill(reason: string): void;
}

/**
 * Keyspace notifications in a cluster. Each master publishes its own keys' events to its own
 * subscribers only (they do not cross the cluster bus), while a client of the proxy sees one
 * server, whose notifications cover every key. So a client's subscriptions that may receive
 * notifications are also made on every other master, on connections of their own (RESP2),
 * whose notifications are relayed and everything else dropped: their confirmations (the
 * client's come from its main connection, which counts) and the messages PUBLISH broadcast
 * over the bus (the main connection has them already).
 */
export class NotificationFanIn {
  private links: Lease[] | null = null;
  /** The client's notification channels and patterns, as confirmed and not yet left. */
  private readonly channels = new Set<string>();
  private readonly patterns = new Set<string>();

  constructor(private readonly host: FanInHost) {}

  /** The main connection confirmed a subscription: on every other master too, if it may get notifications. */
  confirmed(kind: "subscribe" | "psubscribe", name: Buffer, mainNodeId: string): void {
    const text = name.toString("latin1");
    if (!mayReceiveNotifications(kind, text)) return;
    const set = kind === "subscribe" ? this.channels : this.patterns;
    if (set.has(text)) return;
    set.add(text);
    const links = this.open(mainNodeId);
    const command = encodeCommand([kind, name]);
    for (const link of links) {
      link.sendUnmatched(command);
      link.flush();
    }
  }

  /** The client leaves channels or patterns (all of a kind when `names` is empty): no more of theirs. */
  leaving(kind: "unsubscribe" | "punsubscribe", names: readonly Buffer[]): void {
    const set = kind === "unsubscribe" ? this.channels : this.patterns;
    if (set.size === 0) return;
    const named = names.map((name) => name.toString("latin1")).filter((name) => set.has(name));
    if (names.length > 0 && named.length === 0) return;
    if (names.length === 0) set.clear();
    else for (const name of named) set.delete(name);
    const command = encodeCommand([kind, ...named]);
    for (const link of this.links ?? []) link.sendUnmatched(command);
    if (this.channels.size === 0 && this.patterns.size === 0) this.close();
  }

  /** RESET or the client gone: the connections close with their subscriptions. */
  close(): void {
    for (const link of this.links ?? []) link.destroy();
    this.links = null;
    this.channels.clear();
    this.patterns.clear();
  }

  private open(mainNodeId: string): Lease[] {
    if (this.links !== null) return this.links;
    const links: Lease[] = [];
    for (const lease of this.host.leasesBut(mainNodeId)) {
      // A master down now: its notifications are missed, as a server's are while it is down.
      if (typeof lease === "string") continue;
      lease.onPush((frame) => this.onFrame(frame));
      lease.onLost(() => this.host.kill("subscription connection lost"));
      links.push(lease);
    }
    return (this.links = links);
  }

  private onFrame(frame: Buffer): void {
    const value = decodeReply(frame);
    if (!Array.isArray(value) || value.length < 3) return;
    const kind = text(value[0]);
    let wanted: boolean;
    let channel: string;
    if (kind === "message") {
      channel = text(value[1]);
      wanted = this.channels.has(channel);
    } else if (kind === "pmessage" && value.length === 4) {
      channel = text(value[2]);
      wanted = this.patterns.has(text(value[1]));
    } else return;
    if (!wanted || !isNotificationChannel(channel) || isProxyKeyNotification(frame)) return;
    this.host.pushed(this.host.proto === 3 ? encodeValue(new RespPush(value), 3) : frame);
  }
}
