import { RespError, type Protocol } from "../resp/values.js";
import type { Lease } from "../routing/lease.js";

/**
 * A client logged in as a user of the upstream server's own ACL (AUTH user pass, without
 * --aclfile): its commands run on connections of its own, one per node and protocol, opened
 * lazily and authenticated as that user, so the server applies that user's permissions
 * (scripts' redis.acl_check_cmd included), as it would for a direct client. Never given
 * back to a pool: they are closed when the client logs out or leaves.
 */
export class UpstreamIdentity {
  /** By protocol (RESP2, RESP3), then node id: replies are relayed raw, so a HELLO switch needs others. */
  private readonly leases = [new Map<string, Lease>(), new Map<string, Lease>()];
  /** Logged out or the client left: a connection still being opened is closed at once. */
  private ended = false;

  constructor(
    readonly user: string,
    private readonly password: string,
  ) {}

  /** The authenticated connection to node `nodeId` in `proto`, or null when one must be opened first. */
  connection(nodeId: string, proto: Protocol): Lease | null {
    const lease = this.leases[proto - 2].get(nodeId);
    return lease === undefined || lease.closed ? null : lease;
  }

  /** Authenticates a newly leased connection: null when done, else the error to send. */
  async open(lease: Lease | string): Promise<string | null> {
    if (typeof lease === "string") return lease;
    // Alone on the connection: behind a pending reply, Redis 7.2+ would drop AUTH's error.
    await lease.opened;
    const reply = await lease
      .call(["AUTH", this.user, this.password])
      .catch((err: Error) => new RespError(err.message));
    if (reply instanceof RespError || this.ended) {
      lease.destroy();
      return reply instanceof RespError ? reply.message : "ERR the client logged out";
    }
    const leases = this.leases[lease.proto - 2];
    leases.get(lease.nodeId)?.destroy();
    leases.set(lease.nodeId, lease);
    lease.onLost(() => {
      if (leases.get(lease.nodeId) === lease) leases.delete(lease.nodeId);
    });
    return null;
  }

  /** Logout, RESET, the client leaving: every connection is closed, and any opened later. */
  end(): void {
    this.ended = true;
    for (const leases of this.leases) {
      for (const lease of leases.values()) lease.destroy();
      leases.clear();
    }
  }
}
