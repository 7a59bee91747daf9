/**
 * What the guest micro-benches (events-guest.ts, mapreduce-guest.ts) share: a build's guest
 * sources loaded from its dist, so that two builds can be timed in one process, and a QuickJS
 * context in this thread with the sandbox prelude, the gears library and a script, whose
 * host calls a stub answers.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { getQuickJS, type QuickJSContext, type QuickJSHandle } from "quickjs-emscripten";

/** The build this file belongs to: dist/bench/.. */
export const OWN_BUILD = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");

/** One build's guest: the sources an isolate evaluates, and its binary record encoder. */
export interface GuestBuild {
  prelude: string;
  guest: string;
  /** The guest's entry object's global name (guest/entry.ts). */
  entry: string;
  encodeBinary: (v: unknown) => Buffer;
}

export async function loadGuestBuild(build: string): Promise<GuestBuild> {
  const mod = async <T>(file: string): Promise<T> =>
    (await import(pathToFileURL(path.join(build, "dist/src", file)).href)) as T;
  const { PRELUDE_SOURCE } = await mod<{ PRELUDE_SOURCE: string }>("sandbox/prelude.js");
  const { gearsGuestSource } = await mod<{ gearsGuestSource: () => string }>("gears/guest-bundles.js");
  const { GEARS_ENTRY } = await mod<{ GEARS_ENTRY: string }>("gears/guest/entry.js");
  const { encodeBinary } = await mod<{ encodeBinary: (v: unknown) => Buffer }>("sandbox/bjson.js");
  return { prelude: PRELUDE_SOURCE, guest: gearsGuestSource(), entry: GEARS_ENTRY, encodeBinary };
}

/** A QuickJS context holding a build's guest and a script. */
export interface GuestContext {
  ctx: QuickJSContext;
  /** Runs the jobs the guest's promises left (an async batch's continuations). */
  runPendingJobs(): void;
  /** One of the prelude's internal functions (call, start, finish, takeBatch, ...). */
  internal(name: string): QuickJSHandle;
  /** Calls `f` with `args`; the result's handle, or throws the guest's error. */
  enter(f: QuickJSHandle, ...args: QuickJSHandle[]): QuickJSHandle;
}

/**
 * The prelude's factory given a sync host (`callSync(name, argsJson)` answers with the
 * prelude's text form: "0" and a JSON value, or "1" and an error) and a notify that drops
 * everything, then the gears library and `script` evaluated.
 */
export async function guestContext(
  build: GuestBuild,
  script: string,
  callSync: (name: string, argsJson: string) => string,
): Promise<GuestContext> {
  const QuickJS = await getQuickJS();
  const rt = QuickJS.newRuntime();
  rt.setMaxStackSize(1 << 20);
  const ctx = rt.newContext();
  const rawSync = ctx.newFunction("callSync", (nameH, argsH) =>
    ctx.newString(callSync(ctx.getString(nameH), ctx.getString(argsH))),
  );
  const rawNotify = ctx.newFunction("notify", () => {});
  const factory = ctx.unwrapResult(ctx.evalCode(build.prelude, "prelude"));
  const internal = ctx.unwrapResult(ctx.callFunction(factory, ctx.undefined, rawSync, rawNotify));
  ctx.unwrapResult(ctx.evalCode(build.guest, "gears-guest.js")).dispose();
  ctx.unwrapResult(ctx.evalCode(script, "script")).dispose();
  return {
    ctx,
    runPendingJobs: () => {
      const jobs = rt.executePendingJobs(-1);
      if (jobs.error) throw new Error(String(ctx.dump(jobs.error)));
    },
    internal: (name) => ctx.getProp(internal, name),
    enter: (f, ...args) => ctx.unwrapResult(ctx.callFunction(f, ctx.undefined, ...args)),
  };
}

/** The parts of quickjs-emscripten's context that the worker's string and binary paths use. */
interface ContextInternals {
  module: { _malloc(bytes: number): number; _free(ptr: number): void; HEAPU8: Uint8Array };
  ffi: {
    QTS_NewString(ctx: unknown, ptr: number): number;
    QTS_NewArrayBuffer(ctx: unknown, ptr: number, length: number): number;
  };
  ctx: { value: unknown };
  memory: { heapValueHandle(ptr: number): QuickJSHandle };
}

const encoder = new TextEncoder();

/**
 * A text as the worker enters one (src/sandbox/worker.ts newText): past 1,024 characters,
 * encoded straight into the wasm heap, not by ctx.newString()'s loop in JS.
 */
export function heapText(ctx: QuickJSContext, text: string): QuickJSHandle {
  if (text.length < 1024) return ctx.newString(text);
  const c = ctx as unknown as ContextInternals;
  const bytes = Buffer.byteLength(text, "utf8");
  const ptr = c.module._malloc(bytes + 1);
  const heap = c.module.HEAPU8.subarray(ptr, ptr + bytes + 1);
  heap[encoder.encodeInto(text, heap).written] = 0;
  const h = c.memory.heapValueHandle(c.ffi.QTS_NewString(c.ctx.value, ptr));
  c.module._free(ptr);
  return h;
}

/** A value in the binary format as the worker enters one (worker.ts decodeBinary). */
export function heapBinary(ctx: QuickJSContext, bytes: Uint8Array): QuickJSHandle {
  const c = ctx as unknown as ContextInternals;
  const ptr = c.module._malloc(Math.max(1, bytes.length));
  c.module.HEAPU8.set(bytes, ptr);
  const buffer = c.memory.heapValueHandle(c.ffi.QTS_NewArrayBuffer(c.ctx.value, ptr, bytes.length));
  return buffer.consume((b) => ctx.decodeBinaryJSON(b));
}
