import type { RespValue } from "../resp/values.js";

/** Where a key specification starts looking (Redis 7 key specs, begin_search). */
type BeginSearch = { type: "index"; index: number } | { type: "keyword"; keyword: string; startFrom: number };
/** How it finds the keys from there (find_keys). */
type FindKeys =
  | { type: "range"; lastKey: number; keyStep: number; limit: number }
  | { type: "keynum"; keyNumIdx: number; firstKey: number; keyStep: number };

interface KeySpec {
  begin: BeginSearch;
  find: FindKeys;
  /** KEY_READ | KEY_WRITE: what the command does with these keys (ACL %R~ / %W~ checks). */
  access: number;
}

/** The key spec reads the key's value (Redis' ACCESS flag). */
export const KEY_READ = 1;
/** The key spec changes the key (INSERT, DELETE or UPDATE). */
export const KEY_WRITE = 2;

/** Redis 7 key-spec flags as ACL permissions, as acl.c's ACLSelectorCheckKey maps them. */
function keyAccess(flags: RespValue | undefined): number {
  if (!Array.isArray(flags)) return KEY_READ | KEY_WRITE;
  let access = 0;
  for (const f of flags) {
    const flag = str(f).toLowerCase();
    if (flag === "access") access |= KEY_READ;
    else if (flag === "insert" || flag === "delete" || flag === "update") access |= KEY_WRITE;
  }
  return access;
}

export interface CommandInfo {
  name: string;
  arity: number;
  flags: Set<string>;
  firstKey: number;
  lastKey: number;
  step: number;
  specs: KeySpec[];
  /** ACL categories without the '@' (read, string, fast...). */
  categories: string[];
  /** Container commands (OBJECT, XINFO...): their subcommands by lower-case name. */
  subcommands: Map<string, CommandInfo>;
  /** The one key's position when it is that simple (GET, SET, HSET...): the router's fast path. */
  singleKey: number | null;
}

/** A command whose only key is at a fixed index (one spec: index N, range with lastkey 0). */
function singleKeyIndex(specs: KeySpec[]): number | null {
  if (specs.length !== 1) return null;
  const { begin, find } = specs[0];
  if (begin.type !== "index" || find.type !== "range" || find.lastKey !== 0) return null;
  return begin.index;
}

function str(v: RespValue | undefined): string {
  return Buffer.isBuffer(v) ? v.toString() : typeof v === "string" ? v : String(v ?? "");
}

/** A RESP2 flat [key, value, key, value...] list as a lookup. */
function pairs(v: RespValue | undefined): Map<string, RespValue> {
  const map = new Map<string, RespValue>();
  if (!Array.isArray(v)) return map;
  for (let i = 0; i + 1 < v.length; i += 2) map.set(str(v[i]).toLowerCase(), v[i + 1]);
  return map;
}

function num(v: RespValue | undefined): number {
  return typeof v === "number" ? v : Number(str(v));
}

function parseKeySpec(raw: RespValue): KeySpec | null {
  const spec = pairs(raw);
  const begin = pairs(spec.get("begin_search"));
  const find = pairs(spec.get("find_keys"));
  const beginArgs = pairs(begin.get("spec"));
  const findArgs = pairs(find.get("spec"));
  let b: BeginSearch;
  if (str(begin.get("type")) === "index") b = { type: "index", index: num(beginArgs.get("index")) };
  else if (str(begin.get("type")) === "keyword") {
    b = {
      type: "keyword",
      keyword: str(beginArgs.get("keyword")).toLowerCase(),
      startFrom: num(beginArgs.get("startfrom")),
    };
  } else return null;
  let f: FindKeys;
  if (str(find.get("type")) === "range") {
    f = {
      type: "range",
      lastKey: num(findArgs.get("lastkey")),
      keyStep: num(findArgs.get("keystep")),
      limit: num(findArgs.get("limit")),
    };
  } else if (str(find.get("type")) === "keynum") {
    f = {
      type: "keynum",
      keyNumIdx: num(findArgs.get("keynumidx")),
      firstKey: num(findArgs.get("firstkey")),
      keyStep: num(findArgs.get("keystep")),
    };
  } else return null;
  return { begin: b, find: f, access: keyAccess(spec.get("flags")) };
}

