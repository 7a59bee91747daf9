import { isSyncMarker } from "./sync-markers.js";

/** The hashtag of every key the proxy keeps in Redis itself (sessions, leases): one slot. */
export const PROXY_HASHTAG = "{gears-proxy}";

const PREFIX = Buffer.from(PROXY_HASHTAG);

/**
 * The proxy's own keys (stored sessions, leases, sync markers) are not the users' data:
 * no reader gives them and no registration sees their events.
 */
export function isProxyKey(key: Buffer): boolean {
  return key[0] === 123 && (key.subarray(0, PREFIX.length).equals(PREFIX) || isSyncMarker(key));
}
