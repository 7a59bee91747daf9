import { findCrlf, parseIntAscii } from "../resp/byte-queue.js";
import { decodeReply } from "../resp/decode.js";
import { encodeCommand, encodeValue } from "../resp/encode.js";
import type { Protocol, RespValue } from "../resp/values.js";
import type { ReplySink } from "../upstream/reply-sink.js";
import { keySlot } from "./key-slot.js";

/**
 * The proxy's own keys in Redis (stored sessions and libraries, leases, sync markers) are
 * not the users' data. RedisGears kept its state out of the keyspace; the proxy cannot, so
 * it hides it: no reader gives these keys, no registration sees their events, and KEYS,
 * SCAN, DBSIZE and RANDOMKEY through the proxy leave them out. This file is the one place
 * that says which keys they are.
 */

/** The hashtag of every lasting key the proxy keeps (sessions, libraries, leases): one slot. */
export const PROXY_HASHTAG = "{gears-proxy}";

/**
 * Sync markers: short-lived keys `{<tag>}gears-proxy-sync:<proxy id>:<seq>` written to the
 * shard of a `sync` write so its owner's answer comes after the write's events.
 */
export const SYNC_MARKER = "gears-proxy-sync:";

/**
 * The channel a proxy's sync answers come on, `gears-proxy:synced:<proxy id>` (a name other
 * proxies publish to, so it keeps its form), subscribed by each proxy holding registrations.
 */
export const SYNCED_CHANNEL = "gears-proxy:synced:";

const PREFIX = Buffer.from(PROXY_HASHTAG);

/** The slot every lasting proxy key is in. */
export const PROXY_KEYS_SLOT = keySlot(PREFIX);
const MARKER = Buffer.from(SYNC_MARKER);

/** Whether a key is a sync marker (only keys starting with a hashtag can be). */
export function isSyncMarker(key: Buffer): boolean {
  return key[0] === 123 && key.includes(MARKER);
}

/** Whether a key is the proxy's own; one byte is looked at for most users' keys. */
export function isProxyKey(key: Buffer): boolean {
  return key[0] === 123 && (key.subarray(0, PREFIX.length).equals(PREFIX) || isSyncMarker(key));
}

/** Keyspace notifications' channels: `__keyspace@<db>__:<key>` and `__keyevent@<db>__:<event>`. */
const KEYSPACE = "__keyspace@";
const KEYEVENT = "__keyevent@";
export const NOTIFICATION_PREFIXES: readonly string[] = [KEYSPACE, KEYEVENT];
/** What every notification frame holds: a frame without it is no notification, undecoded. */
export const NOTIFICATION_MARK = Buffer.from("__key");
/** Longer frames carry a user's message, not a notification of one of the proxy's short keys. */
const LONGEST_PROXY_NOTIFICATION = 1024;

/**
 * Whether a pub/sub message frame (RESP2 or a RESP3 push) is a keyspace notification of one
 * of the proxy's own keys: a client subscribed to notifications does not get those, as no
 * registration sees their events.
 */
export function isProxyKeyNotification(frame: Buffer): boolean {
  if (frame.length > LONGEST_PROXY_NOTIFICATION || !frame.includes(NOTIFICATION_MARK)) return false;
  const value = decodeReply(frame);
  if (!Array.isArray(value) || value.length < 3 || !Buffer.isBuffer(value[0])) return false;
  const kind = value[0].toString("latin1");
  const channel = kind === "message" ? value[1] : kind === "pmessage" ? value[2] : null;
  const payload = value[value.length - 1];
  return Buffer.isBuffer(channel) && Buffer.isBuffer(payload) && notifiesProxyKey(channel, payload);
}

