import { expect } from "chai";
import { WriteJournal } from "../src/gears/events/write-journal.js";
import type { KeyEvent } from "../src/gears/events/keyspace-source.js";

/**
 * Issue 14: the events the journal knows from write replies are handed over as soon as the
 * callback that read the replies is done (a microtask), all of that callback's together: not
 * at the loop's next check phase, after the rest of its I/O.
 */
describe("gears write journal: when the events of replies are handed over", () => {
  const argv = (key: string): Buffer[] => [Buffer.from("set"), Buffer.from(key), Buffer.from("v")];
  const OK = Buffer.from("+OK\r\n");

  function journal(): { journal: WriteJournal; batches: string[][] } {
    const batches: string[][] = [];
    const j = new WriteJournal(
      () => "shard",
      (events: KeyEvent[]) => batches.push(events.map((e) => `${e.key.toString()} ${e.event}`)),
    );
    return { journal: j, batches };
  }

  it("the replies of one callback go over together, before any I/O or timer of the loop", async () => {
    const { journal: j, batches } = journal();
    const a = j.watch("set", argv("a"), [Buffer.from("a")], 0)!;
    const b = j.watch("set", argv("b"), [Buffer.from("b")], 0)!;
    let immediate = false;
    setImmediate(() => (immediate = true));
    a(OK);
    b(OK);
    expect(batches).to.deep.equal([]);
    await Promise.resolve();
    expect(batches).to.deep.equal([["a set", "b set"]]);
    expect(immediate).to.equal(false);
  });

  it("flush() hands them over at once, and the queued hand-over then finds nothing; clear() drops them", async () => {
    const { journal: j, batches } = journal();
    j.watch("set", argv("a"), [Buffer.from("a")], 0)!(OK);
    j.flush();
    expect(batches).to.deep.equal([["a set"]]);
    j.watch("set", argv("b"), [Buffer.from("b")], 0)!(OK);
    j.clear();
    await new Promise((resolve) => setImmediate(resolve));
    expect(batches).to.deep.equal([["a set"]]);
  });
});
