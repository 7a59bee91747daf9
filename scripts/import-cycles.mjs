/* global process, console */
// Fails when the modules under src/ import each other in a circle (type-only imports
// included: a circle of types is still a circle of concerns). A few lines here rather
// than an ESLint plugin: the only question is the shape of the graph of relative imports.
import fs from "node:fs";
import path from "node:path";

const root = process.argv[2] ?? "src";
const IMPORT =
  /^\s*(?:import|export)\b[^;]*?\bfrom\s+["'](\.{1,2}\/[^"']+)["']|\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/gm;

function sources(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return sources(file);
    return file.endsWith(".ts") && !file.endsWith(".d.ts") ? [file] : [];
  });
}

const graph = new Map();
for (const file of sources(root)) {
  const text = fs.readFileSync(file, "utf8");
  const deps = [];
  for (const m of text.matchAll(IMPORT)) {
    const target = path.join(path.dirname(file), (m[1] ?? m[2]).replace(/\.js$/, ".ts"));
    deps.push(target);
  }
  graph.set(file, deps);
}

// Tarjan's strongly connected components: every component of more than one module is a circle.
let counter = 0;
const index = new Map();
const low = new Map();
const stack = [];
const onStack = new Set();
const circles = [];
function visit(v) {
  index.set(v, counter);
  low.set(v, counter++);
  stack.push(v);
  onStack.add(v);
  for (const w of graph.get(v)) {
    if (!graph.has(w)) continue;
    if (!index.has(w)) {
      visit(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
  }
  if (low.get(v) !== index.get(v)) return;
  const component = [];
  let w;
  do {
    w = stack.pop();
    onStack.delete(w);
    component.push(w);
  } while (w !== v);
  if (component.length > 1 || graph.get(v).includes(v)) circles.push(component);
}
for (const v of graph.keys()) if (!index.has(v)) visit(v);

if (circles.length > 0) {
  for (const circle of circles) {
    console.error(`import circle among: ${circle.sort().join(", ")}`);
    for (const v of circle) {
      for (const w of graph.get(v)) if (circle.includes(w)) console.error(`  ${v} -> ${w}`);
    }
  }
  process.exit(1);
}
console.log(`no import circle among ${graph.size} modules under ${root}/`);
