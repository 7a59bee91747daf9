/**
 * Sync markers: how a proxy holding a `sync` write learns that the proxy handling the
 * write's shard has run the write's events. The marker is a short-lived key on that shard
 * (routing/hidden-keys.ts names it, SYNC_MARKER); the answer is `<seq>` published on
 * `gears-proxy:synced:<proxy id>`. Marker keys are the proxy's, never users' events.
 */
export { SYNC_MARKER, SYNCED_CHANNEL, isSyncMarker } from "../../routing/hidden-keys.js";
