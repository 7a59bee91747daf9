import type { Protocol, RespValue } from "../resp/values.js";
import type { Request } from "../resp/request-parser.js";
import type { ProxyContext } from "./context.js";
import type { ReplySlot } from "./reply-slot.js";
import type { TrackingState } from "./tracking/state.js";
import type { AclUser } from "../acl/access-control.js";
import type { Lease } from "../routing/lease.js";

/**
 * What a command the proxy answers itself may see of the client that sent it. Handlers
 * depend on this, never on the session class, so the session can import them without
 * an import circle.
 */
export interface CommandHost {
  readonly id: number;
  readonly ctx: ProxyContext;
  /** The proxy's address the client connected to (CLIENT LIST's laddr): which listener, plain or TLS. */
  readonly laddr: string;
  db: number;
  /** Set by HELLO; every reply the handlers build is encoded in it. */
  proto: Protocol;
  name: string;
  libName: string;
  libVersion: string;
  /** Who the client is logged in as (AUTH, HELLO AUTH). */
  readonly user: ClientLogin;
  /** The user the client runs as (ACL WHOAMI, CLIENT LIST). */
  readonly userName: string;
  /** CLIENT REPLY: on, off, or skip the next reply. */
  replyMode: "on" | "off" | "skip";
  /** CLIENT TRACKING settings; null while tracking is off. */
  tracking: TrackingState | null;

  replyNow(data: Buffer): ReplySlot;
  replyError(message: string): void;
  /** A value encoded in the client's protocol. */
  replyValue(value: RespValue): void;
  /** Text as Redis sends it: a verbatim string in RESP3, a bulk string in RESP2. */
  replyText(text: string): void;
  /** Queues a last reply; the connection closes once it is written. */
  replyAndClose(data: Buffer): void;
  /** A slot an upstream (or a later computation) will fill. */
  upstreamSlot(): ReplySlot;
  laterSlot(): ReplySlot;
  /** A reply computed later; with `hold`, the client's next commands wait for it. */
  replyLater(reply: Promise<Buffer>, hold: boolean): void;

  /** Sends the request on as an ordinary command. */
  forward(name: string, request: Request): void;
  /** Sends argv in database `db` (SELECT): the client's later commands wait for its answer. */
  forwardInDb(argv: Buffer[], db: number, slot: ReplySlot): void;
  /** False when the request must wait for earlier replies (it runs again then). */
  waitForIdle(request: Request): boolean;
  /** Whether the client has subscriptions (pub/sub follows a protocol switch its own way). */
  readonly isPubSub: boolean;
  /** The connection a WATCH or MULTI holds for the client, if any. */
  readonly pinned: Lease | null;
  /**
   * False when the request must wait for replies due on a dedicated connection (a script,
   * a blocking command), as it would wait behind them on Redis; it runs again then.
   */
  enterSharedLane(request: Request): boolean;
  resetState(): void;
  /** CLIENT NO-EVICT: left out when clients are disconnected to get under --maxmemory-clients. */
  noEvict: boolean;
  /** Relays every master's MONITOR stream to this client. */
  readonly monitor: { start(): void };
  /** This client's CLIENT LIST line. */
  describe(): string;
}

/** The client's login, as AUTH and HELLO change it (client-user.ts). */
export interface ClientLogin {
  readonly authenticated: boolean;
  /** Logged in as a user of the server's own ACL: its commands run on its own connections. */
  readonly onServer: boolean;
  markAuthenticated(): void;
  /** AUTH succeeded as one of the proxy's users (--aclfile): its permissions apply from now on. */
  login(user: AclUser): void;
  /**
   * AUTH as a user of the server's own ACL (no --aclfile): checked by the server; the
   * client's later commands wait for it. Null once logged in, else the server's error.
   */
  loginUpstream(user: string, password: string): Promise<string | null>;
}

/** A command the proxy answers itself rather than forwarding. */
export type LocalCommand = (session: CommandHost, request: Request) => void;

export function wrongArity(name: string): string {
  return `ERR wrong number of arguments for '${name}' command`;
}

/** Whether `text` is a 64-bit integer as Redis reads one (string2ll: no sign on 0, no spaces). */
export function isLongLong(text: string): boolean {
  if (!/^(0|-?[1-9]\d{0,18})$/.test(text)) return false;
  const n = BigInt(text);
  return n >= -(2n ** 63n) && n < 2n ** 63n;
}
