import { encodeError, encodeInteger, encodeValue, OK } from "../resp/encode.js";
import { RespVerbatim } from "../resp/values.js";
import type { ProxyContext } from "./context.js";
import { since62, since70, since74 } from "./server-features.js";
import type { Request } from "../resp/request-parser.js";
import type { ClientHandle } from "./registry.js";
import { isLongLong, type CommandHost, type LocalCommand } from "./command-host.js";
import { clientCaching, clientGetRedir, clientTracking, clientTrackingInfo } from "./tracking/command.js";

const NAME_OK = /^[!-~]*$/;

/** Redis' refusal of a client name, or null when the name is fine. */
export function badClientName(name: string): string | null {
  return NAME_OK.test(name)
    ? null
    : "ERR Client names cannot contain spaces, newlines or special characters.";
}

/**
 * A CLIENT subcommand's arity error in the server's words: Redis 7.0+ and Valkey name it
 * 'client|<sub>'; Redis 6.x, which has no subcommand table, says the subcommand is unknown
 * (6.2 with a period at the end, as its addReplySubcommandSyntaxError; 6.0 without).
 */
function subcommandArity(session: CommandHost, argv: Buffer[], sub: string): string {
  const server = session.ctx.upstreamServer;
  if (since70(server)) return `ERR wrong number of arguments for 'client|${sub}' command`;
  const text = `ERR Unknown subcommand or wrong number of arguments for '${argv[1].toString()}'. Try CLIENT HELP`;
  return since62(server) ? `${text}.` : text;
}

function setName(session: CommandHost, argv: Buffer[]): void {
  if (argv.length !== 3) return session.replyError(subcommandArity(session, argv, "setname"));
  const name = argv[2].toString();
  const bad = badClientName(name);
  if (bad !== null) return session.replyError(bad);
  session.name = name;
  session.replyNow(OK);
}

function setInfo(session: CommandHost, argv: Buffer[]): void {
  if (argv.length !== 4)
    return session.replyError("ERR wrong number of arguments for 'client|setinfo' command");
  const attr = argv[2].toString().toLowerCase();
  const value = argv[3].toString();
  if (attr === "lib-name") session.libName = value;
  else if (attr === "lib-ver") session.libVersion = value;
  else return session.replyError(`ERR Unrecognized option '${argv[2].toString()}'`);
  session.replyNow(OK);
}

function noEvict(session: CommandHost, argv: Buffer[]): void {
  const mode = argv[2]?.toString().toLowerCase();
  if (argv.length !== 3)
    return session.replyError("ERR wrong number of arguments for 'client|no-evict' command");
  if (mode !== "on" && mode !== "off") return session.replyError("ERR syntax error");
  session.noEvict = mode === "on";
  session.replyNow(OK);
}

function replyMode(session: CommandHost, argv: Buffer[]): void {
  const mode = argv[2]?.toString().toLowerCase();
  if (argv.length !== 3 || (mode !== "on" && mode !== "off" && mode !== "skip")) {
    return session.replyError("ERR syntax error");
  }
  // Redis answers OK only to ON; OFF and SKIP are silent themselves.
  session.replyMode = "on";
  if (mode === "on") session.replyNow(OK);
  session.replyMode = mode;
}

const INT64 = /^-?(0|[1-9][0-9]{0,18})$/;
const INT64_MAX = 2n ** 63n - 1n;

