// Bundles each guest API (src/gears/guest/<api>/main.ts) into the one script an isolate
// evaluates (dist/guest/<api>.js). esbuild does this in milliseconds, so specs run it too
// (.mocharc.json) and never load a stale bundle.
import { buildSync } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
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
// The Python library is Python source: the Pyodide isolate runs it as it is.
mkdirSync(`${root}dist/guest`, { recursive: true });
copyFileSync(`${root}src/gears/guest/python/gears.py`, `${root}dist/guest/gears.py`);
