import { isScript } from "./command-kinds.js";
import type { CommandTable } from "./command-table.js";
import type { ScriptCache } from "./script-cache.js";

/**
 * `redis.call('name'` / `redis.pcall("name"`: the command a Lua script calls, when it is
 * spelt out. Hand-written: no Lua parser is needed to tell whether a script reads, and a
 * call whose name is not a literal counts as a read.
 */
const CALL = /\bredis\s*\.\s*p?call\s*\(\s*(?:(["'])([A-Za-z_|-]+)\1)?/g;

/**
 * Whether a script may read a key. Redis tracks a script's declared keys for its caller
 * only when the script calls a read-only command; the proxy cannot watch the script run,
 * so it reads the body: a read-only command named in it, or any call it cannot name,
 * counts. An unknown body (EVALSHA of a script not seen, FCALL) counts as a read.
 */
function scriptMayRead(commands: CommandTable, body: Buffer | undefined): boolean {
  if (body === undefined) return true;
  for (const m of body.toString().matchAll(CALL)) {
    const name = m[2]?.toLowerCase();
    if (name === undefined) return true;
    const argv = name.split("|").map((part) => Buffer.from(part));
    const info = commands.lookup(argv[0].toString(), argv);
    if (info === undefined || info.flags.has("readonly")) return true;
  }
  return false;
}

function keysAt(commands: CommandTable, name: string, argv: readonly Buffer[]): Buffer[] {
  return commands.keyIndexes(name, argv).map((i) => argv[i]);
}

function scriptBody(scripts: ScriptCache, name: string, argv: readonly Buffer[]): Buffer | undefined {
  if (name === "eval" || name === "eval_ro") return argv[1];
  if (name === "evalsha" || name === "evalsha_ro") return argv[1] && scripts.body(argv[1].toString());
  return undefined;
}

/**
 * The keys a command reads, as Redis' client-side caching remembers them for its caller:
 * the keys of a read-only command, or a script's declared keys when it may read.
 */
export function readKeys(
  commands: CommandTable,
  scripts: ScriptCache,
  name: string,
  argv: readonly Buffer[],
): Buffer[] {
  if (isScript(name)) {
    return scriptMayRead(commands, scriptBody(scripts, name, argv)) ? keysAt(commands, name, argv) : [];
  }
  return commands.lookup(name, argv)?.flags.has("readonly") ? keysAt(commands, name, argv) : [];
}

/** The keys a command may change: a write command's keys, or a script's declared keys. */
export function writtenKeys(commands: CommandTable, name: string, argv: readonly Buffer[]): Buffer[] {
  if (isScript(name) || commands.lookup(name, argv)?.flags.has("write")) return keysAt(commands, name, argv);
  return [];
}
