import { keySlot } from "./key-slot.js";
import { SlotGroups } from "./slot-groups.js";
import { findCrlf } from "../resp/byte-queue.js";
import { decimalLength, encodeError, OK } from "../resp/encode.js";
import { CONNECTION_LOST } from "../upstream/connection.js";
import type { ClusterTopology } from "../upstream/cluster-topology.js";
import type { UpstreamNode } from "../upstream/node.js";
import type { ReplySink } from "../upstream/reply-sink.js";
import type { Protocol } from "../resp/values.js";
import { RedirectingSink, type RedirectContext } from "./redirect.js";

/** How the per-slot replies of a split command become the one reply Redis would give. */
export type MergeKind = "sum" | "ok" | "position";

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

/** Arguments per key of a splittable command (MSET 2, MGET 1); undefined for others. */
export function splitStride(name: string): number | undefined {
  return SPLITTABLE.get(name)?.stride;
}

/** How a splittable command's per-slot replies merge; undefined for others. */
export function splitMerge(name: string): MergeKind | undefined {
  return SPLITTABLE.get(name)?.merge;
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
  slotGroups.reserve(count);
  const slotOfKey = slotGroups.slotOfItem;
  const firstSlot = keySlot(argv[1]);
  slotOfKey[0] = firstSlot;
  let k = 1;
  while (k < count && (slotOfKey[k] = keySlot(argv[1 + k * stride])) === firstSlot) k++;
  if (k === count) return firstSlot;
  // The parts go in the client's protocol, on the connections its other commands take, so
  // that a node runs them in the order the client sent them; the merge reads either protocol.
  sendParts(redirect, topology, how.merge, argv, stride, count, k + 1, sink, affinity, proto);
  return SPLIT_DONE;
}

/** The grouping of split() (its own: see SlotGroups). */
const slotGroups = new SlotGroups();

function sendParts(
  redirect: RedirectContext,
  topology: ClusterTopology,
  merge: MergeKind,
  argv: Buffer[],
  stride: number,
  count: number,
  hashed: number,
  sink: ReplySink,
  affinity: number,
  proto: Protocol,
): void {
  const slotOfKey = slotGroups.slotOfItem;
  for (let k = hashed; k < count; k++) slotOfKey[k] = keySlot(argv[1 + k * stride]);
  slotGroups.group(count);
  const { slots, heads, sizes, itemGroup } = slotGroups;
  const job = new SplitJob(
    redirect,
    merge,
    slots.length,
    count,
    merge === "position" ? itemGroup.slice(0, count) : null,
    sink,
    affinity,
    proto,
  );

  // The groups of each node, nodes in order of first appearance.
  const nodes: UpstreamNode[] = [];
  const groupsOfNode: number[][] = [];
  for (let g = 0; g < slots.length; g++) {
    const node = topology.nodeForSlot(slots[g]);
    let n = nodes.indexOf(node);
    if (n === -1) {
      n = nodes.length;
      nodes.push(node);
      groupsOfNode.push([]);
    }
    groupsOfNode[n].push(g);
  }

  const head = argv[0];
  const batches = new Array<NodeBatch>(nodes.length);
  for (let n = 0; n < nodes.length; n++) {
    const groups = groupsOfNode[n];
    let size = 0;
    for (const g of groups) size += commandSize(head, argv, heads[g], sizes[g], stride);
    const payload = Buffer.allocUnsafe(size);
    const ends: number[] = new Array<number>(groups.length);
    let at = 0;
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i];
      at = writeCommand(payload, at, head, argv, heads[g], sizes[g], stride);
      ends[i] = at;
    }
    batches[n] = new NodeBatch(job, nodes[n], payload, groups, ends, slots);
  }
  // Sent once every payload is written: a send may answer at once (a dead connection), and
  // what that answer sets off must not find the scratch arrays half used.
  for (const batch of batches) batch.send();
}

/** Bytes of `*N $name $arg...` for the `size` keys of the group chained from `first`. */
function commandSize(head: Buffer, argv: Buffer[], first: number, size: number, stride: number): number {
  let bytes = 3 + decimalLength(1 + size * stride) + 5 + decimalLength(head.length) + head.length;
  const next = slotGroups.nextInGroup;
  for (let k = first; k !== -1; k = next[k]) {
    for (let j = 1; j <= stride; j++) {
      const len = argv[k * stride + j].length;
      bytes += 5 + decimalLength(len) + len;
    }
  }
  return bytes;
}

