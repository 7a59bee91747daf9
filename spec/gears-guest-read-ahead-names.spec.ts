import { expect } from "chai";
import { GearsGuest } from "../src/gears/gears-guest.js";
import { gearsGuestSource } from "../src/gears/guest-bundles.js";
import type { GuestIsolate } from "../src/gears/guest-isolate.js";
import type { Topology } from "../src/gears/guest/entry.js";
import { READ_AHEAD_COMMANDS } from "../src/gears/read-ahead.js";
import { Isolate } from "../src/sandbox/isolate.js";
import { RawJson, type HostBridge, type JsonValue } from "../src/sandbox/types.js";

/**
 * Issue 14: the read-ahead command names cross into an isolate once, with its first
 * execution, not with every execution (every batch of events is one): the guest keeps them.
 */

const bridge: HostBridge = {
  callSync: (name) => Promise.resolve(name === "register" ? "r1" : null),
  callAsync: (calls) => Promise.resolve(calls.map(() => ({ ok: new RawJson('{"failed":[]}') }))),
  notify: () => {},
};

const TOPOLOGY: Topology = {
  partitions: 1,
  slots: [[0, 16383, 0]],
  readAhead: READ_AHEAD_COMMANDS,
};

/** One event of a write that set `key`, in the rows form the host packs events in. */
const event = (key: string): JsonValue[] => [[0, { rows: [key, "string", "set", 0], values: ["1"] }]];

/** An isolate whose entries' arguments are recorded: the topology each start or once carried. */
function recording(isolate: Isolate): { guest: GuestIsolate; sent: JsonValue[] } {
  const sent: JsonValue[] = [];
  const guest = Object.create(isolate) as GuestIsolate;
  guest.call = (path, args, options) => {
    if (path.endsWith(".start") || path.endsWith(".once")) sent.push(args[1]);
    return isolate.call(path, args, options);
  };
  return { guest, sent };
}

describe("gears guest: read-ahead names cross once per isolate", function () {
  this.timeout(20_000);
  const isolates: Isolate[] = [];

  async function newIsolate(): Promise<Isolate> {
    const isolate = await Isolate.create({ memoryLimitMb: 32, timeoutMs: 5000 }, bridge);
    isolates.push(isolate);
    await isolate.evalScript(gearsGuestSource(), "gears-library");
    await isolate.evalScript("GB().map(x => x.key).register()", "script");
    return isolate;
  }

  after(async () => {
    for (const isolate of isolates) await isolate.dispose();
  });

  it("the first execution brings them, later ones (start or once) do not; another isolate gets them again", async () => {
    const first = recording(await newIsolate());
    const guest = new GearsGuest(first.guest);
    const out = await guest.once(0, TOPOLOGY, event("k:1"));
    expect(out.results).to.deep.equal(["k:1"]);
    const id = await guest.start(0, TOPOLOGY);
    await guest.drop(id);
    expect((await new GearsGuest(first.guest).once(0, TOPOLOGY, event("k:2"))).results).to.deep.equal([
      "k:2",
    ]);
    expect(first.sent).to.deep.equal([
      { partitions: 1, slots: [[0, 16383, 0]], readAhead: READ_AHEAD_COMMANDS },
      { partitions: 1, slots: [[0, 16383, 0]] },
      { partitions: 1, slots: [[0, 16383, 0]] },
    ]);

    const second = recording(await newIsolate());
    await new GearsGuest(second.guest).once(0, TOPOLOGY, event("k:3"));
    expect(second.sent[0]).to.deep.include({ readAhead: READ_AHEAD_COMMANDS });
  });

  it("an execution that failed to start does not count: the next one brings them", async () => {
    const one = recording(await newIsolate());
    const guest = new GearsGuest(one.guest);
    await guest.start(7, TOPOLOGY).then(
      () => expect.fail("no action 7"),
      (e: Error) => expect(e.message).to.match(/no action 7/),
    );
    await guest.once(0, TOPOLOGY, event("k:1"));
    expect(one.sent.map((t) => (t as { readAhead?: unknown }).readAhead !== undefined)).to.deep.equal([
      true,
      true,
    ]);
  });
});
