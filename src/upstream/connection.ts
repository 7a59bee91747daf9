import { callbackNow } from "../observability/callback-clock.js";
import net from "node:net";
import tls from "node:tls";
import type { HostPort } from "../config.js";
import { Fifo } from "../io/fifo.js";
import { OutputBuffer } from "../io/output-buffer.js";
import { connectReading } from "../io/socket-reader.js";
import { encodeCommand, type Arg } from "../resp/encode.js";
import { isErrorReply } from "../resp/decode.js";
import { ReplyScanner } from "../resp/reply-scanner.js";
import type { Protocol, RespValue } from "../resp/values.js";
import { DISCARD, PromiseSink, type ReplySink } from "./reply-sink.js";

export interface ConnectionOptions {
  user?: string;
  password?: string;
  connectTimeoutMs: number;
  /** A replica connection: send READONLY first so it serves reads of its slots. */
  readOnly?: boolean;
  /** The protocol the connection speaks; 3 sends HELLO 3 (with the credentials) first. */
  proto?: Protocol;
  /** Speak TLS with these settings (--upstream-tls); plain TCP when undefined. */
  tls?: tls.ConnectionOptions;
  /** Told each request's round trip in seconds (metrics on); requests are not timed without it. */
  roundTrip?: (seconds: number) => void;
  /**
   * Keep each request's bytes until it is answered, so that a Sentinel switch can send the
   * ones the old master did not run to the new one (handover.ts). Off elsewhere: it costs a
   * queue entry per send.
   */
  keepRequests?: boolean;
}

/** One send of a connection that keeps its requests: `replies` commands, `answered` of them so far. */
interface SentRequest {
  readonly payload: Buffer;
  readonly db: number;
  readonly replies: number;
  answered: number;
}

/** A request held back while the connection is on hold (hold()): sent as it came at release(). */
interface HeldRequest {
  readonly payload: Buffer;
  /** One sink for `count` replies (send, sendRepeated), or one per reply (sendMany). */
  readonly sinks: ReplySink | readonly ReplySink[];
  readonly count: number;
  readonly db: number;
}

/** A request still unanswered when its connection is handed over (handOver()). */
export interface PendingRequest {
  readonly sink: ReplySink;
  /** The command's bytes (one RESP array); null when they could not be told apart. */
  readonly command: Buffer | null;
  /** The database code it was sent with (a number, ANY_DB or anyDbIn()). */
  readonly db: number;
}

export const CONNECTION_LOST = "ERR upstream connection lost";

/** The connection's database is not known: a SELECT the proxy put in front was refused. */
export const UNKNOWN_DB = -1;

/**
 * The database argument of a command whose outcome does not depend on the selected database
 * (the router tells which: routing/command-kinds.ts): no SELECT goes in front of it, and
 * behind a SELECT in doubt its success is its own, not a command run in the wrong database.
 */
export const ANY_DB = -2;

/**
 * ANY_DB, with the database the client is in: the connection changes to it first, since a
 * MONITOR shows each command in its client's database, but behind that SELECT refused the
 * command's success is still its own, as in ANY_DB.
 */
export function anyDbIn(db: number): number {
  return ANY_DB - 1 - db;
}

/** The client's database an anyDbIn() code names. */
function dbOfAnyDbIn(code: number): number {
  return ANY_DB - 1 - code;
}

/** An error reply's text: "-BUSY ...\r\n" or "!<length>\r\nBUSY ...\r\n". */
function errorText(reply: Buffer): string {
  const start = reply[0] === 45 ? 1 : reply.indexOf(10) + 1;
  return reply.toString("utf8", start, reply.length - 2);
}

/**
 * Commands the proxy adds on its own account are spelt in title case, which clients do not
 * send, so that a relayed MONITOR stream can leave them out (see isBookkeeping).
 */
const SELECT_CACHE: Buffer[] = [];
export function selectCommand(db: number): Buffer {
  return (SELECT_CACHE[db] ??= encodeCommand(["Select", db]));
}

/**
 * Whether a MONITOR line shows one of the proxy's own bookkeeping commands: its marked SELECTs
 * and CLIENT IDs, and anything touching its own keys (`{gears-proxy}...`, the sync markers) or
 * its consumer groups (`gears-proxy:...`): the gears store's polls, leases, stream reads.
 */
