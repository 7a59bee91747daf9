import { encodeCommand } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import {
  noPermission,
  refusedObject,
  type AclUser,
  type Denial,
  type UserFollower,
} from "../acl/access-control.js";
import type { AclLogReason } from "../acl/acl-log.js";
import { dbFor } from "../routing/command-kinds.js";
import { NO_KEYS } from "../routing/router.js";
import type { ClientLogin } from "./command-host.js";
import type { Holds } from "./holds.js";
import type { LaneHost } from "./lane.js";
import { UpstreamIdentity } from "./upstream-identity.js";

/** Commands a server user may not send in cluster mode: its connections are per node. */
const TRANSACTION_COMMANDS = new Set(["multi", "exec", "discard", "watch", "unwatch"]);

/** What the client's user needs from the session. */
export interface UserHost extends Omit<LaneHost, "enterLane"> {
  readonly holds: Holds;
  /** The client is gone: a login finishing late is undone. */
  readonly closed: boolean;
  /** Sends the pending run of pipelined requests, to keep the order. */
  flushRuns(): void;
  /** Runs the input again, `request` first when given (its connection is there now). */
  resume(request: Request | null): void;
  /** Authentication changed: the parser limits an unauthenticated client's input. */
  authenticatedChanged(authenticated: boolean): void;
  /** Subscribed to a channel or pattern. */
  readonly isPubSub: boolean;
  /** This client's CLIENT LIST line (ACL LOG's client-info). */
  describe(): string;
  /** Closes the connection now. */
  kill(reason: string): void;
  /** Closes the connection once the replies owed are written. */
  shutdown(): Promise<void>;
}

/** ACL LOG's context from a CLIENT LIST line: `multi` when its flags hold `x` (in MULTI). */
function logContext(clientInfo: string): "toplevel" | "multi" {
  return /(?:^| )flags=\S*x/.test(clientInfo) ? "multi" : "toplevel";
}

/**
 * Adds a failed login or a refusal to the proxy's ACL LOG (Redis 7.0 logs both); the client
 * line is worked out only then.
 */
export function logRefusal(
  host: Pick<UserHost, "ctx" | "describe">,
  reason: AclLogReason,
  object: string,
  username: string,
): void {
  const clientInfo = host.describe();
  host.ctx.acl?.log.add({ reason, context: logContext(clientInfo), object, username, clientInfo });
}

/**
 * Who the client is: authenticated or not, as which user, and with which permissions.
 * A user of the proxy's ACL (--aclfile) is checked here before each command; a user of the
 * server's own ACL (AUTH user pass without --aclfile) runs its commands on connections of
 * its own, authenticated as that user (UpstreamIdentity).
 */
export class ClientUser implements ClientLogin, UserFollower {
  authenticated = false;
  name = "default";
  /** The permissions checked before each command: null without ACLs, or for a user who may run anything. */
  acl: AclUser | null = null;
  /** Logged in as a user of the server's own ACL. */
  private identity: UpstreamIdentity | null = null;
  /** Neither of the two: ordinary commands take the fast path. */
  plain = true;

  /** The user of the proxy's ACL this client is told the changes of (ACL SETUSER...). */
  private followed: string | null = null;

  /** Counts the changes of the user's rules while logged in: a transaction re-checks at EXEC after one. */
  rulesVersion = 0;

  constructor(private readonly host: UserHost) {
    this.reset();
  }

  get id(): number {
    return this.host.id;
  }

  /** Logged in as a user of the server's own ACL: commands go through sendAsServerUser(). */
  get onServer(): boolean {
    return this.identity !== null;
  }

  /** May act on other users' gears executions and registrations. */
  get admin(): boolean {
    return this.acl === null || this.acl.admin;
  }

  /** Back to the default user: authenticated when it needs no password (or no --requirepass). */
  reset(): void {
    const acl = this.host.ctx.acl;
    this.name = "default";
    this.acl = null;
    this.dropIdentity();
    if (acl === null) this.authenticated = this.host.ctx.config.requirepass === undefined;
    else {
      const user = acl.user("default")!;
      this.acl = user.unrestricted ? null : user;
      this.authenticated = acl.opensWithoutPassword(user);
      this.followUser("default");
    }
    this.host.authenticatedChanged(this.authenticated);
    this.plain = this.acl === null;
  }

  /** AUTH succeeded as one of the proxy's users (--aclfile). */
  login(user: AclUser): void {
    this.markAuthenticated();
    this.name = user.name;
    this.acl = user.unrestricted ? null : user;
    this.plain = this.acl === null;
    this.followUser(user.name);
  }

  /** UserFollower: ACL SETUSER changed the user; its rules apply from the next command on. */
  follow(user: AclUser): void {
    this.rulesVersion++;
    this.acl = user.unrestricted ? null : user;
    this.plain = this.acl === null;
    // Redis asks for AUTH only while default needs a password (server.c processCommand).
    if (!this.authenticated && user.name === "default" && this.host.ctx.acl!.opensWithoutPassword(user)) {
      this.authenticated = true;
      this.host.authenticatedChanged(true);
    }
  }

