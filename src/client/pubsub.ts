import { randomBytes } from "node:crypto";
import { decodeReply } from "../resp/decode.js";
import { encodeCommand, encodeError, encodeValue } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import type { Protocol } from "../resp/values.js";
import type { Lease } from "../routing/lease.js";
import { borrow, type Lane, type LaneHost } from "./lane.js";
import type { Holds } from "./holds.js";
import type { ReplySlot } from "./reply-slot.js";
import { confirmationFrame, confirmationOf, SubscriptionNames, withCount } from "./subscription-frames.js";
import { mayReceiveNotifications, NotificationFanIn } from "./notification-fan-in.js";
import {
  isProxyChannelMessage,
  isProxyKeyNotification,
  mayMatchProxyChannel,
} from "../routing/hidden-keys.js";
import { keySlot } from "../routing/key-slot.js";

const PING = encodeCommand(["PING"]);
const EMPTY = Buffer.alloc(0);

/** A PING only the proxy sends: its pong, in the connection's order, stands for a refusal (see refuse). */
const REFUSAL_TEXT = `gears-proxy:refused:${randomBytes(8).toString("hex")}`;
const REFUSAL_PING = encodeCommand(["PING", REFUSAL_TEXT]);
/** RESET's marker: its pong says every frame sent before the RESET has come. */
const DRAIN_TEXT = `gears-proxy:drained:${randomBytes(8).toString("hex")}`;
const DRAIN_PING = encodeCommand(["PING", DRAIN_TEXT]);
/** How a subscribed RESP2 connection answers `PING <text>`: the array of "pong" and the text. */
const pongOf = (text: string): Buffer => encodeValue([Buffer.from("pong"), Buffer.from(text)]);
/**
 * A marker's pongs: as a subscribed connection answers it, and as one that has left subscriber
 * mode does (a shard's link after its last SUNSUBSCRIBE, while the client has other subscriptions).
 */
const pongsOf = (text: string): Buffer[] => [pongOf(text), encodeValue(Buffer.from(text))];
const DRAIN_PONGS = pongsOf(DRAIN_TEXT);
const REFUSAL_PONGS = pongsOf(REFUSAL_TEXT);
/** An unsubscribe's marker: its pong says the command's confirmations have all come. */
const SETTLED_TEXT = `gears-proxy:settled:${randomBytes(8).toString("hex")}`;
const SETTLED_PING = encodeCommand(["PING", SETTLED_TEXT]);
/** As a connection still subscribed answers it (RESP2), and as one that left subscriber mode does. */
const SETTLED_PONGS = pongsOf(SETTLED_TEXT);
/**
 * RESP2 in front of a cluster: a PING behind each command on a subscription connection marks
 * where its frames end (see Link.ordered). Its pong as a subscribed connection answers it, or
 * one that has left subscriber mode.
 */
const ORDER_TEXT = `gears-proxy:order:${randomBytes(8).toString("hex")}`;
const ORDER_PING = encodeCommand(["PING", ORDER_TEXT]);
const ORDER_PONGS = pongsOf(ORDER_TEXT);
/** Switches a subscribed RESP3 connection to RESP2, as its client did (see follow). */
const HELLO2 = encodeCommand(["HELLO", "2"]);
const IGNORED = { reply() {}, fail() {} };

/** What a client's subscriptions need from the session. */
export interface SubscriberHost extends LaneHost {
  /** Replies the client's next command waits for. */
  readonly holds: Holds;
  /** Runs the input again (a hold ended without a reply). */
  resume(request: null): void;
  /** Moves to `lane` at once, without waiting for replies due on the one before. */
  markLane(lane: Lane): void;
  /** A message (or a confirmation outside any marked command): written after what is queued. */
  pushed(frame: Buffer): void;
  /** The subscription connection died: the client must reconnect and resubscribe. */
  kill(reason: string): void;
}

/**
 * One leased connection in subscriber mode, and the RESP3 markers of the (un)subscribe
 * commands sent on it: its frames are relayed in the order the server sends them.
 */
