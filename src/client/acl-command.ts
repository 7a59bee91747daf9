import { randomBytes } from "node:crypto";
import { CATEGORIES } from "../acl/catalogue.js";
import { dryRunMessage } from "../acl/access-control.js";
import { encodeBulk, OK } from "../resp/encode.js";
import type { LocalCommand } from "./command-host.js";

const b = (text: string): Buffer => Buffer.from(text);

/**
 * ACL, for the proxy's own users (--aclfile): WHOAMI, USERS, LIST, CAT, DRYRUN, GETUSER,
 * GENPASS. Without an aclfile the server's ACL answers, as before.
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
      return session.replyValue(sorted.map((u) => b(acl.describe(u))));
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
      return void session.replyNow(denial === null ? OK : encodeBulk(dryRunMessage(denial, command)));
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
    default:
      session.replyError(
        `ERR ACL ${sub.toUpperCase()} is not supported by gears-proxy: its users come from --aclfile (edit it and restart)`,
      );
  }
};
