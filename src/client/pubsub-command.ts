import { encodeInteger } from "../resp/encode.js";
import { PUBSUB_HOME_SLOT } from "../routing/command-kinds.js";
import type { LocalCommand } from "./command-host.js";

/**
 * PUBSUB NUMPAT without the proxy's own patterns: the server counts the distinct patterns
 * subscribed on it, the proxy's keyspace notifications' among them (router.ownPatterns). A
 * pattern of the proxy's that one of its clients subscribes too still counts, once. The other
 * PUBSUB subcommands go on as they are (PUBSUB CHANNELS is filtered by the router), and so
 * does a user of the server's own ACL's NUMPAT, which the server checks for that user: its
 * count keeps the proxy's patterns.
 */
export const pubsubCommand: LocalCommand = (session, request) => {
  if (!session.enterSharedLane(request)) return;
  const numpat = request.argv.length === 2 && request.argv[1].toString().toLowerCase() === "numpat";
  if (!numpat || session.user.onServer) return session.forward("pubsub", request);
  const ctx = session.ctx;
  const slot = session.upstreamSlot();
  slot.onReply = (data) => {
    if (data[0] !== 58 /* : */) return data;
    // Where NUMPAT ran: the master of channel pub/sub in a cluster, the server otherwise.
    const home = ctx.leases.nodeIdForSlot(PUBSUB_HOME_SLOT, session.id);
    let own = 0;
    for (const pattern of ctx.router.ownPatterns.on(home))
      if (![...ctx.clients.all()].some((c) => c.subscribesPattern?.(pattern) === true)) own++;
    const count = Number(data.toString("latin1", 1, data.length - 2));
    return own === 0 ? data : encodeInteger(Math.max(0, count - own));
  };
  ctx.router.forward("pubsub", request.argv, request.raw, slot, {
    db: session.db,
    affinity: session.id,
    proto: session.proto,
  });
};
