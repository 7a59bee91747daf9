import type { Logger } from "../../observability/log.js";
import { decodeReply } from "../../resp/decode.js";
import { encodeCommand } from "../../resp/encode.js";
import { RespError, type RespValue } from "../../resp/values.js";
import { UpstreamError, type NodeSubscription, type Shards } from "../../routing/shards.js";

/** One keyspace event: `key` was touched by `event` (set, hset, del, expired, ...) on `shard`. */
export interface KeyEvent {
  key: Buffer;
  event: string;
  /** The master that emitted it: its node id, host:port. */
  shard: string;
  /** When the proxy received it (ms): what a lease's "handled through" time is made of. */
  at: number;
  /** The database the key is in (always 0 in a cluster). */
  db: number;
  /**
   * The string the key was set to, when the event is a write the proxy forwarded and saw
   * the value of (SET, MSET...): the event's record needs no read of it.
   */
  value?: string;
  /**
   * The key as a string (UTF-8), when the event's maker had it at hand (the journal, for an
   * ASCII key): readers of the event take it rather than decoding `key` again.
   */
  text?: string;
  /**
   * Who wrote, when the write journal knows it (the event came from a write the proxy
   * forwarded, or from the notification such a write awaited): "function" a T&F function's
   * or trigger's `client.call`, which fires no keyspace trigger; "client" any other write.
   * Unset for a notification no forwarded write accounts for (a writer past the proxy).
   */
  by?: WriteSource;
}

export type WriteSource = "function" | "client";

/** Whether keyevent notifications could be enabled on one master. */
export interface ShardKeyspaceStatus {
  /** host:port of the master. */
  node: string;
  /** notify-keyspace-events as last read from the server ("" when it could not be read). */
  notifications: string;
  /** True when the server's notify-keyspace-events is known to include E and every class. */
  configured: boolean;
  /** Why CONFIG GET/SET failed, when it did. */
  error?: string;
}

export interface KeyspaceStatus {
  /** True when every master is configured. */
  configured: boolean;
  shards: ShardKeyspaceStatus[];
}

/** Keyevent notifications of every database (a cluster has only 0): `__keyevent@<db>__:<event>`. */
const PATTERN = "__keyevent@*__:*";
const CHANNEL_DB_START = "__keyevent@".length;
/** Every pattern at once: the confirmations count down to 0. */
const PUNSUBSCRIBE = encodeCommand(["PUNSUBSCRIBE"]);
/** After PUNSUBSCRIBE, for the extra channel: its confirmation says 0 left. */
const UNSUBSCRIBE = encodeCommand(["UNSUBSCRIBE"]);
const PING = encodeCommand(["PING"]);

/** How often the list of masters is compared with the subscriptions. */
const RECONCILE_MS = 1000;
const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 2000;
/** How long stop() waits for PUNSUBSCRIBE to be confirmed before closing the connection. */
const STOP_WAIT_MS = 500;

/**
 * The classes that "A" stands for ("d", module key types, joined them in Redis 7). A value
 * holding all of them covers every class even if it spells them out one by one.
 */
const ALL_CLASSES = "g$lshzxet";

/**
 * notify-keyspace-events with keyevent notifications (E) for every class (A) added to what
 * `current` already enables; `current` itself when nothing is missing.
 */
export function mergeNotifyFlags(current: string, extra = ""): string {
  const has = new Set(current);
  let merged = current;
  if (!has.has("A") && ![...ALL_CLASSES].every((c) => has.has(c))) merged += "A";
  if (!has.has("E")) merged += "E";
  for (const flag of extra) if (!has.has(flag) && !merged.includes(flag)) merged += flag;
  return merged;
}

/**
 * Where the event name of a keyevent channel `frame[start, end)` starts (`start` when it has
 * no db). Read byte by byte: a Buffer.indexOf per notification cost more than the search.
 */
function eventStartOf(frame: Buffer, start: number, end: number): number {
  for (let i = start + CHANNEL_DB_START; i + 2 < end; i++) {
    if (frame[i] === 95 /* _ */ && frame[i + 1] === 95 && frame[i + 2] === 58 /* : */) return i + 3;
  }
  return start;
}

