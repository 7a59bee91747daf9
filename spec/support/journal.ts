import { WriteJournal } from "../../src/gears/events/write-journal.js";
import type { KeyEvent } from "../../src/gears/events/keyspace-source.js";

/** A write journal alone (no Redis), every key on "shard-1", and the events it hands over. */
export function journal(): { j: WriteJournal; events: KeyEvent[] } {
  const events: KeyEvent[] = [];
  const j = new WriteJournal(
    () => "shard-1",
    (e) => events.push(...e),
  );
  return { j, events };
}

/** A keyevent notification of `key` in database 0, as the keyspace source hands it to confirm(). */
export function notification(key: string, event: string): KeyEvent {
  return { key: Buffer.from(key), event, shard: "shard-1", at: Date.now(), db: 0 };
}
