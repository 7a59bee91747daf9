/**
 * An entry's request on its way into the guest (issues 14 and 11): the sandbox's way now
 * against a shared-area way, in a real worker thread with QuickJS, CPU per entry on each thread.
 *  - port: the request `{op, path, argsJson}` posted (structured clone on both threads), the
 *    worker's event loop wakes, and the text goes into QuickJS as worker.ts's newText() does
 *    (ctx.newString() below 1,024 characters, else encodeInto the wasm heap + QTS_NewString);
 *  - area: the text written as UTF-8 into a SharedArrayBuffer on the main thread, a small
 *    notice posted, its bytes copied straight into the wasm heap (HEAPU8.set + QTS_NewString);
 *  - waiting: as area, but the worker waits in Atomics.wait for the next entry (no port
 *    message, no event-loop turn on the worker's side).
 * Every variant answers with a port message, as the worker's "done" is. The request texts are
 * the events bench's rows (49 characters a write) and TFCALL batches; the JSON.stringify that
 * makes them is the same in every variant and left out.
 *   node dist/bench/crossing-guest.js [--seconds 1] [--rounds 3]
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import {
  newQuickJSWASMModuleFromVariant,
  newVariant,
  RELEASE_SYNC,
  type QuickJSHandle,
} from "quickjs-emscripten";
import { median } from "./support.js";

type Variant = "port" | "area" | "waiting";
const VARIANTS: readonly Variant[] = ["port", "area", "waiting"];
const AREA_BYTES = 4 << 20;
/** Int32 slots at the area's start: the doorbell (1: an entry is in), its byte length; the text after. */
const DOOR = 0;
const LENGTH = 1;
const TEXT_BYTE = 16;

interface Init {
  wasm: WebAssembly.Module;
  area: SharedArrayBuffer;
  variant: Variant;
}

