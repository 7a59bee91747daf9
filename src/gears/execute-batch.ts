import { decodeReply } from "../resp/decode.js";
import { NotHandled, ReplyErrorText, RespCursor } from "../resp/json-text.js";
import { NO_KEYS, type Router } from "../routing/router.js";
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
  const outcomes = new Outcomes(calls.length);
  for (let i = 0; i < calls.length; i++) {
    const call = calls[i];
    const args = call.args;
    let argv: Buffer[] | null = null;
    let name = "";
    if (call.name === "execute" && args.length >= 2) {
      argv = new Array<Buffer>(args.length - 1);
      for (let j = 1; j < args.length; j++) argv[j - 1] = Buffer.from(String(args[j]));
      name = argv[0].toString("latin1").toLowerCase();
      // A keyless command of a step runs on its partition's shard, which other() knows.
      if (typeof args[0] === "number" && router.slotOf(name, argv) === NO_KEYS) argv = null;
    }
    if (argv === null) {
      other(call).then(
        (ok) => outcomes.set(i, { ok }),
        (err: Error) => outcomes.set(i, { error: err.message }),
      );
      continue;
    }
    const refused = refusal(name, argv);
    if (refused !== null) {
      outcomes.set(i, { error: refused });
      continue;
    }
    router.forward(name, argv, null, new OutcomeSink(outcomes, i, repliesUnused), { db, affinity: 0 });
  }
  return outcomes.done;
}
