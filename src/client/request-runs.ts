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
  /** The run's first sink; the others, if any, in `more` (at P=1 a run is one request: no array). */
  private first: ReplySink | null = null;
  private more: ReplySink[] | null = null;

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
    if (this.first === null) this.first = sink;
    else (this.more ??= [this.first]).push(sink);
  }

  /** Sends the pending run. */
  flush(): void {
    const conn = this.conn;
    if (conn === null) return;
    this.conn = null;
    const buf = this.buf;
    // A read that held exactly the run (one request, at P=1) is sent as it is: no view.
    const payload = this.start === 0 && this.end === buf.length ? buf : buf.subarray(this.start, this.end);
    this.buf = EMPTY;
    const more = this.more;
    const first = this.first!;
    this.first = null;
    if (more === null) {
      conn.send(payload, first, this.db);
      return;
    }
    this.more = null;
    conn.sendMany(payload, more, this.db);
  }
}
