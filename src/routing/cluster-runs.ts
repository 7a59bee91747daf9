import type { Request } from "../resp/request-parser.js";
import type { Protocol } from "../resp/values.js";
import type { ClusterTopology } from "../upstream/cluster-topology.js";
import type { UpstreamNode } from "../upstream/node.js";
import type { ReplySink } from "../upstream/reply-sink.js";
import { RedirectingSink, type RedirectContext } from "./redirect.js";

/**
 * A client's single-key commands in front of a cluster, gathered per node while its input
 * is read and sent as one write per node: a pipeline of 16 GETs over 3 masters costs three
 * pushes, and no argument views, no payload view and no redirect handler per request. The
 * slot comes from the key's bytes in the client's input (Request.argHash). Replies pass
 * straight to their sinks; an error reply (MOVED, ASK, TRYAGAIN...) or a failed send goes
 * to a RedirectingSink made for that one request, which follows it as router.forward would.
 * The session flushes the runs before any command that does not join them, so every node
 * sees a client's commands in the order it sent them.
 */
export class ClusterRuns {
  /** The runs being gathered, one per node (a cluster has few masters: a list is enough). */
  private pending: NodeRun[] = [];

  constructor(
    private readonly redirect: RedirectContext,
    private readonly topology: ClusterTopology,
    private readonly affinity: number,
  ) {}

  /** Adds `request`, whose keys hash to `slot` (Router.runSlotOf), answered into `sink` over `proto`. */
  add(request: Request, slot: number, sink: ReplySink, proto: Protocol): void {
    const node = this.topology.nodeForSlot(slot);
    const pending = this.pending;
    let run: NodeRun | null = null;
    for (let i = 0; i < pending.length; i++) {
      if (pending[i].node === node) {
        run = pending[i];
        break;
      }
    }
    if (run !== null && (run.buf !== request.buf || run.proto !== proto)) {
      // Another input buffer (the client's input grew) or protocol: the run so far leaves first.
      pending.splice(pending.indexOf(run), 1);
      run.send();
      run = null;
    }
    if (run === null) {
      run = new NodeRun(this.redirect, node, this.affinity, proto, request.buf);
      pending.push(run);
    }
    run.add(request.start, request.end, slot, sink);
  }

  /** Sends the pending runs. */
  flush(): void {
    const pending = this.pending;
    if (pending.length === 0) return;
    this.pending = [];
    for (let i = 0; i < pending.length; i++) pending[i].send();
  }
}

/** Up to this many bytes a request is copied into a run's payload by a loop, not Buffer.copy. */
const SHORT_COPY = 64;

/**
 * One node's part of a client's run: requests lying in `buf`, sent in one write on the
 * client's shared connection to that node. It is the sink of all their replies, which come
 * in order.
 */
class NodeRun implements ReplySink {
  /** [start, end) of each request in `buf`. */
  private readonly spans: number[] = [];
  private readonly slots: number[] = [];
  private readonly sinks: ReplySink[] = [];
  /** The index of the request the next reply answers. */
  private next = 0;

  constructor(
    private readonly redirect: RedirectContext,
    readonly node: UpstreamNode,
    private readonly affinity: number,
    readonly proto: Protocol,
    readonly buf: Buffer,
  ) {}

  add(start: number, end: number, slot: number, sink: ReplySink): void {
    this.spans.push(start, end);
    this.slots.push(slot);
    this.sinks.push(sink);
  }

  send(): void {
    const count = this.sinks.length;
    const conn = this.node.sharedConnection(this.affinity, this.proto);
    if (conn === null) {
      // Unreachable now: each request alone, through the redirect handling (it waits and retries).
      for (let i = 0; i < count; i++) this.following(i).send(this.node);
      return;
    }
    conn.sendRepeated(this.payload(), this, count, 0);
  }

  reply(data: Buffer): void {
    const i = this.next++;
    if (data[0] === 45 /* - */) this.following(i).reply(data);
    else this.sinks[i].reply(data);
  }

  fail(message: string): void {
    this.following(this.next++).fail(message);
  }

  /** The requests as one buffer: a view when they lie back to back, else a copy. */
  private payload(): Buffer {
    const spans = this.spans;
    const buf = this.buf;
    const n = spans.length;
    let size = 0;
    let adjacent = true;
    for (let i = 0; i < n; i += 2) {
      size += spans[i + 1] - spans[i];
      if (i > 0 && spans[i] !== spans[i - 1]) adjacent = false;
    }
    if (adjacent) return buf.subarray(spans[0], spans[n - 1]);
    const out = Buffer.allocUnsafe(size);
    let at = 0;
    for (let i = 0; i < n; i += 2) {
      const start = spans[i];
      const end = spans[i + 1];
      if (end - start <= SHORT_COPY) for (let k = start; k < end; k++) out[at++] = buf[k];
      else at += buf.copy(out, at, start, end);
    }
    return out;
  }

  /** Request i's own redirect handler, taking over where the run left it. */
  private following(i: number): RedirectingSink {
    return new RedirectingSink(
      this.redirect,
      this.buf.subarray(this.spans[2 * i], this.spans[2 * i + 1]),
      null,
      this.sinks[i],
      this.affinity,
      this.slots[i],
      this.proto,
    ).at(this.node);
  }
}
