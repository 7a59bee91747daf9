import { encodeError, encodeValue, OK } from "../../resp/encode.js";
import { RespBoolean, RespError, RespMap, type Protocol, type RespValue } from "../../resp/values.js";
import type { TfFunctionInfo } from "../guest/entry.js";
import { matchesTfSetting, TF_CONFIG_PREFIX } from "./config.js";
import type { Router } from "../../routing/router.js";
import type { TfLibrary } from "./libraries.js";
import type { TriggerStats } from "./keyspace-triggers.js";
import { listStatsOf, mergeListStats, type LibraryListStats } from "./list-stats.js";
import type { TfEngine } from "./tf-engine.js";
import { taggedToResp, utf8Text } from "./values.js";

/** The T&F commands the gears room answers (lower case). */
export const TF_COMMANDS = new Set(["tfunction", "tfcall", "tfcallasync"]);

/**
 * Whether a CONFIG command is about T&F's settings: a GET with a pattern that matches one of
 * them (redisgears_2.*, *, redis*...), a SET that names one. The others go to the server.
 */
export function isTfConfig(args: readonly Buffer[]): boolean {
  if (args.length < 2) return false;
  const sub = args[0].toString().toLowerCase();
  if (sub === "get") return args.slice(1).some((pattern) => matchesTfSetting(pattern.toString()));
  if (sub !== "set") return false;
  for (let i = 1; i < args.length; i += 2)
    if (args[i].toString().toLowerCase().startsWith(TF_CONFIG_PREFIX)) return true;
  return false;
}

/**
 * Whether a CONFIG command of T&F's (isTfConfig) also reads or sets the server's own
 * settings: a GET pattern or a SET name outside redisgears_2.*. Those need the server, as
 * the client's user: not run by the proxy for a user of the server's own ACL, nor in MULTI.
 */
export function touchesServerSettings(args: readonly Buffer[]): boolean {
  const sub = args[0]?.toString().toLowerCase();
  const step = sub === "set" ? 2 : 1;
  for (let i = 1; i < args.length; i += step)
    if (!args[i].toString().toLowerCase().startsWith(TF_CONFIG_PREFIX)) return true;
  return false;
}

const b = (text: string): Buffer => Buffer.from(text);
const map = (pairs: [string, RespValue][]): RespMap => new RespMap(pairs.map(([k, v]) => [b(k), v]));
const arity = (name: string): Buffer => encodeError(`ERR wrong number of arguments for '${name}' command`);

/** A reply: errors go out as T&F wrote them (no ERR added: the module's texts are their own). */
function reply(value: RespValue, proto: Protocol): Buffer {
  return value instanceof RespError ? encodeError(value.message) : encodeValue(value, proto);
}

export function runTfCommand(
  tf: TfEngine,
  name: string,
  args: Buffer[],
  caller: { proto: Protocol; db: number; user: string | null },
): Promise<Buffer> {
  if (name === "tfcall" || name === "tfcallasync") {
    return new Promise((resolve) => runTfCall(tf, name, args, caller, resolve));
  }
  return runOther(tf, name, args, caller);
}

/**
 * TFCALL/TFCALLASYNC, the hot one: `done` gets the reply's bytes, always after this returns,
 * through one callback instead of a chain of promises.
 */
export function runTfCall(
  tf: TfEngine,
  name: "tfcall" | "tfcallasync",
  args: Buffer[],
  caller: { proto: Protocol; db: number },
  done: (reply: Buffer) => void,
): void {
  if (args.length < 2) {
    queueMicrotask(() => done(arity(name)));
    return;
  }
  const proto = caller.proto;
  const async = name === "tfcallasync";
  tf.callThen(args[0].toString(), args.slice(1), async, caller.db, async, (value) =>
    done(reply(value, proto)),
  );
}

async function runOther(
  tf: TfEngine,
  name: string,
  args: Buffer[],
  caller: { proto: Protocol; db: number; user: string | null },
): Promise<Buffer> {
  switch (name) {
    case "tfunction":
      return tfunction(tf, args, caller.proto, caller.user ?? "default");
    default:
      return encodeError(`ERR unknown command '${name}'`);
  }
}

async function tfunction(tf: TfEngine, args: Buffer[], proto: Protocol, user: string): Promise<Buffer> {
  if (args.length < 1) return arity("tfunction");
  const sub = args[0].toString().toLowerCase();
  switch (sub) {
    case "load":
      return load(tf, args.slice(1), user);
    case "delete": {
      if (args.length < 2) return encodeError("function name was not given");
      const error = await tf.libraries.remove(args[1].toString());
      return error === null ? OK : encodeError(error);
    }
    case "list":
      return list(tf, args.slice(1), proto);
    default:
      return encodeError(`ERR unknown subcommand '${args[0].toString()}'. Try TFUNCTION HELP.`);
  }
}

