import { decimalLength } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import type { Protocol } from "../resp/values.js";
import type { ClusterTopology } from "../upstream/cluster-topology.js";
import type { UpstreamNode } from "../upstream/node.js";
import type { ReplySink } from "../upstream/reply-sink.js";
import { keySlotIn } from "./key-slot.js";
import { RedirectingSink, type RedirectContext } from "./redirect.js";
import { SlotGroups } from "./slot-groups.js";
import { splitMerge, splitStride, SplitJob, SplitPart } from "./split.js";

/**
 * Router.runSlotOf's answer for a splittable command (MSET, MGET, DEL...) whose keys span
 * slots: it joins the runs all the same, as one part per slot (add() splits it). Not a slot
 * (slots end at 16,383), and >= 0 so that the session treats it as one.
 */
export const SPLIT_RUN = 16384;

/**
 * A client's single-slot commands in front of a cluster, gathered per node while its input
 * is read and sent as one write per node: a pipeline of 16 GETs over 3 masters costs three
 * pushes, and no argument views, no payload view and no redirect handler per request. The
 * slot comes from the key's bytes in the client's input (Request.argHash). A command whose
 * keys span slots (SPLIT_RUN) is cut into one command per slot from the same bytes, each
 * part joining its node's run; their replies merge in a SplitJob (split.ts). Replies pass
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

  /**
   * Adds `request`, whose keys hash to `slot` (Router.runSlotOf; SPLIT_RUN for keys of several
   * slots), answered into `sink` over `proto`.
   */
  add(request: Request, slot: number, sink: ReplySink, proto: Protocol): void {
    if (slot === SPLIT_RUN) return this.addSplit(request, sink, proto);
    this.runFor(this.topology.nodeForSlot(slot), request.buf, proto).add(
      request.start,
      request.end,
      slot,
      sink,
    );
  }

  /** Sends the pending runs. */
  flush(): void {
    const pending = this.pending;
    if (pending.length === 0) return;
    this.pending = [];
    for (let i = 0; i < pending.length; i++) pending[i].send();
  }

  /** The pending run for `node` that can take requests lying in `buf`, made if needed. */
  private runFor(node: UpstreamNode, buf: Buffer, proto: Protocol): NodeRun {
    const pending = this.pending;
    for (let i = 0; i < pending.length; i++) {
      const run = pending[i];
      if (run.node !== node) continue;
      if (run.buf === buf && run.proto === proto) return run;
      // Another input buffer (the client's input grew) or protocol: the run so far leaves first.
      pending.splice(i, 1);
      run.send();
      break;
    }
    const run = new NodeRun(this.redirect, node, this.affinity, proto, buf);
    pending.push(run);
    return run;
  }

  /**
   * A splittable command over several slots: per slot, a command of the same name with that
   * slot's keys (and values) in their order, copied from the request's bytes into the run of
   * the slot's node. Parts are numbered in order of their first key, as split() does.
   */
  private addSplit(request: Request, sink: ReplySink, proto: Protocol): void {
    const buf = request.buf;
    // Runs on another buffer or protocol leave first, so no send (which may answer at once)
    // happens while the scratch arrays below are in use.
    const pending = this.pending;
    for (let i = pending.length - 1; i >= 0; i--) {
      const run = pending[i];
      if (run.buf !== buf || run.proto !== proto) {
        pending.splice(i, 1);
        run.send();
      }
    }
    const stride = splitStride(request.name)!;
    const count = (request.argc - 1) / stride;
    if (itemStart.length < count) {
      itemStart = new Int32Array(count * 2);
      itemEnd = new Int32Array(count * 2);
    }
    slotGroups.reserve(count);
    const slotOfItem = slotGroups.slotOfItem;
    // The request's arguments walked in place: the name's span, then per item (a key and its
    // stride - 1 values, back to back) its span and its key's slot.
    let at = request.start + 1;
    while (buf[at] !== 10) at++;
    at++;
    const nameStart = at;
    at = skipBulk(buf, at);
    const nameEnd = at;
    for (let k = 0; k < count; k++) {
      itemStart[k] = at;
      // The key: its header (checked by the parser), then its bytes.
      let len = 0;
      let c: number;
      for (at++; (c = buf[at]) !== 13; at++) len = len * 10 + c - 48;
      const keyStart = at + 2;
      const slot = keySlotIn(buf, keyStart, keyStart + len);
      at = keyStart + len + 2;
      for (let j = 1; j < stride; j++) at = skipBulk(buf, at);
      itemEnd[k] = at;
      slotOfItem[k] = slot;
    }
    slotGroups.group(count);
    const { slots, heads, sizes, itemGroup } = slotGroups;
    const merge = splitMerge(request.name)!;
    const job = new SplitJob(
      this.redirect,
      merge,
      slots.length,
      count,
      merge === "position" ? itemGroup.slice(0, count) : null,
      sink,
      this.affinity,
      proto,
    );
    for (let g = 0; g < slots.length; g++) {
      const slot = slots[g];
      this.runFor(this.topology.nodeForSlot(slot), buf, proto).addPart(
        1 + sizes[g] * stride,
        nameStart,
        nameEnd,
        heads[g],
        slot,
        new SplitPart(job, g),
      );
    }
  }
}

