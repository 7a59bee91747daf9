import { encodeCommand, encodeError, encodeValue } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import { RespVerbatim, type RespValue } from "../resp/values.js";
import { badClientName } from "./client-command.js";
import type { CommandHost, LocalCommand } from "./command-host.js";
import { ReplySlot } from "./reply-slot.js";

/**
 * CLIENT, AUTH and HELLO inside MULTI. Redis queues them and runs them at EXEC, in their
 * place; the proxy answers them itself. So the transaction queues a stand-in on the server
 * (its QUEUED and its place in EXEC's reply are the server's), and once EXEC ran, the proxy
 * runs each command for the client and puts its reply in the stand-in's place.
 *
 * The stand-in is a PING, except for a HELLO that switches the protocol and cannot fail for
 * its options: `HELLO <protover>` itself, so that the server writes the replies after it in
 * the new protocol, as Redis does for its own client.
 */

/** What a queued stand-in is for: the client's command, and whether the server switches protocol with it. */
export interface LocalInMulti {
  readonly request: Request;
  /** The protocol the server's stand-in switches to (HELLO 2/3), or null (a PING). */
  readonly switchesTo: 2 | 3 | null;
}

/**
 * Whether the transaction queues `name` as a stand-in for a command the proxy answers. Not
 * CLIENT PAUSE and UNPAUSE (the server's own, queued as they are), nor CLIENT REPLY (Redis
 * leaves EXEC's reply cut short after CLIENT REPLY OFF in a transaction: refused instead).
 */
export function answeredAtExec(name: string, argv: readonly Buffer[]): boolean {
  if (name === "auth" || name === "hello") return true;
  if (name !== "client" || argv.length < 2) return false;
  const sub = argv[1].toString().toLowerCase();
  return sub !== "pause" && sub !== "unpause" && sub !== "reply";
}

const PING = encodeCommand(["PING"]);
const HELLO = { 2: encodeCommand(["HELLO", "2"]), 3: encodeCommand(["HELLO", "3"]) };

/** The stand-in to queue on the server for `request` (its bytes), and what it does there. */
export function standIn(request: Request): { payload: Buffer; entry: LocalInMulti } {
  const switchesTo = request.name === "hello" ? helloSwitch(request.argv) : null;
  return { payload: switchesTo === null ? PING : HELLO[switchesTo], entry: { request, switchesTo } };
}

/**
 * The protocol a HELLO switches to when nothing but its protocol version can make it fail:
 * no AUTH (checked at EXEC), a valid SETNAME, no other option. Null otherwise.
 */
function helloSwitch(argv: readonly Buffer[]): 2 | 3 | null {
  if (argv.length < 2) return null;
  const version = argv[1].toString();
  if (version !== "2" && version !== "3") return null;
  for (let i = 2; i < argv.length; i++) {
    const option = argv[i].toString().toLowerCase();
    if (option !== "setname" || i + 1 >= argv.length) return null;
    if (badClientName(argv[++i].toString()) !== null) return null;
  }
  return version === "3" ? 3 : 2;
}

/**
 * Runs a command the proxy answers (`handler`) for `host` as EXEC runs it: whatever the
 * handler replies, at once or later, is the returned reply, not a reply of its own in the
 * client's output. A reply that closes the connection (CLIENT KILL of itself) says so.
 */
export function runAtExec(
  host: CommandHost,
  request: Request,
  handler: LocalCommand,
): Promise<{ reply: Buffer; close: boolean }> {
  return new Promise((resolve) => {
    let done = false;
    const settle = (reply: Buffer, close = false): void => {
      if (done) return;
      done = true;
      resolve({ reply, close });
    };
    const slot = (): ReplySlot =>
      new ReplySlot({
        slotFilled: (filled) =>
          settle(
            filled.rest === null ? filled.data! : Buffer.concat([filled.data!, ...filled.rest]),
            filled.closeAfter,
          ),
      });
    const value = (v: RespValue): void => settle(encodeValue(v, host.proto));
    const overrides: Partial<Record<keyof CommandHost, unknown>> = {
      replyNow: (data: Buffer) => {
        const s = slot();
        s.reply(data);
        return s;
      },
      replyError: (message: string) => settle(encodeError(message)),
      replyValue: value,
      replyText: (text: string) => value(new RespVerbatim("txt", Buffer.from(text))),
      replyAndClose: (data: Buffer) => settle(data, true),
      upstreamSlot: slot,
      laterSlot: slot,
      replyLater: (reply: Promise<Buffer>) =>
        reply.then(
          (data) => settle(data),
          (err: Error) => settle(encodeError(`ERR ${err.message}`)),
        ),
      // EXEC's own reply holds the client's next commands; nothing is in flight beside it.
      waitForIdle: () => true,
      enterSharedLane: () => true,
    };
    const captured = new Proxy(host, {
      get(target, prop) {
        if (typeof prop === "string" && prop in overrides) return overrides[prop as keyof CommandHost];
        const member: unknown = Reflect.get(target, prop, target);
        return typeof member === "function"
          ? (member as (...args: unknown[]) => unknown).bind(target)
          : member;
      },
      set(target, prop, value: unknown) {
        return Reflect.set(target, prop, value, target);
      },
    });
    try {
      handler(captured, request);
    } catch (err) {
      settle(encodeError(`ERR ${err instanceof Error ? err.message : String(err)}`));
    }
  });
}