  /**
   * UserFollower: the user was removed. As Redis does (acl.c ACLFreeUserAndKillClients),
   * the client is the default user, unauthenticated, and is disconnected: the client that
   * removed it once its reply is written.
   */
  removed(asking: boolean): void {
    this.followed = null;
    this.name = "default";
    this.acl = null;
    this.plain = false;
    this.authenticated = false;
    this.host.authenticatedChanged(false);
    // The asking client's reply is queued once the command's handler returns: it goes first.
    if (asking) queueMicrotask(() => void this.host.shutdown());
    else this.host.kill("its ACL user was removed");
  }

  /** UserFollower: the user lost channels; a subscribed client goes (it may hold one of them). */
  channelsRevoked(): void {
    if (this.host.isPubSub) this.host.kill("its ACL user lost channel permissions");
  }

  private followUser(name: string): void {
    const acl = this.host.ctx.acl!;
    if (this.followed === name) return;
    if (this.followed !== null) acl.unfollow(this.followed, this);
    acl.follow(name, this);
    this.followed = name;
  }

  markAuthenticated(): void {
    this.authenticated = true;
    this.host.authenticatedChanged(true);
    if (this.identity !== null) {
      // Logged in as a proxy user now: the server user's connections go.
      this.dropIdentity();
      this.name = "default";
      this.plain = this.acl === null;
    }
  }

  /**
   * The refusal of the proxy's ACL for this command, or null when it is permitted (or no ACL
   * applies). `malformed` is asked first about a command the rules refuse: its error (arity)
   * is the answer then, and nothing is logged, as Redis checks the shape before ACL.
   */
  denial(
    name: string,
    argv: readonly Buffer[],
    malformed?: (name: string, argv: readonly Buffer[]) => string | null,
  ): string | null {
    const denial = this.host.ctx.acl!.check(this.acl!, name, argv);
    if (denial === null) return null;
    const shape = malformed?.(name, argv) ?? null;
    if (shape !== null) return shape;
    logRefusal(this.host, denial.kind, refusedObject(denial, argv), this.name);
    return noPermission(denial, this.name, this.host.ctx.acl!.namedRefusals);
  }

  /**
   * EXEC's second look at a queued command, after the user's rules changed (Redis checks
   * again as it runs each one): Redis 7.0's error for it, logged in ACL LOG, or null.
   */
  execDenial(name: string, argv: readonly Buffer[]): string | null {
    if (this.acl === null) return null;
    const denial = this.host.ctx.acl!.check(this.acl, name, argv);
    if (denial === null) return null;
    logRefusal(this.host, denial.kind, refusedObject(denial, argv), this.name);
    return `NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: ${EXEC_REASONS[denial.kind]}`;
  }

  /** AUTH user pass for a user of the server's own ACL: null once logged in, else the server's error. */
  loginUpstream(user: string, password: string): Promise<string | null> {
    const host = this.host;
    const identity = new UpstreamIdentity(user, password);
    const release = host.holds.take();
    return identity.open(host.ctx.leases.forSlot(NO_KEYS, host.id, host.proto)).then((error) => {
      release();
      if (error !== null || host.closed) {
        identity.end();
        return error ?? "ERR the client has gone";
      }
      this.markAuthenticated();
      this.identity = identity;
      this.name = user;
      this.plain = false;
      return null;
    });
  }

  /**
   * A command of a client logged in as a server user: on its own connection to the node,
   * authenticated as that user. The first command for a node waits while it is opened.
   */
  sendAsServerUser(name: string, request: Request): void {
    const host = this.host;
    const identity = this.identity!;
    if (host.ctx.router.topology.mode === "cluster" && TRANSACTION_COMMANDS.has(name)) {
      return host.replyError(
        `ERR ${name.toUpperCase()} as a user of the cluster's own ACL is not supported by gears-proxy`,
      );
    }
    const target = host.ctx.leases.nodeIdFor(name, request.argv, host.id);
    if (typeof target === "string") return host.replyError(target);
    const conn = identity.connection(target.id, host.proto);
    if (conn !== null) {
      conn.send(
        request.raw ?? encodeCommand(request.argv),
        host.upstreamSlot(),
        dbFor(name, host.db, host.ctx.router.monitors > 0),
      );
      return;
    }
    host.flushRuns();
    const release = host.holds.take();
    void identity.open(host.ctx.leases.forCommand(name, request.argv, host.id, host.proto)).then((error) => {
      release();
      if (host.closed) return;
      if (error !== null) host.replyError(error);
      // Runs again, now that the connection is there.
      host.resume(error === null ? request : null);
    });
  }

  /** The client leaving (or RESET): the server user's connections close; its user's changes no longer concern it. */
  end(): void {
    this.identity?.end();
    if (this.followed !== null) this.host.ctx.acl?.unfollow(this.followed, this);
    this.followed = null;
  }

  private dropIdentity(): void {
    this.identity?.end();
    this.identity = null;
  }
}

/** How Redis 7.0 (multi.c) names each kind of refusal at EXEC. */
const EXEC_REASONS: Record<Denial["kind"], string> = {
  command: "no permission to execute the command or subcommand",
  key: "no permission to touch the specified keys",
  channel: "no permission to access one of the channels used as arguments",
};
