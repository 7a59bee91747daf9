import type { Topology } from "./topology.js";

/**
 * Ready when the topology names at least one master and every master answers PING within
 * `timeoutMs`. A probe rather than the nodes' own "down" flag: with no traffic, nothing else
 * would notice that a server has gone.
 */
export async function upstreamsReady(topology: Topology, timeoutMs: number): Promise<boolean> {
  const masters = topology.masters();
  if (masters.length === 0 || topology.slotRanges().length === 0) return false;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  const pings = Promise.all(masters.map((node) => node.call(["PING"]))).then(
    (replies) => replies.every((r) => r === "PONG" || (Buffer.isBuffer(r) && r.toString() === "PONG")),
    () => false,
  );
  try {
    return await Promise.race([pings, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