const READ_WRITE = KEY_READ | KEY_WRITE;
/** The key at `index`. */
const keyAt = (index: number): KeySpec => ({
  begin: { type: "index", index },
  find: { type: "range", lastKey: 0, keyStep: 1, limit: 0 },
  access: READ_WRITE,
});
/** A key count at `index`, the keys after it. */
const countedAt = (index: number): KeySpec => ({
  begin: { type: "index", index },
  find: { type: "keynum", keyNumIdx: 0, firstKey: 1, keyStep: 1 },
  access: READ_WRITE,
});
/** The key after `keyword` (looked for from `startFrom`), or the first of the args' 1/limit after it. */
const afterKeyword = (keyword: string, startFrom: number, lastKey: number, limit: number): KeySpec => ({
  begin: { type: "keyword", keyword, startFrom },
  find: { type: "range", lastKey, keyStep: 1, limit },
  access: READ_WRITE,
});

/**
 * Key specs for the commands whose keys Redis before 7.0 gives only as "movablekeys" (its
 * COMMAND has no key specs), after Redis 7.0's own: a 6.x cluster then routes them by their
 * keys too (XREAD BLOCK to the stream's master, not to any master and a MOVED).
 */
const MOVABLE_KEYS_BEFORE_7: Readonly<Record<string, KeySpec[]>> = {
  eval: [countedAt(2)],
  evalsha: [countedAt(2)],
  zunionstore: [keyAt(1), countedAt(2)],
  zinterstore: [keyAt(1), countedAt(2)],
  zdiffstore: [keyAt(1), countedAt(2)],
  zunion: [countedAt(1)],
  zinter: [countedAt(1)],
  zdiff: [countedAt(1)],
  sort: [keyAt(1), afterKeyword("store", 1, 0, 0)],
  xread: [afterKeyword("streams", 1, -1, 2)],
  xreadgroup: [afterKeyword("streams", 4, -1, 2)],
  georadius: [keyAt(1), afterKeyword("store", 6, 0, 0), afterKeyword("storedist", 6, 0, 0)],
  georadiusbymember: [keyAt(1), afterKeyword("store", 5, 0, 0), afterKeyword("storedist", 5, 0, 0)],
  migrate: [keyAt(3), afterKeyword("keys", -2, -1, 0)],
};

function parseCommand(raw: RespValue): CommandInfo | null {
  if (!Array.isArray(raw) || raw.length < 6) return null;
  let specs = Array.isArray(raw[8]) ? raw[8].map(parseKeySpec).filter((s): s is KeySpec => s !== null) : [];
  const name = str(raw[0]).toLowerCase();
  const flags = new Set(Array.isArray(raw[2]) ? raw[2].map((f) => str(f).toLowerCase()) : []);
  if (specs.length === 0 && flags.has("movablekeys")) specs = MOVABLE_KEYS_BEFORE_7[name] ?? [];
  const subcommands = new Map<string, CommandInfo>();
  if (Array.isArray(raw[9])) {
    for (const sub of raw[9]) {
      const info = parseCommand(sub);
      // Subcommands are named "container|sub".
      if (info !== null) subcommands.set(info.name.slice(info.name.indexOf("|") + 1), info);
    }
  }
  return {
    name,
    arity: num(raw[1]),
    flags,
    firstKey: num(raw[3]),
    lastKey: num(raw[4]),
    step: num(raw[5]),
    specs,
    categories: Array.isArray(raw[6]) ? raw[6].map((c) => str(c).replace(/^@/, "").toLowerCase()) : [],
    subcommands,
    singleKey: subcommands.size === 0 ? singleKeyIndex(specs) : null,
  };
}

/**
 * The upstream's own command table (the reply of COMMAND), used to find which arguments
 * are keys, so new and module commands route without a table of our own.
 */
export class CommandTable {
  private readonly commands = new Map<string, CommandInfo>();

  constructor(reply: RespValue) {
    if (!Array.isArray(reply)) return;
    for (const raw of reply) {
      const info = parseCommand(raw);
      if (info !== null) this.commands.set(info.name, info);
    }
  }

  get size(): number {
    return this.commands.size;
  }

  /** The fixed index of the command's only key, when it has exactly one there (else null). */
  singleKey(name: string): number | null {
    return this.commands.get(name)?.singleKey ?? null;
  }

  /** The entry for argv (the subcommand's, for container commands); undefined if unknown. */
  lookup(name: string, argv: readonly Buffer[]): CommandInfo | undefined {
    const info = this.commands.get(name);
    if (info === undefined || info.subcommands.size === 0 || argv.length < 2) return info;
    return info.subcommands.get(argv[1].toString("latin1").toLowerCase()) ?? info;
  }

  /** Every command the upstream knows (containers with their subcommands inside). */
  all(): IterableIterator<CommandInfo> {
    return this.commands.values();
  }

