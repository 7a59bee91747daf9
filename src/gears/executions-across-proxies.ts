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
 * and ["part", seq, bytes] ... ["reply", seq, bytes] (a long reply goes in parts of PART_BYTES).
 */
import { decodeReply } from "../resp/decode.js";
import { encodeCommand, encodeError, encodeValue } from "../resp/encode.js";
import { RespError, type RespValue } from "../resp/values.js";
import { PROXY_HASHTAG, PROXY_KEYS_SLOT } from "../routing/hidden-keys.js";
import type { NodeSubscription } from "../routing/shards.js";
import type { Logger } from "../observability/log.js";
import { runGearsCommand, type GearsCaller } from "./commands.js";
import type { GearsEngine } from "./engine.js";
import type { GearsReply } from "./result-chunks.js";

/** The channel of a proxy's executions: hidden from PUBSUB CHANNELS with the proxy's other channels. */
export const EXECUTIONS_CHANNEL = `${PROXY_HASHTAG}:executions:`;

/** How often an asker checks that the owner still listens while it waits for its reply. */
const LIVENESS_MS = 1000;
/** How often a lost subscription is tried again, and its node compared with the topology's. */
const RESUBSCRIBE_MS = 1000;
/** A refused SUBSCRIBE (an ACL) is tried again after this. */
const REFUSED_RETRY_MS = 30_000;
/** A SUBSCRIBE not confirmed within this is given up (and tried again). */
const CONFIRM_MS = 2000;
/** A reply longer than this is published in parts (a subscriber's output buffer is bounded). */
const PART_BYTES = 1 << 20;

/** `<40 hex>-<n>`: the proxy id part of an execution id, or null when it is not one. */
export function ownerOf(executionId: string): string | null {
  const match = /^([0-9a-f]{40})-\d+$/.exec(executionId);
  return match === null ? null : match[1];
}

interface Asked {
  parts: Buffer[];
  done: (reply: GearsReply | null) => void;
}

export class ExecutionsAcrossProxies {
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
  private readonly asked = new Map<number, Asked>();

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
    const sub = this.engine.shards.subscribe(node, {
      onFrame: (frame) => this.onFrame(frame),
      onLost: (reason) => this.lost(typeof sub === "string" ? null : sub, reason),
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
    // Their answers would come on the lost connection: said, not waited for.
    const error = encodeError(`ERR lost the connection another proxy answers on: ${reason}`);
    for (const asked of this.asked.values()) asked.done(error);
    this.asked.clear();
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
    const asked = this.asked.get(Number(message[1]));
    const bytes = message[2];
    if (asked === undefined || !Buffer.isBuffer(bytes)) return;
    asked.parts.push(bytes);
    if (kind !== "reply") return;
    this.asked.delete(Number(message[1]));
    const reply = Buffer.concat(asked.parts);
    asked.done(reply.length === 0 ? null : reply);
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
    if (args.length > 0 && this.engine.get(args[0].toString()) !== undefined) {
      try {
        const answer = await runGearsCommand(this.engine, name.toString(), args, caller);
        reply = Buffer.isBuffer(answer) ? answer : Buffer.concat(answer);
      } catch (err) {
        // Answered all the same: the asker waits as long as this proxy listens.
        reply = encodeError(`ERR ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    const node = this.node();
    if (node === null) return;
    for (let at = 0; ; at += PART_BYTES) {
      const last = at + PART_BYTES >= reply.length;
      const part = reply.subarray(at, at + PART_BYTES);
      const published = encodeValue([Buffer.from(last ? "reply" : "part"), Number(seq), part]);
      await this.engine.shards.call(node, ["PUBLISH", replyTo, published]).catch(() => null);
      if (last) return;
    }
  }

  /**
   * An execution-id command for another proxy's execution: the owner's reply, or null when
   * the id names no other proxy or its owner does not listen (dead, or holds no execution).
   * Waits as long as the owner listens (RG.GETRESULTSBLOCKING waits for the execution).
   */
  async ask(name: string, args: Buffer[], caller: GearsCaller): Promise<GearsReply | null> {
    const owner = ownerOf(args[0].toString());
    if (owner === null || owner === this.engine.proxyId) return null;
    const node = this.node();
    if (node === null || !(await this.listen())) return null;
    const seq = ++this.seq;
    const ownerChannel = EXECUTIONS_CHANNEL + owner;
    const answered = new Promise<GearsReply | null>((resolve) => {
      this.asked.set(seq, { parts: [], done: resolve });
    });
    // The owner may die while it works on the answer: then no answer comes.
    const liveness = setInterval(() => {
      void this.engine.shards
        .call(node, ["PUBSUB", "NUMSUB", ownerChannel])
        .then((v) => Array.isArray(v) && Number(v[1]) === 0 && this.giveUp(seq))
        .catch(() => {});
    }, LIVENESS_MS);
    try {
      const question = encodeValue([
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
      const listeners = await this.engine.shards
        .call(node, ["PUBLISH", ownerChannel, question])
        .catch(() => 0);
      // Nobody listens there (or the PUBLISH failed): no answer can come.
      if (typeof listeners !== "number" || listeners === 0) this.giveUp(seq);
      return await answered;
    } finally {
      clearInterval(liveness);
      this.asked.delete(seq);
    }
  }

  private giveUp(seq: number): void {
    this.asked.get(seq)?.done(null);
    this.asked.delete(seq);
  }

  close(): void {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    const sub = this.sub;
    this.lost(sub, "the proxy is closing");
    sub?.destroy();
  }
}
