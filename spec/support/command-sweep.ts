import { RawClient, ReplyError, toText, type Value } from "./raw-client.js";
import type { Burst, GenCommand, Mode } from "./command-generator.js";

// Every command and subcommand the server lists (COMMAND LIST, COMMAND INFO's subcommands),
// sent with no arguments, with a key of each type, and with one to three junk arguments after
// it: the errors (arity, syntax, WRONGTYPE, not an integer...) and the few replies, compared
// directly and through the proxy (spec/differential-sweep.spec.ts). What the generator's
// random sequences reach only now and then, all of it.

/** Left out: they end, hold or turn the connection (or the server) into something else. */
const SKIPPED = new Set([
  "shutdown",
  "debug",
  "monitor",
  "sync",
  "psync",
  "replicaof",
  "slaveof",
  "failover",
  "module",
  "subscribe",
  "psubscribe",
  "ssubscribe",
  "unsubscribe",
  "punsubscribe",
  "sunsubscribe",
  "quit",
  "reset",
  "multi",
  "exec",
  "discard",
  "watch",
  "hello",
  "auth",
  "replconf",
  "save",
  "bgsave",
  "bgrewriteaof",
  // The proxy emulates a cluster's: directly, a standalone server's refusal.
  "cluster",
  "readonly",
  "readwrite",
  "asking",
  // Times, ids, random art, addresses, and the proxy's own slow log.
  "time",
  "lastsave",
  "info",
  "lolwut",
  "randomkey",
  "slowlog",
  "latency",
  "role",
  "pfselftest",
  "client|list",
  "client|info",
  "client|id",
  "client|kill",
  "client|pause",
  "client|unpause",
  "client|reply",
  "client|tracking",
  "client|no-touch",
  "memory|stats",
  "memory|doctor",
  "memory|malloc-stats",
  "memory|purge",
  "object|idletime",
  "object|freq",
  "acl|setuser",
  "acl|genpass",
  "acl|log",
  "acl|load",
  "acl|save",
  "config|set",
  "config|rewrite",
  "config|resetstat",
  "script|debug",
  "xinfo|consumers",
  // COMMAND alone (and INFO, DOCS without names) lists every command in dictionary order.
  "command",
  "command|info",
  "command|docs",
  "command|list",
]);

/**
 * In a cluster only: a cluster node's keys are larger (slot links); databases are refused by
 * Redis Cluster itself, before their arguments are looked at.
 */
const SKIPPED_IN_CLUSTER = new Set(["memory|usage", "move", "swapdb", "select"]);

/**
 * In a transaction: the commands the proxy answers itself, which it refuses there (a known gap,
 * docs/transparency.md), and in a cluster the keyless ones that fan out outside a transaction
 * and reach one master in it (the other known gap).
 */
const SKIPPED_IN_MULTI = new Set(["client", "acl", "ping", "echo", "monitor"]);
const SKIPPED_IN_CLUSTER_MULTI = new Set([
  "flushall",
  "flushdb",
  "dbsize",
  "keys",
  "scan",
  "script",
  "function",
  "config",
  "wait",
  "pubsub",
  "publish",
  "spublish",
]);

/**
 * No numbers for the commands that may block (with a timeout of 0: forever), nor for the SCAN
 * family (a cursor of -1 is 2^64-1: which elements it finds in a hash table depends on the
 * server's hash seed).
 */
const NO_NUMBERS = /^(b[lrz]|xread|wait)|scan$/;

/** Every command name ("get") and subcommand ("config|get") the server at `port` lists, sorted. */
export async function listCommands(port: number): Promise<string[]> {
  const client = await RawClient.connect(port);
  try {
    // Redis 6 has no COMMAND LIST (nor subcommands): the names from COMMAND.
    const listed = await client.call("COMMAND", "LIST");
    const names = (
      listed instanceof ReplyError
        ? (toText(await client.call("COMMAND")) as Value[][]).map((entry) => String(entry[0]))
        : (toText(listed) as string[])
    ).map((n) => n.toLowerCase());
    const out: string[] = [];
    for (const name of names) {
      const info = toText(await client.call("COMMAND", "INFO", name)) as Value[][];
      const subs = (info[0]?.[9] ?? []) as Value[][];
      if (subs.length === 0) out.push(name);
      for (const sub of subs) out.push(String(sub[0]).toLowerCase());
    }
    return out.sort();
  } finally {
    client.close();
  }
}

