import fs from "node:fs";
import { AccessControl, parseUsers, type KeyFinder } from "./access-control.js";
import { AclCatalogue, type AclCommandSource } from "./catalogue.js";

export interface AclOptions {
  aclfile?: string;
  users?: string[];
  requirepass?: string;
}

/** What ACL rules are checked against: the upstream's commands and key specs, and the proxy's own commands. */
export interface AclSources {
  commands: Iterable<AclCommandSource> | null;
  keys: KeyFinder;
  gearsCommands: readonly string[];
  /** The upstream words refusals as Redis 7.2 and later do (AccessControl.namedRefusals). */
  namedRefusals?: boolean;
}

/** The proxy's users from --aclfile or --user lines; null when neither is given (no ACLs). */
export function loadAccessControl(options: AclOptions, sources: AclSources): AccessControl | null {
  const { aclfile, users } = options;
  if (aclfile === undefined && (users === undefined || users.length === 0)) return null;
  if (aclfile !== undefined && users !== undefined && users.length > 0) {
    throw new Error("users come either from --aclfile or from --user lines, not both (as in Redis)");
  }
  if (sources.commands === null) {
    throw new Error("ACL users need the upstream's command table, and the upstream refused COMMAND");
  }
  const catalogue = new AclCatalogue(sources.commands, sources.gearsCommands);
  let lines: string[];
  let where: string;
  if (aclfile !== undefined) {
    try {
      lines = fs.readFileSync(aclfile, "utf8").split(/\r?\n/);
    } catch (err) {
      throw new Error(`cannot read aclfile ${aclfile}: ${(err as Error).message}`, { cause: err });
    }
    where = aclfile;
  } else {
    // A config-file or --user line may leave out the leading "user" keyword.
    lines = users!.map((u) => (/^\s*user\s/i.test(u) ? u : `user ${u}`));
    where = "--user";
  }
  return new AccessControl(
    catalogue,
    sources.keys,
    parseUsers(lines, where, catalogue),
    options.requirepass,
    sources.namedRefusals,
  );
}
