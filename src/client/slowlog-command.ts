import { OK } from "../resp/encode.js";
import type { CommandHost, LocalCommand } from "./command-host.js";

/** SLOWLOG GET [count] | LEN | RESET | HELP, answered from the proxy's own slow log. */
export const slowlogCommand: LocalCommand = (session: CommandHost, request) => {
  const argv = request.argv;
  const sub = argv.length > 1 ? argv[1].toString().toLowerCase() : "";
  const log = session.ctx.slowlog;
  if (sub === "len" && argv.length === 2) return session.replyValue(log.length);
  if (sub === "reset" && argv.length === 2) {
    log.reset();
    session.replyNow(OK);
    return;
  }
  if (sub === "get" && argv.length <= 3) {
    let count = 10;
    if (argv.length === 3) {
      const text = argv[2].toString();
      count = /^-?\d+$/.test(text) ? Number(text) : NaN;
      if (!Number.isSafeInteger(count) || count < -1) {
        return session.replyError("ERR count should be greater than or equal to -1");
      }
    }
    const entries = log
      .get(count)
      .map((e) => [e.id, e.timestamp, e.durationUs, e.argv, Buffer.from(e.addr), Buffer.from(e.name)]);
    return session.replyValue(entries);
  }
  session.replyError(`ERR unknown subcommand or wrong number of arguments for '${sub}'. Try SLOWLOG HELP.`);
};
