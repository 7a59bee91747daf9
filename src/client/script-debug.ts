import { OK } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import type { CommandHost } from "./command-host.js";
import { since62 } from "./server-features.js";

/**
 * SCRIPT DEBUG, answered by the proxy. On Redis it puts the client's connection in debugging
 * mode: its next EVAL opens a Lua debugger session that takes over the connection. Through the
 * proxy that connection is shared (or a script lease), so YES and SYNC are refused; NO, which
 * leaves a client that never debugs as it is, answers OK. In Redis' order: first the pipeline
 * check (a reply still unwritten: clientHasPendingReplies), then the mode.
 */
export function isScriptDebug(name: string, argv: readonly Buffer[]): boolean {
  // Other arities are the server's arity error, which it may give itself.
  return name === "script" && argv.length === 3 && argv[1].toString().toLowerCase() === "debug";
}

export function scriptDebug(host: CommandHost, request: Request, unwritten: boolean): void {
  if (unwritten) return host.replyError("ERR SCRIPT DEBUG must be called outside a pipeline");
  const mode = request.argv[2].toString().toLowerCase();
  if (mode === "no") {
    host.replyNow(OK);
    return;
  }
  if (mode === "yes" || mode === "sync")
    return host.replyError("ERR SCRIPT DEBUG is not supported by gears-proxy");
  // Redis 6.0 wrote the modes in lower case (6.2 as 7.0 does).
  host.replyError(`ERR Use SCRIPT DEBUG ${since62(host.ctx.upstreamServer) ? "YES/SYNC/NO" : "yes/sync/no"}`);
}
