/**
 * Writers waiting for event handlers: each waits until every counter it names has reached
 * the mark it had when the writer came (what was queued before it has run), not until
 * nothing is queued: writes straight to the shards may keep a queue from ever emptying, and
 * a write through the proxy would wait for ever.
 */
export class MarkWaiters<K> {
  private waiters: { marks: Map<K, number>; wake: () => void }[] = [];

  /** Resolves once `check` finds every mark reached; at once when there is none. */
  wait(marks: Map<K, number>): Promise<void> {
    if (marks.size === 0) return Promise.resolve();
    return new Promise((wake) => this.waiters.push({ marks, wake }));
  }

  /** Wakes the waiters whose every mark `reached` says is passed (after a batch ran, a change). */
  check(reached: (key: K, mark: number) => boolean): void {
    if (this.waiters.length === 0) return;
    const waiting: typeof this.waiters = [];
    for (const w of this.waiters) {
      let pending = false;
      for (const [key, mark] of w.marks)
        if (!reached(key, mark)) {
          pending = true;
          break;
        }
      if (pending) waiting.push(w);
      else w.wake();
    }
    this.waiters = waiting;
  }

  get size(): number {
    return this.waiters.length;
  }
}
