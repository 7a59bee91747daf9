import { randomBytes } from "node:crypto";
import { decodeReply } from "../resp/decode.js";
import { encodeCommand, encodeValue } from "../resp/encode.js";
import { RespPush, type Protocol } from "../resp/values.js";
import {
  NOTIFICATION_MARK,
  NOTIFICATION_PREFIXES,
  notifiesProxyKey,
  patternMayMatch,
} from "../routing/hidden-keys.js";
import type { Lease } from "../routing/lease.js";

/** A PING of the fan-in's own: its pong says the commands before it reached that master. */
const ACK_TEXT = `gears-proxy:fan-in:${randomBytes(8).toString("hex")}`;
const ACK_PING = encodeCommand(["PING", ACK_TEXT]);
const ACK_PONG = encodeValue([Buffer.from("pong"), Buffer.from(ACK_TEXT)]);
/** How long a client's confirmation waits for the other masters: a master that does not answer is not waited for longer. */
const ACK_WAIT_MS = 1000;
/** How often a master missing from the fan-in (down, promoted, added) is tried again. */
const RECONCILE_MS = 1000;

const text = (value: unknown): string => (Buffer.isBuffer(value) ? value.toString("latin1") : String(value));

/** Whether a channel is a keyspace notification's. */
function isNotificationChannel(channel: string): boolean {
  return NOTIFICATION_PREFIXES.some((prefix) => channel.startsWith(prefix));
}

const KEYSPACE = Buffer.from("__keyspace@");
const KEYEVENT = Buffer.from("__keyevent@");

/**
 * The key a message on a notification's channel is about: the channel's tail after `__:` for
 * `__keyspace@<db>__:<key>`, the message for `__keyevent@<db>__:<event>`; null for another channel.
 */
export function notifiedKey(channel: Buffer, payload: Buffer): Buffer | null {
  if (channel.subarray(0, KEYEVENT.length).equals(KEYEVENT)) return payload;
  if (!channel.subarray(0, KEYSPACE.length).equals(KEYSPACE)) return null;
  const at = channel.indexOf("__:", KEYSPACE.length);
  return at === -1 ? null : channel.subarray(at + 3);
}

/**
 * Whether a SUBSCRIBE channel or PSUBSCRIBE pattern may receive keyspace notifications. A
 * pattern is judged by its literal start, which errs toward yes (`*x` may match
 * `__keyevent@0__:x`; so may `__k*`).
 */
export function mayReceiveNotifications(kind: "subscribe" | "psubscribe", name: string): boolean {
  return kind === "subscribe" ? isNotificationChannel(name) : patternMayMatch(name, NOTIFICATION_PREFIXES);
}

/** What the fan-in needs from the client's subscriptions. */
export interface FanInHost {
  /** The client's protocol now (a RESP3 client gets pushes). */
  readonly proto: Protocol;
  /** The ids of the masters now. */
  masters(): string[];
  /** A connection of the client's own to a master (RESP2), or why there is none. */
  lease(nodeId: string): Lease | string;
  /** A message for the client: written after what is queued. */
  pushed(frame: Buffer): void;
  /** The id of the master that holds `key` now. */
  ownerOf(key: Buffer): string;
}

/** A connection to another master, and the acknowledgements awaited on it, in order. */
interface NoticeLink {
  readonly lease: Lease;
  readonly acks: (() => void)[];
}

/**
 * Keyspace notifications in a cluster. Each master publishes its own keys' events to its own
 * subscribers only (they do not cross the cluster bus), while a client of the proxy sees one
 * server, whose notifications cover every key. So a client's subscriptions that may receive
 * notifications are also made on every other master, on connections of their own (RESP2),
 * at the same time as on its main connection; the client's confirmation waits until every
 * master has them, so that no key's event after it is missed. Their notifications are relayed,
 * everything else they receive dropped: their confirmations (the client's come from its main
 * connection, which counts) and the messages PUBLISH broadcasts over the bus (the main
 * connection has them already). A master down, promoted or added is subscribed within a
 * second or so; its events in between are lost, as a server's while it is down.
 *
 * A PUBLISH to a channel named like a notification's reaches every master (the bus carries
 * it), so each of the client's connections gets a copy, indistinguishable from a
 * notification. A notification is about a key of the master that sends it: of the copies,
 * only the one from the master holding the key named (the channel's, or the message's for
 * `__keyevent@`) is relayed (ownedElsewhere for the main connection), so the client gets one,
 * as from one server, and every genuine notification still comes from its key's master.
 */
