import { keySlot as calculateSlot } from "../routing/key-slot.js";
import type { Shards, SlotRange } from "../routing/shards.js";
import type { Arg } from "../resp/encode.js";
import type { RespValue } from "../resp/values.js";
import type { ShardAccess } from "./readers.js";

/** The last Partitions made for each Shards and database (Partitions.of). */
const latest = new WeakMap<Shards, Map<number, Partitions>>();

/**
 * The shards of an execution, frozen when it starts: partition i is the i-th master in
 * slot order. The guest gets the same slot ranges so repartition() needs no host call.
 */
export class Partitions {
  /**
   * The current shards, shared while the slot map stays the same: what a batch of events
   * needs, without walking the slot map and filling the slot table again for every batch.
   */
  static of(shards: Shards, db: number): Partitions {
    let byDb = latest.get(shards);
    if (byDb === undefined) latest.set(shards, (byDb = new Map()));
    const last = byDb.get(db);
    if (last !== undefined && last.ranges === shards.slotRanges()) return last;
    const made = new Partitions(shards, db);
    byDb.set(db, made);
    return made;
  }

  readonly count: number;
  readonly ranges: readonly SlotRange[];
  readonly shardIds: string[];
  /** Each partition's master, as the shard facade names it. */
  private readonly nodes: string[];
  private readonly owner = new Int16Array(16384);

  constructor(
    private readonly shards: Shards,
    /** The database every partition is read and written in (the client's; 0 in a cluster). */
    readonly db = 0,
  ) {
    const masters = shards.masters();
    this.count = masters.length;
    this.ranges = shards.slotRanges();
    this.shardIds = masters.map((m) => m.clusterId);
    this.nodes = masters.map((m) => m.id);
    for (const [start, end, index] of this.ranges) this.owner.fill(index, start, end + 1);
  }

  partitionOfSlot(slot: number): number {
    return this.owner[slot];
  }

  /** Commands sent to one partition's master directly (keyless commands of a step run there). */
  shard(partition: number): Required<ShardAccess> {
    const node = this.nodes[partition];
    const shards = this.shards;
    return {
      call: (argv: readonly Arg[]): Promise<RespValue> => shards.call(node, argv, partition, this.db),
      callRaw: (payload: Buffer): Promise<Buffer> => shards.callRaw(node, payload, partition, this.db),
      callMany: (payload: Buffer, count: number): Promise<Buffer[]> =>
        shards.pipeline(node, payload, count, partition, this.db),
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
