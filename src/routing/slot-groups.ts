/**
 * The keys of one multi-key command grouped by slot, for running it as one command per slot:
 * groups in order of their first key, each a chain of its keys in order. Typed arrays and a
 * slot table reused from command to command, not a Map of arrays per command: this runs for
 * every split MSET/MGET/DEL in front of a cluster.
 *
 * Each user keeps its own instance, and reads the chains out before it sends anything (a send
 * may answer at once, and what that sets off may group another command).
 */
export class SlotGroups {
  /** Per item: its slot. The caller fills the first `count` (see `reserve`) before `group`. */
  slotOfItem = new Int32Array(64);
  /** Per item: its group. */
  itemGroup = new Int32Array(64);
  /** Per item: the next item of its group, -1 at the end of the chain. */
  nextInGroup = new Int32Array(64);
  /** Per group: its slot, first item and number of items. */
  slots: number[] = [];
  heads: number[] = [];
  sizes: number[] = [];
  /** Slot -> its group in the grouping under way; -1 elsewhere (reset after each grouping). */
  private readonly groupOfSlot = new Int32Array(16384).fill(-1);

  /** Room for `count` items. */
  reserve(count: number): void {
    if (this.slotOfItem.length >= count) return;
    const grown = new Int32Array(count * 2);
    grown.set(this.slotOfItem);
    this.slotOfItem = grown;
    this.itemGroup = new Int32Array(count * 2);
    this.nextInGroup = new Int32Array(count * 2);
  }

  /** Groups the first `count` items by their slots (slotOfItem). */
  group(count: number): void {
    const { slotOfItem, itemGroup, nextInGroup, groupOfSlot } = this;
    const slots: number[] = [];
    const heads: number[] = [];
    const tails: number[] = [];
    const sizes: number[] = [];
    for (let k = 0; k < count; k++) {
      const slot = slotOfItem[k];
      let g = groupOfSlot[slot];
      if (g === -1) {
        g = slots.length;
        groupOfSlot[slot] = g;
        slots.push(slot);
        heads.push(k);
        tails.push(k);
        sizes.push(1);
      } else {
        nextInGroup[tails[g]] = k;
        tails[g] = k;
        sizes[g]++;
      }
      itemGroup[k] = g;
      nextInGroup[k] = -1;
    }
    for (let g = 0; g < slots.length; g++) groupOfSlot[slots[g]] = -1;
    this.slots = slots;
    this.heads = heads;
    this.sizes = sizes;
  }
}
