import { encodeCommand, type Arg } from "../resp/encode.js";
import type { RespValue } from "../resp/values.js";
import type { UpstreamNode } from "../upstream/node.js";
import type { ReplySink } from "../upstream/reply-sink.js";
import type { Topology } from "../upstream/topology.js";

/** Who is asking: the database to run in and which shared connection keeps their order. */
export interface RouteContext {
  db: number;
  affinity: number;
}

/**
 * Decides where each command goes and sends it there. Client sessions and the gears
 * engine both reach Redis only through here.
 */
export class Router {
  constructor(readonly topology: Topology) {}

  /** Forwards a client's command; the raw reply goes to `sink`. */
  forward(argv: Buffer[], raw: Buffer | null, sink: ReplySink, ctx: RouteContext): void {
    const node = this.nodeFor(argv);
    node.send(ctx.affinity, raw ?? encodeCommand(argv), sink, ctx.db);
  }

  /** The node that should run `argv` (for commands that need a dedicated connection too). */
  nodeFor(_argv: readonly Buffer[]): UpstreamNode {
    return this.topology.nodeForSlot(0);
  }

  /** The proxy's own request, routed like a client's. */
  call(argv: readonly Arg[], db = 0): Promise<RespValue> {
    const node = this.topology.nodeForSlot(0);
    return node.call(argv, db);
  }
}
