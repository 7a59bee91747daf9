// Bundles each guest API (src/gears/guest/<api>/main.ts) into the one script an isolate
// evaluates (dist/guest/<api>.js). esbuild does this in milliseconds, so specs run it too
// (.mocharc.json) and never load a stale bundle.
import { buildSync } from "esbuild";
import { fileURLToPath, URL } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
for (const api of ["gears", "tf"]) {
  buildSync({
    absWorkingDir: root,
    entryPoints: [`src/gears/guest/${api}/main.ts`],
    outfile: `dist/guest/${api}.js`,
    bundle: true,
    format: "iife",
    target: "es2022",
    platform: "neutral",
    logLevel: "error",
    // The sources are modules (strict); the bundle is evaluated as a script, so say it.
    banner: { js: '"use strict";' },
  });
}
