/**
 * One client's CLIENT TRACKING settings, as Redis keeps them in the client's flags. A
 * session holds one only while tracking is on, so a client that does not track pays a
 * single null check per command.
 */
export class TrackingState {
  /** CLIENT CACHING YES (OPTIN) or NO (OPTOUT) given for the next command. */
  caching = false;
  /** The REDIRECT client was gone when an invalidation was due. */
  brokenRedirect = false;

  constructor(
    /** The client invalidations go to; 0 for the client itself. */
    public redirect: number,
    public readonly bcast: boolean,
    public readonly optin: boolean,
    public readonly optout: boolean,
    public readonly noloop: boolean,
    /** BCAST prefixes, sorted by bytes as Redis' radix tree keeps them ("" when none given). */
    public readonly prefixes: Buffer[],
  ) {}

  /** Whether the keys of the command about to run are remembered (OPTIN/OPTOUT and CACHING). */
  get remembers(): boolean {
    if (this.bcast) return false;
    if (this.optin) return this.caching;
    if (this.optout) return !this.caching;
    return true;
  }
}