function cmd(args: string[]): GenCommand {
  return { argv: args.map((a) => Buffer.from(a)) };
}

/**
 * One burst per command: the database emptied and a key of each type made, then the command
 * in each shape. In a cluster every argument carries the same hash tag (a key there may be any
 * argument), and no bare numbers (which would be keys of other slots).
 */
/**
 * Known differences, per server kind: commands left out of the sweep there. In front of a
 * Redis 6.0 Cluster, MSET with a key left over: 6.0's own words ('wrong number of arguments
 * for MSET') against the proxy's (7.0's), which splits MSET across slots (split.ts does not
 * know the server's version). PFDEBUG, which 6.0's table declares without keys: the proxy
 * sends it where keyless commands go, not to its key's master.
 */
export const KNOWN_DIFFERENCES: Record<string, Partial<Record<Mode, string[]>>> = {
  redis6: { cluster: ["mset", "pfdebug"] },
};

export function sweepSequence(
  commands: readonly string[],
  mode: Mode,
  resp3: boolean,
  /** Each shape alone in a transaction: MULTI, the command, EXEC. */
  inMulti = false,
  /** The shapes sent while WATCHing a key (the proxy holds a connection for the client then). */
  watching = false,
): Burst[] {
  const t = mode === "cluster" ? "{a}" : "";
  const keys = ["s", "l", "h", "st", "z", "t", "missing"].map((k) => `${t}${k}`);
  const setup = [
    ["FLUSHALL"],
    ["SET", keys[0], "12"],
    ["RPUSH", keys[1], "a"],
    ["HSET", keys[2], "f", "v"],
    ["SADD", keys[3], "m"],
    ["ZADD", keys[4], "1", "m"],
    ["XADD", keys[5], "1-1", "f", "v"],
  ];
  const junk = `${t}x`;
  const one = mode === "cluster" ? [] : ["1"];
  // Numbers after the key (ranges, counts, indexes), in front of one server only: in a
  // cluster a number may sit where a key goes. Not for blocking commands (0 blocks forever).
  const numbers =
    mode === "cluster" ? [] : [["0"], ["-1"], ["0", "-1"], ["2", "1"], ["1.5"], ["1", "2", "3"]];
  const bursts: Burst[] = [];
  if (resp3) bursts.push({ conn: "a", commands: [cmd(["HELLO", "3"])] });
  for (const full of commands) {
    if (SKIPPED.has(full) || SKIPPED.has(full.split("|")[0])) continue;
    if (mode === "cluster" && SKIPPED_IN_CLUSTER.has(full)) continue;
    const name = full.split("|")[0];
    if (inMulti && (SKIPPED_IN_MULTI.has(name) || (mode === "cluster" && SKIPPED_IN_CLUSTER_MULTI.has(name))))
      continue;
    const head = full.split("|");
    const shapes: string[][] = [[]];
    for (const [i, key] of keys.entries()) {
      shapes.push([key], [key, junk], [key, junk, junk], [key, junk, junk, junk]);
      // A typed key second (RENAME, SMOVE, LMOVE... to it; SUNION of two types).
      shapes.push([keys[6], key], [keys[6], key, junk], [key, keys[(i + 1) % 6]]);
      for (const n of one) shapes.push([key, n, junk]);
      if (!NO_NUMBERS.test(name)) for (const n of numbers) shapes.push([key, ...n]);
    }
    bursts.push({
      conn: "a",
      commands: [
        ...setup.map(cmd),
        ...(watching ? [cmd(["WATCH", keys[0]])] : []),
        ...shapes.flatMap((s) =>
          inMulti ? [cmd(["MULTI"]), cmd([...head, ...s]), cmd(["EXEC"])] : [cmd([...head, ...s])],
        ),
        ...(watching ? [cmd(["UNWATCH"])] : []),
      ],
    });
  }
  return bursts;
}
