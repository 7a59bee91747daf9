/**
 * Keys written by functions and triggers: their notifications must not fire keyspace
 * triggers again (T&F ran those writes with notifications muted for its triggers). A key is
 * muted from its write until a barrier on the notification connections after the run. Only
 * events nobody is known to have written consult it: the write journal names the writer of
 * the others (KeyEvent.by), so a client's write of a muted key still fires its triggers.
 */
export class MutedKeys {
  private readonly counts = new Map<string, number>();

  add(keys: Buffer[]): void {
    for (const k of keys) {
      const s = k.toString("latin1");
      this.counts.set(s, (this.counts.get(s) ?? 0) + 1);
    }
  }

  remove(keys: Buffer[]): void {
    for (const k of keys) {
      const s = k.toString("latin1");
      const n = (this.counts.get(s) ?? 0) - 1;
      if (n <= 0) this.counts.delete(s);
      else this.counts.set(s, n);
    }
  }

  has(key: Buffer): boolean {
    return this.counts.size > 0 && this.counts.has(key.toString("latin1"));
  }

  /** has() of a key given as its latin1 string. */
  hasText(key: string): boolean {
    return this.counts.has(key);
  }
}
