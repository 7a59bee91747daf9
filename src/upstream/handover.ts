import type { Logger } from "../observability/log.js";
import { RespError, type Protocol, type RespValue } from "../resp/values.js";
import { CONNECTION_LOST, type PendingRequest, type UpstreamConnection } from "./connection.js";
import type { UpstreamNode } from "./node.js";
import type { ReplySink } from "./reply-sink.js";

/**
 * A Sentinel switch without errors for the writes the old master held.
 *
 * From a failover's first event the old master holds writes (CLIENT PAUSE WRITE,
 * sentinel-topology.ts). At the switch its shared connections still owe replies, and two
 * kinds cannot be told apart by when they arrive: replies already on their way (the command
 * ran) and commands the pause holds (not run: Redis 7.0's processCommand blocks a paused
 * client, BLOCKED_POSTPONE, before the command executes, and reads nothing more from that
 * client meanwhile, so everything behind it on the connection waits too). Closing the
 * connections, as before, failed both with "connection lost".
 *
 * The marker is the server's own: the old master is made a replica of the new one
 * (REPLICAOF, which the sentinels would send it anyway a few seconds later, +convert-to-slave)
 * while still paused, then unpaused. A postponed client's command is processed from scratch
 * when the pause ends (blocked.c, disconnectAllBlockedClients: "the command will be either
 * executed or rejected"), and processCommand rejects a write on a read-only replica with
 * shared.roslaveerr, exactly "-READONLY You can't write against a read only replica.",
 * before it runs and before the pause check (server.c). So, per connection, in reply order:
 *
 * - A reply before the connection's first such READONLY: the command ran, on the old master
 *   before the pause took hold, or a read; it is passed on. (Replication is asynchronous: a
 *   write the old master ran just before the pause may still miss the promotion, as with any
 *   Sentinel client; the pause only stops new ones. After the UNPAUSE, only a read's or a
 *   write's reply proves this, see ConnectionHandover.replied.)
 * - That exact READONLY: the write did not run; it is sent to the new master, after the
 *   switch, in its place in the client's order.
 * - After it, everything on the connection was held behind it, and runs now on a replica:
 *   writes are refused (READONLY again, sent on); a read runs, on stale data, out of order
 *   with the writes sent on: it is sent again to the new master (a read run twice has no
 *   effect), for reads as the server's COMMAND INFO flags them (readonly, not may_replicate).
 *   Anything else that ran there (PUBLISH, a script) is not run again: it fails with the
 *   connection-lost error (its outcome unknown to its client), as before.
 * - Scripts (EVAL, FCALL and their variants) are never sent again: a script may catch a
 *   refused write and return that same error, so a READONLY from one proves nothing.
 * - A connection that dies first fails what it still owes, as before (outcome unknown).
 *
 * Meanwhile the new master's connections hold back what clients send them (hold()), and
 * the requests moved over go ahead of those, on the connection of the same place (the same
 * affinity, so the same client's), so no later command overtakes an earlier one. When every
 * request is settled and those moved are answered, or after HANDOVER_MS, the old connections
 * close and the new ones send what they held.
 *
 * Only the shared connections are handed over. The dedicated ones (MULTI/EXEC, blocking
 * commands, subscriptions) close at the switch as before: a transaction's queued writes are
 * refused one by one on a replica and EXEC answers EXECABORT, which could be re-sent as a
 * whole only by the transaction's owner; a blocked command is unblocked with -UNBLOCKED by
 * REPLICAOF; their clients get "ERR upstream connection lost".
 *
 * Nothing of this runs when the pause is not known to hold (a CLIENT PAUSE refused, the hold
 * lapsed, a master killed): then a pending write may have run on the old master after the
 * promotion, and only "connection lost" is true. Nor when the old master will not be a
 * read-only replica (replica-read-only no, CONFIG or REPLICAOF refused to the proxy's user).
 */

/** Longest a switch waits for the old master's replies before failing the rest. */
const HANDOVER_MS = 2000;

