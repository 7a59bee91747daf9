// Bundles each guest API (src/gears/guest/<api>/main.ts) into the one script an isolate
// evaluates (dist/guest/<api>.js). esbuild does this in milliseconds, so specs run it too
// (.mocharc.json) and never load a stale bundle.
import { buildSync } from "esbuild";
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath, URL } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
// Parallel mocha workers each load this file while others may already be reading the bundles:
// a rename replaces a bundle in one step, so no reader ever sees half a file.
function writeAtomically(file, contents) {
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, contents);
  renameSync(temp, file);
}

mkdirSync(`${root}dist/guest`, { recursive: true });
for (const api of ["gears", "tf"]) {
  const result = buildSync({
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
    write: false,
  });
  for (const file of result.outputFiles) writeAtomically(file.path, file.contents);
}
// The Python library is Python source: the Pyodide isolate runs it as it is.
const python = `${root}dist/guest/gears.py`;
copyFileSync(`${root}src/gears/guest/python/gears.py`, `${python}.${process.pid}.tmp`);
renameSync(`${python}.${process.pid}.tmp`, python);