class Link {
  /** Push frames that answer the (un)subscribe commands still marked, in arrival order. */
  marked: Buffer[] = [];
  /** (Un)subscribe commands whose PING marker has not come back yet. */
  marks = 0;
  /** Shard links: the counts the client must see in this link's next confirmations (RESP3). */
  readonly counts: number[] = [];
  /** Shard links: shard channels on this connection, as the server last counted them. */
  serverCount = 0;
  /** RESP2 refusals waiting for their PING to come back, in the order they were sent. */
  readonly refusals: Buffer[] = [];
  /**
   * RESP2 in a cluster: the places among the client's replies of the commands sent on this
   * connection whose ORDER_PING has not come back, each with the error it stands for when it
   * is a refusal. The frames before a pong are its command's: a client's commands on several
   * connections are answered in the order it sent them, as one server answers them.
   */
  readonly ordered: { slot: ReplySlot; error: Buffer | null }[] = [];
  /** Empty replies that keep RESET waiting until the frames before its marker have come. */
  readonly drains: ReplySlot[] = [];
  /**
   * RESP2 unsubscribes whose marker has not come back: what each may remove of the channels
   * and patterns counted on this connection (null: all of a kind), and its hold on the
   * client's next command (null when the client stays subscribed whatever it removes).
   */
  readonly settles: { removes: number | null; release: (() => void) | null }[] = [];
  /** Of the settles: the channels and patterns they name, and how many name none (all). */
  removing = 0;
  removingAll = 0;
  /** The protocol the server speaks on it now: the lease's, until a HELLO 2 (see follow). */
  proto: Protocol;

  constructor(readonly lease: Lease) {
    this.proto = lease.proto;
  }
}

/**
 * One client's SUBSCRIBE, PSUBSCRIBE and SSUBSCRIBE, on leased connections that carry
 * nothing else. Channels and patterns share one connection (a PUBLISH reaches every node).
 * In a cluster, shard channels live on their shard only: SSUBSCRIBE takes a connection per
 * shard, and the shard-channel counts in the confirmations are the client's over all of
 * them, as one Redis server would count them.
 */
export class Subscriber {
  /** The connection of SUBSCRIBE and PSUBSCRIBE (and, in front of one server, SSUBSCRIBE). */
  private main: Link | null = null;
  /** Channels and patterns on `main`, as the server last counted them. */
  private mainClassic = 0;
  /** Shard channels on `main` (one server's SSUBSCRIBE confirmations count those alone). */
  private mainShards = 0;

  /** Subscriptions on `main`: in front of one server, shard channels too. */
  private get mainCount(): number {
    return this.mainClassic + this.mainShards;
  }
  /** In a cluster: a shard's link by node id, and each shard channel's node, as sent. */
  private readonly shards = new Map<string, Link>();
  private readonly shardChannels = new Map<string, string>();
  /** Shard channels over every shard link, as their servers confirmed them so far. */
  private confirmed = 0;
  /** A RESET's markers are out (drain): the RESET that runs again sends none. */
  private draining = false;
  /** Subscriptions of every kind: the client is in subscriber mode while not 0. */
  count = 0;
  /** What the servers confirmed, by kind (CLIENT LIST's sub, psub and ssub). */
  readonly names = new SubscriptionNames();
  /** In a cluster: the other masters' keyspace notifications for the client's subscriptions. */
  private readonly notices: NotificationFanIn;
  /** A subscription of the client's may receive keyspace notifications: its messages are looked at. */
  private notified = false;
  /** A pattern of the client's may match one of the proxy's own channels: its pmessages are looked at. */
  private patternsMeetProxy = false;

  constructor(private readonly host: SubscriberHost) {
    this.notices = new NotificationFanIn({
      get proto() {
        return host.proto;
      },
      masters: () => host.ctx.router.masters().map((node) => node.id),
      lease: (nodeId) => host.ctx.leases.onMaster(nodeId, 2),
      pushed: (frame) => host.pushed(frame),
      ownerOf: (key) => host.ctx.leases.nodeIdForSlot(keySlot(key), host.id),
    });
  }

