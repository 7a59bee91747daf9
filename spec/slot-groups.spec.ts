import { expect } from "chai";
import { SlotGroups } from "../src/routing/slot-groups.js";

/** The groups as [slot, items in chain order], read back through the chains. */
function read(g: SlotGroups): [number, number[]][] {
  return g.slots.map((slot, i) => {
    const items: number[] = [];
    for (let k = g.heads[i]; k !== -1; k = g.nextInGroup[k]) items.push(k);
    expect(items.length).to.equal(g.sizes[i]);
    for (const k of items) expect(g.itemGroup[k]).to.equal(i);
    return [slot, items];
  });
}

function grouped(g: SlotGroups, slots: number[]): [number, number[]][] {
  g.reserve(slots.length);
  g.slotOfItem.set(slots);
  g.group(slots.length);
  return read(g);
}

describe("slot groups (split commands)", () => {
  it("groups items by slot, groups in order of first item, items in order", () => {
    expect(grouped(new SlotGroups(), [7, 3, 7, 16383, 3, 7])).to.deep.equal([
      [7, [0, 2, 5]],
      [3, [1, 4]],
      [16383, [3]],
    ]);
  });

  it("leaves nothing behind for the next grouping", () => {
    const g = new SlotGroups();
    grouped(g, [1, 2, 1]);
    expect(grouped(g, [2, 2, 0])).to.deep.equal([
      [2, [0, 1]],
      [0, [2]],
    ]);
  });

  it("grows for commands of many keys, keeping the slots already written", () => {
    const g = new SlotGroups();
    const slots = Array.from({ length: 1000 }, (_, i) => i % 3);
    g.reserve(10);
    g.slotOfItem[0] = 2;
    g.reserve(slots.length);
    expect(g.slotOfItem[0]).to.equal(2);
    const groups = grouped(g, slots);
    expect(groups.map(([slot, items]) => [slot, items.length])).to.deep.equal([
      [0, 334],
      [1, 333],
      [2, 333],
    ]);
  });
});
