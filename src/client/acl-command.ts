import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { CATEGORIES } from "../acl/catalogue.js";
import { dryRunMessage, type AccessControl, type AclChange, type AclOutcome } from "../acl/access-control.js";
import { aclLogReply } from "../acl/acl-log.js";
import { encodeBulk, encodeError, encodeSimple, encodeValue, OK } from "../resp/encode.js";
import type { Protocol } from "../resp/values.js";
import { wrongArity, type CommandHost, type LocalCommand } from "./command-host.js";

const b = (text: string): Buffer => Buffer.from(text);

/** Redis 7.0's ACL HELP. */
const HELP = [
  "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
  "CAT [<category>]",
  "    List all commands that belong to <category>, or all command categories",
  "    when no category is specified.",
  "DELUSER <username> [<username> ...]",
  "    Delete a list of users.",
  "DRYRUN <username> <command> [<arg> ...]",
  "    Returns whether the user can execute the given command without executing the command.",
  "GETUSER <username>",
  "    Get the user's details.",
  "GENPASS [<bits>]",
  "    Generate a secure 256-bit user password. The optional `bits` argument can",
  "    be used to specify a different size.",
  "LIST",
  "    Show users details in config file format.",
  "LOAD",
  "    Reload users from the ACL file.",
  "LOG [<count> | RESET]",
  "    Show the ACL log entries.",
  "SAVE",
  "    Save the current config to the ACL file.",
  "SETUSER <username> <attribute> [<attribute> ...]",
  "    Create or modify a user with the specified attributes.",
  "USERS",
  "    List all the registered usernames.",
  "WHOAMI",
  "    Return the current connection username.",
  "HELP",
  "    Print this help.",
];

const NO_ACLFILE =
  "ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.";
const SAVE_FAILED =
  "ERR There was an error trying to save the ACLs. Please check the server logs for more information";

function encodeOutcome(outcome: AclOutcome, proto: Protocol): Buffer {
  if ("error" in outcome) return encodeError(outcome.error);
  return outcome.reply === "OK" ? OK : encodeValue(outcome.reply, proto);
}

/**
 * A change of the users: applied here, or under --threads on every thread in the one order
 * the supervisor relays changes in (the answer waits for them all).
 */
function change(session: CommandHost, acl: AccessControl, change: AclChange): void {
  const peers = acl.peers;
  if (peers === null)
    return void session.replyNow(encodeOutcome(acl.apply(change, session.id), session.proto));
  // A change every thread would refuse is refused without asking them.
  const error = acl.validate(change);
  if (error !== null) return session.replyError(error);
  const proto = session.proto;
  session.replyLater(
    peers.change(change, session.id).then((outcome) => encodeOutcome(outcome, proto)),
    true,
  );
}

/** ACL LOAD: the aclfile's lines, or Redis' error when it cannot be read. */
function readAclFile(file: string): string[] | string {
  try {
    return fs.readFileSync(file, "utf8").split("\n");
  } catch (err) {
    const reason =
      (err as NodeJS.ErrnoException).code === "ENOENT" ? "No such file or directory" : String(err);
    return `ERR Error loading ACLs, opening file '${file}': ${reason}`;
  }
}

/** ACL SAVE: the users in ACL LIST form, written to a file beside it, then renamed over it (as Redis does). */
async function saveAclFile(session: CommandHost, acl: AccessControl, file: string): Promise<Buffer> {
  const temp = `${file}.tmp-${process.pid}-${Date.now()}`;
  try {
    await fs.promises.writeFile(
      temp,
      acl
        .lines()
        .map((line) => `${line}\n`)
        .join(""),
      { mode: 0o644 },
    );
    await fs.promises.rename(temp, file);
    return OK;
  } catch (err) {
    session.ctx.log.warn({ err, file }, "ACL SAVE failed");
    await fs.promises.unlink(temp).catch(() => {});
    return encodeError(SAVE_FAILED);
  }
}

/**
 * ACL, for the proxy's own users (--aclfile, --user): WHOAMI, USERS, LIST, CAT, DRYRUN,
 * GETUSER, GENPASS, SETUSER, DELUSER, LOAD, SAVE, LOG. Without users of its own the
 * server's ACL answers, as before.
 */