export class NotificationFanIn {
  private readonly links = new Map<string, NoticeLink>();
  /** The master of the client's main subscription connection, which needs no link. */
  private main = "";
  /** The client's notification channels and patterns, as sent and not yet left. */
  private readonly channels = new Set<string>();
  private readonly patterns = new Set<string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly host: FanInHost) {}

  /**
   * A (P)SUBSCRIBE the client sends on its main connection (to `mainNode`): its names that may
   * receive notifications go to every other master too. What its confirmation waits for, or
   * null when none of them may.
   */
  subscribing(
    kind: "subscribe" | "psubscribe",
    names: readonly Buffer[],
    mainNode: string,
  ): Promise<void> | null {
    const set = kind === "subscribe" ? this.channels : this.patterns;
    const added = names.filter((name) => {
      const value = name.toString("latin1");
      if (set.has(value) || !mayReceiveNotifications(kind, value)) return false;
      set.add(value);
      return true;
    });
    if (added.length === 0) return null;
    this.main = mainNode;
    const opened = this.reconcile();
    const command = encodeCommand([kind, ...added]);
    const acks: Promise<void>[] = [];
    for (const [id, link] of this.links) {
      // A link just opened was given every name already.
      if (!opened.has(id)) link.lease.sendUnmatched(command);
      acks.push(this.acknowledged(link));
    }
    this.timer ??= setInterval(() => this.reconcile(), RECONCILE_MS);
    this.timer.unref();
    if (acks.length === 0) return null;
    let timeout: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => (timeout = setTimeout(resolve, ACK_WAIT_MS)));
    return Promise.race([Promise.all(acks).then(() => undefined), bound]).finally(() =>
      clearTimeout(timeout),
    );
  }

  /** The client leaves channels or patterns (all of a kind when `names` is empty): no more of theirs. */
  leaving(kind: "unsubscribe" | "punsubscribe", names: readonly Buffer[]): void {
    const set = kind === "unsubscribe" ? this.channels : this.patterns;
    if (set.size === 0) return;
    const named = names.map((name) => name.toString("latin1")).filter((name) => set.has(name));
    if (names.length > 0 && named.length === 0) return;
    if (names.length === 0) set.clear();
    else for (const name of named) set.delete(name);
    if (this.channels.size === 0 && this.patterns.size === 0) return this.close();
    const command = encodeCommand([kind, ...named]);
    for (const link of this.links.values()) link.lease.sendUnmatched(command);
  }

  /** RESET, the client gone, or nothing left to listen to: the connections close. */
  close(): void {
    for (const link of this.links.values()) this.drop(link);
    this.links.clear();
    this.channels.clear();
    this.patterns.clear();
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Links to every master but the main one, each subscribed to every name: links to nodes no
   * longer masters close, masters without one get one. The ids of the links opened now.
   */
  private reconcile(): Set<string> {
    const masters = new Set(this.host.masters());
    masters.delete(this.main);
    for (const [id, link] of this.links) {
      if (masters.has(id) && !link.lease.closed) continue;
      this.drop(link);
      this.links.delete(id);
    }
    const opened = new Set<string>();
    for (const id of masters) {
      if (this.links.has(id)) continue;
      const lease = this.host.lease(id);
      // Down now: tried again by the next round.
      if (typeof lease === "string") continue;
      const link: NoticeLink = { lease, acks: [] };
      lease.onPush((frame) => this.onFrame(link, frame));
      lease.onLost(() => {
        if (this.links.get(id) === link) this.links.delete(id);
        for (const ack of link.acks.splice(0)) ack();
      });
      if (this.channels.size > 0) lease.sendUnmatched(encodeCommand(["subscribe", ...this.channels]));
      if (this.patterns.size > 0) lease.sendUnmatched(encodeCommand(["psubscribe", ...this.patterns]));
      lease.flush();
      this.links.set(id, link);
      opened.add(id);
    }
    return opened;
  }

  /** Resolves once the master behind `link` has had what was sent on it so far. */
  private acknowledged(link: NoticeLink): Promise<void> {
    return new Promise((resolve) => {
      link.acks.push(resolve);
      link.lease.sendUnmatched(ACK_PING);
      link.lease.flush();
    });
  }

  private drop(link: NoticeLink): void {
    for (const ack of link.acks.splice(0)) ack();
    link.lease.destroy();
  }

  private onFrame(link: NoticeLink, frame: Buffer): void {
    if (link.acks.length > 0 && frame.equals(ACK_PONG)) return link.acks.shift()!();
    // Most frames on these links are messages PUBLISH broadcast to every node: not decoded.
    if (!frame.includes(NOTIFICATION_MARK)) return;
    const value = decodeReply(frame);
    if (!Array.isArray(value) || value.length < 3) return;
    const kind = text(value[0]);
    let wanted: boolean;
    let channel: unknown;
    if (kind === "message") {
      channel = value[1];
      wanted = this.channels.has(text(channel));
    } else if (kind === "pmessage" && value.length === 4) {
      channel = value[2];
      wanted = this.patterns.has(text(value[1]));
    } else return;
    const payload = value[value.length - 1];
    if (!wanted || !Buffer.isBuffer(channel) || !Buffer.isBuffer(payload)) return;
    if (!isNotificationChannel(text(channel)) || notifiesProxyKey(channel, payload)) return;
    // A copy of a PUBLISH from another master's key (or a channel naming no key): the main
    // connection's or the key master's link relays it.
    const key = notifiedKey(channel, payload);
    if (key === null || this.host.ownerOf(key) !== link.lease.nodeId) return;
    this.host.pushed(this.host.proto === 3 ? encodeValue(new RespPush(value), 3) : frame);
  }

  /**
   * Whether a message on the client's main connection (to `mainNode`) is one a link relays
   * instead: on a notification's channel the fan-in listens to, about a key another master
   * holds, a link to which is open. The main connection's copy of a PUBLISH is then dropped,
   * as the key master's is relayed.
   */
  ownedElsewhere(frame: Buffer, mainNode: string): boolean {
    if (this.links.size === 0 || !frame.includes(NOTIFICATION_MARK)) return false;
    const value = decodeReply(frame);
    if (!Array.isArray(value) || value.length < 3) return false;
    const kind = text(value[0]);
    let channel: unknown;
    if (kind === "message" && value.length === 3) {
      channel = value[1];
      if (!this.channels.has(text(channel))) return false;
    } else if (kind === "pmessage" && value.length === 4) {
      channel = value[2];
      if (!this.patterns.has(text(value[1]))) return false;
    } else return false;
    const payload = value[value.length - 1];
    if (!Buffer.isBuffer(channel) || !Buffer.isBuffer(payload)) return false;
    const key = notifiedKey(channel, payload);
    if (key === null) return false;
    const owner = this.host.ownerOf(key);
    return owner !== mainNode && this.links.has(owner);
  }
}