/** Exactly what processCommand answers a write on a read-only replica (shared.roslaveerr). */
const REFUSED_ON_REPLICA = Buffer.from("-READONLY You can't write against a read only replica.\r\n");

const SCRIPTS = new Set(["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"]);

/** The bulk string at `at` ("$len\r\nbytes\r\n"), lower case, and where the next begins; null when not readable. */
function bulkAt(command: Buffer, at: number): { text: string; next: number } | null {
  const lenEnd = command.indexOf(13, at);
  if (command[at] !== 36 /* $ */ || lenEnd < 0) return null;
  const length = Number(command.toString("latin1", at + 1, lenEnd));
  const start = lenEnd + 2;
  if (!Number.isInteger(length) || start + length > command.length) return null;
  return { text: command.toString("utf8", start, start + length).toLowerCase(), next: start + length + 2 };
}

/** The command's name, lower case, from its RESP array ("*N\r\n$len\r\nname..."); "" when not readable. */
export function commandName(command: Buffer): string {
  return bulkAt(command, command.indexOf(13) + 2)?.text ?? "";
}

/**
 * The command's name and, when it has one, its first argument joined as COMMAND INFO names
 * a container's subcommands ("object|encoding"): whether that is a subcommand is for the
 * caller to look up.
 */
export function subcommandName(command: Buffer): string {
  const name = bulkAt(command, command.indexOf(13) + 2);
  const sub = name === null ? null : bulkAt(command, name.next);
  return name === null || sub === null ? "" : `${name.text}|${sub.text}`;
}

/**
 * COMMAND INFO's reply: the reads (flagged readonly, neither write nor may_replicate) and the
 * writes (flagged write), by name.
 */
