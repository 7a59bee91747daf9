import { decodeReply } from "../resp/decode.js";
import { NotHandled, ReplyErrorText, RespCursor } from "../resp/json-text.js";
import { NO_KEYS, type RouteContext, type Router } from "../routing/router.js";
import { decimalLength } from "../resp/encode.js";
import type { ReplySink } from "../upstream/reply-sink.js";
import { RawJson, type JsonValue } from "../sandbox/types.js";
import { replyToJson } from "./json-values.js";

export type CallOutcome = { ok: JsonValue | RawJson } | { error: string };

/** One reply's outcome for the guest, read straight from its bytes (valid only during the call). */
function outcomeOf(reply: Buffer): CallOutcome {
  try {
    return { ok: new RawJson(new RespCursor(reply).value()) };
  } catch (e) {
    if (e instanceof ReplyErrorText) return { error: e.message };
    if (!(e instanceof NotHandled)) throw e;
  }
  try {
    return { ok: replyToJson(decodeReply(reply)) };
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
}

const UNUSED: CallOutcome = { ok: null };

/**
 * A reply that is not an error at any depth, told from its first byte: a status, an
 * integer, a bulk string, a double, a boolean or a null. Aggregates are read whole.
 */
function plainSuccess(reply: Buffer): boolean {
  const t = reply[0];
  return (
    t === 43 /* + */ ||
    t === 58 /* : */ ||
    t === 36 /* $ */ ||
    t === 44 /* , */ ||
    t === 35 /* # */ ||
    t === 95
  ); /* _ */
}

/** The outcomes of one batch, filled in as the replies come; resolves when the last one has. */
class Outcomes {
  readonly list: CallOutcome[];
  private left: number;
  private resolve: (list: CallOutcome[]) => void = () => {};
  readonly done: Promise<CallOutcome[]>;

  constructor(n: number) {
    this.list = new Array<CallOutcome>(n);
    this.left = n;
    this.done = new Promise((resolve) => (this.resolve = resolve));
    if (n === 0) this.resolve(this.list);
  }

  set(index: number, outcome: CallOutcome): void {
    this.list[index] = outcome;
    if (--this.left === 0) this.resolve(this.list);
  }
}

/** Where one command's reply goes: its place in the batch. */
class OutcomeSink implements ReplySink {
  constructor(
    private readonly outcomes: Outcomes,
    private readonly index: number,
    /** The caller only needs to know whether it failed: a plain success is not read. */
    private readonly unused: boolean,
  ) {}

  reply(data: Buffer): void {
    this.outcomes.set(this.index, this.unused && plainSuccess(data) ? UNUSED : outcomeOf(data));
  }

  fail(message: string): void {
    this.outcomes.set(this.index, { error: message });
  }
}

/** The lower-case form of the command names scripts send (a handful): made once each. */
const LOWER = new Map<string, string>();

function lowerName(text: string): string {
  let lower = LOWER.get(text);
  if (lower === undefined) {
    lower = text.toLowerCase();
    if (LOWER.size < 1024) LOWER.set(text, lower);
  }
  return lower;
}

/** Whether every character of `text` is ASCII: its UTF-8 bytes are its characters. */
function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 127) return false;
  return true;
}

/** The RESP header of a bulk string of `length` bytes (`$<length>\r\n`), written at `at`; where it ends. */
function writeHeader(out: Buffer, at: number, type: number, length: number): number {
  out[at++] = type;
  if (length < 10) out[at++] = 48 + length;
  else if (length < 100) {
    out[at++] = 48 + Math.floor(length / 10);
    out[at++] = 48 + (length % 10);
  } else at += out.write(String(length), at, "latin1");
  out[at++] = 13;
  out[at++] = 10;
  return at;
}

/** The bytes of a bulk string of `length` bytes, header and CRLF included. */
function bulkSize(length: number): number {
  return 1 + decimalLength(length) + 2 + length + 2;
}

/** Strings up to this long are copied character by character (a native write costs more). */
const SHORT_TEXT = 32;

/**
 * A batch of execute() calls with their strings back to back in one list: call `i` is
 * `flat[from[i]]..flat[to[i] - 1]` (the name, then the arguments) for partition `part[i]`.
 * Fewer than one string: a call that takes another path.
 */
export interface CallTable {
  count: number;
  flat: readonly JsonValue[];
  part: readonly JsonValue[];
  from: Int32Array;
  to: Int32Array;
}