  /** SUBSCRIBE and its kin, and PING in RESP2 while subscribed: on the subscription connection. */
  route(name: string, request: Request): void {
    const host = this.host;
    if (host.proto === 3 && !host.enterLane("subscribed", request)) return;
    const sharded = host.ctx.router.topology.mode === "cluster";
    if (sharded && (name === "ssubscribe" || name === "sunsubscribe")) return this.routeShard(name, request);
    if (name === "ping" && this.mainCount === 0 && this.shardChannels.size > 0) {
      // Only shard channels: a connection in subscriber mode answers PING as Redis does there.
      const link = this.shards.get(this.shardChannels.values().next().value!)!;
      this.follow(link);
      this.send(link, name, request);
      return;
    }
    if (sharded && (name === "unsubscribe" || name === "punsubscribe"))
      this.notices.leaving(name, request.argv.slice(1));
    if ((name === "subscribe" || name === "psubscribe") && !this.notified)
      this.notified = request.argv.some(
        (arg, i) => i > 0 && mayReceiveNotifications(name, arg.toString("latin1")),
      );
    if (name === "psubscribe" && !this.patternsMeetProxy)
      this.patternsMeetProxy = request.argv.some((arg, i) => i > 0 && mayMatchProxyChannel(arg));
    if (this.main !== null && this.count > 0) this.follow(this.main);
    if (this.main !== null && this.mainCount === 0 && this.main.proto !== host.proto)
      this.dropLink(this.main);
    if (this.main === null) {
      // Even an UNSUBSCRIBE with nothing to leave takes one: the server answers it with
      // one frame per channel, which a shared connection would mismatch.
      if (!host.enterLane("subscribed", request)) return;
      const lease = borrow(host, name, request.argv);
      if (lease === null) return;
      this.main = this.attach(lease, false);
    }
    const slot = this.send(this.main, name, request);
    if (sharded && slot !== null && (name === "subscribe" || name === "psubscribe")) {
      // The confirmation waits until the other masters have the subscription too.
      const everywhere = this.notices.subscribing(name, request.argv.slice(1), this.main.lease.nodeId);
      if (everywhere !== null) slot.gate = () => everywhere;
    }
  }

  /** A connection EXEC left subscribed to `count` channels and patterns: the client's from now on. */
  adopt(lease: Lease, count: number, frames: readonly Buffer[]): void {
    this.names.followAll(frames);
    // Which channels the transaction subscribed is not looked at: its messages are.
    this.notified = true;
    this.patternsMeetProxy = true;
    if (this.main !== null) this.dropLink(this.main);
    this.main = this.attach(lease, false);
    this.mainClassic = count;
    this.mainShards = 0;
    this.count = count + this.shardChannels.size;
    this.host.markLane("subscribed");
  }

  /** SSUBSCRIBE and SUNSUBSCRIBE in a cluster: on the link of the channels' shard. */
  private routeShard(name: string, request: Request): void {
    const host = this.host;
    const channels = request.argv.slice(1).map((c) => c.toString("latin1"));
    if (name === "sunsubscribe" && channels.length === 0) return this.unsubscribeShards(request);
    const target = host.ctx.leases.nodeIdFor(name, request.argv, host.id);
    if (typeof target === "string") return host.replyError(target);
    let link = this.shards.get(target.id);
    if (link !== undefined && this.holdsChannels(target.id)) this.follow(link);
    if (link !== undefined && !this.holdsChannels(target.id) && link.proto !== host.proto) {
      this.dropLink(link);
      link = undefined;
    }
    if (link === undefined) {
      if (name === "sunsubscribe") {
        // Nothing subscribed on that shard: Redis answers from the client's own state.
        return this.answer(
          channels.map((c) => confirmationFrame(name, c, this.shardChannels.size, host.proto)),
        );
      }
      if (!host.enterLane("subscribed", request)) return;
      const lease = borrow(host, name, request.argv);
      if (lease === null) return;
      link = this.attach(lease, true);
    }
    for (const channel of channels) {
      if (name === "ssubscribe") this.shardChannels.set(channel, target.id);
      else this.shardChannels.delete(channel);
      link.counts.push(this.shardChannels.size);
    }
    this.send(link, name, request);
  }