export function commandKinds(reply: RespValue): { reads: Set<string>; writes: Set<string> } {
  const reads = new Set<string>();
  const writes = new Set<string>();
  if (!Array.isArray(reply)) return { reads, writes };
  const add = (entry: RespValue): void => {
    if (!Array.isArray(entry) || !Array.isArray(entry[2])) return;
    const flags = entry[2].map((f) => String(f));
    const name = String(entry[0]).toLowerCase();
    if (flags.includes("write")) writes.add(name);
    else if (flags.includes("readonly") && !flags.includes("may_replicate")) reads.add(name);
    // A container (OBJECT, XINFO, MEMORY...) has no flags of its own: its subcommands do,
    // named "container|sub", in the entry's tenth field (Redis 7.0).
    if (Array.isArray(entry[9])) for (const sub of entry[9]) add(sub);
  };
  for (const entry of reply) add(entry);
  return { reads, writes };
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const isOk = (reply: unknown): boolean => typeof reply === "string" && reply.startsWith("OK");
const say = (reply: unknown): string => (reply instanceof RespError ? reply.message : String(reply));

/** What a handover did, for the log and the specs. */
export interface HandoverCounts {
  /** Replies the old master gave to commands it ran, passed on. */
  passed: number;
  /** Commands it did not run (or reads to run again), sent to the new master. */
  moved: number;
  /** Commands failed: their connection died, or they ran on the demoted master out of order. */
  failed: number;
}

/** One shared connection of the old master, its pending requests settled in reply order. */
class ConnectionHandover {
  /** Set at the first READONLY: from there every reply came from a replica, held till then. */
  private demoted = false;

  constructor(
    private readonly handover: Handover,
    private readonly proto: Protocol,
    private readonly index: number,
  ) {}

  sinkFor(request: PendingRequest): ReplySink {
    return {
      reply: (data) => this.replied(request, data),
      fail: (message) => this.handover.settle(request.sink, "failed", message),
    };
  }

  private replied(request: PendingRequest, data: Buffer): void {
    const { command } = request;
    const name = command === null ? "" : this.handover.kindName(command);
    if (data.equals(REFUSED_ON_REPLICA)) {
      this.demoted = true;
      if (command === null || SCRIPTS.has(name))
        this.handover.settle(request.sink, "failed", CONNECTION_LOST);
      else this.handover.move(request, command, this.proto, this.index);
    } else if (!this.demoted && (!this.handover.unpaused || this.handover.ranOnMaster(name))) {
      // Before the UNPAUSE, a reply is of a command that ran before the pause (a held one
      // holds its connection). After it, only a read's or a write's proves that: a held write
      // is refused on the replica, a read runs anywhere. A held PUBLISH, SCRIPT, EVAL...
      // (may_replicate, not write) is not refused there and runs on the demoted node: failed.
      request.sink.reply(data);
      this.handover.settle(null, "passed");
    } else if (command !== null && this.handover.reads.has(name)) {
      this.handover.move(request, command, this.proto, this.index);
    } else {
      this.handover.settle(request.sink, "failed", CONNECTION_LOST);
    }
  }
}

class Handover {
  reads = new Set<string>();
  writes = new Set<string>();
  /** Set as CLIENT UNPAUSE goes out: from then on held commands run on the demoted node. */
  unpaused = false;
  readonly counts: HandoverCounts = { passed: 0, moved: 0, failed: 0 };
  /** Requests of the old connections not settled yet. */
  private left = 0;
  /** Requests sent on to the new master and not answered yet. */
  private unanswered = 0;
  private done = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly next: UpstreamNode,
    private readonly connections: UpstreamConnection[],
    private readonly control: UpstreamConnection,
    private readonly log: Logger,
    private readonly onDone: (counts: HandoverCounts) => void,
  ) {
    this.timer = setTimeout(() => this.finish("the old master did not answer in time"), HANDOVER_MS);
    this.timer.unref();
  }

  /** Takes over every pending request of the old connections; false when none is pending. */
  adopt(shared: { conn: UpstreamConnection; proto: Protocol; index: number }[]): PendingRequest[] {
    const all: PendingRequest[] = [];
    for (const { conn, proto, index } of shared) {
      const one = new ConnectionHandover(this, proto, index);
      const pending = conn.handOver((request) => one.sinkFor(request));
      if (pending !== null) all.push(...pending);
    }
    this.left = all.length;
    return all;
  }

  /** The name COMMAND INFO gave the command's flags under: its subcommand's, for a container. */
  kindName(command: Buffer): string {
    const sub = subcommandName(command);
    return sub !== "" && (this.reads.has(sub) || this.writes.has(sub)) ? sub : commandName(command);
  }

  /** A command whose ordinary reply proves it ran on the old master before the pause. */
  ranOnMaster(name: string): boolean {
    return this.reads.has(name) || this.writes.has(name);
  }

  move(request: PendingRequest, command: Buffer, proto: Protocol, index: number): void {
    const conn = this.next.sharedConnection(index, proto);
    if (conn === null) {
      this.settle(request.sink, "failed", this.next.failure || CONNECTION_LOST);
      return;
    }
    // Past the hold: ahead of what clients sent the new master since the switch. The hold
    // ends once it is answered, not merely sent: a client's next command may take another
    // connection (a dedicated one, for MULTI or a blocking command), which must not overtake it.
    this.unanswered++;
    const sink = request.sink;
    conn.sendNow(
      command,
      {
        reply: (data) => {
          sink.reply(data);
          this.answered();
        },
        fail: (message) => {
          sink.fail(message);
          this.answered();
        },
      },
      request.db,
    );
    this.settle(null, "moved");
  }

  /** One request settled; `sink` is failed with `message` when given. */
  settle(sink: ReplySink | null, outcome: keyof HandoverCounts, message = CONNECTION_LOST): void {
    if (sink !== null) sink.fail(message);
    this.counts[outcome]++;
    if (--this.left === 0 && this.unanswered === 0) this.finish(null);
  }

  /** A request sent on to the new master is answered. */
  private answered(): void {
    if (--this.unanswered === 0 && this.left === 0) this.finish(null);
  }

  /** Closes the old connections (what they still owe fails) and lets the new master's requests go. */
  finish(why: string | null): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    if (why !== null) this.log.warn({ err: why }, "sentinel switch: requests the old master owed fail");
    for (const conn of this.connections) conn.close();
    this.control.close();
    this.next.releaseRequests();
    this.onDone(this.counts);
  }
}

