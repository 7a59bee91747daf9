import { encodeCommand, encodeError } from "../resp/encode.js";
import { CONNECTION_LOST } from "../upstream/connection.js";
import type { UpstreamNode } from "../upstream/node.js";
import { DISCARD, type ReplySink } from "../upstream/reply-sink.js";
import type { ClusterTopology } from "../upstream/cluster-topology.js";
import type { ScriptCache } from "./script-cache.js";
import type { Protocol } from "../resp/values.js";

const ASKING = encodeCommand(["ASKING"]);
const MAX_REDIRECTS = 16;

export interface RedirectContext {
  topology: ClusterTopology;
  scripts: ScriptCache;
  /** How long a command may keep being retried while the cluster heals. */
  retryTimeoutMs: number;
  /** Told of each MOVED, ASK or TRYAGAIN handled and each retry sent (metrics); null when nobody counts. */
  onRedirect: ((event: RedirectEvent) => void) | null;
}

/** Why a command is sent again after a wait: a reply, or a connection that could not be made. */
export type RetryReason = "TRYAGAIN" | "CLUSTERDOWN" | "connect";
/** A redirect reply handled, or a retry sent. */
export type RedirectEvent = "MOVED" | "ASK" | "TRYAGAIN" | `retry:${RetryReason}`;

function errorCode(data: Buffer): string {
  const end = Math.min(data.length, 16);
  let i = 1;
  while (i < end && data[i] !== 32 && data[i] !== 13) i++;
  return data.toString("latin1", 1, i);
}

/** "MOVED 3999 127.0.0.1:6381" -> slot and address; an empty host means the node that answered. */
function parseRedirect(
  data: Buffer,
  from: UpstreamNode,
): { slot: number; host: string; port: number } | null {
  const parts = data.toString("latin1", 1, data.length - 2).split(" ");
  if (parts.length < 3) return null;
  const at = parts[2].lastIndexOf(":");
  const host = parts[2].slice(0, at) || from.address.host;
  return { slot: Number(parts[1]), host, port: Number(parts[2].slice(at + 1)) };
}

/**
 * Sends a command to a cluster node and follows what the cluster answers: MOVED (fix the
 * map, retry there), ASK (ASKING then the command on the target, once, map untouched),
 * TRYAGAIN and CLUSTERDOWN (back off and retry), NOSCRIPT for a script we have seen
 * (load it, retry), and connect failures (re-read the map, retry until the deadline).
 * A command whose connection died after it was sent is not retried: it may have run.
 */
export class RedirectingSink implements ReplySink {
  private node!: UpstreamNode;
  private redirects = 0;
  private retries = 0;
  /** Set at the first retry: most commands never need one, and Date.now() is not free. */
  private deadline = 0;
  private scriptLoaded = false;

  constructor(
    private readonly ctx: RedirectContext,
    private readonly payload: Buffer,
    private readonly isEvalsha: Buffer | null,
    private readonly target: ReplySink,
    private readonly affinity: number,
    /** The slot the command's keys hash to; -1 when it has no keys. */
    private readonly slot: number,
    private readonly proto: Protocol = 2,
  ) {}

  /** Takes over a command already sent to `node` by someone else; its reply comes through reply() or fail(). */
  at(node: UpstreamNode): this {
    this.node = node;
    return this;
  }

  send(node: UpstreamNode): void {
    this.node = node;
    node.send(this.affinity, this.payload, this, 0, this.proto);
  }

  reply(data: Buffer): void {
    if (data[0] !== 45 /* - */ || !this.handleError(data)) this.target.reply(data);
  }

  fail(message: string): void {
    if (message === CONNECTION_LOST || !this.retryLater("connect")) this.target.fail(message);
  }

  /** True when the error was dealt with (the command is on its way again). */
  private handleError(data: Buffer): boolean {
    const code = errorCode(data);
    if (code === "MOVED" || code === "ASK") {
      const where = parseRedirect(data, this.node);
      if (where === null) return false;
      if (++this.redirects > MAX_REDIRECTS) {
        // A client of the proxy cannot follow a redirect itself: never hand one through.
        this.target.reply(encodeError(`ERR cluster redirections did not settle for slot ${where.slot}`));
        return true;
      }
      this.ctx.onRedirect?.(code);
      const node = this.ctx.topology.nodeAt(where.host, where.port);
      if (code === "MOVED") {
        this.ctx.topology.moved(where.slot, node);
        this.send(node);
      } else {
        this.node = node;
        // ASKING and the command leave back to back on the same connection.
        node.send(this.affinity, ASKING, DISCARD, 0, this.proto);
        node.send(this.affinity, this.payload, this, 0, this.proto);
      }
      return true;
    }
    if (code === "TRYAGAIN") this.ctx.onRedirect?.("TRYAGAIN");
    if (code === "TRYAGAIN" || code === "CLUSTERDOWN") return this.retryLater(code);
    if (code === "NOSCRIPT" && this.isEvalsha !== null && !this.scriptLoaded) {
      const body = this.ctx.scripts.body(this.isEvalsha.toString());
      if (body === undefined) return false;
      this.scriptLoaded = true;
      // On the connection the EVALSHA takes again (its protocol's), so that it runs after the load.
      this.node.send(this.affinity, encodeCommand(["SCRIPT", "LOAD", body]), DISCARD, 0, this.proto);
      this.node.send(this.affinity, this.payload, this, 0, this.proto);
      return true;
    }
    return false;
  }

  private retryLater(reason: RetryReason): boolean {
    const now = Date.now();
    if (this.deadline === 0) this.deadline = now + this.ctx.retryTimeoutMs;
    if (now >= this.deadline) return false;
    if (reason !== "TRYAGAIN") this.ctx.topology.scheduleRefresh();
    this.ctx.onRedirect?.(`retry:${reason}`);
    const delay = Math.min(50 * 2 ** Math.min(this.retries++, 4), this.deadline - now);
    // Start again from the slot's owner: an ASK target would only answer MOVED without ASKING,
    // and after a refresh the slot may be served elsewhere.
    this.redirects = 0;
    const node = this.node;
    setTimeout(
      () => this.send(this.slot >= 0 ? this.ctx.topology.route(this.slot, this.affinity) : node),
      delay,
    );
    return true;
  }
}
