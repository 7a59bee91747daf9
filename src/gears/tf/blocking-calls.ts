import { encodeCommand } from "../../resp/encode.js";
import type { Lease, Leases } from "../../routing/lease.js";
import type { ReplySink } from "../../upstream/reply-sink.js";

/**
 * The most `callAsync`s of blocking commands waiting at once in the whole proxy: each holds an
 * upstream connection of its own (a socket here and a client in Redis) for as long as it waits.
 */
export const MAX_BLOCKING_CALLS = 1000;

/** One blocking command on its connection, and who is told how it ends. */
interface Waiting {
  readonly owner: object;
  readonly lease: Lease;
  readonly sink: ReplySink;
}

/**
 * T&F's `client.callAsync` of a genuinely blocking command (BLPOP, XREAD BLOCK, WAIT...):
 * it runs on a connection lent by the same Leases as a client's blocking command
 * (client/blocking.ts), on the node of its keys, so the shared pipelined connections never
 * wait behind it. The connection goes back once the reply came; a call ended before that
 * (its library deleted or replaced, the proxy closing) closes it, so Redis stops waiting
 * and pops nothing for it.
 */
export class BlockingCalls {
  private readonly waiting = new Set<Waiting>();

  constructor(
    private readonly leases: Leases,
    readonly max: number = MAX_BLOCKING_CALLS,
  ) {}

  /** How many wait now. */
  get count(): number {
    return this.waiting.size;
  }

  /**
   * Sends argv (command `name`, in database `db`) on a connection of its own; its reply or
   * failure goes to `sink`. `owner` (a library's bridge) may end its calls with end().
   */
  run(owner: object, name: string, argv: Buffer[], db: number, sink: ReplySink): void {
    if (this.waiting.size >= this.max) {
      sink.fail(
        `ERR too many blocking commands waiting in callAsync (at most ${this.max} per proxy); try again later`,
      );
      return;
    }
    const lease = this.leases.forCommand(name, argv, 0, 2, db);
    if (typeof lease === "string") {
      sink.fail(lease);
      return;
    }
    const waiting: Waiting = {
      owner,
      lease,
      sink,
    };
    this.waiting.add(waiting);
    lease.send(
      encodeCommand(argv),
      {
        reply: (data) => {
          if (!this.waiting.delete(waiting)) return;
          lease.release();
          sink.reply(data);
        },
        fail: (message) => {
          if (!this.waiting.delete(waiting)) return;
          lease.destroy();
          sink.fail(message);
        },
      },
      db,
    );
  }

  /**
   * Has Redis answer every waiting call as timed out (CLIENT UNBLOCK ... TIMEOUT on the node's
   * control connection), as a client's blocking command is answered when the proxy shuts down:
   * the functions go on with nil and their clients get their replies.
   */
  unblockAll(): Promise<void> {
    return Promise.all([...this.waiting].map((w) => w.lease.unblock(false))).then(() => undefined);
  }

  /** Ends `owner`'s waiting calls (all of them when null) with `message` as their error. */
  end(owner: object | null, message: string): void {
    for (const waiting of [...this.waiting]) {
      if (owner !== null && waiting.owner !== owner) continue;
      this.waiting.delete(waiting);
      waiting.lease.destroy();
      waiting.sink.fail(message);
    }
  }
}