export function isBookkeeping(line: Buffer): boolean {
  return (
    line.includes('] "Select" ') ||
    line.includes('] "Client" "Id"') ||
    line.includes('"{gears-proxy}') ||
    line.includes('"gears-proxy:') ||
    line.includes("gears-proxy-sync:")
  );
}

/** A TCP or TLS socket to `address`; commands written before it is up are buffered by Node. */
function dial(
  address: HostPort,
  options: tls.ConnectionOptions | undefined,
  onBytes: (chunk: Buffer) => void,
): net.Socket {
  const { host, port } = address;
  if (options === undefined) return connectReading(host, port, onBytes);
  // SNI defaults to the node's host name, never to an IP address (RFC 6066); the certificate
  // is still checked against the host, IP addresses included.
  const servername = options.servername ?? (net.isIP(host) === 0 ? host : undefined);
  const socket = tls.connect({ ...options, host, port, ...(servername !== undefined ? { servername } : {}) });
  socket.setNoDelay(true);
  socket.on("data", onBytes);
  return socket;
}

/**
 * One TCP connection to a Redis node, pipelined: requests are written as they come and
 * replies are matched to their senders in order. When it fails, every sender still
 * waiting gets an error at once; nothing waits on a dead socket.
 */
export class UpstreamConnection {
  readonly address: HostPort;
  readonly proto: Protocol;
  private readonly socket: net.Socket;
  private readonly out: OutputBuffer;
  private readonly scanner = new ReplyScanner();
  private readonly waiting = new Fifo<ReplySink>();
  /** When each awaited request was sent (ms), beside `waiting`; null when nobody times them. */
  private readonly sentAt: Fifo<number> | null;
  private readonly roundTrip: ((seconds: number) => void) | null;
  private connected = false;
  private closedFlag = false;
  private closedByProxyFlag = false;
  private authFailure: string | null = null;
  /** The database the connection has selected, so shared connections can serve every DB. */
  private db = 0;
  /** SELECTs the proxy put in front whose replies are still awaited. */
  private selectsInFlight = 0;
  /**
   * The error a SELECT the proxy put in front got (BUSY while a script runs), until the next
   * one is answered: the commands sent behind it ran in the database it failed to leave.
   */
  private refusal: Buffer | null = null;
  /**
   * Replies still to come for commands sent behind the refused SELECT; Infinity when a later
   * SELECT on its way ends them. Commands sent once it was refused chose their database anew.
   */
  private refusedLeft = 0;
  private readonly selectSink: ReplySink = { reply: (data) => this.selectAnswered(data), fail() {} };
  /**
   * Commands sent while a SELECT the proxy put in front was unanswered or refused that run
   * the same in any database (sent in ANY_DB): their success passes.
   */
  private readonly anyDb = new WeakSet<ReplySink>();
  /** Each send's bytes until answered, beside `waiting` (keepRequests); null when not kept. */
  private readonly requests: Fifo<SentRequest> | null;
  /** Requests held back by hold() until release(); null when the connection is not on hold. */
  private held: HeldRequest[] | null = null;
  private heldReplies = 0;
  /** The server's CLIENT ID for this connection, once learnt (dedicated connections); else -1. */
  serverId = -1;
  /** Receives replies that no request waits for: pub/sub messages on a subscribed connection. */
  pushHandler: ((frame: Buffer) => void) | null = null;
  /** Called once the TCP connection is up. */
  onConnect: (() => void) | null = null;
  /** Called once when the connection is gone, with the reason (for the node that owns it). */
  onClose: ((reason: string) => void) | null = null;
  /** Called once when the connection is gone, for the client it is lent to. */
  onBorrowerLost: ((reason: string) => void) | null = null;

