import { encodeError, encodeValue, OK } from "../resp/encode.js";
import { RespMap, type Protocol } from "../resp/values.js";
import { badClientName } from "./client-command.js";
import { logRefusal } from "./client-user.js";
import { wrongArity, type CommandHost, type LocalCommand } from "./command-host.js";

const NO_PASSWORD_SET =
  "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
const WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled.";

/**
 * Checks a user and password: against the proxy's users with --aclfile (the session then
 * runs as that user), else against --requirepass. Null when accepted, else the error to send.
 */
function checkPassword(
  session: CommandHost,
  command: string,
  user: string,
  password: string,
  named = true,
): string | null {
  const acl = session.ctx.acl;
  if (acl !== null) {
    if (!named && acl.user("default")!.spec.nopass) return NO_PASSWORD_SET;
    const found = acl.authenticate(user, password);
    if (found === null) {
      // ACL LOG's object is the command as the client typed it (AUTH, HELLO).
      logRefusal(session, "auth", command, user);
      return WRONGPASS;
    }
    session.user.login(found);
    return null;
  }
  const required = session.ctx.config.requirepass;
  // No password: the default user is `nopass`, which takes any password when named (AUTH
  // default x, HELLO 3 AUTH default x); only AUTH <password> alone is refused, as in Redis.
  if (required === undefined) return named ? null : NO_PASSWORD_SET;
  if (user !== "default" || password !== required) return WRONGPASS;
  return null;
}

/** A named user other than `default` without --aclfile: one of the server's own ACL users. */
function isServerUser(session: CommandHost, user: string): boolean {
  return session.ctx.acl === null && user !== "default";
}

export const auth: LocalCommand = (session, { argv }) => {
  if (argv.length < 2) return session.replyError(wrongArity("auth"));
  // Redis' own check past its arity (-2).
  if (argv.length > 3) return session.replyError("ERR syntax error");
  const user = argv.length === 3 ? argv[1].toString() : "default";
  const password = argv[argv.length - 1].toString();
  if (isServerUser(session, user)) {
    const slot = session.laterSlot();
    void session.user
      .loginUpstream(user, password)
      .then((error) => slot.reply(error === null ? OK : encodeError(error)));
    return;
  }
  const error = checkPassword(session, argv[0].toString(), user, password, argv.length === 3);
  if (error !== null) {
    session.replyError(error);
    return;
  }
  session.user.markAuthenticated();
  session.replyNow(OK);
};

const NOAUTH_HELLO =
  "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
/** The same refusal in Redis before 7.2 (7.0.15, 6.x): without `<proto>`. */
const NOAUTH_HELLO_BEFORE_72 =
  "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";

/** HELLO's NOAUTH in the words of the server behind the proxy (Valkey's are 7.2's). */
function noauthHello(session: CommandHost): string {
  const { name, version } = session.ctx.upstreamServer;
  const [major, minor] = version.split(".").map(Number);
  return name === "redis" && (major < 7 || (major === 7 && minor < 2))
    ? NOAUTH_HELLO_BEFORE_72
    : NOAUTH_HELLO;
}

export const hello: LocalCommand = (session, request) => {
  const argv = request.argv;
  let proto = session.proto;
  if (argv.length >= 2) {
    const text = argv[1].toString();
    const version = Number(text);
    if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(version)) {
      session.replyError("ERR Protocol version is not an integer or out of range");
      return;
    }
    if (version !== 2 && version !== 3) {
      session.replyError("NOPROTO unsupported protocol version");
      return;
    }
    proto = version;
    // A switch of protocol waits for the replies in flight: the commands after it go on the
    // connections of the new protocol, and must not overtake those sent before it on the
    // old one's (DEL | HELLO 2 | XDEL of the deleted key met the key still there). Not while
    // a WATCH holds a connection: the commands it takes stay on it (it follows the switch),
    // and the others wait for its replies as they enter their lane.
    if (
      proto !== session.proto &&
      !session.isPubSub &&
      session.pinned === null &&
      !session.waitForIdle(request)
    )
      return;
  }
  let name: string | null = null;
  let login: [string, string] | null = null;
  for (let i = 2; i < argv.length; i++) {
    const option = argv[i].toString().toLowerCase();
    if (option === "auth" && i + 2 < argv.length) {
      login = [argv[i + 1].toString(), argv[i + 2].toString()];
      i += 2;
    } else if (option === "setname" && i + 1 < argv.length) {
      name = argv[++i].toString();
      const bad = badClientName(name);
      if (bad !== null) {
        session.replyError(bad);
        return;
      }
      // Redis 7.0 names the client as it reads the option: a later one's syntax error, or
      // NOAUTH, leaves the name set.
      session.name = name;
    } else {
      session.replyError(`ERR Syntax error in HELLO option '${argv[i].toString()}'`);
      return;
    }
  }
  if (login !== null && isServerUser(session, login[0])) {
    const slot = session.laterSlot();
    void session.user
      .loginUpstream(login[0], login[1])
      .then((error) => slot.reply(error === null ? helloDone(session, proto, name) : encodeError(error)));
    return;
  }
  if (login !== null) {
    const error = checkPassword(session, argv[0].toString(), login[0], login[1]);
    if (error !== null) {
      session.replyError(error);
      return;
    }
    session.user.markAuthenticated();
  }
  if (!session.user.authenticated) {
    session.replyError(noauthHello(session));
    return;
  }
  session.replyNow(helloDone(session, proto, name));
};

/** HELLO's effects and its reply, in the protocol it switched to. */
function helloDone(session: CommandHost, proto: Protocol, name: string | null): Buffer {
  if (name !== null) session.name = name;
  session.proto = proto;
  const cluster = session.ctx.config.clusterEmulation || session.ctx.router.topology.mode === "cluster";
  const mode = cluster ? "cluster" : "standalone";
  const text = (s: string): Buffer => Buffer.from(s);
  return encodeValue(
    new RespMap([
      [text("server"), text(session.ctx.upstreamServer.name)],
      [text("version"), text(session.ctx.upstreamServer.version)],
      [text("proto"), proto],
      [text("id"), session.id],
      [text("mode"), text(mode)],
      [text("role"), text("master")],
      [text("modules"), session.ctx.upstreamServer.modules],
    ]),
    proto,
  );
}
