/** Slots of a new or emptied queue; a power of two, as every capacity is. */
const INITIAL_CAPACITY = 16;
/** An empty queue larger than this goes back to INITIAL_CAPACITY (after a burst). */
const KEEP_CAPACITY = 4096;

/**
 * A first-in first-out queue with O(1) shift, for replies awaited in order: a ring over an
 * array that doubles when full. Why a ring: an upstream connection pushes and shifts one entry
 * per forwarded command, and an array shifted by an index and compacted by slice() every
 * thousand entries (the queue before) made 40-60 bytes of garbage per command in its growth
 * and copies; the ring makes none once it has room for the commands in flight.
 */
export class Fifo<T> {
  private items: (T | undefined)[] = emptySlots<T>(INITIAL_CAPACITY);
  /** Index of the oldest item. */
  private head = 0;
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(item: T): void {
    if (this.count === this.items.length) this.grow();
    this.items[(this.head + this.count) & (this.items.length - 1)] = item;
    this.count++;
  }

  peek(): T | undefined {
    return this.count === 0 ? undefined : this.items[this.head];
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const items = this.items;
    const item = items[this.head];
    items[this.head] = undefined;
    this.head = (this.head + 1) & (items.length - 1);
    if (--this.count === 0) {
      this.head = 0;
      if (items.length > KEEP_CAPACITY) this.items = emptySlots<T>(INITIAL_CAPACITY);
    }
    return item;
  }

  /** Removes and returns everything, oldest first. */
  drain(): T[] {
    const rest = new Array<T>(this.count);
    const items = this.items;
    const mask = items.length - 1;
    for (let i = 0; i < this.count; i++) rest[i] = items[(this.head + i) & mask] as T;
    this.items = emptySlots<T>(INITIAL_CAPACITY);
    this.head = 0;
    this.count = 0;
    return rest;
  }

  private grow(): void {
    const old = this.items;
    const mask = old.length - 1;
    const next = emptySlots<T>(old.length * 2);
    for (let i = 0; i < this.count; i++) next[i] = old[(this.head + i) & mask];
    this.items = next;
    this.head = 0;
  }
}

function emptySlots<T>(n: number): (T | undefined)[] {
  return new Array<T | undefined>(n).fill(undefined);
}