/** This thread's CPU time in ms, from /proc (10 ms ticks). */
function threadCpuMs(): number {
  const fields = readFileSync("/proc/thread-self/stat", "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

// ---- worker --------------------------------------------------------------------------------

/** The parts of quickjs-emscripten's context worker.ts uses (its ContextInternals). */
interface Internals {
  module: { _malloc(bytes: number): number; _free(ptr: number): void };
  ffi: { QTS_NewString(ctx: unknown, ptr: number): number };
  ctx: { value: unknown };
  memory: { heapValueHandle(ptr: number): QuickJSHandle };
}

async function serve(init: Init): Promise<void> {
  const port = parentPort!;
  const memory = new WebAssembly.Memory({ initial: 256, maximum: 256 * 16 });
  const mod = await newQuickJSWASMModuleFromVariant(
    newVariant(RELEASE_SYNC, { wasmModule: init.wasm, wasmMemory: memory }),
  );
  const ctx = mod.newRuntime().newContext();
  const c = ctx as unknown as Internals;
  const encoder = new TextEncoder();
  const header = new Int32Array(init.area, 0, 2);
  /** worker.ts's newText(). */
  const newText = (text: string): QuickJSHandle => {
    if (text.length < 1024) return ctx.newString(text);
    const bytes = Buffer.byteLength(text, "utf8");
    const ptr = c.module._malloc(bytes + 1);
    const heap = new Uint8Array(memory.buffer, ptr, bytes + 1);
    heap[encoder.encodeInto(text, heap).written] = 0;
    const h = c.memory.heapValueHandle(c.ffi.QTS_NewString(c.ctx.value, ptr));
    c.module._free(ptr);
    return h;
  };
  /** The area's text as a guest string: its bytes copied into the heap as they are. */
  const areaText = (n: number): QuickJSHandle => {
    const ptr = c.module._malloc(n + 1);
    const heap = new Uint8Array(memory.buffer, ptr, n + 1);
    heap.set(new Uint8Array(init.area, TEXT_BYTE, n));
    heap[n] = 0;
    const h = c.memory.heapValueHandle(c.ffi.QTS_NewString(c.ctx.value, ptr));
    c.module._free(ptr);
    return h;
  };
  const done = (text: QuickJSHandle, path: string): void => {
    const p = ctx.newString(path);
    text.dispose();
    p.dispose();
    port.postMessage({ t: "done", ok: true, json: "1" });
  };
  let cpuFrom = threadCpuMs();
  port.on("message", (m: { op: string; path: string; argsJson?: string; n?: number; count?: number }) => {
    if (m.op === "start") {
      cpuFrom = threadCpuMs();
      if (init.variant !== "waiting") return;
      // Entries come through the doorbell only, `count` of them.
      for (let i = 0; i < m.count!; i++) {
        Atomics.wait(header, DOOR, 0);
        Atomics.store(header, DOOR, 0);
        done(areaText(header[LENGTH]), m.path);
      }
      return;
    }
    if (m.op === "stop") {
      port.postMessage({ t: "cpu", ms: threadCpuMs() - cpuFrom });
      return;
    }
    done(m.argsJson === undefined ? areaText(m.n!) : newText(m.argsJson), m.path);
  });
  port.postMessage({ t: "ready" });
}

// ---- main ----------------------------------------------------------------------------------

/** The events bench's rows for `writes` writes (execution.ts eventRows: a set row, a reference to all_keys). */
function rowsRequest(writes: number, nonAscii: boolean): string {
  const rows: (string | number)[] = [];
  for (let i = 0; i < writes; i++) {
    rows.push(`key:${nonAscii ? "é" : ""}${i}`, "string", "set", i);
    rows.push(i === 0 ? "all_keys" : 4, "set", "sadd", -1);
  }
  const values = new Array<string>(writes).fill("1");
  return JSON.stringify([1, { partitions: 1, slots: [[0, 16383, 0]] }, [[0, { rows, values }]], 1]);
}

/** A batch of `calls` TFCALLs of a one-INCR function as tf-guest.ts's pushBatchCalls makes it. */
function tfRequest(calls: number): string {
  const flat: (string | number)[] = [];
  for (let i = 0; i < calls; i++) flat.push("incr", 1, `s:counter:${i % 1000}`, 1, i % 16384);
  return JSON.stringify([flat, 250]);
}

interface Figures {
  main: number;
  worker: number;
  wall: number;
}

async function measure(
  wasm: WebAssembly.Module,
  variant: Variant,
  text: string,
  seconds: number,
): Promise<Figures> {
  const area = new SharedArrayBuffer(AREA_BYTES);
  const header = new Int32Array(area, 0, 2);
  const bytes = new Uint8Array(area, TEXT_BYTE);
  const encoder = new TextEncoder();
  const worker = new Worker(new URL(import.meta.url), { workerData: { wasm, area, variant } satisfies Init });
  const next = (): Promise<{ t: string; ms?: number }> =>
    new Promise((resolve) => worker.once("message", resolve));
  await next();
  const path = "__gears.once";
  const send = (): void => {
    if (variant === "port") {
      worker.postMessage({ op: "call", path, argsJson: text });
      return;
    }
    const n = encoder.encodeInto(text, bytes).written;
    if (variant === "area") {
      worker.postMessage({ op: "call", path, n });
      return;
    }
    header[LENGTH] = n;
    Atomics.store(header, DOOR, 1);
    Atomics.notify(header, DOOR);
  };
  // A first pass sizes the run; then `count` entries, timed.
  let count = 200;
  for (let pass = 0; pass < 2; pass++) {
    worker.postMessage({ op: "start", path, count });
    const mainFrom = threadCpuMs();
    const wallFrom = performance.now();
    await new Promise<void>((resolve) => {
      let left = count;
      const onMessage = (): void => {
        if (--left === 0) {
          worker.off("message", onMessage);
          resolve();
        } else send();
      };
      worker.on("message", onMessage);
      send();
    });
    const wall = performance.now() - wallFrom;
    const main = threadCpuMs() - mainFrom;
    worker.postMessage({ op: "stop", path });
    const workerMs = (await next()).ms!;
    if (pass === 1) {
      await worker.terminate();
      return { main: (main * 1000) / count, worker: (workerMs * 1000) / count, wall: (wall * 1000) / count };
    }
    count = Math.max(200, Math.round((seconds * 1000 * count) / wall));
  }
  throw new Error("unreachable");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { seconds: { type: "string", default: "1" }, rounds: { type: "string", default: "3" } },
  });
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const wasmPath = createRequire(import.meta.url).resolve("@jitl/quickjs-wasmfile-release-sync/wasm");
  const wasm = await WebAssembly.compile(await readFile(wasmPath));
  const requests: [string, string][] = [
    ["1 TFCALL", tfRequest(1)],
    ["62 TFCALLs", tfRequest(62)],
    ["115 writes' rows (the events bench's mean)", rowsRequest(115, false)],
    ["500 writes' rows", rowsRequest(500, false)],
    ["500 writes' rows, non-ASCII keys", rowsRequest(500, true)],
    ["5,000 writes' rows (its largest)", rowsRequest(5000, false)],
  ];
  console.log(`load average ${(await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ")}`);
  console.log("| request | chars | variant | main µs/entry | worker µs/entry | wall µs/entry |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const [name, text] of requests) {
    const runs = new Map<Variant, Figures[]>(VARIANTS.map((v) => [v, []]));
    for (let r = 0; r < rounds; r++)
      for (const variant of VARIANTS) runs.get(variant)!.push(await measure(wasm, variant, text, seconds));
    for (const variant of VARIANTS) {
      const f = runs.get(variant)!;
      const m = (pick: (x: Figures) => number): string => median(f.map(pick)).toFixed(1);
      console.log(
        `| ${name} | ${text.length} | ${variant} | ${m((x) => x.main)} | ${m((x) => x.worker)} | ${m((x) => x.wall)} |`,
      );
    }
  }
  console.log(`load average ${(await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ")}`);
}

if (isMainThread) await main();
else await serve(workerData as Init);