/** Which clients a CLIENT KILL filter list selects; an error text when the filters are bad. */
function killFilter(
  session: Pick<CommandHost, "id" | "ctx">,
  args: string[],
): ((c: ClientHandle) => boolean) | string {
  const tests: ((c: ClientHandle) => boolean)[] = [];
  let skipMe = true;
  for (let i = 0; i < args.length; i += 2) {
    const key = args[i].toLowerCase();
    const value = args[i + 1];
    if (value === undefined) return "ERR syntax error";
    if (key === "id") {
      const id = Number(value);
      if (!Number.isInteger(id) || id <= 0) return "ERR client-id should be greater than 0";
      tests.push((c) => c.id === id);
    } else if (key === "maxage" && since74(session.ctx.upstreamServer)) {
      // Before Redis 7.4 and Valkey 8.0, MAXAGE is a syntax error, as there.
      // Whole seconds between the two clocks' seconds, as Redis compares its ctime.
      if (!INT64.test(value) || BigInt(value) > INT64_MAX || BigInt(value) < -INT64_MAX - 1n)
        return "ERR maxage is not an integer or out of range";
      const maxAge = Number(value);
      if (maxAge <= 0) return "ERR maxage should be greater than 0";
      const now = Math.floor(Date.now() / 1000);
      tests.push((c) => now - Math.floor(c.createdAt / 1000) >= maxAge);
    } else if (key === "addr") tests.push((c) => c.addr === value);
    else if (key === "laddr") tests.push((c) => c.laddr === value);
    else if (key === "user") {
      // With --aclfile the proxy knows its users; without, it knows `default` and the server
      // users its clients logged in as.
      const acl = session.ctx.acl;
      const known =
        acl !== null
          ? acl.user(value) !== undefined
          : value === "default" || [...session.ctx.clients.all()].some((c) => c.userName === value);
      if (!known) return `ERR No such user '${value}'`;
      tests.push((c) => c.userName === value);
    } else if (key === "type") {
      const type = value.toLowerCase();
      if (type !== "normal" && type !== "pubsub") return `ERR Unknown client type '${value}'`;
      tests.push((c) => c.isPubSub === (type === "pubsub"));
    } else if (key === "skipme") {
      const yes = value.toLowerCase();
      if (yes !== "yes" && yes !== "no") return "ERR syntax error";
      skipMe = yes === "yes";
    } else return "ERR syntax error";
  }
  return (c) => (!skipMe || c.id !== session.id) && tests.every((t) => t(c));
}

function kill(session: CommandHost, argv: Buffer[]): void {
  const args = argv.slice(2).map((a) => a.toString());
  if (args.length === 0)
    // Redis 6.x reads CLIENT KILL's filters before it counts them.
    return session.replyError(
      since70(session.ctx.upstreamServer)
        ? "ERR wrong number of arguments for 'client|kill' command"
        : "ERR syntax error",
    );
  const clients = session.ctx.clients;
  if (args.length === 1) {
    // Old form: CLIENT KILL addr:port, which may name the caller itself.
    const target = [...clients.all()].find((c) => c.addr === args[0]);
    const threads = session.ctx.threads;
    if (target === undefined && threads !== undefined) {
      // Perhaps a client of another thread.
      session.replyLater(
        threads
          .clientKill(["addr", args[0]], session.id)
          .then((n) => (n > 0 ? OK : encodeError("ERR No such client"))),
        false,
      );
      return;
    }
    if (target === undefined) return session.replyError("ERR No such client");
    if (target.id === session.id) return session.replyAndClose(OK);
    session.replyNow(OK);
    target.kill("CLIENT KILL");
    return;
  }
  const filter = killFilter(session, args);
  if (typeof filter === "string") return session.replyError(filter);
  const threads = session.ctx.threads;
  if (threads !== undefined) {
    // Every thread kills its own matching clients (the caller's thread too, the caller last).
    const slot = session.laterSlot();
    const me = clients.get(session.id);
    slot.closeAfter = me !== undefined && filter(me);
    void threads.clientKill(args, session.id).then(
      (n) => slot.reply(encodeInteger(n)),
      (err: Error) => slot.reply(encodeError(`ERR ${err.message}`)),
    );
    return;
  }
  const targets = [...clients.all()].filter(filter);
  const reply = encodeInteger(targets.length);
  // A client that kills itself still gets the count, then the connection closes, as in Redis.
  if (targets.some((t) => t.id === session.id)) session.replyAndClose(reply);
  else session.replyNow(reply);
  for (const target of targets) if (target.id !== session.id) target.kill("CLIENT KILL");
}

