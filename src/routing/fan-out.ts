import { decodeReply } from "../resp/decode.js";
import { encodeCommand, encodeError, encodeInteger, encodeValue, NULL_BULK } from "../resp/encode.js";
import type { UpstreamNode } from "../upstream/node.js";
import {
  channelsWithoutProxy,
  hideProxyKeys,
  PROXY_KEYS_SLOT,
  proxyKeysCount,
  isProxyKeyReply,
} from "./hidden-keys.js";
import { sinkInProtocol, type ReplySink } from "../upstream/reply-sink.js";
import type { Protocol, RespValue } from "../resp/values.js";
import { inResp2 } from "../resp/convert.js";
import { keySlot } from "./key-slot.js";
import { PUBSUB_HOME_SLOT } from "./command-kinds.js";
import {
  Gather,
  firstError,
  mergeAllOk,
  mergeScriptExists,
  mergeConcat,
  mergeFirst,
  mergeMin,
  mergeSum,
} from "./merge.js";

/** What fan-out handlers need from the router. */
export interface ClusterSender {
  masters(): UpstreamNode[];
  /** The masters' replicas. */
  replicas(): UpstreamNode[];
  /** Sends to one node, following redirects; `slot` -1 for keyless commands. */
  sendTo(
    node: UpstreamNode,
    payload: Buffer,
    sink: ReplySink,
    affinity: number,
    slot: number,
    proto?: Protocol,
  ): void;
  /** The master of a slot (the proxy's own keys live in one). */
  routeSlot(slot: number, affinity: number): UpstreamNode;
  /** Whether the proxy knows a script's body (router's ScriptCache). */
  knowsScript(sha: string): boolean;
}

/**
 * A keyless command across the masters. Parts go in `proto`, the client's protocol, on the
 * connections its other commands take, so that they run in the order the client sent them
 * (a RESP3 client's KEYS on a RESP2 connection ran after the FLUSHDB pipelined behind it);
 * their replies are merged in RESP2 (partSink) and the merged reply passed on in `proto`. A
 * command for one node goes in `proto` too, its reply forwarded untouched.
 */
type FanOut = (r: ClusterSender, argv: Buffer[], sink: ReplySink, affinity: number, proto: Protocol) => void;

/** A part's sink: its reply, sent in `proto`, read back in RESP2 for the merge. */
function partSink(sink: ReplySink, proto: Protocol): ReplySink {
  if (proto === 2) return sink;
  return { reply: (data) => sink.reply(inResp2(data)), fail: (message) => sink.fail(message) };
}

/** Sends argv to every master and merges the replies with `merge`. */
function toAll(merge: (replies: Buffer[]) => Buffer): FanOut {
  return (r, argv, sink, affinity, proto) => {
    const masters = r.masters();
    const gather = new Gather(masters.length, merge, sinkInProtocol(sink, proto));
    const payload = encodeCommand(argv);
    masters.forEach((node, i) =>
      r.sendTo(node, payload, partSink(gather.part(i), proto), affinity, -1, proto),
    );
  };
}

const IGNORED: ReplySink = { reply() {}, fail() {} };

/**
 * CONFIG SET on every master, answered by them, and on their replicas as well (their answers
 * left aside): a client sees one server, whose settings stay what it set after a failover.
 */
const configSet: FanOut = (r, argv, sink, affinity, proto) => {
  toAll(mergeAllOk)(r, argv, sink, affinity, proto);
  const payload = encodeCommand(argv);
  for (const replica of r.replicas()) r.sendTo(replica, payload, IGNORED, affinity, -1);
};

/** Keyless commands that concern one node: any master will do. */
function toOne(r: ClusterSender, argv: Buffer[], sink: ReplySink, affinity: number, proto: Protocol): void {
  const masters = r.masters();
  r.sendTo(masters[affinity % masters.length], encodeCommand(argv), sink, affinity, -1, proto);
}

/** The subcommand tables of bySubcommand, by command: which subcommands span the masters. */
const SUBCOMMANDS = new Map<FanOut, Record<string, FanOut>>();

