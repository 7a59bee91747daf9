import { OK, encodeSimple, encodeValue } from "../resp/encode.js";
import { RespError, type RespValue } from "../resp/values.js";
import type { CommandHost, LocalCommand } from "./command-host.js";

/** Redis 7's SLOWLOG HELP, with the proxy's SHARDS added. */
const HELP = [
  "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
  "GET [<count>]",
  "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
  "    Entries are made of:",
  "    id, timestamp, time in microseconds, arguments array, client IP and port,",
  "    client name",
  "LEN",
  "    Return the length of the slowlog.",
  "RESET",
  "    Reset the slowlog.",
  "SHARDS [<count>]",
  "    (gears-proxy) Every master's top <count> entries, each with the node's host:port added.",
  "HELP",
  "    Print this help.",
];

/**
 * SLOWLOG GET [count] | LEN | RESET | HELP, answered from the proxy's own slow log, as Redis does;
 * SLOWLOG SHARDS [count], the proxy's own subcommand: every master's SLOWLOG GET [count],
 * each entry with the node's address appended as a seventh element.
 */
export const slowlogCommand: LocalCommand = (session: CommandHost, request) => {
  const argv = request.argv;
  const sub = argv.length > 1 ? argv[1].toString().toLowerCase() : "";
  const log = session.ctx.slowlog;
  if (sub === "help" && argv.length === 2) {
    session.replyNow(Buffer.concat([Buffer.from(`*${HELP.length}\r\n`), ...HELP.map(encodeSimple)]));
    return;
  }
  const threads = session.ctx.threads;
  if (sub === "len" && argv.length === 2) {
    if (threads === undefined) return session.replyValue(log.length);
    return session.replyLater(
      threads.slowlogLen().then((n) => encodeValue(n, session.proto)),
      false,
    );
  }
  if (sub === "reset" && argv.length === 2) {
    if (threads === undefined) {
      log.reset();
      session.replyNow(OK);
      return;
    }
    return session.replyLater(
      threads.slowlogReset().then(() => OK),
      false,
    );
  }
  if ((sub === "get" || sub === "shards") && argv.length <= 3) {
    let count = 10;
    if (argv.length === 3) {
      const text = argv[2].toString();
      count = /^-?\d+$/.test(text) ? Number(text) : NaN;
      if (!Number.isSafeInteger(count) || count < -1) {
        return session.replyError("ERR count should be greater than or equal to -1");
      }
    }
    if (sub === "shards") return shardSlowlogs(session, count);
    if (threads === undefined) return session.replyValue(log.rows(count));
    return session.replyLater(
      threads.slowlogGet(count).then((rows) => encodeValue(rows, session.proto)),
      false,
    );
  }
  session.replyError(`ERR unknown subcommand or wrong number of arguments for '${sub}'. Try SLOWLOG HELP.`);
};

/** Every master's slow log, newest entries first, each tagged with the node it came from. */
function shardSlowlogs(session: CommandHost, count: number): void {
  const masters = session.ctx.router.topology.masters();
  const perNode = Promise.all(
    masters.map(async (node) => {
      const reply = await node.call(["SLOWLOG", "GET", String(count)]);
      if (reply instanceof RespError) throw new Error(`SLOWLOG SHARDS: ${node.id}: ${reply.message}`);
      const entries = Array.isArray(reply) ? (reply as RespValue[][]) : [];
      return entries.map((entry) => [...entry, Buffer.from(node.id)]);
    }),
  );
  session.replyLater(
    perNode.then((lists) => {
      // Newest first across the nodes, as each node lists its own (timestamp, then id).
      const all = lists.flat().sort((a, b) => Number(b[1]) - Number(a[1]) || Number(b[0]) - Number(a[0]));
      return encodeValue(all, session.proto);
    }),
    false,
  );
}
