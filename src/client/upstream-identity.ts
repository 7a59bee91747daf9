import { RespError, type Protocol } from "../resp/values.js";
import type { UpstreamConnection } from "../upstream/connection.js";
import type { UpstreamNode } from "../upstream/node.js";

/**
 * A client logged in as a user of the upstream server's own ACL (AUTH user pass, without
 * --aclfile): its commands run on connections of its own, one per node, opened lazily and
 * authenticated as that user, so the server applies that user's permissions (scripts'
 * redis.acl_check_cmd included), as it would for a direct client. Never given back to a
 * pool: they are closed when the client logs out or leaves.
 */
export class UpstreamIdentity {
  private readonly conns = new Map<UpstreamNode, UpstreamConnection>();
  private proto: Protocol;

  constructor(
    readonly user: string,
    private readonly password: string,
    proto: Protocol,
  ) {
    this.proto = proto;
  }

  /** The authenticated connection to `node` in `proto`, or null when one must be opened first. */
  connection(node: UpstreamNode, proto: Protocol): UpstreamConnection | null {
    if (proto !== this.proto) {
      // HELLO changed the client's protocol: replies are relayed raw, so reconnect in it.
      this.release();
      this.proto = proto;
    }
    const conn = this.conns.get(node);
    return conn === undefined || conn.closed ? null : conn;
  }

  /** Opens a connection to `node` and authenticates it: null when done, else the error to send. */
  async open(node: UpstreamNode, proto: Protocol): Promise<string | null> {
    const conn = node.acquire(proto);
    if (conn === null) return node.failure;
    const reply = await conn
      .call(["AUTH", this.user, this.password])
      .catch((err: Error) => new RespError(err.message));
    if (reply instanceof RespError) {
      node.destroy(conn);
      return reply.message;
    }
    this.conns.get(node)?.close();
    this.proto = proto;
    this.conns.set(node, conn);
    conn.onBorrowerLost = () => {
      if (this.conns.get(node) === conn) this.conns.delete(node);
    };
    return null;
  }

  /** Closes every connection (logout, RESET, the client leaving). */
  release(): void {
    for (const [node, conn] of this.conns) {
      conn.onBorrowerLost = null;
      node.destroy(conn);
    }
    this.conns.clear();
  }
}
