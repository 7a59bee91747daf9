import { setTimeout as sleep } from "node:timers/promises";
import { encodeError } from "../resp/encode.js";
import type { Request } from "../resp/request-parser.js";
import { RespError, RespVerbatim, type RespValue } from "../resp/values.js";
import type { Lease } from "../routing/lease.js";
import type { LaneHost } from "./lane.js";
import type { ReplySlot } from "./reply-slot.js";

/** How long one round of waiting lasts before the replicas' acknowledgements are read again. */
const ROUND_MS = 10;
/** More replicas than a server has: a WAIT for them lasts its whole round, and meanwhile the server asks every replica to acknowledge. */
const UNREACHABLE = "1000000";
/**
 * How often the replicas' acknowledgements are read while a round is on: soon at first, where
 * a WAIT after a write is answered, then less often, so that a long WAIT for a replica that is
 * gone does not keep the master answering INFO hundreds of times a second.
 */
const POLL_MS = 2;
const POLL_MAX_MS = 100;
/** WAIT's arguments as Redis accepts them (a long each); anything else goes to Redis for its own error. */
const INTEGER = /^-?\d{1,18}$/;

/**
 * WAIT through the proxy. Redis counts the replicas that acknowledged the writes of the
 * connection WAIT arrives on, but a client's writes went down the shared connections: a WAIT
 * on a borrowed connection, which wrote nothing, would say at once that every replica has
 * them. So the mark is each master's replication offset, read once the client's earlier
 * replies are in (WAIT enters the blocking lane only then); the answer is how many replicas
 * acknowledged it, the least over the masters, as the merged WAIT always was.
 */
export class WaitCall {
  private run: WaitRun | null = null;

  constructor(private readonly host: LaneHost) {}

  get active(): boolean {
    return this.run !== null;
  }

  /** False when the arguments are not plain integers: then Redis itself should answer them. */
  static handles(request: Request): boolean {
    if (request.argv.length !== 3) return false;
    const replicas = request.argv[1].toString("latin1");
    const timeout = request.argv[2].toString("latin1");
    return INTEGER.test(replicas) && INTEGER.test(timeout) && !timeout.startsWith("-");
  }

  send(request: Request): void {
    const host = this.host;
    if (!host.enterLane("blocking", request)) return;
    const leases: Lease[] = [];
    for (const lease of host.ctx.leases.onEveryMaster(host.proto)) {
      if (typeof lease === "string") {
        for (const l of leases) l.release();
        host.replyError(lease);
        return;
      }
      leases.push(lease);
    }
    const timeout = Number(request.argv[2].toString("latin1"));
    const run = new WaitRun(
      host.upstreamSlot(),
      leases,
      Number(request.argv[1].toString("latin1")),
      timeout === 0 ? Infinity : Date.now() + timeout,
      () => {
        if (this.run === run) this.run = null;
      },
    );
    this.run = run;
    run.start();
  }

  /** CLIENT UNBLOCK: TIMEOUT answers the count so far, ERROR Redis' UNBLOCKED error. */
  unblock(withError: boolean): Promise<number> {
    const run = this.run;
    if (run === null) return Promise.resolve(0);
    run.finish(withError ? "UNBLOCKED client unblocked via CLIENT UNBLOCK" : null);
    return Promise.resolve(1);
  }

  /** RESET, or the client leaving: the rounds stop and the connections close. */
  drop(): void {
    this.run?.drop();
    this.run = null;
  }
}

/** One WAIT: a lease per master, each going round until its replicas caught up. */
class WaitRun {
  /** The replicas counted so far per master (what a timeout or CLIENT UNBLOCK answers). */
  private readonly counts: number[];
  /** The round each master's lease is blocked in, if any (it cannot be lent again then). */
  private readonly rounds: (Promise<void> | null)[];
  private done = false;

  constructor(
    private readonly slot: ReplySlot,
    private readonly leases: Lease[],
    private readonly wanted: number,
    private readonly deadline: number,
    private readonly ended: () => void,
  ) {
    this.counts = leases.map(() => 0);
    this.rounds = leases.map(() => null);
  }

  start(): void {
    Promise.all(this.leases.map((_, i) => this.acknowledged(i))).then(
      () => this.finish(null),
      (err: Error) => this.finish(err.message),
    );
  }

  /**
   * Rounds on one master until `wanted` replicas have its offset or the deadline passes. A
   * round is a WAIT nobody can satisfy, so that the server asks its replicas to acknowledge
   * at once; their answers are read beside it, as they come, rather than when it times out
   * (Redis ends a blocked WAIT only on its next cron tick).
   */
  private async acknowledged(index: number): Promise<void> {
    const lease = this.leases[index];
    let info = replicationInfo(await lease.call(["INFO", "replication"]));
    const mark = info.offset;
    let pause = POLL_MS;
    for (;;) {
      if (this.done) return;
      this.counts[index] = info.replicaOffsets.filter((offset) => offset >= mark).length;
      const left = this.deadline - Date.now();
      if (this.counts[index] >= this.wanted || left <= 0) return;
      if (this.rounds[index] === null) {
        const round = Math.max(1, Math.min(ROUND_MS, Math.ceil(left)));
        const waiting = lease.call(["WAIT", UNREACHABLE, String(round)]).then(
          (reply) => {
            this.rounds[index] = null;
            if (reply instanceof RespError) this.finish(reply.message);
          },
          (err: Error) => {
            this.rounds[index] = null;
            this.finish(err.message);
          },
        );
        this.rounds[index] = waiting;
      }
      const beside = lease.callBeside(["INFO", "replication"]);
      if (beside === null) {
        await this.rounds[index];
        if (!this.done) info = replicationInfo(await lease.call(["INFO", "replication"]));
      } else {
        await sleep(pause);
        pause = Math.min(POLL_MAX_MS, pause * 2);
        info = replicationInfo(await beside);
      }
    }
  }

  finish(error: string | null): void {
    if (this.done) return;
    this.done = true;
    this.ended();
    this.leases.forEach((lease, i) => {
      const round = this.rounds[i];
      if (round === null) lease.release();
      else {
        // Unblocked at once, the round's reply comes and the lease is clean again.
        void lease.unblock(false);
        void round.then(() => lease.release());
      }
    });
    if (error !== null) this.slot.reply(encodeError(error));
    else this.slot.reply(Buffer.from(`:${this.counts.length === 0 ? 0 : Math.min(...this.counts)}\r\n`));
  }

  drop(): void {
    this.done = true;
    for (const lease of this.leases) lease.destroy();
  }
}

/** The master's replication offset and each online replica's acknowledged one, from INFO replication. */
function replicationInfo(reply: RespValue): { offset: number; replicaOffsets: number[] } {
  if (reply instanceof RespError) throw new Error(reply.message);
  const text =
    reply instanceof RespVerbatim
      ? reply.text.toString("latin1")
      : Buffer.isBuffer(reply)
        ? reply.toString("latin1")
        : String(reply);
  let offset = 0;
  const replicaOffsets: number[] = [];
  for (const line of text.split("\r\n")) {
    if (line.startsWith("master_repl_offset:")) offset = Number(line.slice("master_repl_offset:".length));
    else if (/^slave\d+:/.test(line) && line.includes("state=online")) {
      const found = /offset=(\d+)/.exec(line);
      if (found !== null) replicaOffsets.push(Number(found[1]));
    }
  }
  return { offset, replicaOffsets };
}