  constructor(address: HostPort, options: ConnectionOptions) {
    this.address = address;
    this.proto = options.proto ?? 2;
    this.roundTrip = options.roundTrip ?? null;
    this.sentAt = this.roundTrip === null ? null : new Fifo<number>();
    this.requests = options.keepRequests ? new Fifo<SentRequest>() : null;
    this.socket = dial(address, options.tls, (chunk) => this.onData(chunk));
    this.out = new OutputBuffer(this.socket, true);
    this.socket.setTimeout(options.connectTimeoutMs);
    // Over TLS the connection is usable once the handshake is done; the timeout covers both.
    this.socket.once(options.tls === undefined ? "connect" : "secureConnect", () => {
      this.connected = true;
      this.onConnect?.();
      this.socket.setTimeout(0);
      this.socket.setKeepAlive(true, 10_000);
    });
    this.socket.on("timeout", () => this.socket.destroy(new Error("connect timed out")));
    this.socket.on("error", (err) => this.lose(err.message));
    this.socket.on("close", () => this.lose("closed by the server"));
    if (this.proto === 3 || options.password !== undefined) this.authenticate(options);
    if (options.readOnly) this.send(encodeCommand(["READONLY"]), DISCARD);
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** True when the proxy itself closed the connection (not the server or the network). */
  get closedByProxy(): boolean {
    return this.closedByProxyFlag;
  }

  /** The database the connection is in (UNKNOWN_DB after a refused SELECT). */
  get selectedDb(): number {
    return this.db;
  }

  /** Replies still awaited (those of requests on hold included); 0 means the connection is idle. */
  get inFlight(): number {
    return this.waiting.length + this.heldReplies;
  }

  /** Sends an encoded command in database `db` (ANY_DB: wherever it is); its reply goes to `sink`. */
  send(payload: Buffer, sink: ReplySink, db = this.db): void {
    if (this.closedFlag) {
      sink.fail(CONNECTION_LOST);
      return;
    }
    if (this.held !== null) {
      this.held.push({ payload, sinks: sink, count: 1, db });
      this.heldReplies++;
      return;
    }
    this.sendNow(payload, sink, db);
  }

  /**
   * send(), past a hold: for the requests a Sentinel switch moves here from the old master,
   * which go ahead of those held (handover.ts).
   */
  sendNow(payload: Buffer, sink: ReplySink, db = this.db): void {
    if (this.closedFlag) {
      sink.fail(CONNECTION_LOST);
      return;
    }
    if (db <= ANY_DB) this.inAnyDb(sink, db);
    else this.useDb(db);
    this.out.push(payload);
    this.requests?.push({ payload, db, replies: 1, answered: 0 });
    this.expectReply(sink);
  }

  /** Sends several encoded commands at once; their replies go to `sinks`, in order. */
  sendMany(payload: Buffer, sinks: readonly ReplySink[], db = this.db): void {
    if (this.closedFlag) {
      for (const sink of sinks) sink.fail(CONNECTION_LOST);
      return;
    }
    if (this.held !== null) {
      this.held.push({ payload, sinks, count: sinks.length, db });
      this.heldReplies += sinks.length;
      return;
    }
    if (db <= ANY_DB) for (const sink of sinks) this.inAnyDb(sink, db);
    else this.useDb(db);
    this.out.push(payload);
    this.requests?.push({ payload, db, replies: sinks.length, answered: 0 });
    for (const sink of sinks) this.expectReply(sink);
  }

  /** Sends `count` encoded commands at once, all answered to the one `sink`, in order. */
  sendRepeated(payload: Buffer, sink: ReplySink, count: number, db = this.db): void {
    if (this.closedFlag) {
      for (let i = 0; i < count; i++) sink.fail(CONNECTION_LOST);
      return;
    }
    if (this.held !== null) {
      this.held.push({ payload, sinks: sink, count, db });
      this.heldReplies += count;
      return;
    }
    if (db <= ANY_DB) this.inAnyDb(sink, db);
    else this.useDb(db);
    this.out.push(payload);
    this.requests?.push({ payload, db, replies: count, answered: 0 });
    for (let i = 0; i < count; i++) this.expectReply(sink);
  }

  /**
   * Holds back what is sent from now on, in order, until release(): while a Sentinel switch
   * settles what the old master still owes, a client's later commands must not overtake
   * its earlier ones moved here (handover.ts).
   */
  hold(): void {
    this.held ??= [];
  }

  /** Sends what hold() held back, in the order it came. */
  release(): void {
    const held = this.held;
    if (held === null) return;
    this.held = null;
    this.heldReplies = 0;
    for (const { payload, sinks, count, db } of held) {
      if (Array.isArray(sinks)) this.sendMany(payload, sinks as readonly ReplySink[], db);
      else if (count === 1) this.send(payload, sinks as ReplySink, db);
      else this.sendRepeated(payload, sinks as ReplySink, count, db);
    }
  }

  /**
   * The requests still unanswered (keepRequests), each with its own bytes, and whose replies
   * go from now on to the sink `wrap` gives for it: a Sentinel switch decides for each what
   * its reply from the old master means (handover.ts). The proxy's own SELECTs stay its own.
   * Null when the connection does not keep its requests.
   */
  handOver(wrap: (request: PendingRequest) => ReplySink): PendingRequest[] | null {
    const requests = this.requests;
    if (requests === null || this.closedFlag) return null;
    const sinks = this.waiting.drain();
    const sent = requests.drain();
    const pending: PendingRequest[] = [];
    let k = 0;
    for (const request of sent) {
      const commands = splitCommands(request.payload);
      for (let j = request.answered; j < request.replies; j++) {
        const sink = sinks[k++];
        if (sink === this.selectSink || sink === undefined) {
          if (sink !== undefined) this.waiting.push(sink);
          continue;
        }
        const entry: PendingRequest = {
          sink,
          command: commands !== null && commands.length === request.replies ? commands[j] : null,
          db: request.db,
        };
        pending.push(entry);
        const wrapped = wrap(entry);
        if (this.anyDb.has(sink)) this.anyDb.add(wrapped);
        this.waiting.push(wrapped);
      }
    }
    // Kept aligned, though nothing is sent on this connection any more.
    for (const request of sent) requests.push(request);
    return pending;
  }

  /** Queues a reply slot, stamped with the time when round trips are measured. */
  private expectReply(sink: ReplySink): void {
    this.waiting.push(sink);
    this.sentAt?.push(callbackNow());
  }

  /** A command that runs in any database (anyDbIn: after a SELECT): marked only while a SELECT is in doubt. */
  private inAnyDb(sink: ReplySink, db: number): void {
    if (db < ANY_DB) this.useDb(dbOfAnyDbIn(db));
    if (this.selectsInFlight > 0 || this.refusal !== null) this.anyDb.add(sink);
  }

  /** The server switched database by a command the proxy did not add (a SELECT inside MULTI). */
  noteDb(db: number): void {
    this.db = db;
  }

  /**
   * A SELECT ahead of the next command when it runs in another database. It is pipelined
   * with the command, which is written before the server has accepted it.
   */
  private useDb(db: number): void {
    if (db === this.db) return;
    this.out.push(selectCommand(db));
    this.requests?.push({ payload: selectCommand(db), db, replies: 1, answered: 0 });
    this.expectReply(this.selectSink);
    this.selectsInFlight++;
    this.db = db;
  }

  private selectAnswered(reply: Buffer): void {
    this.selectsInFlight--;
    if (!isErrorReply(reply)) {
      this.refusal = null;
      return;
    }
    this.refusal = reply;
    if (this.selectsInFlight > 0) {
      this.refusedLeft = Infinity;
      return;
    }
    // The server stayed where it was: the next command that names a database selects again.
    this.db = UNKNOWN_DB;
    this.refusedLeft = this.waiting.length;
    if (this.refusedLeft === 0) this.refusal = null;
  }

  /** Sends a command without awaiting a reply slot (pub/sub commands on a subscribed connection). */
  sendUnmatched(payload: Buffer): void {
    if (!this.closedFlag) this.out.push(payload);
  }

  /** Writes what is buffered now, ahead of what other connections write at the turn's end. */
  flush(): void {
    this.out.flush();
  }

  /** The proxy's own request: resolves with the decoded reply (errors are RespError values). */
  call(argv: readonly Arg[], db = this.db): Promise<RespValue> {
    const sink = new PromiseSink();
    this.send(encodeCommand(argv), sink, db);
    return sink.promise;
  }

  /** Resolves once learnId()'s CLIENT ID is answered (or failed); at once when it was never asked. */
  idKnown: Promise<void> = Promise.resolve();

  /** Asks the server for this connection's id, so that CLIENT UNBLOCK can name it later. */
  learnId(): void {
    this.idKnown = this.call(["Client", "Id"]).then(
      (id) => {
        if (typeof id === "number") this.serverId = id;
      },
      () => {},
    );
  }

  close(): void {
    if (!this.closedFlag) this.closedByProxyFlag = true;
    this.socket.destroy();
    this.lose("closed by the proxy");
  }

  /** AUTH, or HELLO 3 with the credentials on a RESP3 connection. */
  private authenticate(options: ConnectionOptions): void {
    const credentials = options.password === undefined ? [] : [options.user ?? "default", options.password];
    const argv =
      this.proto === 3
        ? ["HELLO", "3", ...(credentials.length > 0 ? ["AUTH", ...credentials] : [])]
        : options.user
          ? ["AUTH", options.user, options.password!]
          : ["AUTH", options.password!];
    // Fail everything queued behind AUTH at once, before its replies (NOAUTH) reach anyone.
    const sink: ReplySink = {
      reply: (data) => {
        if (data[0] !== 45 /* - */) return;
        this.authFailure = data.toString("utf8", 1, data.length - 2);
        this.socket.destroy();
        this.lose("authentication failed");
      },
      fail: () => {},
    };
    this.send(encodeCommand(argv), sink);
  }

  private onData(chunk: Buffer): void {
    const scanner = this.scanner;
    scanner.push(chunk);
    let reply: Buffer | null;
    try {
      while (!this.closedFlag && (reply = scanner.next()) !== null) {
        // A RESP3 push is out of band: it never answers a request.
        if (reply[0] === 62 /* > */) {
          this.pushHandler?.(reply);
          continue;
        }
        const sink = this.waiting.shift();
        if (sink !== undefined) {
          if (this.requests !== null) this.answered(this.requests);
          if (this.sentAt !== null) this.roundTrip!((callbackNow() - this.sentAt.shift()!) / 1000);
          // Behind a refused SELECT an error (BUSY again, mostly) is passed on as it is; a
          // success ran in a database its sender did not mean.
          if (this.refusal !== null && sink !== this.selectSink) {
            if (!isErrorReply(reply) && !this.anyDb.has(sink)) {
              this.distrust(sink);
              return;
            }
            if (--this.refusedLeft === 0) this.refusal = null;
          }
          sink.reply(reply);
        } else if (this.pushHandler !== null) this.pushHandler(reply);
      }
    } catch (err) {
      this.socket.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** One reply of the oldest kept request is in. */
  private answered(requests: Fifo<SentRequest>): void {
    const head = requests.peek();
    if (head !== undefined && ++head.answered >= head.replies) requests.shift();
  }

  /**
   * A command behind a refused SELECT succeeded, in the wrong database: its sender is told
   * the SELECT's error, not the success, and the connection is closed, for what the command
   * left on it (MULTI, WATCH) is not what its sender believes.
   */
  private distrust(sink: ReplySink): void {
    this.closedByProxyFlag = true;
    this.socket.destroy();
    this.lose("closed by the proxy", sink);
  }

  /** `refused`: a command that ran behind a refused SELECT, failed first (see distrust). */
  private lose(reason: string, refused: ReplySink | null = null): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.out.discard();
    const where = `${this.address.host}:${this.address.port}`;
    const message =
      this.authFailure !== null
        ? `ERR upstream ${where} refused the proxy's credentials: ${this.authFailure}`
        : this.connected
          ? CONNECTION_LOST
          : `ERR upstream ${where} unavailable: ${reason}`;
    this.sentAt?.drain();
    this.requests?.drain();
    // Commands sent behind a refused SELECT are told why theirs was refused; the others ran
    // where they were meant to, and their outcome is unknown.
    const why = this.refusal === null ? message : errorText(this.refusal);
    let left = this.refusal === null ? 0 : this.refusedLeft;
    if (refused !== null) {
      refused.fail(why);
      left--;
    }
    for (const sink of this.waiting.drain()) {
      if (sink === this.selectSink) left = 0;
      sink.fail(left-- > 0 ? why : message);
    }
    const held = this.held ?? [];
    this.held = null;
    this.heldReplies = 0;
    for (const { sinks, count } of held) {
      if (Array.isArray(sinks)) for (const sink of sinks as readonly ReplySink[]) sink.fail(message);
      else for (let i = 0; i < count; i++) (sinks as ReplySink).fail(message);
    }
    this.onClose?.(message);
    this.onBorrowerLost?.(message);
  }
}

/** The commands (RESP arrays) `payload` holds, each its own slice; null when it is not only whole arrays. */
export function splitCommands(payload: Buffer): Buffer[] | null {
  const scanner = new ReplyScanner();
  scanner.push(payload);
  const commands: Buffer[] = [];
  let length = 0;
  try {
    let command: Buffer | null;
    while ((command = scanner.next()) !== null) {
      if (command[0] !== 42 /* * */) return null;
      // A copy: the slice is the scanner's buffer.
      commands.push(Buffer.from(command));
      length += command.length;
    }
  } catch {
    return null;
  }
  return length === payload.length ? commands : null;
}