/** A CallTable of lists `[partition, name, ...args]` (`null` for a call that takes another path). */
function tableOfLists(lists: readonly (readonly JsonValue[] | null)[]): CallTable {
  const n = lists.length;
  const flat: JsonValue[] = [];
  const part = new Array<JsonValue>(n);
  const from = new Int32Array(n);
  const to = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const args = lists[i];
    part[i] = args?.[0] ?? null;
    from[i] = flat.length;
    if (args !== null) for (let j = 1; j < args.length; j++) flat.push(args[j]);
    to[i] = flat.length;
  }
  return { count: n, flat, part, from, to };
}

/**
 * A CallTable of a batched foreach's list: `partition, n, name, ...args` per call, `n`
 * strings each, or `-1, last` for the call before it with its last string replaced by `last`
 * (guest/gears/foreach-batch.ts: a foreach's calls mostly differ in their last argument).
 * Null when the list is not of that form.
 */
export function tableOfFlat(list: readonly JsonValue[]): CallTable | null {
  let count = 0;
  let repeats = false;
  let lastN = -1;
  for (let i = 0; i < list.length; count++) {
    if (list[i] === -1) {
      if (lastN < 1 || i + 2 > list.length) return null;
      repeats = true;
      i += 2;
      continue;
    }
    const n = list[i + 1];
    if (typeof n !== "number" || !Number.isInteger(n) || n < 0) return null;
    lastN = n;
    i += 2 + n;
    if (i > list.length) return null;
  }
  const flat = repeats ? wholeCalls(list) : list;
  const part = new Array<JsonValue>(count);
  const from = new Int32Array(count);
  const to = new Int32Array(count);
  for (let i = 0, c = 0; c < count; c++) {
    const n = flat[i + 1] as number;
    part[c] = flat[i];
    from[c] = i + 2;
    to[c] = i + 2 + n;
    i += 2 + n;
  }
  return { count, flat, part, from, to };
}

/** A checked list (tableOfFlat) with every `-1, last` written as its whole call. */
function wholeCalls(list: readonly JsonValue[]): JsonValue[] {
  const out: JsonValue[] = [];
  /** Where the call before starts in `out`. */
  let prev = 0;
  for (let i = 0; i < list.length;) {
    if (list[i] === -1) {
      const at = out.length;
      const n = out[prev + 1] as number;
      for (let j = prev; j < prev + 1 + n; j++) out.push(out[j]);
      out.push(list[i + 1]);
      prev = at;
      i += 2;
      continue;
    }
    prev = out.length;
    const end = i + 2 + (list[i + 1] as number);
    for (; i < end; i++) out.push(list[i]);
  }
  return out;
}

/**
 * The execute() calls of a batch, encoded back to back into one buffer: each call's argv is
 * made of views of its bytes there, and its encoding is the view forwarded, so no argument
 * becomes a Buffer of its own and no command is encoded again. Null for a call that takes
 * another path.
 */
