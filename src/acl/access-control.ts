import { timingSafeEqual } from "node:crypto";
import type { AclCatalogue } from "./catalogue.js";
import { globMatch } from "./glob.js";
import {
  allowedLeaves,
  applyRule,
  describeRules,
  newUser,
  READ,
  sha256,
  WRITE,
  type UserSpec,
} from "./rules.js";

/** Finds a command's keys: pairs [argument index, READ|WRITE] (the command table's key specs). */
export interface KeyFinder {
  keyAccess(name: string, argv: readonly Buffer[]): [number, number][];
}

/** A user compiled for the hot path: one set lookup per command, patterns only when keys are limited. */
export interface AclUser {
  readonly name: string;
  readonly spec: UserSpec;
  /** Leaves (`get`, `config|get`) the user may run. */
  readonly allowed: ReadonlySet<string>;
  /** Top-level commands all of whose leaves are allowed. */
  readonly whole: ReadonlySet<string>;
  /** Every command, key and channel: the session skips the checker altogether. */
  readonly unrestricted: boolean;
  /** May run every @admin command: may act on other users' gears executions and registrations. */
  readonly admin: boolean;
}

/** Why a command is refused: the command itself, or the argument (key or channel) at `index`. */
export type Denial = { kind: "command"; command: string } | { kind: "key" | "channel"; index: number };

/** The error a client gets for a refused command, in Redis 7.0's words. */
export function noPermission(denial: Denial): string {
  if (denial.kind === "command")
    return `NOPERM this user has no permissions to run the '${denial.command}' command`;
  return `NOPERM this user has no permissions to access one of the ${denial.kind}s used as arguments`;
}

/** ACL DRYRUN's answer for a refused command (Redis 7.0 words it per argument). */
export function dryRunMessage(denial: Denial, argv: readonly Buffer[]): string {
  if (denial.kind === "command") return `This user has no permissions to run the '${denial.command}' command`;
  return `This user has no permissions to access the '${argv[denial.index].toString()}' ${denial.kind}`;
}

/** The default user when nothing defines it: Redis' own, with --requirepass as its password. */
function defaultUser(catalogue: AclCatalogue, requirepass: string | undefined): UserSpec {
  const user = newUser("default");
  for (const rule of ["on", "~*", "&*", "+@all", requirepass === undefined ? "nopass" : `>${requirepass}`]) {
    applyRule(user, rule, catalogue);
  }
  return user;
}

/**
 * Users defined by aclfile lines (`user <name> <rules...>`); an error names the line. Rules
 * are split on whitespace: passwords with spaces go in as `#<sha256>`.
 */
export function parseUsers(lines: readonly string[], source: string, catalogue: AclCatalogue): UserSpec[] {
  const users = new Map<string, UserSpec>();
  lines.forEach((line, i) => {
    const words = line
      .trim()
      .split(/\s+/)
      .filter((w) => w !== "");
    if (words.length === 0 || words[0].startsWith("#")) return;
    const where = `${source}:${i + 1}`;
    if (words[0].toLowerCase() !== "user" || words.length < 2) {
      throw new Error(`${where}: should start with user keyword followed by the user name`);
    }
    const name = words[1];
    if (users.has(name)) throw new Error(`${where}: duplicate user '${name}' found`);
    const user = newUser(name);
    for (const rule of words.slice(2)) {
      const error = applyRule(user, rule, catalogue);
      if (error !== null) throw new Error(`${where}: error in user declaration '${rule}': ${error}`);
    }
    users.set(name, user);
  });
  return [...users.values()];
}

/**
 * The two commands whose key flags depend on their arguments (VARIABLE_FLAGS), as Redis
 * works them out (t_string.c setGetKeys, bitops.c bitfieldGetKeys): SET reads its key only
 * with GET, BITFIELD writes it only with SET or INCRBY.
 */
const VARIABLE_ACCESS = new Map<string, (argv: readonly Buffer[]) => number>([
  ["set", (argv) => (argv.slice(3).some((a) => a.toString().toLowerCase() === "get") ? READ | WRITE : WRITE)],
  [
    "bitfield",
    (argv) => (argv.slice(2).some((a) => /^(set|incrby)$/i.test(a.toString())) ? READ | WRITE : READ),
  ],
]);

const PUBLISH = new Set(["publish", "spublish"]);
const SUBSCRIBE = new Set(["subscribe", "ssubscribe"]);
const TF_CALLS = new Set(["tfcall", "tfcallasync"]);

/**
 * The proxy's users and the one checker of their permissions. Knows nothing of clients:
 * sessions hold an AclUser and ask check() before running a command.
 */
export class AccessControl {
  private readonly users = new Map<string, AclUser>();

  constructor(
    readonly catalogue: AclCatalogue,
    private readonly keys: KeyFinder,
    specs: readonly UserSpec[],
    requirepass?: string,
  ) {
    if (!specs.some((s) => s.name === "default")) this.add(defaultUser(catalogue, requirepass));
    for (const spec of specs) this.add(spec);
  }

  private add(spec: UserSpec): void {
    const allowed = allowedLeaves(spec, this.catalogue);
    const admin = this.catalogue.category("admin").every((l) => allowed.has(l));
    const everything = spec.allCommands && spec.commandRules.length === 0;
    this.users.set(spec.name, {
      name: spec.name,
      spec,
      allowed,
      whole: this.catalogue.wholeCommands(allowed),
      unrestricted: everything && spec.allKeys && spec.allChannels,
      admin,
    });
  }