/** The database of a keyevent channel starting at `start`, whose event name starts at `eventStart`. */
function dbOfChannel(frame: Buffer, start: number, eventStart: number): number {
  let db = 0;
  if (eventStart !== start)
    for (let i = start + CHANNEL_DB_START; i < eventStart - 3; i++) db = db * 10 + frame[i] - 48;
  return db;
}

/** The event name and database of a keyevent channel, `frame[start, end)`. */
function eventOfChannel(frame: Buffer, start = 0, end = frame.length): { event: string; db: number } {
  const eventStart = eventStartOf(frame, start, end);
  return { event: frame.toString("latin1", eventStart, end), db: dbOfChannel(frame, start, eventStart) };
}

/**
 * Asked of each keyevent notification before anything is made of it: true when it is
 * already handled (a write through the proxy produced its event) and is to be dropped,
 * or taken over by the filter. The key is `frame[keyStart, keyEnd)`, the event name
 * `frame[eventStart, eventEnd)`, `shard` the master it came from; `quiet` when no
 * notification of the source waits to be handed over (so one taken over now keeps its
 * place among them).
 */
export type NotificationFilter = (
  db: number,
  frame: Buffer,
  keyStart: number,
  keyEnd: number,
  eventStart: number,
  eventEnd: number,
  shard: string,
  quiet: boolean,
) => boolean;

/** `*4\r\n$8\r\npmessage\r\n` (RESP2) and `>4...` (RESP3 push): how every keyevent message starts. */
const PMESSAGE_HEAD = Buffer.from("*4\r\n$8\r\npmessage\r\n");
const PATTERN_BYTES = Buffer.from(PATTERN);

/**
 * The [start, end) of the three bulk strings of a pmessage frame (pattern, channel,
 * message), read without decoding it, into `parts`; false when the frame is not one.
 * Compared byte by byte, and into one reused array: this runs for every notification.
 */
function pmessageParts(frame: Buffer, parts: Int32Array): boolean {
  const head = PMESSAGE_HEAD.length;
  if (frame.length < head || (frame[0] !== 42 && frame[0] !== 62) /* > */) return false;
  for (let i = 1; i < head; i++) if (frame[i] !== PMESSAGE_HEAD[i]) return false;
  let at = head;
  for (let n = 0; n < 6; n += 2) {
    if (frame[at] !== 36 /* $ */) return false;
    let len = 0;
    let i = at + 1;
    for (; i < frame.length && frame[i] !== 13; i++) len = len * 10 + frame[i] - 48;
    const start = i + 2;
    const end = start + len;
    if (end + 2 > frame.length) return false;
    parts[n] = start;
    parts[n + 1] = end;
    at = end + 2;
  }
  return true;
}

