import type { HostPort, ProxyConfig } from "../config.js";
import type { Logger } from "../observability/log.js";
import { decodeReply } from "../resp/decode.js";
import { encodeCommand } from "../resp/encode.js";
import { RespError, type RespValue } from "../resp/values.js";
import { UpstreamConnection, type ConnectionOptions } from "./connection.js";
import { handOver, type HandoverCounts } from "./handover.js";
import { UpstreamNode, type NodeObserver } from "./node.js";
import { WaitingRequests } from "./waiting-requests.js";
import {
  describeAnswers,
  configEpochOf,
  masterStateOf,
  parseMasterAddress,
  peersOf,
  parseSentinelEvent,
  rankAnswers,
  roleOf,
  type SentinelAnswer,
  type SentinelEvent,
} from "./sentinel-replies.js";
import { ALL_SLOTS, type SlotRange, type Topology } from "./topology.js";

type NodeOptions = ConnectionOptions & { sharedConnections: number; log?: Logger; observer?: NodeObserver };

/** How long a sentinel or a candidate master has to answer before it counts as unreachable. */
const ASK_TIMEOUT_MS = 1000;
/** The sentinels are asked this often even when no event came (a missed event, a lost subscription). */
const PERIODIC_CHECK_MS = 1000;
/** While a failover is under way they are asked this often, so the switch follows the promotion closely. */
const FAILOVER_CHECK_MS = 100;
/** Checks caused by lost connections are at least this far apart. */
const MIN_CHECK_GAP_MS = 100;
/** A lost event subscription is opened again after this long. */
const RESUBSCRIBE_MS = 1000;
/**
 * The longest the old master holds writes at a time once a failover starts (CLIENT PAUSE
 * WRITE), renewed while a sentinel says the failover is under way. Never more than half the
 * master's down-after-milliseconds: a WRITE pause also holds the sentinels' hello PUBLISH,
 * and the PINGs behind it on their connection, so a longer one would have them take a
 * healthy master for down and start a failover of their own.
 */
const FENCE_MS = 5000;
const MIN_FENCE_MS = 400;
/** A hold no sentinel reports a failover for after this long (its leader died, an abort unheard) is released. */
const FENCE_GRACE_MS = 2000;

/**
 * Events on which the sentinels are asked again at once. The first eight say that a failover
 * of the master has started, from its first attempt on: from there, writes the old master
 * takes may be lost. The first steps come a sentinel tick (50-100 ms) apart, so fencing at the
 * first leaves time before the replica is promoted, even on a busy machine.
 */
const EVENT_CHANNELS = [
  "+try-failover",
  "+elected-leader",
  "+failover-state-select-slave",
  "+selected-slave",
  "+failover-state-send-slaveof-noone",
  "+failover-state-wait-promotion",
  "+promoted-slave",
  "+failover-state-reconf-slaves",
  "+switch-master",
  "+failover-end",
  "+failover-end-for-timeout",
];
const FAILOVER_STARTED = new Set(EVENT_CHANNELS.slice(0, 8));
const ABORT_PATTERN = "-failover-abort-*";

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether the node says it is a master (ROLE); false when it says otherwise or does not answer. */
async function isMaster(node: UpstreamNode): Promise<boolean> {
  try {
    return roleOf(await within(node.call(["ROLE"]), ASK_TIMEOUT_MS, node.id)) === "master";
  } catch {
    return false;
  }
}

/**
 * The sentinels of one deployment: asked about the master on demand, and subscribed to for
 * their failover events. Every sentinel is subscribed, not one: only the sentinel that leads
 * a failover publishes its first steps, and it is any of them. So those listed are only where
 * the proxy starts: the others they know of (SENTINEL SENTINELS) are added as they are named,
 * or a failover led by an unlisted sentinel would go unseen until the next check, while the
 * old master went on taking writes that are lost.
 */
