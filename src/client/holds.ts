import type { Request } from "../resp/request-parser.js";
import { holdJoinKey } from "../gears/commands.js";

/**
 * Replies a client's next command must wait for: a SELECT's (the database changes only if
 * the server accepts it), a `sync` registration's write, a blocking RG.* or T&F command, a
 * server user's login. TFCALLs of one library wait in one queue, so one may join another's
 * hold (holdJoinKey) instead of waiting for it.
 */
export class Holds {
  private count = 0;
  /** Of `count`, those a next command with `joinKey` passes. */
  private joined = 0;
  private joinKey: string | null = null;

  /** `released` is told each time a hold ends: input held back may run again. */
  constructor(private readonly released: () => void) {}

  /** Whether the next command must wait, whatever it is. */
  get blocking(): boolean {
    return this.count > 0 && this.count !== this.joined;
  }

  /** Whether `request` must wait for the holds (it does not join them). */
  defers(request: Request): boolean {
    return this.count > 0 && holdJoinKey(request.name, request.argv.slice(1)) !== this.joinKey;
  }

  /** Holds the next commands until the returned release is called (once). */
  take(): () => void {
    this.count++;
    return () => {
      this.count--;
      this.released();
    };
  }

  /**
   * A joinable hold for a command of join key `key`, or null when it cannot join (another
   * key holds, or a hold nobody joins): it then takes an ordinary hold. The release only
   * ends the join; the command's own hold is taken and released beside it.
   */
  join(key: string | null): (() => void) | null {
    if (key === null || (this.joined !== 0 && this.joinKey !== key) || this.count !== this.joined)
      return null;
    this.joinKey = key;
    this.joined++;
    return () => {
      if (--this.joined === 0) this.joinKey = null;
    };
  }
}
