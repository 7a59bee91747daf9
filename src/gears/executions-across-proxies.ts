/**
 * Executions across proxies: an execution id (`<proxy id>-<n>`) names the proxy that ran it,
 * and any proxy in front of the same Redis answers for it. A proxy that holds executions
 * listens on a channel of its own, `{gears-proxy}:executions:<proxy id>`; a proxy asked about
 * another's execution publishes the command there with its own channel and a correlation
 * number, and relays the owner's reply bytes. Both sides use the master of the proxy keys'
 * slot: PUBLISH's count there says at once whether the owner listens (in a cluster a
 * PUBLISH reaches every node's subscribers, but counts only its own node's).
 *
 * Messages are RESP arrays: ["ask", reply channel, seq, name, proto, db, user, admin, args...],
 * answered by ["part", seq, bytes] ... ["reply", seq, bytes] (a long reply goes in parts of
 * PART_BYTES); the asker acknowledges each part with ["ack", its channel, seq, parts received]
 * on the owner's channel, and the owner keeps at most WINDOW_PARTS parts unacknowledged, so
 * that a reply of any size stays within Redis's client-output-buffer-limit for pubsub.
 *
 * An owner is given up only once it has been seen not listening for GONE_MS with nothing
 * else seen between: its subscription is made again within moments when its connection is
 * lost, and the proxy keys' slot may move to another node (a failover).
 */
import { decodeReply } from "../resp/decode.js";
import { encodeCommand, encodeError, encodeValue } from "../resp/encode.js";
import { RespError, type RespValue } from "../resp/values.js";
import { PROXY_HASHTAG, PROXY_KEYS_SLOT } from "../routing/hidden-keys.js";
import type { NodeSubscription } from "../routing/shards.js";
import type { Logger } from "../observability/log.js";
import { answerForElsewhere, type ExecutionsElsewhere, type GearsCaller } from "./commands.js";
import type { GearsEngine } from "./engine.js";
import type { GearsReply } from "./result-chunks.js";

/** The channel of a proxy's executions: hidden from PUBSUB CHANNELS with the proxy's other channels. */
export const EXECUTIONS_CHANNEL = `${PROXY_HASHTAG}:executions:`;

/**
 * How often an asker checks that the owner still listens while it waits for its reply, and
 * publishes again a question that reached nobody.
 */
const LIVENESS_MS = 500;
/** An owner seen not listening for this long (no sign of it between) is given up. */
const GONE_MS = 1000;
/** How often a lost subscription is tried again, and its node compared with the topology's. */
const RESUBSCRIBE_MS = 1000;
/** A confirmed subscription whose connection is lost is made again after this (not a tick later). */
const QUICK_RESUBSCRIBE_MS = 50;
/** A refused SUBSCRIBE (an ACL) is tried again after this. */
const REFUSED_RETRY_MS = 30_000;
/** A SUBSCRIBE not confirmed within this is given up (and tried again). */
const CONFIRM_MS = 2000;
/** A reply longer than this is published in parts (a subscriber's output buffer is bounded). */
const PART_BYTES = 1 << 20;
/**
 * Parts an owner publishes before the asker acknowledges them: 4 MB, within Redis's default
 * pubsub limit (32 MB, or 8 MB for a minute).
 */
const WINDOW_PARTS = 4;
/** An asker that acknowledges nothing for this long (an older proxy) gets the rest without waits. */
const ACK_WAIT_MS = 5000;
/** RG.DUMPEXECUTIONS leaves out a proxy that does not answer within this. */
const DUMP_WAIT_MS = 3000;
/** Who asks another proxy for its RG.DUMPEXECUTIONS (the channel is off with ACL users). */
const DUMP_CALLER: GearsCaller = { proto: 2, db: 0, clientId: 0, user: null, admin: true };

/** `<40 hex>-<n>`: the proxy id part of an execution id, or null when it is not one. */
export function ownerOf(executionId: string): string | null {
  const match = /^([0-9a-f]{40})-\d+$/.exec(executionId);
  return match === null ? null : match[1];
}

