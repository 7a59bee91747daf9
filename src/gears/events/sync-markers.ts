/**
 * Sync markers: how a proxy holding a `sync` write learns that the proxy handling the
 * write's shard has run the write's events. The marker is a short-lived key on that shard,
 * `{<tag>}gears-proxy-sync:<proxy id>:<seq>`; the answer is `<seq>` published on
 * `gears-proxy:synced:<proxy id>`. Marker keys are the proxy's, never users' events.
 */
export const SYNC_MARKER = "gears-proxy-sync:";
export const SYNCED_CHANNEL = "gears-proxy:synced:";

const MARKER = Buffer.from(SYNC_MARKER);

/** Whether an event's key is a sync marker (only keys starting with a hashtag can be). */
export function isSyncMarker(key: Buffer): boolean {
  return key[0] === 123 && key.includes(MARKER);
}