  /** SUNSUBSCRIBE without channels: each shard link leaves its own. */
  private unsubscribeShards(request: Request): void {
    const host = this.host;
    const links = [...this.shards].filter(([id]) => this.holdsChannels(id));
    if (links.length === 0) return this.answer([confirmationFrame("sunsubscribe", null, 0, host.proto)]);
    for (const [id, link] of links) {
      this.follow(link);
      for (const [channel, node] of this.shardChannels) {
        if (node !== id) continue;
        this.shardChannels.delete(channel);
        link.counts.push(this.shardChannels.size);
      }
      this.send(link, "sunsubscribe", request);
    }
  }

  private holdsChannels(nodeId: string): boolean {
    for (const node of this.shardChannels.values()) if (node === nodeId) return true;
    return false;
  }

  /** Confirmations the proxy writes itself, in the command's place. */
  private answer(frames: Buffer[]): void {
    const slot = this.host.upstreamSlot();
    // Pub/sub frames are pushed even under CLIENT REPLY OFF, as Redis pushes them.
    slot.silent = false;
    slot.reply(Buffer.concat(frames));
  }

  private attach(lease: Lease, shard: boolean): Link {
    const link = new Link(lease);
    if (shard) this.shards.set(lease.nodeId, link);
    lease.onPush((frame) => (shard ? this.onShardFrame(link, frame) : this.onMainFrame(link, frame)));
    lease.onLost(() => this.host.kill("subscription connection lost"));
    return link;
  }

  /** Sends a (un)subscribe command or PING on `link`: the reply slot its confirmations fill, if it has one. */
  private send(link: Link, name: string, request: Request): ReplySlot | null {
    this.host.markLane("subscribed");
    // Count the subscription now, so a command pipelined behind it is refused as Redis would.
    if (name !== "ping" && !name.includes("unsubscribe")) this.count = Math.max(this.count, 1);
    link.lease.sendUnmatched(request.raw ?? encodeCommand(request.argv));
    let slot: ReplySlot | null = null;
    if (this.host.proto === 3) slot = this.mark(link);
    else if (this.sharded) slot = this.order(link, null);
    if (this.host.proto === 2 && name.includes("unsubscribe")) {
      // Whether the client is still subscribed when its next command runs is known from the
      // confirmations, unless it surely is: a command subscriber mode refuses waits for them,
      // and runs once the client left it.
      const removes = request.argv.length > 1 ? request.argv.length - 1 : null;
      if (removes === null) link.removingAll++;
      else link.removing += removes;
      const release = this.staysSubscribed() ? null : this.host.holds.take();
      link.settles.push({ removes, release });
      link.lease.sendUnmatched(SETTLED_PING);
    }
    // A PUBLISH another client sends after this command must not overtake it, as it cannot
    // directly: one it sends in the same turn of the event loop is written at the turn's
    // end, on a connection that may have been written to earlier in that turn.
    link.lease.flush();
    return slot;
  }

  /**
   * PUBLISH or SPUBLISH from a RESP3 subscriber, to a channel whose messages reach it: sent
   * on the connection they come on, so that its own message comes before the reply, as Redis
   * writes them. False when it may take the shared connections.
   */
  publish(name: string, request: Request): boolean {
    const host = this.host;
    if (host.proto !== 3 || (name !== "publish" && name !== "spublish")) return false;
    let link = this.main;
    if (name === "spublish" && host.ctx.router.topology.mode === "cluster") {
      const node =
        request.argv.length > 1 ? this.shardChannels.get(request.argv[1].toString("latin1")) : undefined;
      link = node === undefined ? null : (this.shards.get(node) ?? null);
    }
    if (link === null || link.lease.closed || link.proto !== 3) return false;
    if (!host.enterLane("subscribed", request)) return true;
    const slot = host.upstreamSlot();
    // Under CLIENT REPLY OFF the messages are still written, as Redis pushes them.
    const quiet = slot.silent;
    slot.silent = false;
    link.marks++;
    // The reply and the client's own message take the command's place in the order the server
    // sends them (the message first up to Redis 7.0, the reply first from 7.2 on): all that
    // comes before a PING's pong.
    const keep = (data: Buffer): void => {
      if (!quiet) link.marked.push(data);
    };
    link.lease.send(request.raw ?? encodeCommand(request.argv), {
      reply: keep,
      fail: (message) => keep(encodeError(message)),
    });
    slot.onReply = () => {
      link.marks--;
      return Buffer.concat(link.marked.splice(0));
    };
    link.lease.send(PING, slot);
    return true;
  }