export class Sentinels {
  /** Each sentinel: its node (asked), its event subscription and the timer that reopens it. */
  private readonly entries: {
    node: UpstreamNode;
    subscription: UpstreamConnection | null;
    retry: NodeJS.Timeout | null;
  }[] = [];
  private onEvent: ((event: SentinelEvent, sentinel: number) => void) | null = null;
  private closed = false;

  constructor(
    listed: readonly HostPort[],
    private readonly options: ConnectionOptions,
    private readonly log?: Logger,
  ) {
    for (const address of listed) this.add(address);
  }

  /** A sentinel not known yet joins: asked from the next round on, and subscribed when watching. */
  private add(address: HostPort): void {
    const id = `${address.host}:${address.port}`;
    if (this.entries.some((e) => e.node.id === id)) return;
    const node = new UpstreamNode(address, { ...this.options, sharedConnections: 1 });
    const i = this.entries.push({ node, subscription: null, retry: null }) - 1;
    if (this.onEvent === null) return;
    this.log?.info({ sentinel: id }, "sentinel found through the others: asked and subscribed from now on");
    this.subscribe(i);
  }

  get ids(): string[] {
    return this.entries.map((e) => e.node.id);
  }

  /** Every sentinel's answer about the master `name`, asked at once; the peers they name join. */
  async ask(name: string): Promise<SentinelAnswer[]> {
    const peers: HostPort[] = [];
    const answers = await Promise.all(this.entries.map((e) => this.askOne(e.node, name, peers)));
    for (const peer of peers) this.add(peer);
    return answers;
  }