/** TFUNCTION LOAD [REPLACE] [CONFIG <json>] <code>. */
async function load(tf: TfEngine, args: Buffer[], user: string): Promise<Buffer> {
  let replace = false;
  let config: string | null = null;
  let i = 0;
  for (; i < args.length; i++) {
    const option = args[i].toString().toLowerCase();
    if (option === "replace") replace = true;
    else if (option === "config") {
      if (i + 1 >= args.length) return encodeError("configuration value was not given");
      const text = utf8Text(args[++i]);
      if (text === null) return encodeError("given configuration value is not a valid string");
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (err) {
        return encodeError(`configuration must be a valid json, '${text}', ${(err as Error).message}.`);
      }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        return encodeError("configuration must be a valid json object");
      }
      config = text;
    } else if (option === "user") return encodeError("Unknown argument user");
    else break;
  }
  if (i >= args.length) return encodeError("Could not find library payload");
  const code = utf8Text(args[i]);
  if (code === null) return encodeError("lib code must a valid string");
  // The loader's rights are the functions' rights (RedisGears 2 records the user too).
  const error = await tf.libraries.load({ code, replace, config, user });
  return error === null ? OK : encodeError(error);
}

/**
 * TFUNCTION LIST [WITHCODE] [LIBRARY <lib>] [VERBOSE|v|vv|vvv ...]. With --threads the
 * figures are every thread's merged (list-stats.ts): the same through any connection.
 */
async function list(tf: TfEngine, args: Buffer[], proto: Protocol): Promise<Buffer> {
  let withCode = false;
  let library: string | null = null;
  let verbosity = 0;
  for (let i = 0; i < args.length; i++) {
    const option = args[i].toString();
    const lower = option.toLowerCase();
    if (lower === "withcode") withCode = true;
    else if (lower === "library") {
      if (i + 1 >= args.length) return encodeError("Library name was not given");
      library = args[++i].toString();
    } else if (lower === "verbose" || lower === "v") verbosity += 1;
    else if (lower === "vv") verbosity += 2;
    else if (lower === "vvv") verbosity += 3;
    else return encodeError(`Unknown option '${option}'`);
  }
  const libraries = tf.libraries.all().filter((l) => library === null || l.name === library);
  const here = listStatsOf(tf, library);
  const stats = mergeListStats([here, ...(await tf.listStatsElsewhere.stats(library))]);
  return encodeValue(
    libraries.map((l) => describe(l, stats[l.name], withCode, verbosity)),
    proto,
  );
}

function triggerStats(s: TriggerStats): [string, RespValue][] {
  return [
    ["num_trigger", s.numTrigger],
    ["num_success", s.numSuccess],
    ["num_failed", s.numFailed],
    ["num_finished", s.numFinished],
    ["last_error", s.lastError === null ? null : b(s.lastError)],
    ["last_execution_time", s.lastExecutionTime],
    ["total_execution_time", s.totalExecutionTime],
    ["num_queued_over_bound", s.numQueuedOverBound],
  ];
}

function describeFunction(f: TfFunctionInfo, verbosity: number): RespValue {
  if (verbosity === 0) return b(f.name);
  return map([
    ["name", b(f.name)],
    ["flags", f.flags.map(b)],
    ["is_async", new RespBoolean(f.isAsync)],
    ["description", f.description === null ? null : b(f.description)],
  ]);
}

