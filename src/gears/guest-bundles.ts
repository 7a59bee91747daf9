import type { Preload } from "../sandbox/types.js";
import { readFileSync } from "node:fs";

/**
 * The guest libraries as isolates load them: one bundle per API, made at build time from
 * src/gears/guest/ (scripts/bundle-guests.mjs) into dist/guest/. Read once, when first used.
 */
const cache = new Map<string, string>();

function bundle(api: "gears" | "tf" | "gears-python"): string {
  let source = cache.get(api);
  if (source === undefined) {
    // This file runs as dist/src/gears/guest-bundles.js; the bundles sit in dist/guest/.
    const file = api === "gears-python" ? "gears.py" : `${api}.js`;
    const url = new URL(`../../guest/${file}`, import.meta.url);
    try {
      source = readFileSync(url, "utf8");
    } catch {
      throw new Error(`guest bundle ${url.pathname} is missing: run "npm run build"`);
    }
    cache.set(api, source);
  }
  return source;
}

/** The GearsBuilder library (RG.*): evaluate with `globalThis.__host` set, before the user's script. */
export const gearsGuestSource = (): string => bundle("gears");

/** The GearsBuilder library as every RG.EXECUTE's isolate is handed out with it (warm spares load it ahead). */
export const gearsPreload = (): Preload => ({ source: gearsGuestSource(), filename: "gears-library" });

/** The Triggers and Functions library (TFUNCTION/TFCALL). */
export const tfGuestSource = (): string => bundle("tf");

/** RedisGears' Python API over the GearsBuilder library (src/gears/guest/python/gears.py). */
export const pythonGuestSource = (): string => bundle("gears-python");
