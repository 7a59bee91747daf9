/**
 * TFCALL and TFCALLASYNC inside MULTI. Redis ran them inside the transaction; a proxy cannot
 * put a JavaScript function inside Redis's MULTI, because the function needs each
 * `client.call`'s reply before it goes on. So the transaction is cut at its first TFCALL:
 * what came before stays queued in Redis's MULTI, and that TFCALL and every command after it
 * are queued here (answered QUEUED). At EXEC, Redis runs the first part as one transaction,
 * then the rest runs in order (each TFCALL as a TFCALL that may not block, the other commands
 * pipelined on the transaction's connection up to the next TFCALL), and the client gets one
 * EXEC reply with every command's reply in its place. docs/triggers-functions.md says what
 * this does not keep (other clients may run between the parts).
 */
import { encodeCommand } from "../../resp/encode.js";

export function isTfCall(name: string): boolean {
  return name === "tfcall" || name === "tfcallasync";
}

export const QUEUED = Buffer.from("+QUEUED\r\n");

/** How the part after the cut runs: a TFCALL through T&F, a command on the transaction's connection. */
export interface TailRunner {
  tfCall(argv: Buffer[]): Promise<Buffer>;
  send(payload: Buffer): Promise<Buffer>;
  /** A command's reply as outside a transaction (FLUSHALL or DBSIZE in a cluster: the other masters' part added). */
  complete(argv: Buffer[], reply: Buffer): Promise<Buffer> | Buffer;
  /**
   * The write journal's view of a command about to be sent (the router's queuedTap): what to
   * tell it of the command's reply (null for an error), or null when it does not follow it.
   */
  watch(name: string, argv: Buffer[]): ((reply: Buffer | null) => void) | null;
}

/** Sends a command of the tail, telling the write journal its outcome as a forwarded write would. */
function sendWatched(argv: Buffer[], runner: TailRunner): Promise<Buffer> {
  const done = runner.watch(argv[0].toString().toLowerCase(), argv);
  const reply = runner.send(encodeCommand(argv));
  if (done === null) return reply;
  return reply.then((data) => {
    done(data[0] === 0x2d /* - */ ? null : data);
    return data;
  });
}

/** The commands of a transaction from its first TFCALL on. */
export class TfMultiTail {
  private readonly steps: Buffer[][] = [];

  push(argv: Buffer[]): void {
    this.steps.push(argv);
  }

  /** The commands queued from the first TFCALL on (EXEC's second look at the user's rules). */
  get commands(): readonly (readonly Buffer[])[] {
    return this.steps;
  }

  /**
   * Runs the steps after `head` (Redis's EXEC reply for the commands before the cut) and
   * returns the whole transaction's reply. A head that is not an array (WATCH made it fail, or
   * EXECABORT) ends the transaction there, as Redis would have for all of it.
   */
  async run(head: Buffer, runner: TailRunner): Promise<Buffer> {
    const lineEnd = head.indexOf("\r\n");
    if (head[0] !== 0x2a || lineEnd === -1) return head;
    const count = Number(head.subarray(1, lineEnd).toString());
    if (!Number.isSafeInteger(count) || count < 0) return head;
    const replies: Promise<Buffer>[] = [];
    for (const argv of this.steps) {
      if (isTfCall(argv[0].toString().toLowerCase())) {
        // Every command queued before this TFCALL has answered: the function sees their effects.
        await Promise.all(replies);
        replies.push(runner.tfCall(argv));
        await replies[replies.length - 1];
      } else {
        replies.push(sendWatched(argv, runner).then((reply) => runner.complete(argv, reply)));
      }
    }
    const parts = await Promise.all(replies);
    return Buffer.concat([Buffer.from(`*${count + parts.length}\r\n`), head.subarray(lineEnd + 2), ...parts]);
  }
}