/** The end of the bulk string whose '$' is at `at` (a header the parser checked). */
function skipBulk(buf: Buffer, at: number): number {
  let len = 0;
  let c: number;
  for (at++; (c = buf[at]) !== 13; at++) len = len * 10 + c - 48;
  return at + 2 + len + 2;
}

/** The grouping of split commands into runs (its own: see SlotGroups). */
const slotGroups = new SlotGroups();
/** Per item of the split under way: its span in the input. */
let itemStart = new Int32Array(64);
let itemEnd = new Int32Array(64);

/** Up to this many bytes a span is copied into a run's payload by a loop, not Buffer.copy. */
const SHORT_COPY = 64;

/**
 * One node's part of a client's run: requests lying in `buf`, sent in one write on the
 * client's shared connection to that node. It is the sink of all their replies, which come
 * in order.
 */
class NodeRun implements ReplySink {
  /**
   * [start, end) in `buf` of each request, back to back. A split command's part is a pair
   * (-argc, spans) for its array header, then the `spans` pairs of its name and items.
   */
  private readonly spans: number[] = [];
  private readonly slots: number[] = [];
  private readonly sinks: ReplySink[] = [];
  /** Whether a split command's part is among the requests (the payload is then always written). */
  private parts = false;
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

  /**
   * A split command's part: an array of `argc` from the name in [nameStart, nameEnd) and the
   * items chained from `first` (ClusterRuns' scratch arrays, read now).
   */
  addPart(
    argc: number,
    nameStart: number,
    nameEnd: number,
    first: number,
    slot: number,
    sink: ReplySink,
  ): void {
    const spans = this.spans;
    const header = spans.length;
    spans.push(-argc, 0, nameStart, nameEnd);
    let last = spans.length - 1;
    const next = slotGroups.nextInGroup;
    for (let k = first; k !== -1; k = next[k]) {
      // Items of the part that lie back to back in the input make one span.
      if (spans[last] === itemStart[k]) spans[last] = itemEnd[k];
      else {
        spans.push(itemStart[k], itemEnd[k]);
        last += 2;
      }
    }
    spans[header + 1] = (spans.length - header - 2) / 2;
    this.parts = true;
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
    const n = spans.length;
    if (!this.parts) {
      let adjacent = true;
      for (let i = 2; i < n && adjacent; i += 2) adjacent = spans[i] === spans[i - 1];
      if (adjacent) return this.buf.subarray(spans[0], spans[n - 1]);
    }
    return this.written(0, n);
  }

  /** spans[from, to) written out: requests copied, a part's array header written. */
  private written(from: number, to: number): Buffer {
    const spans = this.spans;
    const buf = this.buf;
    let size = 0;
    for (let i = from; i < to; i += 2) {
      const start = spans[i];
      size += start < 0 ? 3 + decimalLength(-start) : spans[i + 1] - start;
    }
    const out = Buffer.allocUnsafe(size);
    let at = 0;
    for (let i = from; i < to; i += 2) {
      const start = spans[i];
      if (start < 0) {
        out[at++] = 42; /* * */
        let argc = -start;
        const len = decimalLength(argc);
        for (let d = len - 1; d >= 0; d--) {
          out[at + d] = 48 + (argc % 10);
          argc = Math.floor(argc / 10);
        }
        at += len;
        out[at++] = 13;
        out[at++] = 10;
        continue;
      }
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
      this.requestBytes(i),
      null,
      this.sinks[i],
      this.affinity,
      this.slots[i],
      this.proto,
    ).at(this.node);
  }

  /** Request i's bytes, for its redirect handler (rare: a view of the input unless a part). */
  private requestBytes(i: number): Buffer {
    const spans = this.spans;
    let at = 0;
    for (let r = 0; r < i; r++) at += spans[at] < 0 ? 2 + 2 * spans[at + 1] : 2;
    if (spans[at] >= 0) return this.buf.subarray(spans[at], spans[at + 1]);
    return this.written(at, at + 2 + 2 * spans[at + 1]);
  }
}
