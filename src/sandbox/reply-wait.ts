import { receiveMessageOnPort, type MessagePort } from "node:worker_threads";
import { CTL_SIGNAL, REPLY_SEQ, SIGNAL_AREA, SIGNAL_PORT } from "./protocol.js";

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

/**
 * waitForReply for a worker with a reply area (`area`: its Int32 header): null when the answer
 * to `seq` is in the area, to be read before the next request; else the port's message.
 */
export function waitForAnswer(
  ctl: Int32Array,
  replyPort: MessagePort,
  area: Int32Array,
  seq: number,
): { seq: number } | null {
  for (;;) {
    Atomics.wait(ctl, CTL_SIGNAL, 0);
    // The atomic load orders the area's bytes, written before the signal, before our reads.
    if (Atomics.load(ctl, CTL_SIGNAL) === SIGNAL_AREA) {
      Atomics.store(ctl, CTL_SIGNAL, 0);
      if (area[REPLY_SEQ] === seq) return null;
      continue;
    }
    const got = receiveMessageOnPort(replyPort) as { message: { seq: number } } | undefined;
    if (got === undefined) {
      // The signal is up but the message is not readable yet: wait a moment and look again.
      Atomics.wait(ctl, CTL_SIGNAL, SIGNAL_PORT, 1);
      continue;
    }
    if (got.message.seq === seq) {
      Atomics.store(ctl, CTL_SIGNAL, 0);
      return got.message;
    }
  }
}