  user(name: string): AclUser | undefined {
    return this.users.get(name);
  }

  all(): AclUser[] {
    return [...this.users.values()];
  }

  /** The user when `password` opens it (enabled, nopass or a matching password), else null. */
  authenticate(name: string, password: string): AclUser | null {
    const user = this.users.get(name);
    if (user === undefined || !user.spec.enabled) return null;
    if (user.spec.nopass) return user;
    const hash = Buffer.from(sha256(password));
    return user.spec.passwords.some((p) => timingSafeEqual(Buffer.from(p), hash)) ? user : null;
  }

  /** Whether a client starts out as this user without AUTH (Redis: default is on and nopass). */
  opensWithoutPassword(user: AclUser): boolean {
    return user.spec.enabled && user.spec.nopass;
  }

  /** ACL LIST's line for a user. */
  describe(user: AclUser): string {
    return `user ${user.name} ${describeRules(user.spec)}`;
  }

  /**
   * The check a script makes on the commands it runs as `name` (who registered it); null
   * when that user may run anything. A user since removed may run nothing.
   */
  guardFor(name: string): ((command: string, argv: readonly Buffer[]) => string | null) | null {
    const user = this.users.get(name);
    if (user === undefined) {
      return () => `NOPERM the user '${name}' this script runs as no longer exists`;
    }
    if (user.unrestricted) return null;
    return (command, argv) => {
      const denial = this.check(user, command, argv);
      return denial === null ? null : noPermission(denial);
    };
  }

  /** ACL GETUSER's fields, as Redis 7.0 lists them. */
  getUser(user: AclUser): (Buffer | Buffer[])[] {
    const b = (text: string): Buffer => Buffer.from(text);
    const words = describeRules(user.spec).split(" ");
    const spec = user.spec;
    const flags = [spec.enabled ? "on" : "off", ...(spec.nopass ? ["nopass"] : [])];
    const keys = words.filter((w) => w.startsWith("~") || w.startsWith("%"));
    const channels = words.filter((w) => w.startsWith("&"));
    const commands = words.slice(words.findIndex((w) => w === "+@all" || w === "-@all"));
    return [
      b("flags"),
      flags.map(b),
      b("passwords"),
      spec.passwords.map(b),
      b("commands"),
      b(commands.join(" ")),
      b("keys"),
      b(keys.join(" ")),
      b("channels"),
      b(channels.join(" ")),
      b("selectors"),
      [],
    ];
  }

  /** Null when `user` may run argv (name lower-case), else why not. */
  check(user: AclUser, name: string, argv: readonly Buffer[]): Denial | null {
    if (user.unrestricted) return null;
    if (!user.whole.has(name)) {
      const denied = this.commandDenied(user, name, argv);
      if (denied !== null) return denied;
    }
    const spec = user.spec;
    if (!spec.allKeys) {
      const keys = TF_CALLS.has(name) ? tfKeys(argv) : this.keys.keyAccess(name, argv);
      for (const [index, specAccess] of keys) {
        const access = VARIABLE_ACCESS.get(name)?.(argv) ?? specAccess;
        if (!this.keyAllowed(spec, argv[index].toString("latin1"), access)) return { kind: "key", index };
      }
    }
    if (!spec.allChannels) return channelDenied(spec, name, argv);
    return null;
  }

  private commandDenied(user: AclUser, name: string, argv: readonly Buffer[]): Denial | null {
    let leaf = name;
    if (this.catalogue.isContainer(name)) {
      // Without a known subcommand the server answers with its own error first, as Redis does.
      if (argv.length < 2) return null;
      leaf = `${name}|${argv[1].toString("latin1").toLowerCase()}`;
    }
    // A command Redis does not know gets its "unknown command" error from the server.
    if (!this.catalogue.isKnown(leaf)) return null;
    return user.allowed.has(leaf) ? null : { kind: "command", command: leaf };
  }

  /** Redis' ACLSelectorCheckKey: a pattern must grant every access the key spec needs. */
  private keyAllowed(spec: UserSpec, key: string, access: number): boolean {
    for (const p of spec.keys) {
      if ((p.access & access) === access && globMatch(p.pattern, key)) return true;
    }
    return false;
  }
}

/** TFCALL <library.function> <numkeys> key... arg...: its keys, read and written. */
function tfKeys(argv: readonly Buffer[]): [number, number][] {
  const n = Number(argv[2]?.toString());
  if (!Number.isInteger(n) || n < 0) return [];
  const out: [number, number][] = [];
  for (let i = 3; i < 3 + n && i < argv.length; i++) out.push([i, READ | WRITE]);
  return out;
}

/** Channels of PUBLISH/SUBSCRIBE (matched by pattern) and PSUBSCRIBE (patterns must be granted literally). */
function channelDenied(spec: UserSpec, name: string, argv: readonly Buffer[]): Denial | null {
  const literal = name === "psubscribe";
  if (!literal && !PUBLISH.has(name) && !SUBSCRIBE.has(name)) return null;
  const last = PUBLISH.has(name) ? Math.min(2, argv.length) : argv.length;
  for (let i = 1; i < last; i++) {
    const channel = argv[i].toString("latin1");
    const ok = spec.channels.some((p) => (literal ? p === channel : globMatch(p, channel)));
    if (!ok) return { kind: "channel", index: i };
  }
  return null;
}