/**
 * At a Sentinel switch from `old` to `next` (see the comment at the top): `old` is retired,
 * its pending requests are settled, and `next` holds clients' requests until then.
 * `paused`: the old master is known to hold writes now (CLIENT PAUSE WRITE answered OK and
 * not lapsed); without it, `old` is only retired, as before.
 */
export function handOver(
  old: UpstreamNode,
  next: UpstreamNode,
  options: { paused: boolean; holdMs: number; log: Logger; onDone?: (counts: HandoverCounts) => void },
): void {
  const { log } = options;
  if (!options.paused) {
    old.retire();
    return;
  }
  const { shared, control } = old.retireHandingOver();
  if (shared.length === 0 || control === null) {
    for (const { conn } of shared) conn.close();
    control?.close();
    return;
  }
  next.holdRequests();
  const conns = shared.map((s) => s.conn);
  const handover = new Handover(next, conns, control, log, (counts) => {
    log.info(
      { from: old.id, to: next.id, ...counts },
      "sentinel switch: the old master's pending requests settled",
    );
    options.onDone?.(counts);
  });
  const pending = handover.adopt(shared);
  if (pending.length === 0) {
    handover.finish(null);
    return;
  }
  const names = new Set<string>();
  for (const { command } of pending) if (command !== null) names.add(commandName(command));
  // Each step well inside the pause renewed first: should one not answer in time, the old
  // connections close while the pause still holds, and the held commands never run.
  const step = Math.max(100, Math.floor(options.holdMs / 3));
  const info = (next.control()?.call(["COMMAND", "INFO", ...names]) ?? Promise.resolve(null)).catch(
    () => null,
  );
  void settleOld(control, next, handover, info, options.holdMs, step).catch((err: unknown) =>
    handover.finish(err instanceof Error ? err.message : String(err)),
  );
}

/** Renews the pause, makes the old master a read-only replica of `next`, then lifts the pause. */
async function settleOld(
  control: UpstreamConnection,
  next: UpstreamNode,
  handover: Handover,
  info: Promise<RespValue | null>,
  holdMs: number,
  step: number,
): Promise<void> {
  const first = await within(
    Promise.all([
      control.call(["CLIENT", "PAUSE", String(holdMs), "WRITE"]),
      control.call(["CONFIG", "GET", "replica-read-only"]),
    ]),
    step,
  );
  if (first === null) return handover.finish("the old master did not answer CLIENT PAUSE in time");
  const [paused, ro] = first;
  const readOnly = Array.isArray(ro) ? String(ro[1]) : say(ro);
  // Not a read-only replica: a held write would run there once released, and be lost.
  if (!isOk(paused) || readOnly !== "yes")
    return handover.finish(
      `the old master cannot be made a read-only replica (CLIENT PAUSE: ${say(paused)}, replica-read-only: ${readOnly})`,
    );
  const second = await within(
    Promise.all([control.call(["REPLICAOF", next.address.host, String(next.address.port)]), info]),
    step,
  );
  if (second === null) return handover.finish("the old master did not answer REPLICAOF in time");
  const [replica, flags] = second;
  if (!isOk(replica)) return handover.finish(`the old master refused REPLICAOF: ${say(replica)}`);
  const kinds = commandKinds(flags ?? null);
  handover.reads = kinds.reads;
  handover.writes = kinds.writes;
  // The held commands are processed now, on a replica: writes refused, so sent on (see above).
  handover.unpaused = true;
  await control.call(["CLIENT", "UNPAUSE"]);
}