/** Picks a handler by subcommand (SCRIPT LOAD, FUNCTION FLUSH...), defaulting to one node. */
function bySubcommand(table: Record<string, FanOut>): FanOut {
  const handler: FanOut = (r, argv, sink, affinity, proto) => {
    const sub = argv[1]?.toString().toLowerCase() ?? "";
    (table[sub] ?? toOne)(r, argv, sink, affinity, proto);
  };
  SUBCOMMANDS.set(handler, table);
  return handler;
}

/**
 * RANDOMKEY tries on one master before it looks for a user's key by SCAN instead: the proxy's
 * own keys can outnumber a few users' keys, and retrying alone would, now and then, give up on
 * a master that has some (and answer nil while keys exist).
 */
const PROXY_KEY_RETRIES = 8;
const SCAN_PAGE = Buffer.from("100");

/** RANDOMKEY: ask the masters in turn, from a random one, until one has a key (a user's). */
const randomKey: FanOut = (r, argv, target, affinity, proto) => {
  const sink = sinkInProtocol(target, proto);
  const masters = r.masters();
  const start = Math.floor(Math.random() * masters.length);
  const payload = encodeCommand(argv);
  const fail = (message: string): void => sink.fail(message);
  // A page at a time until one holds a user's key (one of them, at random, is the answer).
  const scanFor = (i: number, cursor: Buffer): void => {
    const node = masters[(start + i) % masters.length];
    const page = encodeCommand([Buffer.from("SCAN"), cursor, Buffer.from("COUNT"), SCAN_PAGE]);
    const onPage = (data: Buffer): void => {
      const value = decodeReply(data);
      if (!Array.isArray(value) || value.length !== 2 || !Buffer.isBuffer(value[0])) return sink.reply(data);
      const users = hideProxyKeys(value[1]);
      if (Array.isArray(users) && users.length > 0)
        return sink.reply(encodeValue(users[Math.floor(Math.random() * users.length)]));
      return value[0].toString() === "0" ? attempt(i + 1) : scanFor(i, value[0]);
    };
    r.sendTo(node, page, partSink({ reply: onPage, fail }, proto), affinity, -1, proto);
  };
  const attempt = (i: number, tries = 0): void => {
    if (i === masters.length) return sink.reply(NULL_BULK);
    const onKey = (data: Buffer): void =>
      data[0] === 36 && data[1] === 45 /* $- */
        ? attempt(i + 1)
        : !isProxyKeyReply(data)
          ? sink.reply(data)
          : tries < PROXY_KEY_RETRIES
            ? attempt(i, tries + 1)
            : scanFor(i, Buffer.from("0"));
    r.sendTo(
      masters[(start + i) % masters.length],
      payload,
      partSink({ reply: onKey, fail }, proto),
      affinity,
      -1,
      proto,
    );
  };
  attempt(0);
};

/**
 * SCRIPT EXISTS: a script every master has, or one that some master has and the proxy knows
 * the body of: an EVALSHA of it runs wherever its keys are, the proxy loading it on a master
 * that meets it with NOSCRIPT. An EVAL on one slot's master then SCRIPT EXISTS gives 1, as
 * on one server.
 */
const scriptExists: FanOut = (r, argv, sink, affinity, proto) => {
  const known = argv.slice(2).map((sha) => r.knowsScript(sha.toString()));
  toAll((replies) => mergeScriptExists(replies, known))(r, argv, sink, affinity, proto);
};

/** Bits of a proxy SCAN cursor that name the master; the rest is that master's cursor. */
const SHARD_BITS = 10n;

/**
 * A cursor as Redis reads one (strtoul, base 10): an optional sign and digits (the empty
 * string is 0; a sign alone, read as no number, is not), no space before or after, below
 * 2^64; a minus wraps around. Null when Redis says invalid.
 */
function scanCursor(text: string): bigint | null {
  if (text === "") return 0n;
  const m = /^([+-]?)(\d+)$/.exec(text);
  if (m === null) return null;
  const n = BigInt(m[2]);
  if (n >= 1n << 64n) return null;
  return m[1] === "-" ? ((1n << 64n) - n) % (1n << 64n) : n;
}

/**
 * SCAN across masters, one after another. The proxy's cursor is the master's own cursor
 * shifted left, with the master's index (by slot order) in the low bits, so it stays a
 * plain number below 2^63 as clients expect.
 */