/** Whether `frame[start, end)` is `bytes`. */
function sameBytes(frame: Buffer, start: number, end: number, bytes: Buffer): boolean {
  if (end - start !== bytes.length) return false;
  for (let i = 0; i < bytes.length; i++) if (frame[start + i] !== bytes[i]) return false;
  return true;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isWord(v: RespValue | undefined, word: string): boolean {
  return (Buffer.isBuffer(v) || typeof v === "string") && v.toString().toLowerCase() === word;
}

/**
 * The subscription to one master: a dedicated connection in subscribed mode, and the
 * barriers waiting for the pong of their PING on it.
 */
class ShardSubscription {
  conn: NodeSubscription | null = null;
  subscribed = false;
  status: ShardKeyspaceStatus;
  /** Barriers, in the order of their PINGs on `conn`. */
  readonly pongs: (() => void)[] = [];
  retryTimer: NodeJS.Timeout | null = null;
  retryMs = 0;
  /** The error last logged about CONFIG, so a retry loop logs it once. */
  warnedConfig = "";
  /** Resolves when the first attempt settled (subscribed or failed). */
  readonly firstAttempt: Promise<void>;
  settleFirst: () => void = () => {};
  /** Set by stop(): resolves on PUNSUBSCRIBE's confirmation. */
  onUnsubscribed: ((remaining: number) => void) | null = null;
  /** Set by stop(): the connection died before PUNSUBSCRIBE was confirmed. */
  onLostWhileStopping: (() => void) | null = null;
  dropped = false;

  constructor(readonly node: string) {
    this.status = { node, notifications: "", configured: false };
    this.firstAttempt = new Promise<void>((resolve) => (this.settleFirst = resolve));
  }

  /** Lets every waiting barrier go (their notifications will never come, or have come). */
  releaseBarriers(): void {
    for (const resolve of this.pongs.splice(0)) resolve();
  }
}

/**
 * Keyspace notifications from every master, for KeysReader registrations.
 *
 * On each master it makes sure notify-keyspace-events includes keyevent notifications for
 * every class (merged with what is set; when CONFIG is refused, as on managed services, it
 * warns and says so in its status), then PSUBSCRIBEs `__keyevent@0__:*` on a dedicated
 * connection. Events are handed over in batches, one call per event-loop turn, in arrival
 * order per shard. It follows the topology: new masters get a subscription, old ones lose
 * theirs, and a lost subscription is re-established with back-off.
 *
 * Redis pub/sub keeps nothing for absent subscribers: events written while a shard's
 * subscription is down (the server restarting, a failover, a network cut) are lost.
 */
export class KeyspaceEventSource {
  private readonly subs = new Map<string, ShardSubscription>();
  private pending: KeyEvent[] = [];
  private flushScheduled: NodeJS.Immediate | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private started = false;
  /** Classes beyond "A" some registration needs: "m" for keymiss. */
  private extraFlags = "";

  constructor(
    private readonly shards: Shards,
    private readonly log: Logger,
    private readonly onEvents: (events: KeyEvent[]) => void,
    /**
     * Another channel to listen to on the same connections, and where its messages go.
     * SUBSCRIBEd, not PSUBSCRIBEd: a pattern of each proxy's would count in PUBSUB NUMPAT,
     * where the others' cannot be told from users'.
     */
    private readonly extra: {
      channel: string;
      onMessage: (channel: Buffer, message: Buffer) => void;
    } | null = null,
    /** Drops notifications already handled before they are copied out of their frame. */
    private readonly handled: NotificationFilter | null = null,
  ) {
    // One command a payload: the subscription follows the patterns it sends (HeldPatterns).
    this.subscribe = [encodeCommand(["PSUBSCRIBE", PATTERN])];
    if (extra !== null) this.subscribe.push(encodeCommand(["SUBSCRIBE", extra.channel]));
  }

  private readonly subscribe: Buffer[];
  /** pmessageParts()'s answer for the frame being read (one frame at a time). */
  private readonly parts = new Int32Array(6);

  /** Configures and subscribes every master; resolves once each has subscribed or failed once. */
  async start(): Promise<KeyspaceStatus> {
    if (this.started) throw new Error("KeyspaceEventSource already started");
    this.started = true;
    this.timer = setInterval(() => this.reconcile(), RECONCILE_MS);
    this.timer.unref();
    this.reconcile();
    await Promise.all([...this.subs.values()].map((s) => s.firstAttempt));
    return this.status();
  }

  /** Asks every master for more notification classes (keymiss: "m"); resolves once each has been asked. */
  async requireFlags(flags: string): Promise<void> {
    const missing = [...flags].filter((f) => !this.extraFlags.includes(f)).join("");
    if (missing === "") return;
    this.extraFlags += missing;
    await Promise.all(
      [...this.subs.values()].map(async (sub) => {
        sub.status = await this.configure(sub);
      }),
    );
  }

  /** What is known now about each master's notification settings. */
  status(): KeyspaceStatus {
    const shards = [...this.subs.values()].map((s) => ({ ...s.status }));
    return { configured: shards.length > 0 && shards.every((s) => s.configured), shards };
  }

  /**
   * Resolves once every notification caused by a write that `node` (or every master) has
   * already acknowledged has been passed to onEvents: a PING on the subscription connection
   * is answered after the notifications queued before it. A shard without a live
   * subscription resolves at once (its notifications are lost, not late).
   */
  barrier(node?: string): Promise<void> {
    const subs =
      node === undefined
        ? [...this.subs.values()]
        : [this.subs.get(node)].filter((s): s is ShardSubscription => s !== undefined);
    const waits: Promise<void>[] = [];
    for (const sub of subs) {
      const conn = sub.conn;
      if (conn === null || conn.closed) continue;
      waits.push(new Promise<void>((resolve) => sub.pongs.push(resolve)));
      conn.send(PING);
    }
    if (waits.length === 0) return Promise.resolve();
    return Promise.all(waits).then(() => {});
  }

  /** Unsubscribes, gives back or closes every connection, and clears every timer. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.flush();
    await Promise.all([...this.subs.values()].map((s) => this.unsubscribe(s)));
    this.subs.clear();
    if (this.flushScheduled !== null) clearImmediate(this.flushScheduled);
    this.flushScheduled = null;
    this.pending = [];
  }

  /** Subscribes masters that have no subscription yet and drops those that are no longer masters. */
  private reconcile(): void {
    if (this.stopped) return;
    const masters = this.shards.masters();
    const ids = new Set(masters.map((n) => n.id));
    for (const [id, sub] of this.subs) {
      if (ids.has(id)) continue;
      this.log.info({ node: id }, "no longer a master: dropping its keyspace subscription");
      this.drop(sub);
    }
    for (const node of masters) {
      if (this.subs.has(node.id)) continue;
      const sub = new ShardSubscription(node.id);
      this.subs.set(node.id, sub);
      void this.attempt(sub);
    }
  }

  private drop(sub: ShardSubscription): void {
    sub.dropped = true;
    this.subs.delete(sub.node);
    if (sub.retryTimer !== null) clearTimeout(sub.retryTimer);
    sub.retryTimer = null;
    this.closeConnection(sub);
    sub.settleFirst();
  }

  private closeConnection(sub: ShardSubscription): void {
    const conn = sub.conn;
    sub.conn = null;
    sub.subscribed = false;
    conn?.destroy();
    this.flush();
    sub.releaseBarriers();
  }

  /** Configures notifications on the master, then opens its subscription. */
  private async attempt(sub: ShardSubscription): Promise<void> {
    sub.retryTimer = null;
    sub.status = await this.configure(sub);
    if (this.stopped || sub.dropped) return;
    const conn = this.shards.subscribe(sub.node, {
      onFrame: (frame) => this.onFrame(sub, frame),
      onLost: (reason) => {
        if (sub.onLostWhileStopping !== null) return sub.onLostWhileStopping();
        if (sub.conn !== conn) return;
        sub.conn = null;
        this.lost(sub, reason);
      },
    });
    if (typeof conn === "string") {
      this.lost(sub, conn);
      return;
    }
    sub.conn = conn;
    for (const command of this.subscribe) conn.send(command);
  }

  /**
   * Reads notify-keyspace-events and adds what keyevent notifications need. Refusals are
   * reported, not thrown: the subscription goes ahead, in case the operator set the flags.
   */
  private async configure(sub: ShardSubscription): Promise<ShardKeyspaceStatus> {
    const node = sub.node;
    let notifications = "";
    try {
      notifications = await this.readFlags(node);
      const merged = mergeNotifyFlags(notifications, this.extraFlags);
      if (merged !== notifications) {
        const reply = await this.shards.callNode(node, ["CONFIG", "SET", "notify-keyspace-events", merged]);
        if (reply instanceof RespError) throw new Error(`CONFIG SET: ${reply.message}`);
        const before = notifications;
        notifications = await this.readFlags(node);
        this.log.info(
          { node, before, after: notifications },
          "enabled keyevent notifications (notify-keyspace-events)",
        );
      }
      sub.warnedConfig = "";
      await this.configureReplicas(node);
      return { node, notifications, configured: true };
    } catch (err) {
      const error = errorText(err);
      if (err instanceof UpstreamError) {
        // The node is unreachable: the subscription fails too, and is retried.
        this.log.debug({ node, err: error }, "cannot read notify-keyspace-events");
      } else if (error !== sub.warnedConfig) {
        sub.warnedConfig = error;
        this.log.warn(
          { node, notifications, err: error },
          "cannot enable keyspace notifications (CONFIG refused or failed): KeysReader registrations " +
            "get events from this shard only if its notify-keyspace-events already includes 'E' and 'A'",
        );
      }
      return { node, notifications, configured: false, error };
    }
  }

  /**
   * The same flags on the master's replicas, so a promoted replica notifies from its first
   * write, before the proxy has noticed the failover (the proxy's own writes are covered
   * either way; others' writes in that window are not). Best effort: a replica that cannot
   * be reached or refuses is logged and left.
   */
  private async configureReplicas(master: string): Promise<void> {
    const replicas = await this.shards.replicasOf(master).catch(() => [] as string[]);
    await Promise.all(
      replicas.map(async (replica) => {
        try {
          const current = await this.readFlags(replica);
          const merged = mergeNotifyFlags(current, this.extraFlags);
          if (merged === current) return;
          const reply = await this.shards.callNode(replica, [
            "CONFIG",
            "SET",
            "notify-keyspace-events",
            merged,
          ]);
          if (reply instanceof RespError) throw new Error(`CONFIG SET: ${reply.message}`);
          this.log.info(
            { node: replica, master, before: current, after: merged },
            "enabled keyevent notifications on a replica",
          );
        } catch (err) {
          this.log.warn(
            { node: replica, master, err: errorText(err) },
            "cannot enable keyspace notifications on a replica",
          );
        }
      }),
    );
  }

  private async readFlags(node: string): Promise<string> {
    const reply = await this.shards.callNode(node, ["CONFIG", "GET", "notify-keyspace-events"]);
    if (reply instanceof RespError) throw new Error(`CONFIG GET: ${reply.message}`);
    if (!Array.isArray(reply) || reply.length < 2) throw new Error("CONFIG GET: unexpected reply");
    const value = reply[1];
    return Buffer.isBuffer(value) || typeof value === "string" ? value.toString() : "";
  }

  /** A subscription failed or its connection died: re-read the topology, then retry later. */
  private lost(sub: ShardSubscription, reason: string): void {
    if (this.stopped || sub.dropped) return;
    const wasSubscribed = sub.subscribed;
    this.closeConnection(sub);
    sub.settleFirst();
    if (wasSubscribed) {
      this.log.warn(
        { node: sub.node, err: reason },
        "keyspace subscription lost; events written to this shard until it is back are lost",
      );
    }
    sub.retryMs = sub.retryMs === 0 ? FIRST_RETRY_MS : Math.min(sub.retryMs * 2, MAX_RETRY_MS);
    sub.retryTimer = setTimeout(() => void this.retry(sub), sub.retryMs);
    sub.retryTimer.unref();
  }

  private async retry(sub: ShardSubscription): Promise<void> {
    sub.retryTimer = null;
    if (this.stopped || sub.dropped) return;
    // A lost master may have been failed over: ask the cluster before trying it again.
    if (this.shards.followsFailovers) await this.shards.refresh().catch(() => {});
    if (this.stopped || sub.dropped) return;
    this.reconcile();
    if (sub.dropped) return;
    await this.attempt(sub);
  }

  private onFrame(sub: ShardSubscription, frame: Buffer): void {
    if (this.stopped && sub.onUnsubscribed === null) return;
    // Keyevent messages, nearly every frame, are read in place.
    const parts = this.parts;
    if (pmessageParts(frame, parts)) {
      if (this.stopped) return;
      if (!sameBytes(frame, parts[0], parts[1], PATTERN_BYTES)) return;
      const start = parts[2];
      const end = parts[3];
      const eventStart = eventStartOf(frame, start, end);
      const db = dbOfChannel(frame, start, eventStart);
      // Most notifications are of writes the proxy already made events of: dropped here, unread.
      const quiet = this.pending.length === 0;
      if (this.handled?.(db, frame, parts[4], parts[5], eventStart, end, sub.node, quiet) === true) return;
      this.pending.push({
        // Copied: the frame is a view of the socket's buffer.
        key: Buffer.from(frame.subarray(parts[4], parts[5])),
        event: frame.toString("latin1", eventStart, end),
        db,
        shard: sub.node,
        at: Date.now(),
      });
      this.flushScheduled ??= setImmediate(() => this.flush());
      return;
    }
    let value: RespValue;
    try {
      value = decodeReply(frame);
    } catch (err) {
      this.log.warn({ node: sub.node, err: errorText(err) }, "undecodable keyspace frame");
      return;
    }
    if (!Array.isArray(value)) {
      if (value instanceof RespError) {
        // PSUBSCRIBE refused (ACL, renamed): retry with back-off, the operator may fix it.
        this.log.warn({ node: sub.node, err: value.message }, "keyspace PSUBSCRIBE refused");
        if (sub.conn !== null) this.lost(sub, value.message);
      } else if (isWord(value, "pong")) {
        this.pong(sub);
      }
      return;
    }
    const kind = value[0];
    if (isWord(kind, "pmessage")) {
      if (this.stopped) return;
      const channel = value[2];
      const message = value[3];
      if (!Buffer.isBuffer(channel) || !Buffer.isBuffer(message)) return;
      if (!isWord(value[1], PATTERN)) return;
      this.pending.push({
        // Copied: the frame is a view of the socket's buffer.
        key: Buffer.from(message),
        ...eventOfChannel(channel),
        shard: sub.node,
        at: Date.now(),
      });
      this.flushScheduled ??= setImmediate(() => this.flush());
    } else if (isWord(kind, "pong")) {
      this.pong(sub);
    } else if (isWord(kind, "psubscribe")) {
      if (!sub.subscribed) {
        sub.subscribed = true;
        if (sub.retryMs !== 0) this.log.info({ node: sub.node }, "keyspace subscription restored");
        sub.retryMs = 0;
      }
      sub.settleFirst();
    } else if (isWord(kind, "message")) {
      const channel = value[1];
      const message = value[2];
      if (this.stopped || this.extra === null || !Buffer.isBuffer(channel) || !Buffer.isBuffer(message))
        return;
      this.extra.onMessage(Buffer.from(channel), Buffer.from(message));
    } else if (isWord(kind, "punsubscribe") || isWord(kind, "unsubscribe")) {
      sub.onUnsubscribed?.(Number(value[2]));
    }
  }

  /** A barrier's PING came back: everything before it is delivered first. */
  private pong(sub: ShardSubscription): void {
    this.flush();
    sub.pongs.shift()?.();
  }

  private flush(): void {
    if (this.flushScheduled !== null) clearImmediate(this.flushScheduled);
    this.flushScheduled = null;
    if (this.pending.length === 0) return;
    const events = this.pending;
    this.pending = [];
    try {
      this.onEvents(events);
    } catch (err) {
      this.log.error({ err: errorText(err) }, "keyspace event consumer failed");
    }
  }

  /** PUNSUBSCRIBE and hand the connection back when that is confirmed; else close it. */
  private async unsubscribe(sub: ShardSubscription): Promise<void> {
    sub.dropped = true;
    if (sub.retryTimer !== null) clearTimeout(sub.retryTimer);
    sub.retryTimer = null;
    sub.settleFirst();
    const conn = sub.conn;
    if (conn === null || conn.closed || !sub.subscribed) {
      this.closeConnection(sub);
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const remaining = await new Promise<number>((resolve) => {
      sub.onUnsubscribed = (remaining) => {
        if (remaining <= 0) resolve(remaining);
      };
      sub.onLostWhileStopping = () => resolve(-1);
      timer = setTimeout(() => resolve(-1), STOP_WAIT_MS);
      conn.send(PUNSUBSCRIBE);
      // Without the extra channel no UNSUBSCRIBE: its confirmation would come after the release.
      if (this.extra !== null) conn.send(UNSUBSCRIBE);
    });
    clearTimeout(timer);
    sub.onUnsubscribed = null;
    sub.releaseBarriers();
    sub.conn = null;
    sub.subscribed = false;
    sub.onLostWhileStopping = null;
    if (remaining === 0 && !conn.closed && conn.inFlight === 0) conn.release();
    else conn.destroy();
  }
}