  /**
   * The key arguments of argv with what the command does to each (KEY_READ, KEY_WRITE),
   * as pairs [index, access]; the legacy (pre-7) positions count as both.
   */
  keyAccess(name: string, argv: readonly Buffer[]): [number, number][] {
    const info = this.lookup(name, argv);
    if (info === undefined) return [];
    if (info.specs.length === 0) return legacyKeys(info, argv.length).map((i) => [i, KEY_READ | KEY_WRITE]);
    const keys: [number, number][] = [];
    for (const spec of info.specs) {
      const first = beginSearch(spec.begin, argv);
      if (first === 0) continue;
      const found = findKeys(spec.find, first, argv);
      if (found === null) return [];
      for (const i of found) keys.push([i, spec.access]);
    }
    return keys;
  }

  /** Indexes of the key arguments of argv, as Redis itself would find them. */
  /**
   * Whether `name` may be a Redis write, by its name alone: a container (CONFIG, OBJECT...)
   * may have a subcommand that writes; an unknown name may be anything.
   */
  mayWrite(name: string): boolean {
    const info = this.commands.get(name);
    return info === undefined || info.subcommands.size > 0 || info.flags.has("write");
  }

  /** The key arguments themselves (keyIndexes' arguments); a one-key command's without a list of indexes. */
  keys(name: string, argv: readonly Buffer[]): Buffer[] {
    const single = this.commands.get(name)?.singleKey ?? null;
    if (single !== null) return single < argv.length ? [argv[single]] : [];
    return this.keyIndexes(name, argv).map((i) => argv[i]);
  }

  keyIndexes(name: string, argv: readonly Buffer[]): number[] {
    const info = this.lookup(name, argv);
    if (info === undefined) return [];
    if (info.singleKey !== null) return info.singleKey < argv.length ? [info.singleKey] : [];
    if (info.specs.length === 0) return legacyKeys(info, argv.length);
    const keys: number[] = [];
    for (const spec of info.specs) {
      const first = beginSearch(spec.begin, argv);
      if (first === 0) continue;
      const found = findKeys(spec.find, first, argv);
      if (found === null) return [];
      for (const i of found) if (!keys.includes(i)) keys.push(i);
    }
    return keys;
  }
}

function beginSearch(begin: BeginSearch, argv: readonly Buffer[]): number {
  const argc = argv.length;
  if (begin.type === "index") return begin.index < argc ? begin.index : 0;
  const forward = begin.startFrom > 0;
  const start = forward ? begin.startFrom : argc + begin.startFrom;
  const end = forward ? argc - 1 : 0;
  for (let i = start; i !== end; i += forward ? 1 : -1) {
    if (i >= argc || i < 1) break;
    if (argv[i].toString("latin1").toLowerCase() === begin.keyword) return i + 1;
  }
  return 0;
}

/**
 * The key indexes a spec finds from `first`; null when its key count is not a number or asks
 * for more arguments than there are (EVAL s 9 k1 k2): Redis then finds no key at all in the
 * command (its key-count commands' getkeys procs give none), so that the server, wherever it
 * is sent, answers its own error, not CROSSSLOT.
 */
function findKeys(find: FindKeys, first: number, argv: readonly Buffer[]): number[] | null {
  const argc = argv.length;
  let last: number;
  let step: number;
  if (find.type === "range") {
    step = find.keyStep;
    if (find.lastKey >= 0) last = first + find.lastKey;
    else if (find.limit === 0) last = argc + find.lastKey;
    else last = first + Math.floor((argc - first) / find.limit) + find.lastKey;
  } else {
    step = find.keyStep;
    const at = first + find.keyNumIdx;
    if (at >= argc) return null;
    const numKeys = Number(argv[at].toString());
    if (!Number.isInteger(numKeys) || numKeys < 0) return null;
    first += find.firstKey;
    last = first + (numKeys - 1) * step;
    if (last >= argc) return null;
  }
  const out: number[] = [];
  for (let i = first; i <= last && i < argc; i += Math.max(step, 1)) out.push(i);
  return out;
}

/** Pre-Redis-7 servers: first key, last key, step from the command's fixed positions. */
function legacyKeys(info: CommandInfo, argc: number): number[] {
  if (info.firstKey <= 0) return [];
  const last = info.lastKey < 0 ? argc + info.lastKey : info.lastKey;
  const out: number[] = [];
  for (let i = info.firstKey; i <= last && i < argc; i += Math.max(info.step, 1)) out.push(i);
  return out;
}
