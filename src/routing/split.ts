import { keySlot } from "./key-slot.js";
import { encodeError, OK } from "../resp/encode.js";
import { CONNECTION_LOST } from "../upstream/connection.js";
import type { ClusterTopology } from "../upstream/cluster-topology.js";
import type { UpstreamNode } from "../upstream/node.js";
import { sinkInProtocol, type ReplySink } from "../upstream/reply-sink.js";
import type { Protocol } from "../resp/values.js";
import { RedirectingSink, type RedirectContext } from "./redirect.js";

/** How the per-slot replies of a split command become the one reply Redis would give. */
type MergeKind = "sum" | "ok" | "position";

/** Multi-key commands that may be split by slot: how their arguments group, and how replies merge. */
const SPLITTABLE = new Map<string, { stride: number; merge: MergeKind }>([
  ["mget", { stride: 1, merge: "position" }],
  ["mset", { stride: 2, merge: "ok" }],
  ["del", { stride: 1, merge: "sum" }],
  ["unlink", { stride: 1, merge: "sum" }],
  ["exists", { stride: 1, merge: "sum" }],
  ["touch", { stride: 1, merge: "sum" }],
]);

export function isSplittable(name: string): boolean {
  return SPLITTABLE.has(name);
}

/** split() sent the parts: the command needs nothing more. */
export const SPLIT_DONE = -3;

/**
 * A multi-key command (MGET, MSET, DEL...) whose keys span slots, run as one command per
 * slot: the commands for one node leave in one write on the client's shared connection
 * (a cluster node refuses keys of two slots in one command, CROSSSLOT), and their replies
 * merge into what one Redis would answer. Returns SPLIT_DONE, or the one slot of all the
 * keys (-1 without keys) when there was nothing to split.
 */
export function split(
  redirect: RedirectContext,
  topology: ClusterTopology,
  name: string,
  argv: Buffer[],
  sink: ReplySink,
  affinity: number,
  proto: Protocol,
): number {
  const how = SPLITTABLE.get(name)!;
  const { stride } = how;
  const count = (argv.length - 1) / stride;
  // Without keys the server gives the arity error itself; with a key left over, so do we.
  if (count < 1) return -1;
  if (!Number.isInteger(count)) {
    sink.reply(encodeError(`ERR wrong number of arguments for '${name}' command`));
    return SPLIT_DONE;
  }
  const slotOfItem = new Int32Array(count);
  const firstSlot = keySlot(argv[1]);
  let single = true;
  slotOfItem[0] = firstSlot;
  for (let k = 1; k < count; k++) {
    const s = keySlot(argv[1 + k * stride]);
    slotOfItem[k] = s;
    if (s !== firstSlot) single = false;
  }
  if (single) return firstSlot;
  sink = sinkInProtocol(sink, proto);

  const groupOfSlot = new Map<number, number>();
  const groupSlots: number[] = [];
  const groupSizes: number[] = [];
  const groupOfItem = new Int32Array(count);
  for (let k = 0; k < count; k++) {
    const s = slotOfItem[k];
    let g = groupOfSlot.get(s);
    if (g === undefined) {
      g = groupSlots.length;
      groupOfSlot.set(s, g);
      groupSlots.push(s);
      groupSizes.push(0);
    }
    groupOfItem[k] = g;
    groupSizes[g]++;
  }
  const job = new SplitJob(redirect, how.merge, groupSlots.length, count, groupOfItem, sink, affinity);

  // Nodes in order of first appearance, each with its groups.
  const nodes: UpstreamNode[] = [];
  const groupsOfNode: number[][] = [];
  for (let g = 0; g < groupSlots.length; g++) {
    const node = topology.nodeForSlot(groupSlots[g]);
    let n = nodes.indexOf(node);
    if (n === -1) {
      n = nodes.length;
      nodes.push(node);
      groupsOfNode.push([]);
    }
    groupsOfNode[n].push(g);
  }

  // Each group's command written at its place in its node's payload.
  const itemsOfGroup = groupSizes.map((size) => new Int32Array(size));
  const filled = new Int32Array(groupSlots.length);
  for (let k = 0; k < count; k++) {
    const g = groupOfItem[k];
    itemsOfGroup[g][filled[g]++] = k;
  }
  const head = argv[0];
  for (let n = 0; n < nodes.length; n++) {
    const groups = groupsOfNode[n];
    let size = 0;
    for (const g of groups) size += commandSize(head, argv, itemsOfGroup[g], stride);
    const payload = Buffer.allocUnsafe(size);
    const sinks: ReplySink[] = new Array<ReplySink>(groups.length);
    let at = 0;
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i];
      const end = writeCommand(payload, at, head, argv, itemsOfGroup[g], stride);
      sinks[i] = new PartSink(job, g, groupSlots[g], nodes[n], payload.subarray(at, end));
      at = end;
    }
    const conn = nodes[n].sharedConnection(affinity, 2);
    if (conn === null) for (const s of sinks) (s as PartSink).resend();
    else conn.sendMany(payload, sinks, 0);
  }
  return SPLIT_DONE;
}

/** Bytes of `*N $name $arg...` for the items of one group. */
function commandSize(head: Buffer, argv: Buffer[], items: Int32Array, stride: number): number {
  const args = 1 + items.length * stride;
  let size = 3 + digits(args) + 5 + digits(head.length) + head.length;
  for (const k of items) {
    for (let j = 1; j <= stride; j++) {
      const len = argv[k * stride + j].length;
      size += 5 + digits(len) + len;
    }
  }
  return size;
}

