import { encodeCommand } from "../resp/encode.js";
import type { UpstreamNode } from "../upstream/node.js";
import type { ReplySink } from "../upstream/reply-sink.js";
import { Gather, firstError } from "./merge.js";

/** Commands that end or hold what a busy server is doing; they must not queue behind it. */
const CONTROL = new Set(["script kill", "function kill", "client pause", "client unpause"]);

/** Whether a command of this name may be a control command (its arguments tell: isControl). */
export function mayBeControl(name: string): boolean {
  return name === "script" || name === "function" || name === "client";
}

/** Whether argv is a control command (SCRIPT KILL, FUNCTION KILL, CLIENT PAUSE/UNPAUSE). */
export function isControl(name: string, argv: readonly Buffer[]): boolean {
  if (!mayBeControl(name) || argv.length < 2) return false;
  // SCRIPT KILL and FUNCTION KILL take no argument: with one they are the server's arity error.
  if (name !== "client" && argv.length !== 2) return false;
  return CONTROL.has(`${name} ${argv[1].toString().toLowerCase()}`);
}

/** OK when some node had something to kill (or paused); otherwise the first node's error (NOTBUSY). */
function anyKilled(replies: Buffer[]): Buffer {
  return replies.find((r) => r[0] === 43 /* + */) ?? firstError(replies) ?? replies[0];
}

/**
 * Sends a control command to every master on its control connection, which nothing else
 * uses: a SCRIPT KILL reaches the server at once, while the shared connections wait
 * behind the very script it ends.
 */
export function sendControl(
  masters: readonly UpstreamNode[],
  argv: readonly Buffer[],
  sink: ReplySink,
): void {
  const gather = new Gather(masters.length, anyKilled, sink);
  const payload = encodeCommand(argv);
  masters.forEach((node, i) => {
    const part = gather.part(i);
    const conn = node.control();
    if (conn === null) part.fail(node.failure);
    else conn.send(payload, part, 0);
  });
}
