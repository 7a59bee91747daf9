import { expect } from "chai";
import { tableOfFlat } from "../src/gears/execute-batch.js";
import type { JsonValue } from "../src/sandbox/types.js";

/** Each call of a table as [partition, ...strings]. */
function callsOf(list: JsonValue[]): JsonValue[][] | null {
  const t = tableOfFlat(list);
  if (t === null) return null;
  const out: JsonValue[][] = [];
  for (let i = 0; i < t.count; i++) out.push([t.part[i], ...t.flat.slice(t.from[i], t.to[i])]);
  return out;
}

/**
 * A batched foreach's list of execute() calls (guest/gears/foreach-batch.ts): `partition, n,
 * name, ...args` per call, or `-1, last` for the call before it with its last string replaced.
 */
describe("executeEach's list of calls (tableOfFlat)", () => {
  it("calls written whole", () => {
    expect(callsOf([0, 3, "SADD", "s", "a", null, 2, "SET", "k", 1, 1, "PING"])).to.deep.equal([
      [0, "SADD", "s", "a"],
      [null, "SET", "k"],
      [1, "PING"],
    ]);
    expect(callsOf([])).to.deep.equal([]);
  });

  it("-1 and a string: the call before, its last string replaced, in its partition", () => {
    expect(
      callsOf([
        2,
        3,
        "SADD",
        "s",
        "a",
        -1,
        "b",
        -1,
        "c",
        0,
        2,
        "GET",
        "x",
        -1,
        "y",
        1,
        1,
        "PING",
        -1,
        "ECHO",
      ]),
    ).to.deep.equal([
      [2, "SADD", "s", "a"],
      [2, "SADD", "s", "b"],
      [2, "SADD", "s", "c"],
      [0, "GET", "x"],
      [0, "GET", "y"],
      [1, "PING"],
      [1, "ECHO"],
    ]);
  });

  it("refuses lists not of that form", () => {
    expect(callsOf([-1, "a"])).to.equal(null); // no call before
    expect(callsOf([0, 0, -1, "a"])).to.equal(null); // the call before has no string to replace
    expect(callsOf([0, 2, "GET", "x", -1])).to.equal(null); // cut short
    expect(callsOf([0, 3, "GET", "x"])).to.equal(null);
    expect(callsOf([0, "x", "GET"])).to.equal(null);
  });
});