function describe(l: TfLibrary, stats: LibraryListStats, withCode: boolean, verbosity: number): RespMap {
  const r = l.registrations;
  const fields: [string, RespValue][] = [];
  if (withCode) fields.push(["code", b(l.code)]);
  fields.push(
    ["engine", b("js")],
    ["api_version", b(l.apiVersion)],
    ["name", b(l.name)],
    ["user", b(l.user)],
    ["configuration", l.config === null ? null : b(l.config)],
    ["pending_jobs", stats.pendingJobs],
    ["functions", r.functions.map((f) => describeFunction(f, verbosity))],
    ["cluster_functions", r.clusterFunctions.map(b)],
    [
      "keyspace_triggers",
      r.keyspaceTriggers.map((t) =>
        verbosity === 0
          ? b(t.name)
          : map([
              ["name", b(t.name)],
              ["description", t.description === null ? null : b(t.description)],
              ...triggerStats(stats.keyspaceTriggers[t.name]),
            ]),
      ),
    ],
    [
      "stream_triggers",
      r.streamTriggers.map((t) => {
        if (verbosity === 0) return b(t.name);
        const fields: [string, RespValue][] = [
          ["name", b(t.name)],
          ["prefix", taggedToResp(t.prefix)],
          ["window", t.window],
          ["trim", new RespBoolean(t.trim)],
          ["description", t.description === null ? null : b(t.description)],
        ];
        if (verbosity >= 2) {
          fields.push([
            "streams",
            stats.streamTriggers[t.name].map((st) =>
              map([
                ["name", Buffer.from(st.name, "latin1")],
                ["last_processed_time", st.lastProcessedTime],
                ["total_processed_time", st.totalProcessedTime],
                ["last_lag", st.lastLag],
                ["total_lag", st.totalLag],
                ["total_record_processed", st.totalRecordProcessed],
                ["pending_ids", st.pendingIds.map(b)],
                ["id_to_read_from", st.idToReadFrom === null ? null : b(st.idToReadFrom)],
                ["last_error", st.lastError === null ? null : b(st.lastError)],
              ]),
            ),
          ]);
        }
        return map(fields);
      }),
    ],
    ["pending_async_calls", stats.pendingAsyncCalls.map(b)],
  );
  return map(fields);
}

/**
 * CONFIG GET and SET where T&F's settings are among those named, as Redis with the module
 * answers: a GET's patterns (several since 7.0) list the server's settings and T&F's that
 * match, in one reply; a SET of the server's and T&F's settings together sets them all or
 * none. T&F's are checked first, then the server's set (on every master), then T&F's.
 */
export async function tfConfigCommand(
  tf: TfEngine,
  router: Router,
  args: Buffer[],
  proto: Protocol,
): Promise<Buffer> {
  const sub = args[0].toString().toLowerCase();
  const isTf = (name: Buffer): boolean => name.toString().toLowerCase().startsWith(TF_CONFIG_PREFIX);
  if (sub === "get") {
    if (args.length < 2) return arity("config|get");
    const patterns = args.slice(1);
    const entries = tf.config.entries(patterns.map(String));
    // Patterns that name T&F's settings alone need nothing of the server (which may refuse CONFIG).
    if (patterns.every(isTf)) return encodeValue(new RespMap(entries), proto);
    const server = await router.call([b("CONFIG"), b("GET"), ...patterns]);
    if (server instanceof RespError) return encodeError(server.message);
    return encodeValue(new RespMap([...serverPairs(server), ...entries]), proto);
  }
  if (args.length < 3 || args.length % 2 === 0) return arity("config|set");
  const tfPairs: [string, string][] = [];
  const serverArgs: Buffer[] = [];
  const seen = new Set<string>();
  for (let i = 1; i < args.length; i += 2) {
    const name = args[i].toString();
    if (!isTf(args[i])) {
      serverArgs.push(args[i], args[i + 1]);
      continue;
    }
    if (seen.has(name.toLowerCase()))
      return encodeError(
        `ERR CONFIG SET failed (possibly related to argument '${name}') - duplicate parameter`,
      );
    seen.add(name.toLowerCase());
    tfPairs.push([name, args[i + 1].toString()]);
  }
  const refused = tf.config.check(tfPairs);
  if (refused !== null) return encodeError(refused);
  if (serverArgs.length > 0) {
    const server = await router.call([b("CONFIG"), b("SET"), ...serverArgs]);
    if (server instanceof RespError) return encodeError(server.message);
  }
  const reply = tf.config.set(tfPairs);
  if (tfPairs.length > 0 && reply.equals(OK)) await tf.config.told(tfPairs);
  return reply;
}

/** The server's CONFIG GET reply (a flat array in RESP2, a map in RESP3) as name/value pairs. */
function serverPairs(reply: RespValue): [RespValue, RespValue][] {
  if (reply instanceof RespMap) return [...reply.entries];
  if (!Array.isArray(reply)) return [];
  const pairs: [RespValue, RespValue][] = [];
  for (let i = 0; i + 1 < reply.length; i += 2) pairs.push([reply[i], reply[i + 1]]);
  return pairs;
}

/** A TFCALL/TFCALLASYNC queued in MULTI, run at EXEC (tf-multi.ts): it may not block, as in Redis. */
export async function runTfCallInMulti(
  tf: TfEngine,
  argv: Buffer[],
  proto: Protocol,
  db: number,
): Promise<Buffer> {
  const name = argv[0].toString().toLowerCase();
  if (argv.length < 3) return arity(name);
  return reply(await tf.call(argv[1].toString(), argv.slice(2), false, db, name === "tfcallasync"), proto);
}
