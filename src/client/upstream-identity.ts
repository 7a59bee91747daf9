import { RespError, type Protocol } from "../resp/values.js";
import type { UpstreamConnection } from "../upstream/connection.js";
import type { UpstreamNode } from "../upstream/node.js";

/**
 * A client logged in as a user of the upstream server's own ACL (AUTH user pass, without
 * --aclfile): its commands run on connections of its own, one per node and protocol, opened
 * lazily and authenticated as that user, so the server applies that user's permissions
 * (scripts' redis.acl_check_cmd included), as it would for a direct client. Never given
 * back to a pool: they are closed when the client logs out or leaves.
 */
export class UpstreamIdentity {
  /** By protocol (RESP2, RESP3): replies are relayed raw, so a HELLO switch needs others. */
  private readonly conns = [
    new Map<UpstreamNode, UpstreamConnection>(),
    new Map<UpstreamNode, UpstreamConnection>(),
  ];
  /** Logged out or the client left: a connection still being opened is closed at once. */
  private ended = false;

  constructor(
    readonly user: string,
    private readonly password: string,
  ) {}

  /** The authenticated connection to `node` in `proto`, or null when one must be opened first. */
  connection(node: UpstreamNode, proto: Protocol): UpstreamConnection | null {
    const conn = this.conns[proto - 2].get(node);
    return conn === undefined || conn.closed ? null : conn;
  }

  /** Opens a connection to `node` and authenticates it: null when done, else the error to send. */
  async open(node: UpstreamNode, proto: Protocol): Promise<string | null> {
    const conn = node.acquire(proto);
    if (conn === null) return node.failure;
    const reply = await conn
      .call(["AUTH", this.user, this.password])
      .catch((err: Error) => new RespError(err.message));
    if (reply instanceof RespError || this.ended) {
      node.destroy(conn);
      return reply instanceof RespError ? reply.message : "ERR the client logged out";
    }
    const conns = this.conns[proto - 2];
    const old = conns.get(node);
    if (old !== undefined) node.destroy(old);
    conns.set(node, conn);
    conn.onBorrowerLost = () => {
      if (conns.get(node) === conn) conns.delete(node);
    };
    return null;
  }

  /** Logout, RESET, the client leaving: every connection is closed, and any opened later. */
  end(): void {
    this.ended = true;
    for (const conns of this.conns) {
      for (const [node, conn] of conns) {
        conn.onBorrowerLost = null;
        node.destroy(conn);
      }
      conns.clear();
    }
  }
}
