import { expect } from "chai";
import { EventQueue } from "../src/gears/events/event-queue.js";
import type { KeyEvent } from "../src/gears/events/keyspace-source.js";

/**
 * The event queue on its own (no Redis): past its first events, kept as objects, events are
 * stored compactly (columns, shard and event names by number). Events of several shards, as a
 * cluster's notifications bring them, come back whole and in order, with their tags, and each
 * shard's oldest waiting event is found in either part.
 */
const SHARDS = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"];
const N = 40_000;

const eventAt = (i: number): KeyEvent => ({
  key: Buffer.from(`k:${i}`),
  event: i % 5 === 0 ? "del" : "set",
  shard: SHARDS[i % 3],
  at: 1_000_000 + i,
  db: i % 2,
  ...(i % 7 === 0 ? { value: `v${i}` } : {}),
});

describe("event queue: events of several shards past the objects kept", () => {
  it("come back in order with their key, event, shard, time, database, value and tag; oldestAtOf finds each shard's first", () => {
    const q = new EventQueue();
    for (let i = 0; i < N; i++) q.push(eventAt(i), i % 4);
    expect(q.length).to.equal(N);
    let seen = 0;
    while (q.length > 0) {
      // Each shard's oldest waiting event: the next of its own, whichever part holds it.
      for (let s = 0; s < 3; s++) {
        const next = seen + ((s - (seen % 3) + 3) % 3);
        expect(q.oldestAtOf(SHARDS[s]), `shard ${s} at ${seen}`).to.equal(
          next < N ? 1_000_000 + next : undefined,
        );
      }
      const tags: number[] = [];
      const batch = q.peek(4_999, tags);
      q.drop(batch.length);
      for (let j = 0; j < batch.length; j++) {
        const i = seen + j;
        const want = eventAt(i);
        const got = batch[j];
        if (
          got.key.toString() !== want.key.toString() ||
          got.event !== want.event ||
          got.shard !== want.shard ||
          got.at !== want.at ||
          got.db !== want.db ||
          got.value !== want.value ||
          tags[j] !== i % 4
        )
          expect({ ...got, key: got.key.toString(), tag: tags[j] }, `event ${i}`).to.deep.equal({
            ...want,
            key: want.key.toString(),
            tag: i % 4,
          });
      }
      seen += batch.length;
    }
    expect(seen).to.equal(N);
  });
});
