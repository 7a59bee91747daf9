import { expect } from "chai";
import { pino } from "pino";
import { Partitions } from "../src/gears/partitions.js";
import { keySlot } from "../src/routing/key-slot.js";
import { Router } from "../src/routing/router.js";
import { Shards } from "../src/routing/shards.js";
import { ClusterTopology } from "../src/upstream/cluster-topology.js";
import { startCluster, type RedisCluster } from "./harness/index.js";

/**
 * Partitions.of (src/gears/partitions.ts), which every batch of events asks for: shared while
 * the slot map stays the same, made again as soon as a slot moves, against a real 3-master
 * cluster's topology.
 */
describe("Partitions: the shards of a batch, shared while the slot map holds", function () {
  this.timeout(60_000);
  let cluster: RedisCluster;
  let topology: ClusterTopology;
  let shards: Shards;

  before(async () => {
    cluster = await startCluster({ masters: 3 });
    topology = new ClusterTopology(
      cluster.nodes.map((n) => ({ host: n.host, port: n.port })),
      { connectTimeoutMs: 2000, sharedConnections: 1 },
      pino({ level: "silent" }),
    );
    await topology.refresh();
    shards = new Shards(new Router(topology, null, 5000));
  });
  after(async () => {
    topology?.close();
    await cluster?.stop();
  });

  it("is the same object, and the same slot ranges, until a slot moves; then follows the move", () => {
    const first = Partitions.of(shards, 0);
    expect(Partitions.of(shards, 0)).to.equal(first);
    expect(topology.slotRanges()).to.equal(topology.slotRanges());
    expect(first.count).to.equal(3);
    // Another database has its own (the partitions' commands run in it).
    expect(Partitions.of(shards, 3)).to.not.equal(first);
    expect(Partitions.of(shards, 3).db).to.equal(3);

    const slot = keySlot("partitions:moved");
    const before = first.partitionOfSlot(slot);
    const target = topology.masters()[(before + 1) % 3];
    // A MOVED reply's effect on the map (the refresh it asks for later puts the slot back).
    topology.moved(slot, target);
    const after = Partitions.of(shards, 0);
    expect(after).to.not.equal(first);
    expect(after.partitionOfSlot(slot)).to.equal((before + 1) % 3);
    expect(first.partitionOfSlot(slot), "a batch that started before keeps its own").to.equal(before);
    expect(Partitions.of(shards, 0)).to.equal(after);
  });
});
