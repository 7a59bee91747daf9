import type { Request } from "../resp/request-parser.js";
import { ALLOWED_WHILE_SUBSCRIBED, SUBSCRIBE_FAMILY, isBlockingRequest } from "../routing/command-kinds.js";
import { isGearsCommand, isGearsCommandAlone } from "../gears/commands.js";
import type { BlockingCall } from "./blocking.js";
import type { ClientUser } from "./client-user.js";
import type { CommandHost } from "./command-host.js";
import { followConfigSet } from "./context.js";
import {
  LOCAL_COMMANDS,
  NO_AUTH_COMMANDS,
  PROXY_SUBCOMMANDS,
  isHttpLine,
  isSpecial,
} from "./dispatch-table.js";
import type { GearsBranch } from "./gears-branch.js";
import type { Lane } from "./lane.js";
import type { PausedLane } from "./paused-lane.js";
import type { Subscriber } from "./pubsub.js";
import type { ReplyWriter } from "./reply-writer.js";
import type { ScriptLane } from "./scripts.js";
import { isScriptDebug, scriptDebug } from "./script-debug.js";
import type { SharedLane } from "./shared-lane.js";
import type { Transaction } from "./transaction.js";

/** Where a command may go: one module per kind of connection. */
export interface ClientLanes {
  readonly txn: Transaction;
  readonly pubsub: Subscriber;
  readonly gears: GearsBranch;
  readonly blocking: BlockingCall;
  readonly scripts: ScriptLane;
  readonly paused: PausedLane;
  readonly shared: SharedLane;
}

/** What the dispatcher needs of the session beyond what local handlers see. */
export interface DispatchHost extends CommandHost {
  readonly user: ClientUser;
  readonly replies: ReplyWriter;
  enterLane(lane: Lane, request: Request): boolean;
}

/**
 * Decides where each command goes: refused (NOAUTH, pub/sub context, ACL), queued in MULTI,
 * answered by the proxy (LOCAL_COMMANDS), by the gears engine, or sent on a lane. An
 * ordinary command of an ordinary client skips the lookups (the hot path).
 */
export class Dispatcher {
  constructor(
    private readonly host: DispatchHost,
    private readonly lanes: ClientLanes,
  ) {}

  execute(request: Request): void {
    const host = this.host;
    const { ctx, user } = host;
    const { txn, pubsub } = this.lanes;
    const name = request.name;
    ctx.stats.commandsProcessed++;
    if (name === "config") {
      // Followed here at once, and by the other threads through the supervisor.
      if (followConfigSet(ctx, request.argv)) ctx.threads?.configSet(request.argv);
    }
    if (ctx.tracking.watching)
      ctx.tracking.beforeCommand(host.id, host.tracking, name, request.argv, txn.inMulti);
    host.replies.begin(request);
    if (user.authenticated && pubsub.count === 0 && !txn.inMulti && !isSpecial(name)) {
      // What the chain below comes to for an ordinary command, without its lookups; a user
      // of the proxy's ACL keeps it (a set lookup first), a server user takes the chain.
      if (user.plain) return this.ordinary(name, request);
      if (user.acl !== null) {
        if (this.permitted(name, request)) this.ordinary(name, request);
        return;
      }
    }
    this.lanes.shared.flush();
    this.full(name, request);
  }