/** A question to another proxy, until its first whole reply (or the owner is given up). */
interface Question {
  readonly ownerChannel: string;
  /** The reply's parts so far, by seq: one seq per time the question was published. */
  readonly parts: Map<number, Buffer[]>;
  /** The last PUBLISH reached the owner, on a subscription of this proxy still up. */
  delivered: boolean;
  publishing: boolean;
  /** Since when the owner has been seen not listening, with no sign of it since; null: seen. */
  missingSince: number | null;
  /** The owner's reply (null: it holds no such execution, or it is gone), or an error. */
  done: (reply: GearsReply | null) => void;
}

/** An answer being published to an asker: how many of its parts the asker acknowledged. */
interface Answering {
  acked: number;
  /** The asker acknowledged nothing for ACK_WAIT_MS: the rest goes without waiting. */
  unacknowledged: boolean;
  /** The asker forgot the question (its channel was lost meanwhile; it asked again): stop. */
  abandoned: boolean;
  wake: (() => void) | null;
}

/** An ack of this many parts says the asker forgot the question: its owner stops publishing it. */
const ABANDONED = -1;
/** Questions forgotten on a lost channel, remembered to tell their owners: at most this many. */
const MAX_FORGOTTEN = 256;

export class ExecutionsAcrossProxies implements ExecutionsElsewhere {
  private readonly channel: string;
  private sub: NodeSubscription | null = null;
  private subNode = "";
  /** Settles once the channel's subscription is confirmed (false: it could not be made). */
  private listening: Promise<boolean> | null = null;
  private confirm: ((ok: boolean) => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** After a refused SUBSCRIBE: not tried again before this time. */
  private retryAt = 0;
  private seq = 0;
  /** The questions waiting for their replies, by each seq they were published with. */
  private readonly asked = new Map<number, Question>();
  /** The answers being published, by `<reply channel> <seq>`. */
  private readonly answering = new Map<string, Answering>();
  /**
   * Questions forgotten when this proxy's channel was lost (asked again since), by seq: the
   * owner's channel, to tell it to stop when a part of the old answer still comes (it would
   * otherwise wait ACK_WAIT_MS for acks, then publish the rest with no window).
   */
  private readonly forgotten = new Map<number, string>();

  constructor(
    private readonly engine: GearsEngine,
    private readonly log: Logger,
  ) {
    this.channel = EXECUTIONS_CHANNEL + engine.proxyId;
  }

  /** The node every proxy subscribes and publishes on; null while the topology has no master. */
  private node(): string | null {
    try {
      return this.engine.shards.idForSlot(PROXY_KEYS_SLOT);
    } catch {
      return null;
    }
  }

  /**
   * Listens on this proxy's channel (other proxies may then reach its executions, and its
   * questions get their answers); resolves once subscribed. Kept up until close().
   */
  listen(): Promise<boolean> {
    if (this.stopped) return Promise.resolve(false);
    if (this.timer === null) {
      this.timer = setInterval(() => this.check(), RESUBSCRIBE_MS);
      this.timer.unref();
    }
    if (this.listening !== null) return this.listening;
    const node = this.node();
    if (node === null || Date.now() < this.retryAt) return Promise.resolve(false);
    const listening = new Promise<boolean>((resolve) => (this.confirm = resolve));
    this.listening = listening;
    let confirmed = false;
    void listening.then((ok) => (confirmed = ok));
    const sub = this.engine.shards.subscribe(node, {
      onFrame: (frame) => this.onFrame(frame),
      onLost: (reason) => {
        this.lost(typeof sub === "string" ? null : sub, reason);
        // Other proxies find this one gone while it does not listen: made again at once.
        if (confirmed) setTimeout(() => this.listening === null && void this.listen(), QUICK_RESUBSCRIBE_MS);
      },
    });
    if (typeof sub === "string") {
      this.lost(null, sub);
      return listening;
    }
    this.sub = sub;
    this.subNode = node;
    sub.send(encodeCommand(["SUBSCRIBE", this.channel]));
    // RG.EXECUTE waits for this: a node that never confirms must not hold it up.
    const timer = setTimeout(() => {
      if (this.sub !== sub || this.confirm === null) return;
      this.lost(sub, "no confirmation of SUBSCRIBE");
      sub.destroy();
    }, CONFIRM_MS);
    void listening.then(() => clearTimeout(timer));
    return listening;
  }

  /** A lost subscription is made again; one on a node no longer the proxy keys' master is moved. */
  private check(): void {
    const sub = this.sub;
    if (sub !== null && (sub.closed || this.subNode !== this.node())) {
      this.lost(sub, sub.closed ? "connection closed" : "the proxy keys' slot moved");
      if (!sub.closed) sub.destroy();
    }
    if (this.listening === null) void this.listen();
  }

  private lost(sub: NodeSubscription | null, reason: string): void {
    if (sub !== this.sub) return;
    this.sub = null;
    this.listening = null;
    this.confirm?.(false);
    this.confirm = null;
    if (this.asked.size > 0) this.log.warn({ reason }, "lost the channel other proxies answer on");
    // Their answers would come on the lost connection: asked again once this proxy listens
    // (question()'s ticks), or, when it is closing, said. A reply begun before is forgotten:
    // its parts published meanwhile are lost, the rest would make a broken one.
    const error = encodeError(`ERR lost the connection another proxy answers on: ${reason}`);
    const node = this.node();
    for (const [seq, question] of this.asked) {
      if (this.stopped) question.done(error);
      question.delivered = false;
      question.parts.delete(seq);
      this.asked.delete(seq);
      // Its owner may be waiting for acks of parts this proxy never got: told to stop now (a
      // PUBLISH needs no subscription), and again if a part of that answer still comes.
      if (node !== null) this.ack(node, question.ownerChannel, seq, ABANDONED);
      this.forgotten.set(seq, question.ownerChannel);
      if (this.forgotten.size > MAX_FORGOTTEN) this.forgotten.delete(this.forgotten.keys().next().value!);
    }
  }

  private onFrame(frame: Buffer): void {
    const value = decodeReply(frame);
    if (value instanceof RespError) {
      // SUBSCRIBE refused (an ACL without this channel): tried again after REFUSED_RETRY_MS.
      const sub = this.sub;
      this.log.warn(
        { err: value.message, retryInSeconds: REFUSED_RETRY_MS / 1000 },
        "cannot listen for other proxies' questions about executions",
      );
      this.retryAt = Date.now() + REFUSED_RETRY_MS;
      this.lost(sub, value.message);
      sub?.destroy();
      return;
    }
    if (!Array.isArray(value)) return;
    const kind = String(value[0]);
    if (kind === "subscribe") {
      this.confirm?.(true);
      this.confirm = null;
    } else if (kind === "message" && Buffer.isBuffer(value[2])) {
      const message = decodeReply(Buffer.from(value[2]));
      if (Array.isArray(message)) this.onMessage(message);
    }
  }

  private onMessage(message: RespValue[]): void {
    const kind = String(message[0]);
    if (kind === "ask") {
      void this.answer(message);
      return;
    }
    if (kind === "ack") {
      const answering = this.answering.get(`${String(message[1])} ${Number(message[2])}`);
      if (answering === undefined) return;
      const acked = Number(message[3]);
      if (acked === ABANDONED) answering.abandoned = true;
      else answering.acked = Math.max(answering.acked, acked);
      answering.wake?.();
      return;
    }
    const seq = Number(message[1]);
    const question = this.asked.get(seq);
    const bytes = message[2];
    if (question === undefined) return this.forget(seq, kind);
    if (!Buffer.isBuffer(bytes)) return;
    const parts = question.parts.get(seq) ?? [];
    question.parts.set(seq, parts);
    parts.push(bytes);
    if (kind === "reply") {
      const reply = Buffer.concat(parts);
      question.done(reply.length === 0 ? null : reply);
      return;
    }
    const node = this.node();
    if (node !== null) this.ack(node, question.ownerChannel, seq, parts.length);
  }

  /** A part of an answer to a question forgotten on a lost channel: its owner is told to stop. */
  private forget(seq: number, kind: string): void {
    const ownerChannel = this.forgotten.get(seq);
    if (ownerChannel === undefined) return;
    this.forgotten.delete(seq);
    const node = this.node();
    if (kind === "part" && node !== null) this.ack(node, ownerChannel, seq, ABANDONED);
  }

  /** Tells the owner of the answer to question `seq` how many parts came (ABANDONED: stop). */
  private ack(node: string, ownerChannel: string, seq: number, parts: number): void {
    const ack = encodeValue([Buffer.from("ack"), Buffer.from(this.channel), seq, parts]);
    void this.engine.shards.call(node, ["PUBLISH", ownerChannel, ack]).catch(() => null);
  }

  /** Another proxy's question about one of this proxy's executions: run here, the reply published back. */
  private async answer(message: RespValue[]): Promise<void> {
    const [, replyTo, seq, name, proto, db, user, admin, ...rest] = message;
    if (!Buffer.isBuffer(replyTo) || !Buffer.isBuffer(name)) return;
    const args = rest.filter((a): a is Buffer => Buffer.isBuffer(a));
    const caller: GearsCaller = {
      proto: Number(proto) === 3 ? 3 : 2,
      db: Number(db),
      clientId: 0,
      user: Buffer.isBuffer(user) && user.length > 0 ? user.toString() : null,
      admin: Number(admin) === 1,
    };
    // Empty: not one of this proxy's (dropped, or evicted past MaxExecutions).
    let reply: Buffer = Buffer.alloc(0);
    try {
      const answer = await answerForElsewhere(this.engine, name.toString(), args, caller);
      if (answer !== null) reply = Buffer.isBuffer(answer) ? answer : Buffer.concat(answer);
    } catch (err) {
      // Answered all the same: the asker waits as long as this proxy listens.
      reply = encodeError(`ERR ${err instanceof Error ? err.message : String(err)}`);
    }
    const key = `${replyTo.toString()} ${Number(seq)}`;
    const answering: Answering = { acked: 0, unacknowledged: false, abandoned: false, wake: null };
    this.answering.set(key, answering);
    try {
      for (let at = 0, part = 0; ; at += PART_BYTES, part++) {
        if (part - answering.acked >= WINDOW_PARTS) await this.acked(answering, part - WINDOW_PARTS + 1);
        if (answering.abandoned) return;
        const node = this.node();
        if (node === null) return;
        const last = at + PART_BYTES >= reply.length;
        const bytes = reply.subarray(at, at + PART_BYTES);
        const published = encodeValue([Buffer.from(last ? "reply" : "part"), Number(seq), bytes]);
        await this.engine.shards.call(node, ["PUBLISH", replyTo, published]).catch(() => null);
        if (last) return;
      }
    } finally {
      this.answering.delete(key);
    }
  }

  /** Until the asker acknowledged `parts` parts; an asker silent for ACK_WAIT_MS is waited for no more. */
  private acked(answering: Answering, parts: number): Promise<void> {
    if (answering.unacknowledged) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        answering.unacknowledged = true;
        this.log.warn(
          "another proxy did not acknowledge the parts of a reply: the rest goes without waiting",
        );
        done();
      }, ACK_WAIT_MS);
      const done = (): void => {
        clearTimeout(timer);
        answering.wake = null;
        resolve();
      };
      answering.wake = () => {
        if (answering.acked >= parts || answering.abandoned) done();
      };
    });
  }

  /**
   * An execution-id command for another proxy's execution: the owner's reply, or null when
   * the id names no other proxy or its owner does not listen (dead, or holds no execution).
   * Waits as long as the owner listens (RG.GETRESULTSBLOCKING waits for the execution).
   */
  async byId(name: string, args: Buffer[], caller: GearsCaller): Promise<GearsReply | null> {
    const owner = ownerOf(args[0].toString());
    if (owner === null || owner === this.engine.proxyId) return null;
    return this.question(EXECUTIONS_CHANNEL + owner, name, args, caller, 0);
  }

  /** RG.DUMPEXECUTIONS of every other proxy listening (those holding executions). */
  async dump(): Promise<Buffer[]> {
    const node = this.node();
    if (node === null || !(await this.listen())) return [];
    const channels = await this.engine.shards
      .call(node, ["PUBSUB", "CHANNELS", `${EXECUTIONS_CHANNEL}*`])
      .catch(() => null);
    if (!Array.isArray(channels)) return [];
    const others = channels.map(String).filter((c) => c.startsWith(EXECUTIONS_CHANNEL) && c !== this.channel);
    const replies = await Promise.all(
      others.map((c) => this.question(c, "rg.dumpexecutions", [], DUMP_CALLER, DUMP_WAIT_MS)),
    );
    return replies.flatMap((r) => (r === null ? [] : [Buffer.isBuffer(r) ? r : Buffer.concat(r)]));
  }

  /**
   * Publishes a question on `ownerChannel` until its first whole reply: again when it reached
   * nobody or this proxy's channel was lost meanwhile (any of its copies' replies counts).
   * Null once the owner has been seen not listening for GONE_MS, or after `patienceMs` (0: none).
   */
  private async question(
    ownerChannel: string,
    name: string,
    args: Buffer[],
    caller: GearsCaller,
    patienceMs: number,
  ): Promise<GearsReply | null> {
    let settle: (reply: GearsReply | null) => void = () => {};
    const answered = new Promise<GearsReply | null>((resolve) => (settle = resolve));
    const question: Question = {
      ownerChannel,
      parts: new Map(),
      delivered: false,
      publishing: false,
      missingSince: null,
      done: settle,
    };
    const bytes = (seq: number): Buffer =>
      encodeValue([
        Buffer.from("ask"),
        Buffer.from(this.channel),
        seq,
        Buffer.from(name),
        caller.proto,
        caller.db,
        Buffer.from(caller.user ?? ""),
        caller.admin ? 1 : 0,
        ...args,
      ]);
    const publish = async (): Promise<void> => {
      question.publishing = true;
      try {
        const node = (await this.listen()) ? this.node() : null;
        // Redis refuses this proxy the channel (an ACL): no answer can come.
        if (Date.now() < this.retryAt) return question.done(null);
        if (node === null) return this.missing(question);
        const seq = ++this.seq;
        this.asked.set(seq, question);
        question.parts.set(seq, []);
        const listeners = await this.engine.shards
          .call(node, ["PUBLISH", ownerChannel, bytes(seq)])
          .catch(() => 0);
        if (typeof listeners === "number" && listeners > 0) {
          // Lost meanwhile (lost() dropped this seq): it must be published again.
          question.delivered = this.asked.get(seq) === question;
          question.missingSince = null;
        } else this.missing(question);
      } finally {
        question.publishing = false;
      }
    };
    const tick = setInterval(() => {
      if (question.publishing) return;
      if (!question.delivered) void publish();
      else void this.checkOwner(question);
    }, LIVENESS_MS);
    const patience = patienceMs > 0 ? setTimeout(() => settle(null), patienceMs) : null;
    void publish();
    try {
      return await answered;
    } finally {
      clearInterval(tick);
      if (patience !== null) clearTimeout(patience);
      for (const seq of question.parts.keys()) this.asked.delete(seq);
    }
  }

  /** The owner may die while it works on the answer: then no answer comes. */
  private async checkOwner(question: Question): Promise<void> {
    const listens = await this.ownerListens(question.ownerChannel);
    if (listens === true) question.missingSince = null;
    else if (listens === false) this.missing(question);
  }

  /**
   * Whether a proxy listens on `channel` on the proxy keys' master; null when that could not
   * be told (a failed call says nothing either way).
   */
  private async ownerListens(channel: string): Promise<boolean | null> {
    const node = this.node();
    if (node === null) return false;
    const listeners = await this.engine.shards.call(node, ["PUBSUB", "NUMSUB", channel]).catch(() => null);
    return Array.isArray(listeners) ? Number(listeners[1]) > 0 : null;
  }

  /** The owner not seen listening now: the question is given up after GONE_MS of that. */
  private missing(question: Question): void {
    const now = Date.now();
    question.missingSince ??= now;
    if (now - question.missingSince >= GONE_MS) question.done(null);
  }

  close(): void {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    const sub = this.sub;
    this.lost(sub, "the proxy is closing");
    sub?.destroy();
  }
}