/** CLIENT LIST's lines for this thread's clients; null when the arguments are wrong. */
export function clientListText(clients: Iterable<ClientHandle>, args: string[]): string | null {
  let chosen = [...clients];
  if (args.length >= 2 && args[0].toLowerCase() === "id") {
    const ids = new Set(args.slice(1).map(Number));
    chosen = chosen.filter((c) => ids.has(c.id));
  } else if (args.length === 2 && args[0].toLowerCase() === "type") {
    const type = args[1].toLowerCase();
    chosen = chosen.filter((c) => (type === "pubsub" ? c.isPubSub : type === "normal" ? !c.isPubSub : false));
  } else if (args.length !== 0) return null;
  return chosen.map((c) => c.describe() + "\n").join("");
}

/** CLIENT KILL's filters on this thread's clients (`callerId`: SKIPME's "me"); the count, or an error. */
export function killMatching(ctx: ProxyContext, args: string[], callerId: number): number | string {
  const filter = killFilter({ id: callerId, ctx }, args);
  if (typeof filter === "string") return filter;
  const targets = [...ctx.clients.all()].filter(filter);
  // The caller goes last: its thread still has to send it the count.
  for (const target of targets) if (target.id !== callerId) target.kill("CLIENT KILL");
  return targets.length;
}

/** Redis' client types (networking.c getClientTypeByName). */
const CLIENT_TYPES = new Set(["normal", "slave", "replica", "pubsub", "master"]);

/** CLIENT LIST's refusal of its filters, in Redis' words and order, or null. */
function listArgsError(args: string[]): string | null {
  const filter = args[0]?.toLowerCase();
  if (args.length === 2 && filter === "type")
    return CLIENT_TYPES.has(args[1].toLowerCase()) ? null : `ERR Unknown client type '${args[1]}'`;
  if (args.length >= 2 && filter === "id")
    return args.slice(1).every(isLongLong) ? null : "ERR Invalid client ID";
  return args.length === 0 ? null : "ERR syntax error";
}

function list(session: CommandHost, argv: Buffer[]): void {
  const args = argv.slice(2).map((a) => a.toString());
  const refused = listArgsError(args);
  if (refused !== null) return session.replyError(refused);
  const threads = session.ctx.threads;
  if (threads === undefined) return session.replyText(clientListText(session.ctx.clients.all(), args) ?? "");
  session.replyLater(
    threads
      .clientList(args)
      .then((text) => encodeValue(new RespVerbatim("txt", Buffer.from(text)), session.proto)),
    false,
  );
}

