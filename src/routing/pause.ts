/**
 * CLIENT PAUSE as the proxy last saw it succeed: while a pause is on, each client's
 * commands go on a connection of its own (a lease) instead of the shared ones, so the
 * server holds and counts every paused client as Redis would (blocked_clients), and a
 * read never waits behind another client's paused write on a shared connection.
 */
export class ServerPause {
  /** When the pause ends (ms since the epoch); 0: no pause. */
  private until = 0;

  get active(): boolean {
    if (this.until === 0) return false;
    if (Date.now() < this.until) return true;
    this.until = 0;
    return false;
  }

  /** A CLIENT PAUSE <ms> [WRITE|ALL] or CLIENT UNPAUSE the server answered OK. */
  note(argv: readonly Buffer[]): void {
    const sub = argv[1]?.toString().toLowerCase();
    if (sub === "unpause") this.until = 0;
    else if (sub === "pause" && argv.length >= 3) {
      const ms = Number(argv[2].toString());
      if (Number.isSafeInteger(ms) && ms >= 0) this.until = Math.max(this.until, Date.now() + ms);
    }
  }
}