export const aclCommand: LocalCommand = (session, request) => {
  const acl = session.ctx.acl;
  const argv = request.argv;
  if (acl === null) {
    if (session.enterSharedLane(request)) session.forward("acl", request);
    return;
  }
  const sub = argv[1]?.toString().toLowerCase();
  const sorted = acl.all().sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  switch (sub) {
    case "whoami":
      return void session.replyNow(encodeBulk(session.userName));
    case "users":
      return session.replyValue(sorted.map((u) => b(u.name)));
    case "list":
      return session.replyValue(acl.lines().map(b));
    case "setuser": {
      if (argv.length < 3) return session.replyError(wrongArity("acl|setuser"));
      const name = argv[2].toString();
      if (/[ \0]/.test(name))
        return session.replyError("ERR Usernames can't contain spaces or null characters");
      return change(session, acl, { op: "setuser", name, rules: argv.slice(3).map((a) => a.toString()) });
    }
    case "deluser":
      if (argv.length < 3) return session.replyError(wrongArity("acl|deluser"));
      return change(session, acl, { op: "deluser", names: argv.slice(2).map((a) => a.toString()) });
    case "load":
    case "save": {
      if (argv.length !== 2) return session.replyError(wrongArity(`acl|${sub}`));
      const file = session.ctx.config.aclfile;
      if (file === undefined) return session.replyError(NO_ACLFILE);
      if (sub === "save") return session.replyLater(saveAclFile(session, acl, file), true);
      const lines = readAclFile(file);
      if (typeof lines === "string") return session.replyError(lines);
      return change(session, acl, { op: "load", lines, source: file });
    }
    case "log":
      return aclLog(session, acl, argv);
    case "cat": {
      if (argv.length === 2) return session.replyValue(CATEGORIES.map(b));
      const category = argv[2].toString().toLowerCase();
      const leaves = CATEGORIES.includes(category) ? acl.catalogue.category(category) : [];
      if (leaves.length === 0) return session.replyError(`ERR Unknown category '${argv[2].toString()}'`);
      return session.replyValue(leaves.map(b));
    }
    case "dryrun": {
      if (argv.length < 4)
        return session.replyError("ERR wrong number of arguments for 'acl|dryrun' command");
      const user = acl.user(argv[2].toString());
      if (user === undefined) return session.replyError(`ERR User '${argv[2].toString()}' not found`);
      const command = argv.slice(3);
      const name = command[0].toString().toLowerCase();
      if (!acl.catalogue.isKnown(name))
        return session.replyError(`ERR Command '${command[0].toString()}' not found`);
      const arity = acl.catalogue.arity(name);
      if ((arity > 0 && arity !== command.length) || command.length < -arity) {
        return session.replyError(`ERR wrong number of arguments for '${name}' command`);
      }
      const denial = acl.check(user, name, command);
      return void session.replyNow(
        denial === null ? OK : encodeBulk(dryRunMessage(denial, command, user.name, acl.namedRefusals)),
      );
    }
    case "getuser": {
      const user = argv.length === 3 ? acl.user(argv[2].toString()) : undefined;
      if (argv.length !== 3)
        return session.replyError("ERR wrong number of arguments for 'acl|getuser' command");
      if (user === undefined) return session.replyValue(null);
      return session.replyValue(acl.getUser(user));
    }
    case "genpass": {
      const bits = argv.length > 2 ? Number(argv[2].toString()) : 256;
      if (!Number.isInteger(bits) || bits <= 0 || bits > 4096) {
        return session.replyError(
          "ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096",
        );
      }
      return void session.replyNow(
        encodeBulk(
          randomBytes(Math.ceil(bits / 8))
            .toString("hex")
            .slice(0, Math.ceil(bits / 4)),
        ),
      );
    }
    case undefined:
      return session.replyError("ERR wrong number of arguments for 'acl' command");
    case "help":
      return void session.replyNow(
        Buffer.concat([Buffer.from(`*${HELP.length}\r\n`), ...HELP.map(encodeSimple)]),
      );
    default:
      session.replyError(`ERR unknown subcommand '${argv[1].toString()}'. Try ACL HELP.`);
  }
};

/** ACL LOG [count | RESET]: over every thread under --threads. */
function aclLog(session: CommandHost, acl: AccessControl, argv: readonly Buffer[]): void {
  if (argv.length > 3) {
    return session.replyError(
      `ERR unknown subcommand or wrong number of arguments for '${argv[1].toString()}'. Try ACL HELP.`,
    );
  }
  const peers = acl.peers;
  let count = 10;
  if (argv.length === 3) {
    const text = argv[2].toString();
    if (text.toLowerCase() === "reset") {
      if (peers === null) {
        acl.log.reset();
        return void session.replyNow(OK);
      }
      return session.replyLater(
        peers.resetLog().then(() => OK),
        true,
      );
    }
    if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(Number(text)))
      return session.replyError("ERR value is not an integer or out of range");
    count = Math.max(0, Number(text));
  }
  if (peers === null) return session.replyValue(aclLogReply(acl.log.newest(count)));
  const proto = session.proto;
  session.replyLater(
    peers.log(count).then((entries) => encodeValue(aclLogReply(entries), proto)),
    true,
  );
}
