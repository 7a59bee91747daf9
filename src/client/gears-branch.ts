import { inProtocol, partsInProtocol } from "../resp/convert.js";
import { encodeError } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import type { Protocol } from "../resp/values.js";
import { holdJoinKey, holdsClient, runGearsCommand, type GearsCaller } from "../gears/commands.js";
import { runTfCall, runTfCallInMulti } from "../gears/tf/tf-commands.js";
import type { ProxyContext } from "./context.js";
import type { Holds } from "./holds.js";
import type { ReplySlot } from "./reply-slot.js";

/** What the gears branch needs from the client session. */
export interface GearsHost {
  readonly ctx: ProxyContext;
  readonly holds: Holds;
  /** The client's protocol when a reply is settled (HELLO may change it meanwhile). */
  readonly proto: Protocol;
  /** Who runs the command: the client's protocol, database, id and user. */
  caller(): GearsCaller;
  /** A slot for a reply the proxy computes later. */
  laterSlot(): ReplySlot;
}

/**
 * The commands the gears engine answers instead of a server: RG.*, TFUNCTION/TFCALL, T&F's
 * CONFIG, and commands a registration hooks. Their replies are computed later, in RESP2 or
 * the client's protocol; blocking ones hold the client's next commands.
 */
export class GearsBranch {
  constructor(private readonly host: GearsHost) {}

  /** An RG.* or T&F command (args: what follows the name). */
  run(name: string, request: Request): void {
    const args = request.argv.slice(1);
    if (name === "tfcall" || name === "tfcallasync") return this.tfCall(name, args);
    const hold = holdsClient(name, args);
    const gears = this.host.ctx.gears;
    const endJoin = hold ? this.host.holds.join(holdJoinKey(name, args)) : null;
    const reply = runGearsCommand(gears, name, args, this.host.caller());
    // The join ends before the slot is filled: the reply's slotFilled runs the input again.
    this.answerLater(endJoin === null ? reply : reply.finally(endJoin), hold);
  }

  /**
   * TFCALL, the hot one: the same hold, join and reply as run() gives, through one callback
   * instead of a chain of promises.
   */
  private tfCall(name: "tfcall" | "tfcallasync", args: Buffer[]): void {
    const endJoin = this.host.holds.join(holdJoinKey(name, args));
    const answer = this.settler(true);
    const settle = (data: Buffer): void => {
      endJoin?.();
      answer(data);
    };
    try {
      runTfCall(this.host.ctx.gears.tf, name, args, this.host.caller(), settle);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      queueMicrotask(() => settle(encodeError(`ERR ${message}`)));
    }
  }

  /** Whether a registration hooks this command (CommandHook). */
  hooks(name: string, request: Request): boolean {
    const gears = this.host.ctx.gears;
    // Without hooks or watched commands nothing is hooked: the arguments are not split for it.
    const registry = gears.registry;
    if (!registry.hasHooks && registry.commandsWatched.size === 0) return false;
    return gears.hookFor(name, request.argv);
  }

  /** A hooked command: the hook's reply, the client's next commands waiting for it. */
  runHook(name: string, argv: Buffer[]): void {
    this.answerLater(this.host.ctx.gears.runHook(name, argv), true);
  }

  /** A TFCALL queued in MULTI, run at EXEC (gears/tf/tf-multi.ts). */
  tfCallInMulti(argv: Buffer[], proto: Protocol, db: number): Promise<Buffer> {
    return runTfCallInMulti(this.host.ctx.gears.tf, argv, proto, db);
  }

  /**
   * A reply computed by the proxy (in RESP2 or the client's protocol); with `hold`, the
   * client's next commands wait for it.
   */
  answerLater(reply: Promise<Buffer | Buffer[]>, hold: boolean): void {
    const settle = this.settler(hold);
    reply.then(settle, (err: Error) => settle(encodeError(`ERR ${err.message}`)));
  }

  /** Takes the reply's place (and with `hold` the client's hold); fills it when called. */
  private settler(hold: boolean): (data: Buffer | Buffer[]) => void {
    const slot = this.host.laterSlot();
    const release = hold ? this.host.holds.take() : null;
    return (data) => {
      release?.();
      const proto = this.host.proto;
      if (Array.isArray(data)) slot.replyParts(partsInProtocol(data, proto));
      else slot.reply(inProtocol(data, proto));
    };
  }
}