  /** Every check, then the command's place: the path of all but the ordinary commands. */
  private full(name: string, request: Request): void {
    const host = this.host;
    const user = host.user;
    const { txn, pubsub, gears } = this.lanes;
    const argv = request.argv;
    // Before anything else, in any context (before AUTH, in MULTI), as Redis.
    if (isHttpLine(name)) return this.httpLine();
    // Redis checks each command's shape first (its arity, a container's subcommand), before
    // authentication, context and ACL: by the server's table, where the proxy answers or
    // refuses the command itself (an ACL refusal looks at it in permitted()). A server user's
    // ordinary commands go on unchecked: the server checks them. MULTI too is checked here:
    // the commands pipelined behind it are queued before the server's answer comes, so a
    // MULTI Redis refuses for its arity must not start a transaction even for a moment.
    if (
      !user.authenticated ||
      pubsub.count > 0 ||
      txn.inMulti ||
      LOCAL_COMMANDS.has(name) ||
      name === "multi"
    ) {
      const malformed = host.ctx.router.shapeRefusal(name, argv, PROXY_SUBCOMMANDS);
      if (malformed !== null) return this.refuse(name, malformed, request);
    }
    if (!user.authenticated && !NO_AUTH_COMMANDS.has(name))
      return host.replyError("NOAUTH Authentication required.");
    if (pubsub.count > 0 && host.proto === 2 && !ALLOWED_WHILE_SUBSCRIBED.has(name)) {
      const error = `ERR Can't execute '${name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`;
      if (!pubsub.refuse(error)) host.replyError(error);
      return;
    }
    if (user.acl !== null && !NO_AUTH_COMMANDS.has(name) && !this.permitted(name, request)) return;
    if (txn.inMulti) {
      if (name === "quit" || name === "reset") LOCAL_COMMANDS.get(name)!(host, request);
      else txn.queueCommand(name, request);
      return;
    }
    if (pubsub.count > 0 && host.proto === 2 && name === "ping") return pubsub.route(name, request);
    const local = LOCAL_COMMANDS.get(name);
    if (local !== undefined) return local(host, request);
    if (isScriptDebug(name, argv)) return scriptDebug(host, request, host.replies.queue.unwritten);
    // A server user's CONFIG that names the server's settings is the server's to check.
    if (user.onServer ? isGearsCommandAlone(name, argv.slice(1)) : isGearsCommand(name, argv.slice(1)))
      gears.run(name, request);
    else if (gears.hooks(name, request)) gears.runHook(name, argv);
    else if (user.onServer && !SUBSCRIBE_FAMILY.has(name)) user.sendAsServerUser(name, request);
    else if (SUBSCRIBE_FAMILY.has(name)) pubsub.route(name, request);
    else if (pubsub.count > 0 && pubsub.publish(name, request)) return;
    else if (name === "multi") txn.multi(request);
    else if (name === "watch") txn.watch(request);
    else this.dedicatedOrShared(name, request, false);
  }

  /**
   * POST or Host: (an HTTP request sent to Redis' port, maybe by a browser tricked into it):
   * Redis logs a warning and closes the connection, replies owed or not. Forwarded, it would
   * close the shared upstream connection, failing every client's command in flight on it.
   */
  private httpLine(): void {
    const host = this.host;
    host.ctx.log.warn(
      { client: host.id },
      "Possible SECURITY ATTACK detected: a client sent POST or Host: (an HTTP request); connection closed",
    );
    host.ctx.clients.get(host.id)?.kill("POST or Host:");
  }

  /** An ordinary command from an authenticated client outside MULTI and pub/sub. */
  private ordinary(name: string, request: Request): void {
    if (this.lanes.gears.hooks(name, request)) {
      this.lanes.shared.flush();
      this.lanes.gears.runHook(name, request.argv);
    } else this.dedicatedOrShared(name, request, true);
  }

  /**
   * A command Redis runs: on the transaction's, a blocking, a script's, a paused or the shared
   * connection. Each test looks at the name before the arguments (the hot path splits none).
   */
  private dedicatedOrShared(name: string, request: Request, flush: boolean): void {
    const { txn, blocking, scripts, paused, shared } = this.lanes;
    const lane = txn.owns(name, request)
      ? txn
      : isBlockingRequest(name, request)
        ? blocking
        : scripts.takes(name)
          ? scripts
          : null;
    if (lane !== null) {
      if (flush) shared.flush();
      lane.send(name, request);
    } else if (paused.takes(name, request)) paused.send(name, request);
    else if (this.host.enterLane("shared", request)) this.host.forward(name, request);
  }

  /**
   * The proxy's ACL check (user.acl set): false once the refusal is answered. A refused
   * command's shape is looked at first, as Redis checks arity before ACL (no ACL LOG entry
   * then); an allowed one costs the check alone.
   */
  private permitted(name: string, request: Request): boolean {
    const router = this.host.ctx.router;
    const error = this.host.user.denial(name, request.argv, (n, argv) =>
      router.shapeRefusal(n, argv, PROXY_SUBCOMMANDS),
    );
    if (error === null) return true;
    this.refuse(name, error, request);
    return false;
  }

  /**
   * Answers a command Redis would refuse before running it. In MULTI the transaction is
   * flagged (EXEC then aborts); a refused EXEC ends it at once, in and out of MULTI, as Redis'
   * execCommandAbort words it (without the error's ERR).
   */
  private refuse(name: string, error: string, request: Request): void {
    const { txn, pubsub } = this.lanes;
    const reason = error.startsWith("ERR ") ? error.slice(4) : error;
    if (txn.inMulti) {
      if (name === "exec") txn.abortExec(reason, request);
      else txn.refuse(error);
    } else if (name === "exec") this.host.replyError(`EXECABORT Transaction discarded because of: ${reason}`);
    else if (pubsub.count === 0 || !pubsub.refuse(error)) this.host.replyError(error);
  }
}