function writeCommand(
  out: Buffer,
  at: number,
  head: Buffer,
  argv: Buffer[],
  first: number,
  size: number,
  stride: number,
): number {
  at = writeHeader(out, at, 42 /* * */, 1 + size * stride);
  at = writeBulk(out, at, head);
  const next = slotGroups.nextInGroup;
  for (let k = first; k !== -1; k = next[k]) {
    for (let j = 1; j <= stride; j++) at = writeBulk(out, at, argv[k * stride + j]);
  }
  return at;
}

/** Up to this length a byte loop copies faster than Buffer.copy, whose call costs more. */
const SHORT_COPY = 32;

function writeBulk(out: Buffer, at: number, arg: Buffer): number {
  const len = arg.length;
  at = writeHeader(out, at, 36 /* $ */, len);
  if (len <= SHORT_COPY) for (let i = 0; i < len; i++) out[at++] = arg[i];
  else at += arg.copy(out, at);
  out[at++] = 13;
  out[at++] = 10;
  return at;
}

function writeHeader(out: Buffer, at: number, type: number, n: number): number {
  out[at++] = type;
  const len = decimalLength(n);
  for (let i = len - 1; i >= 0; i--) {
    out[at + i] = 48 + (n % 10);
    n = Math.floor(n / 10);
  }
  at += len;
  out[at++] = 13;
  out[at++] = 10;
  return at;
}

/**
 * The parts of a split command for one node, sent in one write: the i-th reply answers the
 * i-th group. A redirect or a retryable error hands that part to a RedirectingSink, which
 * follows it as for any other command.
 */
class NodeBatch implements ReplySink {
  private next = 0;

  constructor(
    private readonly job: SplitJob,
    private readonly node: UpstreamNode,
    private readonly payload: Buffer,
    private readonly groups: number[],
    /** Where each group's command ends in the payload. */
    private readonly ends: number[],
    private readonly slots: number[],
  ) {}

  reply(data: Buffer): void {
    const i = this.next++;
    if (data[0] === 45 /* - */) this.following(i).reply(data);
    else this.job.settle(this.groups[i], data);
  }

  fail(message: string): void {
    const i = this.next++;
    if (message === CONNECTION_LOST) this.job.settle(this.groups[i], encodeError(message));
    else this.following(i).fail(message);
  }

  send(): void {
    const conn = this.node.sharedConnection(this.job.affinity, this.job.proto);
    if (conn !== null) conn.sendRepeated(this.payload, this, this.groups.length, 0);
    // Unreachable now: each part alone, through the redirect handling (it waits and retries).
    else for (let i = 0; i < this.groups.length; i++) this.following(i).send(this.node);
  }

  private following(i: number): RedirectingSink {
    const g = this.groups[i];
    return new RedirectingSink(
      this.job.redirect,
      this.payload.subarray(i === 0 ? 0 : this.ends[i - 1], this.ends[i]),
      null,
      this.job.part(g),
      this.job.affinity,
      this.slots[g],
      this.job.proto,
    ).at(this.node);
  }
}

/** The replies of a split command's parts, merged once all are in. */
export class SplitJob {
  private readonly replies: Buffer[];
  private remaining: number;

  constructor(
    readonly redirect: RedirectContext,
    private readonly merge: MergeKind,
    groups: number,
    private readonly items: number,
    /** For MGET: which group answers for each key position. */
    private readonly groupOfItem: Int32Array | null,
    private readonly target: ReplySink,
    readonly affinity: number,
    /** The client's protocol: the parts' replies come in it, and so does the merged one. */
    readonly proto: Protocol,
  ) {
    this.replies = new Array<Buffer>(groups);
    this.remaining = groups;
  }

  part(group: number): ReplySink {
    return new SplitPart(this, group);
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
    return mergeArrays(replies, this.groupOfItem!, this.items);
  }
}

/** The sink of one part of a split command: its reply settles its group. */
export class SplitPart implements ReplySink {
  constructor(
    private readonly job: SplitJob,
    private readonly group: number,
  ) {}

  reply(data: Buffer): void {
    this.job.settle(this.group, data);
  }

  fail(message: string): void {
    this.job.settle(this.group, encodeError(message));
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
  let size = 3 + decimalLength(items);
  for (let g = 0; g < replies.length; g++) {
    const r = replies[g];
    const body = findCrlf(r, 0, r.length) + 2;
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

/** The end of the bulk string (or null, RESP2 or RESP3) starting at `at`. */
function elementEnd(buf: Buffer, at: number): number {
  if (buf[at] === 95 /* _, a RESP3 null */) return at + 3;
  // findCrlf scans a short header in JavaScript, cheaper than a native indexOf per element.
  const lineEnd = findCrlf(buf, at, buf.length) + 2;
  if (buf[at + 1] === 45 /* - */) return lineEnd;
  return lineEnd + readInteger(buf, at + 1) + 2;
}