function writeCommand(
  out: Buffer,
  at: number,
  head: Buffer,
  argv: Buffer[],
  items: Int32Array,
  stride: number,
): number {
  at = writeHeader(out, at, 42 /* * */, 1 + items.length * stride);
  at = writeBulk(out, at, head);
  for (const k of items) for (let j = 1; j <= stride; j++) at = writeBulk(out, at, argv[k * stride + j]);
  return at;
}

function writeBulk(out: Buffer, at: number, arg: Buffer): number {
  at = writeHeader(out, at, 36 /* $ */, arg.length);
  at += arg.copy(out, at);
  out[at++] = 13;
  out[at++] = 10;
  return at;
}

function writeHeader(out: Buffer, at: number, type: number, n: number): number {
  out[at++] = type;
  const len = digits(n);
  for (let i = len - 1; i >= 0; i--) {
    out[at + i] = 48 + (n % 10);
    n = Math.floor(n / 10);
  }
  at += len;
  out[at++] = 13;
  out[at++] = 10;
  return at;
}

function digits(n: number): number {
  let d = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    d++;
  }
  return d;
}

/**
 * One slot's part of a split command, sent in its node's batch. A redirect or a retryable
 * error hands the part to a RedirectingSink, which follows it as for any other command.
 */
class PartSink implements ReplySink {
  constructor(
    private readonly job: SplitJob,
    private readonly group: number,
    private readonly slot: number,
    private readonly node: UpstreamNode,
    private readonly payload: Buffer,
  ) {}

  reply(data: Buffer): void {
    if (data[0] === 45 /* - */) this.following().reply(data);
    else this.job.settle(this.group, data);
  }

  fail(message: string): void {
    if (message === CONNECTION_LOST) this.job.settle(this.group, encodeError(message));
    else this.following().fail(message);
  }

  /** Sends the part alone, through the redirect handling (its node is unreachable now). */
  resend(): void {
    this.following().send(this.node);
  }

  private following(): RedirectingSink {
    return new RedirectingSink(
      this.job.redirect,
      this.payload,
      null,
      this.job.part(this.group),
      this.job.affinity,
      this.slot,
    ).at(this.node);
  }
}

/** The replies of a split command's parts, merged once all are in. */
class SplitJob {
  private readonly replies: Buffer[];
  private remaining: number;

  constructor(
    readonly redirect: RedirectContext,
    private readonly merge: MergeKind,
    groups: number,
    private readonly items: number,
    /** For MGET: which group answers for each key position. */
    private readonly groupOfItem: Int32Array,
    private readonly target: ReplySink,
    readonly affinity: number,
  ) {
    this.replies = new Array<Buffer>(groups);
    this.remaining = groups;
  }

  part(group: number): ReplySink {
    return {
      reply: (data) => this.settle(group, data),
      fail: (message) => this.settle(group, encodeError(message)),
    };
  }

  settle(group: number, data: Buffer): void {
    this.replies[group] = data;
    if (--this.remaining === 0) this.target.reply(this.merged());
  }

  private merged(): Buffer {
    const replies = this.replies;
    // The first part's error, as the parts are ordered by their first key.
    for (const r of replies) if (r[0] === 45 /* - */) return r;
    if (this.merge === "ok") return OK;
    if (this.merge === "sum") {
      let sum = 0;
      for (const r of replies) sum += readInteger(r, 1);
      return Buffer.from(`:${sum}\r\n`, "latin1");
    }
    return mergeArrays(replies, this.groupOfItem, this.items);
  }
}

/** The integer written from `at` up to its CRLF. */
function readInteger(buf: Buffer, at: number): number {
  let negative = false;
  if (buf[at] === 45 /* - */) {
    negative = true;
    at++;
  }
  let n = 0;
  for (let c = buf[at]; c !== 13; c = buf[++at]) n = n * 10 + (c - 48);
  return negative ? -n : n;
}

/**
 * MGET's parts put back together: each part is an array of bulk strings (or nulls) for the
 * keys of its slot, in order; the elements are copied as they came, at their key's position.
 */
function mergeArrays(replies: Buffer[], groupOfItem: Int32Array, items: number): Buffer {
  // Where each part's next element starts, and the merged size.
  const cursor = new Int32Array(replies.length);
  let size = 3 + digits(items);
  for (let g = 0; g < replies.length; g++) {
    const r = replies[g];
    const body = r.indexOf(10) + 1;
    cursor[g] = body;
    size += r.length - body;
  }
  const out = Buffer.allocUnsafe(size);
  let at = writeHeader(out, 0, 42 /* * */, items);
  for (let k = 0; k < items; k++) {
    const g = groupOfItem[k];
    const r = replies[g];
    const start = cursor[g];
    const end = elementEnd(r, start);
    at += r.copy(out, at, start, end);
    cursor[g] = end;
  }
  return out;
}

/** The end of the bulk string (or null) starting at `at`. */
function elementEnd(buf: Buffer, at: number): number {
  const lineEnd = buf.indexOf(10, at) + 1;
  if (buf[at + 1] === 45 /* - */) return lineEnd;
  return lineEnd + readInteger(buf, at + 1) + 2;
}