function encodeCalls(calls: CallTable): {
  argvs: (Buffer[] | null)[];
  raws: (Buffer | null)[];
} {
  const { count: n, flat, from, to } = calls;
  // Sized first (each argument's text and whether it is ASCII are worked out again when
  // written: cheaper than keeping them in lists of their own).
  let size = 0;
  for (let i = 0; i < n; i++) {
    const argc = to[i] - from[i];
    if (argc < 1) continue;
    size += 1 + decimalLength(argc) + 2;
    for (let j = from[i]; j < to[i]; j++) {
      const v = flat[j];
      const text = typeof v === "string" ? v : String(v);
      size += bulkSize(isAscii(text) ? text.length : Buffer.byteLength(text));
    }
  }
  const out = Buffer.allocUnsafe(size);
  const argvs = new Array<Buffer[] | null>(n);
  const raws = new Array<Buffer | null>(n);
  let at = 0;
  /** The call before, when it had as many arguments: an argument equal to its own shares its view. */
  let prev: Buffer[] | null = null;
  let prevFrom = 0;
  for (let i = 0; i < n; i++) {
    const argc = to[i] - from[i];
    if (argc < 1) {
      argvs[i] = null;
      raws[i] = null;
      continue;
    }
    const begin = at;
    at = writeHeader(out, at, 42 /* * */, argc);
    const argv = new Array<Buffer>(argc);
    const same = prev !== null && prev.length === argc ? prev : null;
    for (let j = 0; j < argc; j++) {
      const v = flat[from[i] + j];
      const text = typeof v === "string" ? v : String(v);
      if (same !== null && typeof v === "string" && v === flat[prevFrom + j]) {
        // A foreach's calls mostly differ in their last argument only: the name and the
        // others are the bytes of the call before's, whose views (read only, as every
        // argv's) serve this one too; the bytes are written again, for this call's raw.
        const view = same[j];
        const length = view.length;
        at = writeHeader(out, at, 36 /* $ */, length);
        if (length <= SHORT_TEXT) for (let c = 0; c < length; c++) out[at + c] = view[c];
        else view.copy(out, at);
        argv[j] = same[j];
        at += length;
        out[at++] = 13;
        out[at++] = 10;
        continue;
      }
      const ascii = isAscii(text);
      const length = ascii ? text.length : Buffer.byteLength(text);
      at = writeHeader(out, at, 36 /* $ */, length);
      if (ascii && length <= SHORT_TEXT) {
        for (let c = 0; c < length; c++) out[at + c] = text.charCodeAt(c);
      } else {
        out.write(text, at, length, ascii ? "latin1" : "utf8");
      }
      argv[j] = out.subarray(at, at + length);
      at += length;
      out[at++] = 13;
      out[at++] = 10;
    }
    argvs[i] = argv;
    raws[i] = out.subarray(begin, at);
    prev = argv;
    prevFrom = from[i];
  }
  return { argvs, raws };
}

/**
 * A guest's batch of async execute() calls (a handler's foreach over a batch of events):
 * every command is forwarded at once, so those of one shard leave together in the
 * connection's next write, and the batch waits on one promise, not one per command; each
 * reply becomes the guest's JSON from its bytes. Calls that need another path (not
 * execute(), a keyless command bound to a partition's shard) take `other`.
 */
export function executeBatch(
  router: Router,
  db: number,
  calls: readonly { name: string; args: JsonValue[] }[],
  /** Why a command may not run (refused to scripts, NOPERM); null when it may. */
  refusal: (name: string, argv: readonly Buffer[]) => string | null,
  other: (call: { name: string; args: JsonValue[] }) => Promise<JsonValue | RawJson>,
  /** The replies are not looked at, only whether each failed: successes come back as null. */
  repliesUnused = false,
): Promise<CallOutcome[]> {
  const lists = new Array<JsonValue[] | null>(calls.length);
  for (let i = 0; i < calls.length; i++) lists[i] = calls[i].name === "execute" ? calls[i].args : null;
  return executeTable(router, db, tableOfLists(lists), refusal, (i) => other(calls[i]), repliesUnused);
}

/** executeBatch() for the calls of a CallTable: `other(i)` runs call `i` when it takes another path. */
export function executeTable(
  router: Router,
  db: number,
  calls: CallTable,
  refusal: (name: string, argv: readonly Buffer[]) => string | null,
  other: (index: number) => Promise<JsonValue | RawJson>,
  repliesUnused = false,
): Promise<CallOutcome[]> {
  const outcomes = new Outcomes(calls.count);
  const { argvs, raws } = encodeCalls(calls);
  // One route for the batch's calls (forward only reads it): not an object per call.
  const route: RouteContext = { db, affinity: 0 };
  for (let i = 0; i < calls.count; i++) {
    let argv = argvs[i];
    let name = "";
    if (argv !== null) {
      const first = calls.flat[calls.from[i]];
      const text = typeof first === "string" ? first : String(first);
      // An ASCII name's UTF-8 bytes read as latin1 are itself.
      name = isAscii(text) ? lowerName(text) : argv[0].toString("latin1").toLowerCase();
      // A keyless command of a step runs on its partition's shard, which other() knows.
      if (typeof calls.part[i] === "number" && router.slotOf(name, argv) === NO_KEYS) argv = null;
    }
    if (argv === null) {
      const index = i;
      other(index).then(
        (ok) => outcomes.set(index, { ok }),
        (err: Error) => outcomes.set(index, { error: err.message }),
      );
      continue;
    }
    const refused = refusal(name, argv);
    if (refused !== null) {
      outcomes.set(i, { error: refused });
      continue;
    }
    router.forward(name, argv, raws[i], new OutcomeSink(outcomes, i, repliesUnused), route);
  }
  return outcomes.done;
}
