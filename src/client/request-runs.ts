import type { Request } from "../resp/request-parser.js";
import type { Pipe, ReplySink } from "../routing/lease.js";

const EMPTY = Buffer.alloc(0);

/**
 * Requests that lie back to back in a client's input and go to the same connection leave
 * together, as one slice of the input, so a pipeline of 16 GETs costs one push and no
 * per-request views instead of 16 of each. The session flushes the run before any other
 * command runs, keeping the order of everything the client sent.
 */
export class RequestRuns {
  /** The connection the pending run goes to; null when there is none. */
  private conn: Pipe | null = null;
  private buf: Buffer = EMPTY;
  private start = 0;
  private end = 0;
  private db = 0;
  private readonly sinks: ReplySink[] = [];

  /** Adds `request`, answered into `sink`, to the run for `conn` in database `db`. */
  add(conn: Pipe, request: Request, sink: ReplySink, db: number): void {
    if (conn !== this.conn || request.buf !== this.buf || request.start !== this.end || db !== this.db) {
      this.flush();
      this.conn = conn;
      this.buf = request.buf;
      this.start = request.start;
      this.db = db;
    }
    this.end = request.end;
    this.sinks.push(sink);
  }

  /** Sends the pending run. */
  flush(): void {
    const conn = this.conn;
    if (conn === null) return;
    this.conn = null;
    const sinks = this.sinks;
    const payload = this.buf.subarray(this.start, this.end);
    this.buf = EMPTY;
    if (sinks.length === 1) {
      const sink = sinks[0];
      sinks.length = 0;
      conn.send(payload, sink, this.db);
      return;
    }
    conn.sendMany(payload, sinks.splice(0, sinks.length), this.db);
  }
}
