import { createHash } from "node:crypto";
import type { AclCatalogue } from "./catalogue.js";

/** A key pattern may be read (KEY_READ), written (KEY_WRITE), or both (`~`). */
export const READ = 1;
export const WRITE = 2;

export interface KeyPattern {
  pattern: string;
  access: number;
}

/**
 * One user as its rules left it (what ACL LIST shows). Command rules are kept as Redis 7.0
 * keeps them: a base (+@all or -@all) and the later rules in order, a repeated rule
 * replacing its earlier occurrence.
 */
export interface UserSpec {
  name: string;
  enabled: boolean;
  nopass: boolean;
  /** SHA-256 of each password, lower-case hex. */
  passwords: string[];
  allKeys: boolean;
  keys: KeyPattern[];
  allChannels: boolean;
  channels: string[];
  allCommands: boolean;
  commandRules: string[];
}

/** A copy that rules may change without touching `user` (ACL SETUSER is all-or-nothing). */
export function copyUser(user: UserSpec): UserSpec {
  return {
    ...user,
    passwords: [...user.passwords],
    keys: user.keys.map((k) => ({ ...k })),
    channels: [...user.channels],
    commandRules: [...user.commandRules],
  };
}

export function newUser(name: string): UserSpec {
  return {
    name,
    enabled: false,
    nopass: false,
    passwords: [],
    allKeys: false,
    keys: [],
    allChannels: false,
    channels: [],
    allCommands: false,
    commandRules: [],
  };
}

export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

const HASH = /^[0-9a-f]{64}$/;
const AFTER_ALL_KEYS =
  "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns";
const AFTER_ALL_CHANNELS =
  "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels";

/**
 * Applies one rule to `user`; null when it applied, else Redis' reason (the caller words
 * the full error, ACL SETUSER's or the aclfile's).
 */
export function applyRule(user: UserSpec, rule: string, catalogue: AclCatalogue): string | null {
  const lower = rule.toLowerCase();
  switch (lower) {
    case "on":
      user.enabled = true;
      return null;
    case "off":
      user.enabled = false;
      return null;
    case "nopass":
      user.nopass = true;
      user.passwords = [];
      return null;
    case "resetpass":
      user.nopass = false;
      user.passwords = [];
      return null;
    case "allkeys":
    case "~*":
      user.allKeys = true;
      user.keys = [];
      return null;
    case "resetkeys":
      user.allKeys = false;
      user.keys = [];
      return null;
    case "allchannels":
    case "&*":
      user.allChannels = true;
      user.channels = [];
      return null;
    case "resetchannels":
      user.allChannels = false;
      user.channels = [];
      return null;
    case "allcommands":
    case "+@all":
      user.allCommands = true;
      user.commandRules = [];
      return null;
    case "nocommands":
    case "-@all":
      user.allCommands = false;
      user.commandRules = [];
      return null;
    case "reset": {
      const fresh = newUser(user.name);
      Object.assign(user, fresh);
      return null;
    }
    case "clearselectors":
      // The proxy's users have no selectors to clear.
      return null;
    case "sanitize-payload":
    case "skip-sanitize-payload":
      // The payloads RESTORE checks are the server's business; accepted for compatibility.
      return null;
  }
  const first = rule[0];
  const rest = rule.slice(1);
  if (first === ">" || first === "<" || first === "#" || first === "!") {
    const hash = first === ">" || first === "<" ? sha256(rest) : rest;
    if ((first === "#" || first === "!") && !HASH.test(hash)) {
      return "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters";
    }
    if (first === ">" || first === "#") {
      if (!user.passwords.includes(hash)) user.passwords.push(hash);
      user.nopass = false;
    } else {
      if (!user.passwords.includes(hash))
        return "The password you are trying to remove from the user does not exist";
      user.passwords = user.passwords.filter((p) => p !== hash);
    }
    return null;
  }
  if (first === "~" || first === "%") return addKeyPattern(user, rule);
  if (first === "&") {
    if (user.allChannels) return AFTER_ALL_CHANNELS;
    if (!user.channels.includes(rest)) user.channels.push(rest);
    return null;
  }
  if (first === "+" || first === "-") return addCommandRule(user, first, rest.toLowerCase(), catalogue);
  if (first === "(") return NO_SELECTORS;
  return "Syntax error";
}

function addKeyPattern(user: UserSpec, rule: string): string | null {
  let access = READ | WRITE;
  let pattern = rule.slice(1);
  if (rule[0] === "%") {
    const tilde = rule.indexOf("~");
    if (tilde < 2) return "Syntax error";
    access = 0;
    for (const c of rule.slice(1, tilde).toUpperCase()) {
      if (c === "R") access |= READ;
      else if (c === "W") access |= WRITE;
      else return "Syntax error";
    }
    pattern = rule.slice(tilde + 1);
  }
  if (user.allKeys) return AFTER_ALL_KEYS;
  if (pattern === "*" && access === (READ | WRITE)) {
    user.allKeys = true;
    user.keys = [];
    return null;
  }
  const same = user.keys.find((k) => k.pattern === pattern);
  if (same !== undefined) same.access |= access;
  else user.keys.push({ pattern, access });
  return null;
}

/** What the proxy refuses of Redis 7.0's rules: selectors and first-argument rules. */
export const NO_SELECTORS = "selectors are not supported by gears-proxy";
const NO_FIRST_ARG = "first-argument rules (command|arg) are not supported by gears-proxy";

function addCommandRule(user: UserSpec, sign: string, body: string, catalogue: AclCatalogue): string | null {
  const bar = body.indexOf("|");
  if (bar > 0 && !catalogue.isContainer(body.slice(0, bar)) && catalogue.isKnown(body.slice(0, bar))) {
    return NO_FIRST_ARG;
  }
  const known = body.startsWith("@")
    ? catalogue.category(body.slice(1)).length > 0 || body === "@gears"
    : catalogue.leavesOf(body) !== null;
  if (!known) return "Unknown command or category name in ACL";
  user.commandRules = user.commandRules.filter((r) => r.slice(1) !== body);
  user.commandRules.push(sign + body);
  return null;
}

/** The user as ACL LIST shows it (without the leading `user <name>`). */
export function describeRules(user: UserSpec): string {
  const parts: string[] = [user.enabled ? "on" : "off"];
  if (user.nopass) parts.push("nopass");
  for (const hash of user.passwords) parts.push(`#${hash}`);
  if (user.allKeys) parts.push("~*");
  for (const k of user.keys) {
    parts.push(
      k.access === (READ | WRITE) ? `~${k.pattern}` : `%${k.access === READ ? "R" : "W"}~${k.pattern}`,
    );
  }
  if (user.allChannels) parts.push("&*");
  else parts.push("resetchannels", ...user.channels.map((c) => `&${c}`));
  parts.push(user.allCommands ? "+@all" : "-@all", ...user.commandRules);
  return parts.join(" ");
}

/** The leaves (command or `container|sub` names) the user's command rules allow. */
export function allowedLeaves(user: UserSpec, catalogue: AclCatalogue): Set<string> {
  const allowed = new Set<string>(user.allCommands ? catalogue.allLeaves() : []);
  for (const rule of user.commandRules) {
    const body = rule.slice(1);
    const leaves = body.startsWith("@")
      ? catalogue.category(body.slice(1))
      : (catalogue.leavesOf(body) ?? []);
    if (rule[0] === "+") for (const l of leaves) allowed.add(l);
    else for (const l of leaves) allowed.delete(l);
  }
  return allowed;
}
