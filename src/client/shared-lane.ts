import { encodeCommand } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import { dbFor } from "../routing/command-kinds.js";
import type { ClusterRuns } from "../routing/cluster-runs.js";
import type { Lease, ReplySink } from "../routing/lease.js";
import type { Router } from "../routing/router.js";
import type { Holds } from "./holds.js";
import type { LaneHost } from "./lane.js";
import type { ReplySlot } from "./reply-slot.js";
import { RequestRuns } from "./request-runs.js";
import type { TrackingState } from "./tracking/state.js";

/** What the shared lane needs beyond a lane's host. */
export interface SharedHost extends Omit<LaneHost, "enterLane"> {
  readonly holds: Holds;
  readonly tracking: TrackingState | null;
  /** The connection a transaction (WATCH, MULTI) pinned, which a SELECT must go on. */
  readonly pinned: Lease | null;
}

/**
 * Ordinary commands on the shared pipelined connections (the pass-through hot path): the
 * node that owns their keys, through the router. Requests that lie back to back in the
 * client's input leave together as one run (request-runs.ts).
 */
export class SharedLane {
  private readonly runs = new RequestRuns();
  /** The same in front of a cluster: one run per node (created on first use). */
  private clusterRuns: ClusterRuns | null = null;

  constructor(private readonly host: SharedHost) {}

  /** `inRun`: the request came from the input loop, so it may join a run of its neighbours. */
  send(name: string, request: Request, inRun: boolean): void {
    const host = this.host;
    const slot = host.upstreamSlot();
    const ctx = host.ctx;
    const gears = ctx.gears;
    if (gears.holdsWrites && ctx.router.isWrite(name, request.argv)) {
      // A `sync` registration: the client sees its write done only once the handlers ran,
      // and its next command runs after them too, as if they ran inside the write.
      const release = host.holds.take();
      slot.gate = () => gears.afterWrite().finally(release);
    }
    const router = ctx.router;
    const db = host.db;
    // Control commands and key listings take the router's path, never a run.
    if (inRun && request.end > request.start && !router.needsRouting(name, request, db)) {
      const conn = router.sharedConnection(host.id, host.proto);
      if (conn !== null) {
        // The write journal (router.tap) sees the writes of a run as well as the router's.
        this.runs.add(
          conn,
          request,
          tapped(router, name, request, slot, db),
          dbFor(name, db, router.monitors > 0),
        );
        return;
      }
      // A single-slot command's slot, or SPLIT_RUN (routing/cluster-runs.ts) for a multi-key
      // command over several slots: either joins the client's per-node runs.
      const keySlot = router.runSlotOf(name, request);
      if (keySlot >= 0) {
        this.clusterRuns ??= router.clusterRuns(host.id);
        if (this.clusterRuns !== null) {
          // Its reply comes from one of several nodes: the replies before it may wait for it.
          slot.inRun = true;
          this.clusterRuns.add(request, keySlot, tapped(router, name, request, slot, db), host.proto);
          return;
        }
      }
    }
    this.flush();
    router.forward(name, request.argv, request.raw, slot, {
      db,
      affinity: host.id,
      proto: host.proto,
      primary: host.tracking !== null,
    });
  }

  /** Sends on the connection this client's commands currently use, in another database. */
  sendInDb(argv: Buffer[], db: number, slot: ReplySlot): void {
    // The database changes only when the server accepts it (SELECT): commands pipelined
    // behind must wait for that answer, or they would run in the old database.
    const release = this.host.holds.take();
    const onReply = slot.onReply;
    slot.onReply = (data) => {
      release();
      return onReply === null ? undefined : onReply(data);
    };
    const pinned = this.host.pinned;
    if (pinned !== null) pinned.send(encodeCommand(argv), slot, db);
    else
      this.host.ctx.router.forward("select", argv, null, slot, {
        db,
        affinity: this.host.id,
        proto: this.host.proto,
      });
  }

  /** Sends the pending run: before any command that does not join it, to keep the order. */
  flush(): void {
    this.runs.flush();
    this.clusterRuns?.flush();
  }
}

/**
 * `slot`, or the write journal's tap around it (router.tap: a registration follows writes).
 * A command that is no write whatever its arguments passes untapped without splitting them:
 * the tap would return `slot` itself for it (shards.ts, onWrite).
 */
function tapped(router: Router, name: string, request: Request, slot: ReplySlot, db: number): ReplySink {
  const tap = router.tap;
  if (tap === null || !router.mayBeServerWrite(name)) return slot;
  return tap(name, request.argv, slot, db);
}
