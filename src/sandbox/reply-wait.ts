import { receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { CTL_SIGNAL } from "./protocol.js";

/**
 * In a worker: blocks until the main thread's answer to host request `seq` is on the reply
 * port (the main thread raises CTL_SIGNAL after posting it), and returns it.
 */
export function waitForReply(ctl: Int32Array, replyPort: MessagePort, seq: number): { seq: number } {
  let reply: { seq: number } | undefined;
  while (reply === undefined) {
    Atomics.wait(ctl, CTL_SIGNAL, 0);
    const got = receiveMessageOnPort(replyPort) as { message: { seq: number } } | undefined;
    if (got === undefined) {
      // The signal is up but the message is not readable yet: wait a moment and look again.
      Atomics.wait(ctl, CTL_SIGNAL, 1, 1);
      continue;
    }
    if (got.message.seq === seq) reply = got.message;
  }
  Atomics.store(ctl, CTL_SIGNAL, 0);
  return reply;
}