/** CLIENT UNBLOCK id [TIMEOUT|ERROR], for the proxy's clients: their blocking command is ended on the server. */
function unblock(session: CommandHost, argv: Buffer[]): void {
  // In Redis' order: the table's arity (at least 3), the subcommand's own (at most 4), the
  // reason, then the id.
  if (argv.length < 3) return session.replyError(subcommandArity(session, argv, "unblock"));
  if (argv.length > 4)
    return session.replyError(
      since70(session.ctx.upstreamServer)
        ? `ERR unknown subcommand or wrong number of arguments for '${argv[1].toString()}'. Try CLIENT HELP.`
        : subcommandArity(session, argv, "unblock"),
    );
  const mode = argv[3]?.toString().toLowerCase() ?? "timeout";
  if (mode !== "timeout" && mode !== "error")
    return session.replyError("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
  const text = argv[2].toString();
  if (!isLongLong(text)) return session.replyError("ERR value is not an integer or out of range");
  const id = Number(text);
  const target = session.ctx.clients.get(id);
  const threads = session.ctx.threads;
  if (target === undefined && threads !== undefined) {
    const later = session.laterSlot();
    void threads.clientUnblock(id, mode === "error").then(
      (n) => later.reply(encodeInteger(n)),
      () => later.reply(encodeInteger(0)),
    );
    return;
  }
  if (target === undefined) return void session.replyNow(encodeInteger(0));
  const slot = session.laterSlot();
  void target.unblock(mode === "error").then((n) => slot.reply(encodeInteger(n)));
}

/**
 * Redis 6.x's CLIENT has no subcommand table: each subcommand checks its own argument count
 * (networking.c clientCommand), and a count it does not take falls through to "Unknown
 * subcommand or wrong number of arguments". [least, most] arguments, CLIENT's included.
 */
const ARITY_BEFORE_70: ReadonlyMap<string, readonly [number, number]> = new Map([
  ["id", [2, 2]],
  ["info", [2, 2]],
  ["getname", [2, 2]],
  ["getredir", [2, 2]],
  ["trackinginfo", [2, 2]],
  ["unpause", [2, 2]],
  ["setname", [3, 3]],
  ["reply", [3, 3]],
  ["unblock", [3, 4]],
  ["pause", [3, 4]],
  ["tracking", [3, Infinity]],
  ["caching", [3, Infinity]],
]);

/** CLIENT subcommands, answered for the proxy's own clients. */
export const clientCommand: LocalCommand = (session, request) => {
  const argv = request.argv;
  const sub = argv[1]?.toString().toLowerCase();
  const arity = sub === undefined ? undefined : ARITY_BEFORE_70.get(sub);
  if (
    arity !== undefined &&
    (argv.length < arity[0] || argv.length > arity[1]) &&
    !since70(session.ctx.upstreamServer)
  )
    return session.replyError(subcommandArity(session, argv, sub!));
  switch (sub) {
    case "id":
      return void session.replyNow(encodeInteger(session.id));
    case "getname":
      return session.replyValue(session.name === "" ? null : Buffer.from(session.name));
    case "setname":
      return setName(session, argv);
    case "setinfo":
      // Redis 7.2's: an older server answers with its own error, as clients meet it there.
      if (!session.ctx.router.knowsSubcommand("client", sub)) return serverSays(session, request);
      return setInfo(session, argv);
    case "info":
      return session.replyText(session.describe() + "\n");
    case "list":
      return list(session, argv);
    case "kill":
      return kill(session, argv);
    case "reply":
      return replyMode(session, argv);
    case "unblock":
      return unblock(session, argv);
    case "pause":
    case "unpause":
      return pauseServers(session, request);
    case "tracking":
      return clientTracking(session, argv);
    case "caching":
      return clientCaching(session, argv);
    case "getredir":
      return clientGetRedir(session, argv);
    case "trackinginfo":
      return clientTrackingInfo(session, argv);
    case "no-evict":
      if (!session.ctx.router.knowsSubcommand("client", sub)) return serverSays(session, request);
      return noEvict(session, argv);
    case "capa":
      // Valkey 8: the client's capabilities, unknown ones ignored. Its one capability,
      // 'redirect', changes what a replica answers; the proxy's client talks to no replica.
      if (!session.ctx.router.knowsSubcommand("client", sub)) return serverSays(session, request);
      return void session.replyNow(OK);
    case "help":
      // The server's own text.
      return serverSays(session, request);
    case undefined:
      return session.replyError("ERR wrong number of arguments for 'client' command");
    default:
      // A subcommand the server does not know either gets the server's own error, in its words.
      // Others (NO-TOUCH: shared connections cannot stop touching keys for one client) are refused.
      if (!session.ctx.router.knowsSubcommand("client", sub)) return serverSays(session, request);
      session.replyNow(encodeError(`ERR CLIENT ${sub.toUpperCase()} is not supported by gears-proxy`));
  }
};

/** A CLIENT subcommand the server refuses: sent to it for its error (it changes nothing there). */
function serverSays(session: CommandHost, request: Request): void {
  if (!session.enterSharedLane(request)) return;
  session.ctx.router.forward("client", request.argv, request.raw, session.upstreamSlot(), {
    db: session.db,
    affinity: session.id,
    proto: session.proto,
  });
}

/**
 * The server pauses its clients, the proxy's connections among them: the proxy's clients
 * wait as Redis' own would. Sent on the control connection of every master; once it
 * succeeds, the session sends its commands on a lease of its own until the pause ends.
 */
function pauseServers(session: CommandHost, request: Request): void {
  if (!session.enterSharedLane(request)) return;
  const slot = session.upstreamSlot();
  slot.onReply = (data) => {
    if (data[0] === 43 /* + */) session.ctx.leases.pause.note(request.argv);
  };
  session.ctx.router.forward("client", request.argv, request.raw, slot, {
    db: session.db,
    affinity: session.id,
    proto: session.proto,
  });
}