  /**
   * In RESP3 the confirmations of (un)subscribe commands are pushes, while PING's reply is
   * not: a PING sent behind the command marks where its confirmations end, so they take
   * the command's place among the client's replies, whatever else it pipelined.
   */
  private mark(link: Link): ReplySlot {
    const slot = this.host.upstreamSlot();
    // Pub/sub frames are pushed even under CLIENT REPLY OFF, as Redis pushes them.
    slot.silent = false;
    link.marks++;
    slot.onReply = () => {
      link.marks--;
      return Buffer.concat(link.marked.splice(0));
    };
    link.lease.send(PING, slot);
    return slot;
  }

  /**
   * RESP2: whether the client is still subscribed once every unsubscribe sent has run. Each
   * removes at most what it names; the server's last count on the main connection is of one
   * kind (channels and patterns, or shard channels), so never more than the client's total.
   */
  private staysSubscribed(): boolean {
    // Shard channels in a cluster are counted here as sent.
    let left = this.sharded ? this.shardChannels.size : 0;
    const main = this.main;
    if (main !== null && main.removingAll === 0) left += Math.max(0, this.mainCount - main.removing);
    return left > 0;
  }

  /** Confirmations come on several connections (shard channels in a cluster). */
  private get sharded(): boolean {
    return this.host.ctx.router.topology.mode === "cluster";
  }

  /** RESP2: the place of the command just sent on `link` (or of `error`, a refusal), filled at its marker's pong. */
  private order(link: Link, error: Buffer | null): ReplySlot {
    const slot = this.host.upstreamSlot();
    // Pub/sub frames are pushed even under CLIENT REPLY OFF, as Redis pushes them.
    slot.silent = false;
    link.ordered.push({ slot, error });
    link.lease.sendUnmatched(ORDER_PING);
    return slot;
  }

  private onMainFrame(link: Link, frame: Buffer): void {
    const confirmation = confirmationOf(frame);
    if (confirmation !== null) {
      this.names.follow(confirmation);
      const [kind, , count] = confirmation;
      if (kind === "ssubscribe" || kind === "sunsubscribe") this.mainShards = count;
      else this.mainClassic = count;
      this.count = this.mainCount + this.shardChannels.size;
    } else if (
      (this.notified &&
        (isProxyKeyNotification(frame) || this.notices.ownedElsewhere(frame, link.lease.nodeId))) ||
      (this.patternsMeetProxy && isProxyChannelMessage(frame))
    )
      return;
    this.relay(link, frame);
  }

  /**
   * A shard's frame: a confirmation carries the client's count over every shard. It takes
   * its command's place (mark, order), so it carries the count as of that command.
   */
  private onShardFrame(link: Link, frame: Buffer): void {
    const confirmation = confirmationOf(frame);
    if (confirmation !== null) {
      this.names.follow(confirmation);
      const serverCount = confirmation[2];
      const expected = link.counts.shift();
      this.confirmed += serverCount - link.serverCount;
      link.serverCount = serverCount;
      frame = withCount(frame, expected ?? this.confirmed);
      this.count = this.mainCount + this.shardChannels.size;
    }
    this.relay(link, frame);
  }