const scan: FanOut = (r, argv, target, affinity, proto) => {
  const sink = sinkInProtocol(target, proto);
  const masters = r.masters();
  if (argv.length < 2) return sink.reply(encodeError("ERR wrong number of arguments for 'scan' command"));
  const cursor = scanCursor(argv[1].toString("latin1"));
  const index = Number((cursor ?? 0n) & ((1n << SHARD_BITS) - 1n));
  if (cursor === null || index >= masters.length) return sink.reply(encodeError("ERR invalid cursor"));
  const shardCursor = cursor >> SHARD_BITS;
  const sub = [argv[0], Buffer.from(shardCursor.toString()), ...argv.slice(2)];
  r.sendTo(
    masters[index],
    encodeCommand(sub),
    partSink(
      {
        reply: (data) => {
          const value = decodeReply(data);
          if (!Array.isArray(value) || value.length !== 2) return sink.reply(data);
          const next = BigInt(value[0]!.toString());
          let proxyCursor: bigint;
          if (next !== 0n) proxyCursor = (next << SHARD_BITS) | BigInt(index);
          else proxyCursor = index + 1 < masters.length ? BigInt(index + 1) : 0n;
          sink.reply(encodeValue([Buffer.from(proxyCursor.toString()), hideProxyKeys(value[1])]));
        },
        fail: (message) => sink.fail(message),
      },
      proto,
    ),
    affinity,
    -1,
    proto,
  );
};

/** DBSIZE: every master's count, less the proxy's own keys. */
const dbsize: FanOut = (r, argv, sink, affinity, proto) => {
  const counted = proxyKeysCount();
  if (counted === null) return toAll(mergeSum)(r, argv, sink, affinity, proto);
  const masters = r.masters();
  const gather = new Gather(
    masters.length + 1,
    (replies) => {
      const error = firstError(replies);
      if (error !== undefined) return error;
      const own = replies.pop()!;
      return encodeInteger(Number(decodeReply(mergeSum(replies))) - Number(decodeReply(own)));
    },
    sink,
  );
  const payload = encodeCommand(argv);
  masters.forEach((node, i) => r.sendTo(node, payload, partSink(gather.part(i), proto), affinity, -1, proto));
  r.sendTo(
    r.routeSlot(PROXY_KEYS_SLOT, affinity),
    counted,
    partSink(gather.part(masters.length), proto),
    affinity,
    PROXY_KEYS_SLOT,
    proto,
  );
};

/** PUBSUB CHANNELS, NUMSUB and NUMPAT: on the master that takes every proxy's channel pub/sub. */
const toPubSubHome: FanOut = (r, argv, sink, affinity, proto) => {
  if (isChannelsQuery(argv)) sink = channelsWithoutProxy(sink, proto);
  const home = r.routeSlot(PUBSUB_HOME_SLOT, affinity);
  r.sendTo(home, encodeCommand(argv), sink, affinity, PUBSUB_HOME_SLOT, proto);
};

/** PUBSUB CHANNELS [pattern]: its reply leaves the proxy's own channels out. */
export function isChannelsQuery(argv: readonly Buffer[]): boolean {
  return argv.length >= 2 && argv[1].toString("latin1").toLowerCase() === "channels";
}

/**
 * PUBSUB SHARDNUMSUB: each shard channel counted on its own shard's master (a master knows
 * only its own), answered in the order asked, as one server answers: a flat array of channel
 * and count, in RESP3 too (Redis 7.0 to 8.0, Valkey 8).
 */
