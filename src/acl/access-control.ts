import { timingSafeEqual } from "node:crypto";
import type { AclCatalogue } from "./catalogue.js";
import { globMatch } from "./glob.js";
import { AclLog, type AclLogEntry } from "./acl-log.js";
import {
  allowedLeaves,
  applyRule,
  copyUser,
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

/** A change of the proxy's users: what ACL SETUSER, DELUSER and LOAD ask. */
export type AclChange =
  | { op: "setuser"; name: string; rules: string[] }
  | { op: "deluser"; names: string[] }
  /** ACL LOAD: the aclfile's lines, read once by the thread that was asked. */
  | { op: "load"; lines: string[]; source: string }
  /** A thread (re)starting under --threads: the running threads' users (ACL LIST lines) replace its own. */
  | { op: "sync"; lines: string[] };

/** What a change answers: Redis' error, or its reply (OK, or DELUSER's count). */
export type AclOutcome = { error: string } | { reply: "OK" | number };

/** A client logged in as one of the users: told when its user changes or goes. */
export interface UserFollower {
  /** The client's id: the client that asked for a change gets its reply before it is disconnected. */
  readonly id: number;
  /** The user's rules changed: the client's next commands are checked against `user`. */
  follow(user: AclUser): void;
  /** The user was removed (DELUSER, LOAD): Redis disconnects its clients; `asking`: this client sent the command. */
  removed(asking: boolean): void;
  /** The user lost channels it had: Redis 7.0 disconnects its subscribed clients. */
  channelsRevoked(): void;
}

/**
 * The other threads of a --threads proxy (threads/peers.ts): every thread applies each change,
 * all in the one order the supervisor relays them in, and answers for its own ACL LOG.
 */
export interface AclPeers {
  /** Applies `change` on every thread; this thread's outcome, or an error when a thread missed it. */
  change(change: AclChange, by: number): Promise<AclOutcome>;
  /** The newest `count` entries over every thread's ACL LOG. */
  log(count: number): Promise<AclLogEntry[]>;
  resetLog(): Promise<void>;
}

const LOAD_FAILED =
  "WARNING: ACL errors detected, no change to the previously active ACL rules was performed";

/** Why a command is refused: the command itself, or the argument (key or channel) at `index`. */
export type Denial = { kind: "command"; command: string } | { kind: "key" | "channel"; index: number };

/** ACL LOG's object for a refusal: the command (`config|set`), or the key or channel refused. */
export function refusedObject(denial: Denial, argv: readonly Buffer[]): string {
  return denial.kind === "command" ? denial.command : argv[denial.index].toString();
}

/**
 * ACL LOG's client-info for a script's call: the module's own client of RedisGears and T&F
 * (RM_Call), which has no connection.
 */
function moduleClientInfo(user: string, command: string): string {
  return `id=0 addr= laddr= fd=-1 name= age=0 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=${command} user=${user} redir=-1 resp=2`;
}

/**
 * The error a client gets for a refused command, in Redis 7.0's words, or in those of Redis
 * 7.2 and later (and Valkey) with `named`: they name the user refused a command and no longer
 * the arguments for a key or channel.
 */
export function noPermission(denial: Denial, user: string, named: boolean): string {
  if (denial.kind === "command") {
    return named
      ? `NOPERM User ${user} has no permissions to run the '${denial.command}' command`
      : `NOPERM this user has no permissions to run the '${denial.command}' command`;
  }
  return named
    ? `NOPERM No permissions to access a ${denial.kind}`
    : `NOPERM this user has no permissions to access one of the ${denial.kind}s used as arguments`;
}

/** ACL DRYRUN's answer for a refused command (worded per argument; naming the user with `named`). */
export function dryRunMessage(denial: Denial, argv: readonly Buffer[], user: string, named: boolean): string {
  const who = named ? `User ${user}` : "This user";
  if (denial.kind === "command") return `${who} has no permissions to run the '${denial.command}' command`;
  return `${who} has no permissions to access the '${argv[denial.index].toString()}' ${denial.kind}`;
}

/** The default user when nothing defines it: Redis' own, with --requirepass as its password. */
function defaultUser(catalogue: AclCatalogue, requirepass: string | undefined): UserSpec {
  const user = newUser("default");
  for (const rule of ["on", "~*", "&*", "+@all", requirepass === undefined ? "nopass" : `>${requirepass}`]) {
    applyRule(user, rule, catalogue);
  }
  return user;
}

/** An aclfile's lines as words, with their line numbers; blank lines and comments left out. */
function aclFileLines(lines: readonly string[]): { n: number; words: string[] }[] {
  const out: { n: number; words: string[] }[] = [];
  lines.forEach((line, i) => {
    const words = line
      .trim()
      .split(/\s+/)
      .filter((w) => w !== "");
    if (words.length > 0 && !words[0].startsWith("#")) out.push({ n: i + 1, words });
  });
  return out;
}

/**
 * Users defined by aclfile lines (`user <name> <rules...>`); an error names the line. Rules
 * are split on whitespace: passwords with spaces go in as `#<sha256>`.
 */
export function parseUsers(lines: readonly string[], source: string, catalogue: AclCatalogue): UserSpec[] {
  const users = new Map<string, UserSpec>();
  for (const { n, words } of aclFileLines(lines)) {
    const where = `${source}:${n}`;
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
  }
  return [...users.values()];
}

/**
 * ACL LOAD's reading of aclfile lines: the users, or every error Redis 7.0 reports (acl.c
 * ACLLoadFromFile), in its words. Accepts what parseUsers accepts at start.
 */
export function parseAclFile(
  lines: readonly string[],
  source: string,
  catalogue: AclCatalogue,
): UserSpec[] | { error: string } {
  const users = new Map<string, UserSpec>();
  let errors = "";
  for (const { n, words } of aclFileLines(lines)) {
    if (words[0].toLowerCase() !== "user" || words.length < 2) {
      errors += `${source}:${n} should start with user keyword followed by the username. `;
      continue;
    }
    const name = words[1];
    if (users.has(name)) {
      errors += `WARNING: Duplicate user '${name}' found on line ${n}. `;
      continue;
    }
    const user = newUser(name);
    let syntaxError = false;
    for (const rule of words.slice(2)) {
      const error = applyRule(user, rule, catalogue);
      if (error === null) continue;
      // Redis names the rule only for an unknown command: other errors may show a password.
      if (error === "Unknown command or category name in ACL")
        errors += `${source}:${n}: Error in applying operation '${rule}': ${error}. `;
      else if (!syntaxError) {
        errors += `${source}:${n}: ${error}. `;
        syntaxError = true;
      }
    }
    users.set(name, user);
  }
  return errors === "" ? [...users.values()] : { error: errors + LOAD_FAILED };
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
  private users = new Map<string, AclUser>();
  /** The clients logged in as each user, told of its changes. */
  private readonly followers = new Map<string, Set<UserFollower>>();
  /** ACL LOG: this thread's refusals and failed logins. */
  readonly log = new AclLog();
  /** Set under --threads (threads/peers.ts): changes go through every thread. */
  peers: AclPeers | null = null;

  constructor(
    readonly catalogue: AclCatalogue,
    private readonly keys: KeyFinder,
    specs: readonly UserSpec[],
    private readonly requirepass?: string,
    /** Refusals in the words of Redis 7.2 and later (noPermission's `named`): the upstream's. */
    readonly namedRefusals = false,
  ) {
    this.users = this.compileAll(specs);
  }

  /** The users `specs` define, with the default user they leave out (as at start). */
  private compileAll(specs: readonly UserSpec[]): Map<string, AclUser> {
    const users = new Map<string, AclUser>();
    if (!specs.some((s) => s.name === "default")) {
      users.set("default", this.compile(defaultUser(this.catalogue, this.requirepass)));
    }
    for (const spec of specs) users.set(spec.name, this.compile(spec));
    return users;
  }

  private compile(spec: UserSpec): AclUser {
    const allowed = allowedLeaves(spec, this.catalogue);
    const admin = this.catalogue.category("admin").every((l) => allowed.has(l));
    const everything = spec.allCommands && spec.commandRules.length === 0;
    return {
      name: spec.name,
      spec,
      allowed,
      whole: this.catalogue.wholeCommands(allowed),
      unrestricted: everything && spec.allKeys && spec.allChannels,
      admin,
    };
  }

  /** `follower` runs as user `name` from now on (until unfollow). */
  follow(name: string, follower: UserFollower): void {
    let set = this.followers.get(name);
    if (set === undefined) this.followers.set(name, (set = new Set()));
    set.add(follower);
  }

  unfollow(name: string, follower: UserFollower): void {
    const set = this.followers.get(name);
    if (set === undefined) return;
    set.delete(follower);
    if (set.size === 0) this.followers.delete(name);
  }

  /** The users' lines, sorted by name as Redis lists them: ACL LIST and ACL SAVE. */
  lines(): string[] {
    return [...this.users.values()]
      .sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))
      .map((u) => this.describe(u));
  }

  /**
   * What `change` would answer, without applying it: null when it would apply. Lets a
   * --threads proxy refuse a bad change before asking every thread.
   */
  validate(change: AclChange): string | null {
    switch (change.op) {
      case "setuser": {
        const old = this.users.get(change.name);
        const outcome = this.staged(
          old === undefined ? newUser(change.name) : copyUser(old.spec),
          change.rules,
        );
        return typeof outcome === "string" ? outcome : null;
      }
      case "deluser":
        return change.names.includes("default") ? "ERR The 'default' user cannot be removed" : null;
      case "load":
      case "sync": {
        const parsed = parseAclFile(
          change.lines,
          change.op === "load" ? change.source : "sync",
          this.catalogue,
        );
        return "error" in parsed ? `ERR ${parsed.error}` : null;
      }
    }
  }

  /**
   * Applies `change` all-or-nothing, as Redis 7.0 does, and tells the clients of the users it
   * touched; `by` is the id of the client that asked (0: none of this thread's).
   */
  apply(change: AclChange, by: number): AclOutcome {
    switch (change.op) {
      case "setuser":
        return this.setUser(change.name, change.rules);
      case "deluser":
        return this.deleteUsers(change.names, by);
      case "load":
      case "sync":
        return this.replaceAll(change, by);
    }
  }

  /** The rules applied to `spec` (a copy): the user, or Redis' ACL SETUSER error. */
  private staged(spec: UserSpec, rules: readonly string[]): UserSpec | string {
    for (const rule of rules) {
      const error = applyRule(spec, rule, this.catalogue);
      if (error !== null) return `ERR Error in ACL SETUSER modifier '${rule}': ${error}`;
    }
    return spec;
  }

  private setUser(name: string, rules: readonly string[]): AclOutcome {
    const old = this.users.get(name);
    const spec = this.staged(old === undefined ? newUser(name) : copyUser(old.spec), rules);
    if (typeof spec === "string") return { error: spec };
    const user = this.compile(spec);
    this.users.set(name, user);
    const followers = [...(this.followers.get(name) ?? [])];
    if (old !== undefined && channelsRevoked(old.spec, spec)) for (const f of followers) f.channelsRevoked();
    for (const f of followers) f.follow(user);
    return { reply: "OK" };
  }

  private deleteUsers(names: readonly string[], by: number): AclOutcome {
    if (names.includes("default")) return { error: "ERR The 'default' user cannot be removed" };
    let deleted = 0;
    for (const name of names) {
      if (!this.users.delete(name)) continue;
      deleted++;
      this.disconnect(name, by);
    }
    return { reply: deleted };
  }

  /**
   * ACL LOAD: every user from the lines, or none. As Redis 7.0 does, the clients of every
   * user but `default` are disconnected (even when the file left their user unchanged);
   * default's clients follow its new rules. A thread's sync keeps the clients whose user remains.
   */
  private replaceAll(change: AclChange & { op: "load" | "sync" }, by: number): AclOutcome {
    const parsed = parseAclFile(change.lines, change.op === "load" ? change.source : "sync", this.catalogue);
    if ("error" in parsed) return { error: `ERR ${parsed.error}` };
    const old = this.users;
    this.users = this.compileAll(parsed);
    for (const name of [...this.followers.keys()]) {
      const user = this.users.get(name);
      if (user === undefined || (change.op === "load" && name !== "default")) {
        this.disconnect(name, by);
        continue;
      }
      const followers = [...(this.followers.get(name) ?? [])];
      const before = old.get(name);
      if (before !== undefined && channelsRevoked(before.spec, user.spec))
        for (const f of followers) f.channelsRevoked();
      for (const f of followers) f.follow(user);
    }
    return { reply: "OK" };
  }

  /** The user `name` is gone: its clients are disconnected (the asking one after its reply). */
  private disconnect(name: string, by: number): void {
    const followers = this.followers.get(name);
    this.followers.delete(name);
    for (const f of followers ?? []) f.removed(f.id === by);
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
   * The check a script makes on the commands it runs as `name` (who registered it), against
   * the user as it is when the command runs: ACL SETUSER reaches running registrations. A
   * user removed since may run nothing (a user created again under the name: its new rights).
   */
  guardFor(name: string): (command: string, argv: readonly Buffer[]) => string | null {
    return (command, argv) => {
      const user = this.users.get(name);
      if (user === undefined) return `NOPERM the user '${name}' this script runs as no longer exists`;
      const denial = this.check(user, command, argv);
      if (denial === null) return null;
      // As Redis logs a module's refused RM_Call (module.c): context "module".
      this.log.add({
        reason: denial.kind,
        context: "module",
        object: refusedObject(denial, argv),
        username: name,
        clientInfo: moduleClientInfo(name, command),
      });
      return noPermission(denial, name, this.namedRefusals);
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

/** Whether `after` lost a channel `before` had (Redis 7.0 ACLKillPubsubClientsIfNeeded's test). */
function channelsRevoked(before: UserSpec, after: UserSpec): boolean {
  if (after.allChannels) return false;
  if (before.allChannels) return true;
  return before.channels.some((c) => !after.channels.includes(c));
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