  /**
   * A command refused in RESP2 subscriber mode. Replies to the PINGs before it are still to
   * come on the subscription connection, and Redis would answer them first: the error waits
   * for a PING sent behind them and takes its pong's place. False without a connection.
   */
  refuse(message: string): boolean {
    const link = this.main ?? this.shards.values().next().value;
    if (link === undefined || link.lease.closed) return false;
    this.follow(link);
    if (this.sharded) this.order(link, encodeError(message));
    else {
      link.refusals.push(encodeError(message));
      link.lease.sendUnmatched(REFUSAL_PING);
    }
    return true;
  }

  /**
   * RESET in RESP2 subscriber mode: the replies to PINGs and refusals before it are frames
   * still to come on the subscription connections, which RESET would close. A marker PING
   * behind them, with an empty reply in the client's order, keeps RESET waiting (as for any
   * reply in flight) until they have come. Once per RESET, which runs again when they have.
   */
  drain(): void {
    if (this.host.proto !== 2 || this.draining) return;
    this.draining = true;
    for (const link of [this.main, ...this.shards.values()]) {
      if (link === null || link.lease.closed) continue;
      this.follow(link);
      const slot = this.host.upstreamSlot();
      slot.silent = true;
      link.drains.push(slot);
      link.lease.sendUnmatched(DRAIN_PING);
    }
  }

  private relay(link: Link, frame: Buffer): void {
    if (link.settles.length > 0 && SETTLED_PONGS.some((pong) => pong.equals(frame))) {
      const { removes, release } = link.settles.shift()!;
      if (removes === null) link.removingAll--;
      else link.removing -= removes;
      if (release !== null) {
        release();
        this.host.resume(null);
      }
      return;
    }
    if (link.drains.length > 0 && DRAIN_PONGS.some((pong) => pong.equals(frame))) {
      link.drains.shift()!.reply(EMPTY);
      return;
    }
    if (link.ordered.length > 0 && ORDER_PONGS.some((pong) => pong.equals(frame))) {
      const { slot, error } = link.ordered.shift()!;
      const frames = link.marked.splice(0);
      if (error !== null) frames.push(error);
      slot.reply(Buffer.concat(frames));
      return;
    }
    if (link.refusals.length > 0 && REFUSAL_PONGS.some((pong) => pong.equals(frame)))
      frame = link.refusals.shift()!;
    if (link.marks > 0 || link.ordered.length > 0) link.marked.push(frame);
    else if (frame[0] === 62 /* > */ && this.host.proto === 2) {
      // Sent before the server had the HELLO 2 that follow() sent: as the server sends it now.
      this.follow(link);
      this.host.pushed(encodeValue(decodeReply(frame), 2));
    } else this.host.pushed(frame);
  }

  /**
   * A subscribed RESP3 client that sent HELLO 2 is a RESP2 subscriber from then on: Redis
   * writes its messages as arrays, answers its PING as ["pong", text] and refuses what
   * RESP2 subscriber mode refuses. Its connection, still subscribed, switches as well (a
   * RESP3 connection in subscriber mode takes HELLO), before anything the client sends next.
   */
  private follow(link: Link): void {
    if (link.proto === 2 || this.host.proto !== 2 || link.lease.closed) return;
    link.proto = 2;
    link.lease.send(HELLO2, IGNORED);
  }

  private dropLink(link: Link): void {
    for (const { release } of link.settles.splice(0)) release?.();
    link.removing = link.removingAll = 0;
    for (const { slot } of link.ordered.splice(0)) slot.reply(EMPTY);
    link.lease.destroy();
    if (link === this.main) {
      this.main = null;
      this.mainClassic = 0;
      this.mainShards = 0;
      this.notices.close();
    } else {
      this.shards.delete(link.lease.nodeId);
      this.confirmed -= link.serverCount;
    }
  }

  /** RESET, or the client leaving: the connections close with their subscriptions. */
  drop(): void {
    if (this.main !== null) this.dropLink(this.main);
    for (const link of this.shards.values()) this.dropLink(link);
    this.shardChannels.clear();
    this.names.clear();
    this.notices.close();
    this.notified = false;
    this.patternsMeetProxy = false;
    this.confirmed = 0;
    this.count = 0;
    this.draining = false;
  }
}