  private async askOne(node: UpstreamNode, name: string, peers: HostPort[]): Promise<SentinelAnswer> {
    const sentinel = node.id;
    try {
      const [addr, master, others] = await within(
        Promise.all([
          node.call(["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name]),
          node.call(["SENTINEL", "MASTER", name]),
          node.call(["SENTINEL", "SENTINELS", name]),
        ]),
        ASK_TIMEOUT_MS,
        sentinel,
      );
      if (addr instanceof RespError) return { sentinel, error: addr.message };
      const address = parseMasterAddress(addr);
      if (address === null) return { sentinel, address: null };
      peers.push(...peersOf(others));
      return { sentinel, address, epoch: configEpochOf(master), ...masterStateOf(master) };
    } catch (err) {
      return { sentinel, error: errorText(err) };
    }
  }

  /** Subscribes every sentinel to the failover events; a lost subscription is opened again. */
  watch(onEvent: (event: SentinelEvent, sentinel: number) => void): void {
    if (this.onEvent !== null) return;
    this.onEvent = onEvent;
    this.entries.forEach((_entry, i) => this.subscribe(i));
  }

  private subscribe(i: number): void {
    const entry = this.entries[i];
    entry.retry = null;
    if (this.closed) return;
    const conn = new UpstreamConnection(entry.node.address, { ...this.options, proto: 2 });
    entry.subscription = conn;
    conn.pushHandler = (frame) => this.onFrame(frame, i);
    conn.onClose = () => {
      if (this.closed || entry.subscription !== conn) return;
      entry.subscription = null;
      entry.retry = setTimeout(() => this.subscribe(i), RESUBSCRIBE_MS);
      entry.retry.unref();
    };
    conn.sendUnmatched(encodeCommand(["SUBSCRIBE", ...EVENT_CHANNELS]));
    conn.sendUnmatched(encodeCommand(["PSUBSCRIBE", ABORT_PATTERN]));
  }

  private onFrame(frame: Buffer, sentinel: number): void {
    const value: RespValue = decodeReply(frame);
    if (value instanceof RespError) {
      // A refused SUBSCRIBE (ACL channel rules, a password this sentinel does not take): the
      // proxy would miss this sentinel's failovers, and hold no writes for them.
      this.log?.warn(
        { sentinel: this.entries[sentinel]?.node.id, err: value.message },
        "cannot subscribe to a sentinel's failover events",
      );
      return;
    }
    if (!Array.isArray(value)) return;
    const kind = String(value[0]);
    const [channel, message] =
      kind === "message" ? [value[1], value[2]] : kind === "pmessage" ? [value[2], value[3]] : [null, null];
    if (channel === null || channel === undefined || message === undefined) return;
    const event = parseSentinelEvent(String(channel), String(message));
    if (event !== null) this.onEvent?.(event, sentinel);
  }

  close(): void {
    this.closed = true;
    for (const { node, subscription, retry } of this.entries) {
      node.close();
      subscription?.close();
      if (retry !== null) clearTimeout(retry);
    }
  }
}

/**
 * One Redis master found through Redis Sentinel, followed across failovers: to the router and
 * the gears rooms it is one server, like StandaloneTopology, whose node changes when the
 * sentinels promote a replica. The sentinels are asked again on their failover events, when
 * the master's connection is lost, and every second; a new address is taken only from the
 * answer with the highest config epoch and once the node itself says ROLE master. On a switch
 * the old node is retired (closed, and never reopened): replies it still owed fail as when
 * an upstream dies, and masters() names the new node, which is how everything that keeps
 * state per master (keyspace subscriptions, leases, tracking links) notices.
 *
 * Sentinel replication is asynchronous: writes the old master accepts after the replica is
 * promoted are dropped when it later becomes a replica. So when a failover starts, the old
 * master is told to hold writes (CLIENT PAUSE WRITE) until the switch, when the held ones fail
 * with the closed connection, never acknowledged; an aborted failover releases them.
 */
export class SentinelTopology implements Topology {
  readonly mode = "standalone" as const;
  readonly followsFailovers = true;
  private current: UpstreamNode;
  /** Nodes other than the master the proxy was asked to reach (its replicas), by host:port. */
  private readonly others = new Map<string, UpstreamNode>();
  /** How many times the master moved to another node since the start. */
  private switches = 0;
  /** What each switch did with the old master's pending requests (the specs read it). */
  readonly handovers: HandoverCounts[] = [];
  private list: UpstreamNode[];
  /** The config epoch of the current master's address: older answers are ignored. */
  private epoch: number;
  private checking: Promise<void> | null = null;
  private checkAgain = false;
  private lastCheck = 0;
  private readonly timer: NodeJS.Timeout;
  private failoverTimer: NodeJS.Timeout | null = null;
  /**
   * The master told to hold writes, until when (ms), and the sentinels (by index) whose
   * failover of it is under way: an abort releases the writes only once every one gave up
   * (a sentinel that loses the election aborts while the winner goes on).
   */
  private fenced: {
    node: UpstreamNode;
    until: number;
    /** When a sentinel last said the failover is under way (an event, or failover_in_progress). */
    seen: number;
    /**
     * Until when the master is known to hold writes: the send time + holdMs of each CLIENT
     * PAUSE answered OK (never moved by a renewal only sent, nor back by a refused one: the
     * pause already granted lasts), 0 before the first OK.
     */
    pausedUntil: number;
    by: Set<number>;
  } | null = null;
  /** Renews the hold while it lasts, on its own clock: a slow round of asking must not let it lapse. */
  private holdTimer: NodeJS.Timeout | null = null;
  /**
   * What the master said of itself at the last check (ROLE, on its control connection): a
   * role other than "master" while the sentinels still name it means it was demoted behind
   * their back (an operator's REPLICAOF); writes get READONLY until the sentinels act.
   */
  private role = "master";
  /** How long one hold lasts (FENCE_MS, or half the master's down-after-milliseconds when shorter). */
  private holdMs = FENCE_MS;
  private closed = false;
  /**
   * The commands that wait while the master cannot be reached, for the switch or its return,
   * up to --cluster-retry-timeout (waiting-requests.ts); null when that is 0.
   */
  private readonly waiting: WaitingRequests | null;

  constructor(
    readonly name: string,
    address: HostPort,
    epoch: number,
    private readonly sentinels: Sentinels,
    private readonly options: NodeOptions,
    private readonly log: Logger,
    /**
     * Whether a switch hands the old master's held writes over (handover.ts). Not with
     * --threads N: the first thread to switch lifts the pause (CLIENT UNPAUSE is the server's,
     * not a client's), and the writes the other threads' connections hold would be answered
     * READONLY straight to their clients, their reads and PUBLISHes run on the demoted node.
     */
    private readonly handover = true,
    /** How long a command may wait for an unreachable master (--cluster-retry-timeout). */
    retryTimeoutMs = 0,
  ) {
    this.waiting = retryTimeoutMs > 0 ? new WaitingRequests(retryTimeoutMs, () => this.current) : null;
    this.current = this.candidateAt(address);
    this.current.log = log;
    this.list = [this.current];
    this.epoch = epoch;
    sentinels.watch((event, sentinel) => this.onEvent(event, sentinel));
    // Opened now, so that the hold of writes at a failover's start needs no connect first.
    this.current.control();
    this.timer = setInterval(() => void this.check(), PERIODIC_CHECK_MS);
    this.timer.unref();
    // At once: the hold's length and the sentinels the listed ones know of.
    void this.check();
  }

  nodeForSlot(): UpstreamNode {
    return this.current;
  }

  masters(): UpstreamNode[] {
    return this.list;
  }

  slotRanges(): readonly SlotRange[] {
    return ALL_SLOTS;
  }

  /**
   * The master, or another node of the deployment (a replica whose notify-keyspace-events
   * the gears rooms set before it may be promoted): created on first use, kept until the
   * topology closes or the node becomes the master.
   */
  nodeAt(host: string, port: number): UpstreamNode {
    const id = `${host}:${port}`;
    if (id === this.current.id) return this.current;
    let node = this.others.get(id);
    if (node === undefined) {
      node = new UpstreamNode({ host, port }, { ...this.options, log: undefined });
      this.others.set(id, node);
    }
    return node;
  }

  /** INFO proxy's line, in the manner of Redis Sentinel's own `master0:name=...,status=ok,address=...`. */
  infoLines(): string[] {
    const held = this.fenced !== null && this.fenced.until > Date.now();
    const status = held
      ? "failover"
      : !this.current.reachable
        ? "down"
        : this.role !== "master" && this.role !== ""
          ? "demoted"
          : "ok";
    return [
      `sentinel_master:name=${this.name},status=${status},addr=${this.current.id},epoch=${this.epoch},` +
        `switches=${this.switches},sentinels=${this.sentinels.ids.length},waiting=${this.waiting?.size ?? 0}`,
    ];
  }

  /** Asks the sentinels now (or joins the round under way). */
  refresh(): Promise<void> {
    return this.check();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.endFence();
    this.waiting?.failAll(this.current.failure || `ERR upstream ${this.current.id} unavailable`);
    this.sentinels.close();
    this.current.close();
    for (const node of this.others.values()) node.close();
    this.others.clear();
  }

  /** A node that is, or may be about to become, the master: a lost connection to it makes the sentinels be asked. */
  private candidateAt(address: HostPort): UpstreamNode {
    const node: UpstreamNode = new UpstreamNode(address, {
      ...this.options,
      log: undefined,
      // So that a switch can send the new master what the old one held and did not run.
      keepRequests: true,
      // While it is the master and cannot be reached, commands wait for the switch.
      ...(this.waiting !== null ? { waiting: this.waiting } : {}),
      // After the node has marked itself lost (onLost runs first): connections the proxy
      // closes itself (a client's aborted MULTI) are no reason to ask.
      onLost: () =>
        setImmediate(() => {
          if (node === this.current && !node.reachable) void this.check();
        }),
    });
    return node;
  }

  /** One round of asking at a time; a request during one runs another after it. */
  private check(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.checking !== null) {
      this.checkAgain = true;
      return this.checking;
    }
    this.checking = this.askSentinels()
      .catch((err: unknown) =>
        this.log.warn({ master: this.name, err: errorText(err) }, "sentinel check failed"),
      )
      .finally(() => {
        this.checking = null;
        if (this.checkAgain) {
          this.checkAgain = false;
          void this.check();
        }
      });
    return this.checking;
  }

  private async askSentinels(): Promise<void> {
    const wait = this.lastCheck + MIN_CHECK_GAP_MS - Date.now();
    if (wait > 0) await sleep(wait);
    this.lastCheck = Date.now();
    // Not awaited: a master that hangs must not slow the round that finds its successor.
    void this.checkRole(this.current);
    const answers = await this.sentinels.ask(this.name);
    this.followHold(answers);
    for (const candidate of rankAnswers(answers, this.epoch)) {
      if (this.closed) return;
      const { host, port } = candidate.address;
      if (host === this.current.address.host && port === this.current.address.port) {
        this.epoch = Math.max(this.epoch, candidate.epoch);
        return;
      }
      const node = this.candidateAt(candidate.address);
      const master = await isMaster(node);
      if (master && !this.closed) {
        this.switchTo(node, candidate.epoch);
        return;
      }
      node.close();
    }
  }

  /**
   * Asks the master its role, on its control connection (free while writes are held): the
   * sentinels take down-after-milliseconds and more to notice a master turned replica, and
   * may announce nothing for a while. A demotion is logged and shown in INFO
   * (status=demoted); the proxy cannot switch before the sentinels name another master.
   */
  private async checkRole(node: UpstreamNode): Promise<void> {
    const conn = node.control();
    if (conn === null) return;
    const role = await within(conn.call(["ROLE"]), ASK_TIMEOUT_MS, node.id).then(roleOf, () => "");
    if (node !== this.current || role === "" || role === this.role) return;
    if (role === "master")
      this.log.info({ master: this.name, node: node.id }, "sentinel master says it is a master again");
    else
      this.log.warn(
        { master: this.name, node: node.id, role },
        `the master the sentinels name says it is a ${role} (ROLE): writes fail with READONLY until the sentinels name another`,
      );
    this.role = role;
  }

  private switchTo(node: UpstreamNode, epoch: number): void {
    const old = this.current;
    const fenced = this.fenced;
    // With a margin: the handover's first step renews the pause, which must reach the old master
    // before the pause it trusts lapses.
    const paused =
      this.handover &&
      fenced !== null &&
      fenced.node === old &&
      fenced.pausedUntil > Date.now() + Math.min(200, this.holdMs / 4);
    this.current = node;
    this.list = [node];
    this.epoch = epoch;
    this.switches++;
    this.role = "master";
    this.options.observer?.sentinelSwitch?.(this.name);
    // The replica's own node, if the gears rooms had one, is the master's now.
    this.others.get(node.id)?.close();
    this.others.delete(node.id);
    node.log = this.log;
    node.control();
    this.endFence();
    this.log.info(
      { master: this.name, from: old.id, to: node.id, epoch },
      `sentinel master '${this.name}' is now ${node.id} (was ${old.id})`,
    );
    // Later commands go to the new master, and one that still holds the old node fails rather
    // than reopening a connection there. Held writes the old master did not run go to the new
    // one; other replies still owed fail as on a lost upstream (handover.ts).
    handOver(old, node, {
      paused,
      holdMs: this.holdMs,
      log: this.log,
      onDone: (counts) => this.handovers.push(counts),
    });
    // Behind what the handover moves (the new master holds its requests meanwhile): they came later.
    this.waiting?.flush();
  }

  private onEvent(event: SentinelEvent, sentinel: number): void {
    if (event.master !== this.name || this.closed) return;
    if (event.kind.startsWith("-failover-abort")) {
      this.unfence(event.kind, sentinel);
      return;
    }
    if (FAILOVER_STARTED.has(event.kind) && event.masterId === this.current.id) this.fence(sentinel);
    void this.check();
  }

  /** Holds writes on the current master until the switch (see the class comment). */
  private fence(sentinel: number): void {
    const node = this.current;
    const now = Date.now();
    this.startFailoverPolling();
    if (this.fenced?.node === node) {
      this.fenced.by.add(sentinel);
      this.fenced.seen = now;
      return;
    }
    this.log.info(
      { master: this.name, node: node.id, ms: this.holdMs },
      "sentinel failover started: writes to the old master held until the switch",
    );
    this.fenced = { node, until: 0, seen: now, pausedUntil: 0, by: new Set([sentinel]) };
    this.hold();
    if (this.holdTimer === null) {
      this.holdTimer = setInterval(() => this.renewHold(), Math.max(50, Math.floor(this.holdMs / 3)));
      this.holdTimer.unref();
    }
  }

  /** Renewed while a sentinel said the failover is under way lately; released once none has for a while. */
  private renewHold(): void {
    const fenced = this.fenced;
    if (fenced === null || fenced.node !== this.current) {
      this.endFence();
      return;
    }
    if (Date.now() - fenced.seen > FENCE_GRACE_MS) {
      fenced.by.clear();
      this.unfence("no sentinel reports the failover any more", -1);
      return;
    }
    this.hold();
  }

  /** No hold any more (a switch, an abort, the close): its timer and the fast polling stop. */
  private endFence(): void {
    this.fenced = null;
    if (this.holdTimer !== null) clearInterval(this.holdTimer);
    this.holdTimer = null;
    this.stopFailoverPolling();
  }

  /** CLIENT PAUSE <holdMs> WRITE on the fenced master. */
  private hold(): void {
    const fenced = this.fenced;
    if (fenced === null) return;
    const node = fenced.node;
    const holdMs = this.holdMs;
    const sent = Date.now();
    const until = sent + holdMs;
    fenced.until = until;
    node
      .control()
      ?.call(["CLIENT", "PAUSE", String(this.holdMs), "WRITE"])
      .then(
        (reply) => {
          // Held from no earlier than it was sent, so at least until `until`.
          if (!(reply instanceof RespError)) fenced.pausedUntil = Math.max(fenced.pausedUntil, until);
          if (reply instanceof RespError)
            this.log.warn(
              { node: node.id, err: reply.message },
              "cannot hold writes on the old master during the failover (CLIENT PAUSE refused): writes it takes after the promotion are lost",
            );
        },
        () => {},
      );
  }

  /**
   * The hold's length from the master's down-after-milliseconds; while it lasts, renewed as
   * long as a sentinel says the failover is under way, released once none has for a while.
   */
  private followHold(answers: readonly SentinelAnswer[]): void {
    const downAfter = answers.map((a) => ("epoch" in a ? (a.downAfterMs ?? 0) : 0)).filter((ms) => ms > 0);
    if (downAfter.length > 0)
      this.holdMs = Math.max(MIN_FENCE_MS, Math.min(FENCE_MS, Math.floor(Math.min(...downAfter) / 2)));
    const fenced = this.fenced;
    if (fenced === null || fenced.node !== this.current) return;
    if (answers.some((a) => "epoch" in a && a.failingOver === true)) fenced.seen = Date.now();
  }

  private unfence(why: string, sentinel: number): void {
    const fenced = this.fenced;
    fenced?.by.delete(sentinel);
    if (fenced !== null && fenced.by.size > 0) return;
    this.endFence();
    if (fenced === null || fenced.node !== this.current) return;
    this.log.info(
      { master: this.name, node: fenced.node.id, why },
      "sentinel failover aborted: writes resumed",
    );
    fenced.node
      .control()
      ?.call(["CLIENT", "UNPAUSE"])
      .catch(() => {});
  }

  private startFailoverPolling(): void {
    if (this.failoverTimer !== null) return;
    const started = Date.now();
    this.failoverTimer = setInterval(() => {
      // Polled while the hold lasts, or a while after the start when there is none (a dead master).
      const until = this.fenced?.until ?? started + this.holdMs;
      if (Date.now() > until) this.stopFailoverPolling();
      else void this.check();
    }, FAILOVER_CHECK_MS);
    this.failoverTimer.unref();
  }

  private stopFailoverPolling(): void {
    if (this.failoverTimer !== null) clearInterval(this.failoverTimer);
    this.failoverTimer = null;
  }
}

const CREDENTIALS = /credentials|NOAUTH|WRONGPASS|certificate/i;

/** What connect.ts learns from a master it probes. */
interface Probed {
  node: UpstreamNode;
  isCluster: boolean;
}

/**
 * The start with --sentinel: asks the sentinels for the master `config.sentinelMaster`, checks
 * the node they name (probe, then ROLE master), and follows it from then on. A sentinel that
 * is down or knows no such master is skipped; when every sentinel that answers knows no such
 * name, the start fails at once; when none answers, or the master does not, it retries for
 * as long as the start with --upstream does, then fails saying why.
 */
export async function connectViaSentinels<T extends Probed>(
  config: ProxyConfig,
  options: NodeOptions,
  log: Logger,
  probe: (address: HostPort) => Promise<T>,
  /** How long to retry (as long as the start with --upstream waits for a server). */
  retryMs: number,
): Promise<{ topology: SentinelTopology; found: T }> {
  const name = config.sentinelMaster;
  if (name === undefined) throw new Error("--sentinel needs --sentinel-master");
  const sentinels = new Sentinels(
    config.sentinels,
    {
      tls: options.tls,
      connectTimeoutMs: options.connectTimeoutMs,
      user: config.sentinelUser,
      password: config.sentinelPassword,
    },
    log,
  );
  const deadline = Date.now() + retryMs;
  try {
    for (;;) {
      const answers = await sentinels.ask(name);
      let detail = describeAnswers(answers, name);
      const reached = answers.filter((a) => !("error" in a));
      if (reached.length > 0 && reached.every((a) => "address" in a && a.address === null)) {
        throw new Error(`no sentinel knows a master named '${name}' (${detail})`);
      }
      if (reached.length === 0 && answers.some((a) => "error" in a && CREDENTIALS.test(a.error))) {
        throw new Error(`cannot use the sentinels: ${detail}`);
      }
      for (const candidate of rankAnswers(answers, 0)) {
        const id = `${candidate.address.host}:${candidate.address.port}`;
        let found: T;
        try {
          found = await probe(candidate.address);
        } catch (err) {
          detail = `master ${id}: ${errorText(err)}`;
          if (CREDENTIALS.test(detail))
            throw new Error(`cannot use upstream ${id}: ${errorText(err)}`, { cause: err });
          continue;
        }
        const master = await isMaster(found.node);
        found.node.close();
        if (found.isCluster) throw new Error(`${id} is a Redis Cluster node: use --upstream for a cluster`);
        if (!master) {
          detail = `${id}, named by the sentinels, is not a master (ROLE)`;
          continue;
        }
        const topology = new SentinelTopology(
          name,
          candidate.address,
          candidate.epoch,
          sentinels,
          options,
          log,
          config.threads === "1",
          config.clusterRetryTimeoutMs,
        );
        log.info(
          { master: name, upstream: id, sentinels: sentinels.ids, epoch: candidate.epoch },
          `sentinel master '${name}' is ${id}`,
        );
        return { topology, found };
      }
      if (Date.now() > deadline)
        throw new Error(`cannot find master '${name}' through the sentinels: ${detail}`);
      log.warn(
        { master: name, sentinels: sentinels.ids, err: detail },
        "sentinel master not reachable yet; retrying",
      );
      await sleep(250);
    }
  } catch (err) {
    sentinels.close();
    throw err;
  }
}
