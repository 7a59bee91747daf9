/** The GearsBuilder API (`GearsBuilder`/`GB`): a script's plans, collected as actions. */
import { g, host } from "../core/host.js";
import { callerLine, safeString } from "../core/errors.js";
import { NO_REGISTER, NO_RUN, READERS, type Action, type Fn, type StepDef } from "./types.js";

/** Every run() and register() of the script, in order; the host refers to them by index. */
export const actions: Action[] = [];
let ranOnce = false;

export function fnName(f: unknown): string {
  if (typeof f !== "function") return "";
  const n = (f as { name?: unknown }).name;
  return typeof n === "string" ? n : "";
}

function fnText(f: unknown): string {
  return safeString(f).slice(0, 100);
}

function needFn(op: string, f: unknown): Fn {
  if (typeof f !== "function") throw new TypeError(`${op} argument must be a function`);
  return f as Fn;
}

function optFn(op: string, f: unknown): Fn | undefined {
  return f === undefined ? undefined : needFn(op, f);
}

function plainOptions(o: unknown): Record<string, unknown> {
  if (o === undefined || o === null) return {};
  if (typeof o !== "object" || Array.isArray(o)) throw new TypeError("options must be an object");
  return JSON.parse(JSON.stringify(o)) as Record<string, unknown>;
}

function isOptionsObject(v: unknown): boolean {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

class Builder {
  reader: string;
  defaultArg: string;
  desc: string | null;
  steps: StepDef[] = [];

  constructor(reader: unknown, defaultArg: unknown, desc: unknown) {
    if (reader === undefined) reader = "KeysReader";
    if (typeof reader !== "string") throw new TypeError("reader argument must be a string");
    if (!READERS.includes(reader)) throw new Error("reader does not exists");
    this.reader = reader;
    this.defaultArg = defaultArg === undefined || defaultArg === null ? "*" : safeString(defaultArg);
    this.desc = desc === undefined || desc === null ? null : safeString(desc);
  }

  add(type: string, fns: (Fn | undefined)[], params: unknown[], argText?: string): this {
    const named = fns.find((f) => f !== undefined && fnName(f) !== "");
    const texts = fns.filter((f) => f !== undefined).map((f) => fnText(f));
    const line = callerLine();
    this.steps.push({
      type,
      name: named === undefined ? "" : fnName(named),
      arg: (argText ?? texts.join(", ")).slice(0, 100),
      line,
      fns,
      params,
      where: { step: type, line },
    });
    return this;
  }

  map(f: unknown): this {
    return this.add("map", [needFn("map", f)], []);
  }
  flatmap(f: unknown): this {
    return this.add("flatmap", [needFn("flatmap", f)], []);
  }
  foreach(f: unknown): this {
    return this.add("foreach", [needFn("foreach", f)], []);
  }
  filter(f: unknown): this {
    return this.add("filter", [needFn("filter", f)], []);
  }
  accumulate(f: unknown): this {
    return this.add("accumulate", [needFn("accumulate", f)], []);
  }
  localgroupby(extract: unknown, reduce: unknown): this {
    return this.add("localgroupby", [needFn("localgroupby", extract), needFn("localgroupby", reduce)], []);
  }
  limit(n: unknown, offset: unknown = 0): this {
    if (typeof n !== "number" || !(n >= 0)) throw new TypeError("limit argument must be a number");
    if (typeof offset !== "number" || !(offset >= 0)) throw new TypeError("limit offset must be a number");
    return this.add("limit", [], [n, offset], `${n}, ${offset}`);
  }
  collect(): this {
    return this.add("collect", [], []);
  }
  repartition(extract: unknown): this {
    return this.add("repartition", [needFn("repartition", extract)], []);
  }
  groupby(extract: unknown, reduce: unknown): this {
    return this.add("groupby", [needFn("groupby", extract), needFn("groupby", reduce)], []);
  }
  batchgroupby(extract: unknown, reduce: unknown): this {
    return this.add("batchgroupby", [needFn("batchgroupby", extract), needFn("batchgroupby", reduce)], []);
  }
  aggregate(zero: unknown, seqOp: unknown, combOp: unknown): this {
    const fns = [needFn("aggregate", seqOp), needFn("aggregate", combOp)];
    return this.add("aggregate", fns, [zero]);
  }
  aggregateby(extract: unknown, zero: unknown, seqOp: unknown, combOp: unknown): this {
    const fns = [needFn("aggregateby", extract), needFn("aggregateby", seqOp), needFn("aggregateby", combOp)];
    return this.add("aggregateby", fns, [zero]);
  }
  count(): this {
    return this.add("count", [], []);
  }
  countby(extract?: unknown): this {
    return this.add("countby", [optFn("countby", extract)], []);
  }
  avg(extract?: unknown): this {
    return this.add("avg", [optFn("avg", extract)], []);
  }
  distinct(): this {
    return this.add("distinct", [], []);
  }
  sort(reverse: unknown = false): this {
    if (typeof reverse === "function") return this.add("sort", [reverse as Fn], [false]);
    return this.add("sort", [], [Boolean(reverse)], String(Boolean(reverse)));
  }

  action(kind: "run" | "register", arg: unknown, options: unknown): number {
    if (isOptionsObject(arg) && options === undefined) {
      options = arg;
      // RedisGears' Python register(prefix=..., ...) written as one options object: its prefix
      // (or regex, the older name) is the argument, not silently every key.
      const named = arg as { prefix?: unknown; regex?: unknown };
      arg = kind === "register" ? (named.prefix ?? named.regex) : undefined;
    }
    const opts = plainOptions(options);
    const raw = options as { onRegistered?: unknown } | undefined;
    const onRegistered = raw !== undefined && raw !== null ? raw.onRegistered : undefined;
    const desc = typeof opts.desc === "string" ? opts.desc : this.desc;
    actions.push({
      kind,
      reader: this.reader,
      arg: arg === undefined || arg === null ? this.defaultArg : safeString(arg),
      options: opts,
      desc,
      line: callerLine(),
      steps: this.steps.slice(),
      onRegistered: typeof onRegistered === "function" ? (onRegistered as Fn) : null,
    });
    return actions.length - 1;
  }

  run(arg?: unknown, options?: unknown): void {
    if (NO_RUN.includes(this.reader)) throw new Error("reader do not support run");
    if (ranOnce) throw new Error("Can not run more then 1 executions in a single script");
    this.action("run", arg, options);
    ranOnce = true;
  }

  register(prefixOrOptions?: unknown, options?: unknown): unknown {
    if (NO_REGISTER.includes(this.reader)) throw new Error("reader do not support register");
    const index = this.action("register", prefixOrOptions, options);
    return host.callSync("register", index);
  }
}

function GearsBuilder(reader?: unknown, defaultArg?: unknown, desc?: unknown): Builder {
  return new Builder(reader, defaultArg, desc);
}

// GB() instanceof GearsBuilder
(GearsBuilder as unknown as { prototype: object }).prototype = Builder.prototype;
g.GearsBuilder = GearsBuilder;
g.GB = GearsBuilder;
