import type { Request } from "../resp/request-parser.js";
import type { ClientMemory } from "./memory-guard.js";

/** Commands with subcommands, which CLIENT LIST names as `container|sub`. */
const CONTAINERS = new Set([
  "acl",
  "client",
  "cluster",
  "command",
  "config",
  "function",
  "latency",
  "memory",
  "module",
  "object",
  "pubsub",
  "script",
  "slowlog",
  "xgroup",
  "xinfo",
]);

function commandLabel(request: Request): string {
  const name = request.name;
  const argv = request.argv;
  return CONTAINERS.has(name) && argv.length > 1 ? `${name}|${argv[1].toString().toLowerCase()}` : name;
}

/** What CLIENT LIST and CLIENT INFO show of one client. */
export interface ClientListFields {
  id: number;
  addr: string;
  laddr: string;
  name: string;
  ageMs: number;
  idleMs: number;
  flags: string;
  db: number;
  /** Channels, patterns and shard channels subscribed. */
  sub: number;
  psub: number;
  ssub: number;
  multi: number;
  /** Keys WATCHed; null where the server's lines have no `watch` field (before Redis 7.4, Valkey 8.0). */
  watch: number | null;
  qbuf: number;
  memory: ClientMemory;
  /** The last command, or null before the first. */
  cmd: Request | null;
  user: string;
  redir: number;
  resp: number;
  libName: string;
  libVersion: string;
  /** Whether the server's lines end with `io-thread` (Redis 8.0): the proxy's clients say 0, the main thread. */
  ioThread: boolean;
}

/** A client's CLIENT LIST line: Redis's own fields, in its order. */
export function clientListLine(c: ClientListFields): string {
  const omem = c.memory.output;
  // The proxy has no fd and keeps no per-client arena.
  const fields: [string, string | number][] = [
    ["id", c.id],
    ["addr", c.addr],
    ["laddr", c.laddr],
    ["fd", -1],
    ["name", c.name],
    ["age", Math.floor(c.ageMs / 1000)],
    ["idle", Math.floor(c.idleMs / 1000)],
    ["flags", c.flags],
    ["db", c.db],
    ["sub", c.sub],
    ["psub", c.psub],
    ["ssub", c.ssub],
    ["multi", c.multi],
    ...(c.watch === null ? [] : [["watch", c.watch] as [string, number]]),
    ["qbuf", c.qbuf],
    ["qbuf-free", 0],
    ["argv-mem", 0],
    ["multi-mem", 0],
    ["rbs", 0],
    ["rbp", 0],
    ["obl", 0],
    ["oll", 0],
    ["omem", omem],
    ["tot-mem", c.memory.query + omem],
    ["events", "r"],
    ["cmd", c.cmd === null ? "NULL" : commandLabel(c.cmd)],
    ["user", c.user],
    ["redir", c.redir],
    ["resp", c.resp],
    ["lib-name", c.libName],
    ["lib-ver", c.libVersion],
  ];
  if (c.ioThread) fields.push(["io-thread", 0]);
  return fields.map(([k, v]) => `${k}=${v}`).join(" ");
}
