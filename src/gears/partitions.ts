import { keySlot as calculateSlot } from "../routing/key-slot.js";
import type { Router } from "../routing/router.js";
import type { Arg } from "../resp/encode.js";
import { PromiseSink, UpstreamError, type ReplySink } from "../upstream/reply-sink.js";
import { encodeCommand } from "../resp/encode.js";
import type { RespValue } from "../resp/values.js";
import type { ShardAccess } from "./readers.js";

/**
 * The shards of an execution, frozen when it starts: partition i is the i-th master in
 * slot order. The guest gets the same slot ranges so repartition() needs no host call.
 */
export class Partitions {
  readonly count: number;
  readonly ranges: [number, number, number][];
  readonly shardIds: string[];
  private readonly owner = new Int16Array(16384);

  constructor(private readonly router: Router) {
    const masters = router.topology.masters();
    this.count = masters.length;
    this.ranges = router.topology.slotRanges();
    this.shardIds = masters.map((m) => m.clusterId);
    for (const [start, end, index] of this.ranges) this.owner.fill(index, start, end + 1);
  }

  partitionOfSlot(slot: number): number {
    return this.owner[slot];
  }

  /** Commands sent to one partition's master directly (keyless commands of a step run there). */
  shard(partition: number): ShardAccess {
    const node = this.router.topology.masters()[partition];
    return {
      call: (argv: readonly Arg[]): Promise<RespValue> => {
        const sink = new PromiseSink();
        this.router.sendTo(node, encodeCommand(argv), sink, partition, -1);
        return sink.promise;
      },
      callRaw: (payload: Buffer): Promise<Buffer> => {
        const sink = new RawSink();
        this.router.sendTo(node, payload, sink, partition, -1);
        return sink.promise;
      },
      // No redirects here: a caller sees MOVED or ASK among the replies and reads again.
      callMany: (payload: Buffer, count: number): Promise<Buffer[]> => {
        const sink = new ManySink(count);
        const conn = node.sharedConnection(partition);
        if (conn === null) sink.fail(`ERR ${node.id} is unreachable`);
        else conn.sendMany(payload, new Array<ReplySink>(count).fill(sink), 0);
        return sink.promise;
      },
    };
  }

  /** A short string whose hash slot belongs to `partition` (the guest's hashtag()). */
  hashtag(partition: number): string {
    const table = slotNames();
    for (const [start, end, index] of this.ranges) {
      if (index === partition) return table[start] ?? table[end];
    }
    return table[0];
  }
}

/** Resolves with the reply's bytes, error replies included: the caller reads them itself. */
export class RawSink implements ReplySink {
  readonly promise: Promise<Buffer>;
  private resolve!: (v: Buffer) => void;
  private reject!: (e: Error) => void;

  constructor() {
    this.promise = new Promise<Buffer>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  reply(data: Buffer): void {
    this.resolve(data);
  }

  fail(message: string): void {
    this.reject(new UpstreamError(message));
  }
}

/** Takes the replies of `count` commands sent together, in order; one failure fails them all. */
class ManySink implements ReplySink {
  readonly promise: Promise<Buffer[]>;
  private readonly replies: Buffer[] = [];
  private resolve!: (v: Buffer[]) => void;
  private reject!: (e: Error) => void;
  private failed = false;

  constructor(private readonly count: number) {
    this.promise = new Promise<Buffer[]>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    if (count === 0) this.resolve([]);
  }

  reply(data: Buffer): void {
    if (this.failed) return;
    this.replies.push(data);
    if (this.replies.length === this.count) this.resolve(this.replies);
  }

  fail(message: string): void {
    if (this.failed) return;
    this.failed = true;
    this.reject(new UpstreamError(message));
  }
}

let names: string[] | null = null;

/** For every slot, the shortest decimal string that hashes to it (computed once). */
function slotNames(): string[] {
  if (names !== null) return names;
  const table = new Array<string>(16384);
  let missing = 16384;
  for (let i = 0; missing > 0; i++) {
    const s = String(i);
    const slot = calculateSlot(s);
    if (table[slot] === undefined) {
      table[slot] = s;
      missing--;
    }
  }
  names = table;
  return table;
}