/** Whether a message on `channel` with `payload` notifies an event of one of the proxy's keys. */
export function notifiesProxyKey(channel: Buffer, payload: Buffer): boolean {
  const name = channel.toString("latin1");
  if (name.startsWith(KEYEVENT)) return isProxyKey(payload);
  if (!name.startsWith(KEYSPACE)) return false;
  const at = channel.indexOf("__:", KEYSPACE.length);
  return at !== -1 && isProxyKey(channel.subarray(at + 3));
}

/** The proxy's own channels all start with one of these (PUBSUB CHANNELS leaves them out). */
const PROXY_CHANNEL_STARTS: readonly string[] = [PROXY_HASHTAG, SYNCED_CHANNEL];
const PROXY_CHANNEL_PREFIXES: readonly Buffer[] = PROXY_CHANNEL_STARTS.map((start) => Buffer.from(start));
/** A pmessage frame's start after its 4-element header (`*4` or RESP3's `>4`): the kind. */
const PMESSAGE_KIND = Buffer.from("$8\r\npmessage\r\n");

function isProxyChannel(channel: Buffer): boolean {
  return PROXY_CHANNEL_PREFIXES.some((prefix) => startsWithBytes(channel, prefix));
}

/** Characters that make the rest of a PSUBSCRIBE pattern match more than itself. */
const GLOB = /[*?[\\]/;

/**
 * Whether a PSUBSCRIBE pattern may match a channel that starts with one of `prefixes`. It is
 * judged by its literal start (up to its first glob character), which errs toward yes (`*x`
 * may match anything; so may `__k*`); a pattern without a glob character names one channel.
 */
export function patternMayMatch(pattern: string, prefixes: readonly string[]): boolean {
  const glob = pattern.search(GLOB);
  if (glob === -1) return prefixes.some((prefix) => pattern.startsWith(prefix));
  const literal = pattern.slice(0, glob);
  return prefixes.some((prefix) => prefix.startsWith(literal) || literal.startsWith(prefix));
}

/** Whether a PSUBSCRIBE pattern may match one of the proxy's own channels. */
export function mayMatchProxyChannel(pattern: Buffer): boolean {
  return patternMayMatch(pattern.toString("latin1"), PROXY_CHANNEL_STARTS);
}

/**
 * Whether a pub/sub frame (RESP2 or a RESP3 push) is a pattern's message on one of the proxy's
 * own channels (its sync answers, lease releases, executions asked across proxies): a client's
 * `PSUBSCRIBE *` does not get those, as PUBSUB CHANNELS does not list them. A SUBSCRIBE naming
 * such a channel asked for it and gets it, as from Redis.
 */
export function isProxyChannelMessage(frame: Buffer): boolean {
  // Read in place, header by header: a message's payload may be megabytes, the pattern long.
  if (frame.length < 4 + PMESSAGE_KIND.length || frame[1] !== 52 /* 4 */) return false;
  // An array (RESP2) or a push (RESP3): a map, set or attribute of 4 is no message.
  if (frame[0] !== 42 /* * */ && frame[0] !== 62 /* > */) return false;
  if (frame.compare(PMESSAGE_KIND, 0, PMESSAGE_KIND.length, 4, 4 + PMESSAGE_KIND.length) !== 0) return false;
  const patternAt = 4 + PMESSAGE_KIND.length;
  const patternEnd = bulkEnd(frame, patternAt);
  if (patternEnd === -1) return false;
  const channelLine = findCrlf(frame, patternEnd + 1, frame.length);
  if (channelLine === -1 || frame[patternEnd] !== 36 /* $ */) return false;
  return isProxyChannel(frame.subarray(channelLine + 2, frame.length));
}

/** Where the bulk string whose `$` is at `at` ends (past its CRLF); -1 when the frame is cut short. */
function bulkEnd(frame: Buffer, at: number): number {
  if (frame[at] !== 36 /* $ */) return -1;
  const line = findCrlf(frame, at + 1, frame.length);
  if (line === -1) return -1;
  const end = line + 2 + parseIntAscii(frame, at + 1, line) + 2;
  return end <= frame.length ? end : -1;
}

/**
 * PUBSUB CHANNELS' reply without the proxy's own channels (`{gears-proxy}:leases-released`,
 * subscribed while registrations hold leases, and each proxy's sync channel), as key
 * listings leave its keys out.
 */
export function channelsWithoutProxy(sink: ReplySink, proto: Protocol): ReplySink {
  return {
    reply: (data) => {
      const channels = decodeReply(data);
      if (!Array.isArray(channels)) return sink.reply(data);
      const users = channels.filter((c) => !(Buffer.isBuffer(c) && isProxyChannel(c)));
      sink.reply(users.length === channels.length ? data : encodeValue(users, proto));
    },
    fail: (message) => sink.fail(message),
  };
}

/** Commands whose replies list or count keys: through the proxy they leave the proxy's keys out. */
export const KEY_LISTING_COMMANDS = new Set(["keys", "scan", "dbsize", "randomkey"]);

/**
 * The lasting keys this process has written (all under PROXY_HASHTAG, so in one slot):
 * DBSIZE subtracts those that exist. Sync markers live a few seconds and are not counted.
 */
const written = new Set<string>();
/** Those of them written with a TTL (leases): INFO's keyspace `expires` leaves them out. */
const expiring = new Set<string>();

/** Says that the proxy keeps a key of this name (its hashtag must be PROXY_HASHTAG). */
export function noteProxyKey(name: string, withTtl = false): void {
  if (!name.startsWith(PROXY_HASHTAG)) throw new Error(`not a proxy key: ${name}`);
  written.add(name);
  if (withTtl) expiring.add(name);
}

/** The command that counts the proxy's lasting keys (EXISTS of each, one slot); null when it keeps none. */
export function proxyKeysCount(): Buffer | null {
  const query = proxyKeysAndExpires();
  return query === null ? null : encodeCommand(query.keys);
}

/**
 * The commands that count the proxy's lasting keys, and those of them with a TTL (INFO's
 * keyspace); null when it keeps none. Plain EXISTS, as DBSIZE uses: a script would show in the
 * server's own command stats (cmdstat_eval), which Redis's tests and users read.
 */
export function proxyKeysAndExpires(): { keys: string[]; expiring: string[] | null } | null {
  if (written.size === 0) return null;
  return { keys: ["EXISTS", ...written], expiring: expiring.size === 0 ? null : ["EXISTS", ...expiring] };
}

/** A list of keys without the proxy's (KEYS, a page of SCAN). */
export function hideProxyKeys(keys: RespValue): RespValue {
  if (!Array.isArray(keys)) return keys;
  return keys.filter((k) => !(Buffer.isBuffer(k) && isProxyKey(k)));
}

/** Whether a raw RANDOMKEY reply names one of the proxy's keys (then another is asked for). */
export function isProxyKeyReply(raw: Buffer): boolean {
  if (raw[0] !== 36 /* $ */ || raw[raw.indexOf(10) + 1] !== 123 /* { */) return false;
  const value = decodeReply(raw);
  return Buffer.isBuffer(value) && isProxyKey(value);
}

/**
 * The sink for a SCAN page of one server: its cursor passes as it is, the proxy's keys are left
 * out. A page with no '{' byte cannot hold one of them and is forwarded untouched.
 */
export function scanPageWithoutProxyKeys(sink: ReplySink, proto: Protocol): ReplySink {
  return {
    reply: (data) => {
      if (!data.includes(123 /* { */)) return sink.reply(data);
      const page = decodeReply(data);
      if (!Array.isArray(page) || page.length !== 2) return sink.reply(data);
      sink.reply(encodeValue([page[0], hideProxyKeys(page[1])], proto));
    },
    fail: (message) => sink.fail(message),
  };
}

function startsWithBytes(b: Buffer, prefix: Buffer): boolean {
  return b.length >= prefix.length && b.subarray(0, prefix.length).equals(prefix);
}