const shardNumSub: FanOut = (r, argv, sink, affinity, proto) => {
  const channels = argv.slice(2);
  if (channels.length === 0) return toOne(r, argv, sink, affinity, proto);
  const byNode = new Map<UpstreamNode, number[]>();
  channels.forEach((channel, i) => {
    const node = r.routeSlot(keySlot(channel), affinity);
    const list = byNode.get(node);
    if (list === undefined) byNode.set(node, [i]);
    else list.push(i);
  });
  const nodes = [...byNode];
  const merge = (replies: Buffer[]): Buffer => {
    const error = firstError(replies);
    if (error !== undefined) return error;
    const counts = new Array<RespValue>(channels.length);
    nodes.forEach(([, indexes], n) => {
      const flat = decodeReply(replies[n]);
      if (!Array.isArray(flat)) throw new Error("PUBSUB SHARDNUMSUB did not answer an array");
      indexes.forEach((channel, k) => (counts[channel] = flat[2 * k + 1]!));
    });
    return encodeValue(
      channels.flatMap((channel, i) => [channel, counts[i]]),
      proto,
    );
  };
  const gather = new Gather(nodes.length, merge, sink);
  nodes.forEach(([node, indexes], n) => {
    const part = encodeCommand([argv[0], argv[1], ...indexes.map((i) => channels[i])]);
    r.sendTo(node, part, gather.part(n), affinity, keySlot(channels[indexes[0]]), proto);
  });
};

/** INFO-like replies are left to the client session; these are the keyless commands that span shards. */
export const FAN_OUT = new Map<string, FanOut>([
  ["dbsize", dbsize],
  ["keys", toAll((replies) => encodeValue(hideProxyKeys(decodeReply(mergeConcat(replies)))))],
  ["flushall", toAll(mergeAllOk)],
  ["flushdb", toAll(mergeAllOk)],
  ["wait", toAll(mergeMin)],
  ["randomkey", randomKey],
  // A client sees one server: a snapshot or rewrite it asks for covers all of its data, and
  // LASTSAVE is the oldest master's (every key was saved by then).
  ["save", toAll(mergeAllOk)],
  ["bgsave", toAll(mergeFirst)],
  ["bgrewriteaof", toAll(mergeFirst)],
  ["lastsave", toAll(mergeMin)],
  ["scan", scan],
  [
    "script",
    bySubcommand({
      load: toAll(mergeFirst),
      flush: toAll(mergeAllOk),
      exists: scriptExists,
    }),
  ],
  [
    "function",
    bySubcommand({
      load: toAll(mergeFirst),
      delete: toAll(mergeFirst),
      flush: toAll(mergeAllOk),
      restore: toAll(mergeAllOk),
    }),
  ],
  [
    "pubsub",
    bySubcommand({
      channels: toPubSubHome,
      numsub: toPubSubHome,
      numpat: toPubSubHome,
      shardchannels: toAll(mergeConcat),
      shardnumsub: shardNumSub,
    }),
  ],
  ["config", bySubcommand({ set: configSet, resetstat: toAll(mergeAllOk), rewrite: toAll(mergeAllOk) })],
]);

/**
 * Whether a command (lower-case `name`) acts on, or answers for, more than one master: not those
 * any one master answers (FUNCTION LIST, CONFIG GET...).
 */
export function spansMasters(name: string, argv: readonly Buffer[]): boolean {
  const fanOut = FAN_OUT.get(name);
  if (fanOut === undefined) return false;
  const table = SUBCOMMANDS.get(fanOut);
  return table === undefined || Object.hasOwn(table, argv[1]?.toString().toLowerCase() ?? "");
}

/**
 * A fan-out command that already ran on `done` (inside a transaction there, `part` its reply
 * in EXEC's array): the same command on the other masters, merged with `part` as it is outside
 * a transaction. Whatever the handler would send `done` of the same command is `part`.
 */
export function fanOutBeside(
  r: ClusterSender,
  done: UpstreamNode,
  part: Buffer,
  argv: Buffer[],
  sink: ReplySink,
  affinity: number,
  proto: Protocol,
): void {
  const payload = encodeCommand(argv);
  let answered = false;
  const beside: ClusterSender = {
    masters: () => r.masters(),
    replicas: () => r.replicas(),
    routeSlot: (slot, a) => r.routeSlot(slot, a),
    knowsScript: (sha) => r.knowsScript(sha),
    sendTo: (node, p, s, a, slot, pr) => {
      if (!answered && node === done && p.equals(payload)) {
        answered = true;
        s.reply(part);
      } else r.sendTo(node, p, s, a, slot, pr);
    },
  };
  FAN_OUT.get(argv[0].toString().toLowerCase())!(beside, argv, sink, affinity, proto);
}
