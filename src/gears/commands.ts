import { decodeReply } from "../resp/decode.js";
import { encodeBulk, encodeError, encodeValue, OK } from "../resp/encode.js";
import type { Protocol } from "../resp/values.js";
import type { RespValue } from "../resp/values.js";
import { PYTHON_OFF, type GearsEngine } from "./engine.js";
import { languageOf } from "./guest-isolate.js";
import type { Execution } from "./execution.js";
import type { GearsReply } from "./result-chunks.js";
import { keySlot } from "../routing/key-slot.js";
import { replyValueToResp } from "./json-values.js";
import { Partitions } from "./partitions.js";
import { avgRunDurationMS, mergeCounters } from "./registration-counters.js";
import type { Registration } from "./registration.js";
import type { GearsSession } from "./registry.js";
import {
  isTfConfig,
  runTfCommand,
  TF_COMMANDS,
  tfConfigCommand,
  touchesServerSettings,
} from "./tf/tf-commands.js";

type Handler = (engine: GearsEngine, args: Buffer[], caller: GearsCaller) => Promise<GearsReply> | GearsReply;

const NO_EXECUTION = "execution plan does not exist";
const b = (text: string): Buffer => Buffer.from(text);

function arity(name: string): Buffer {
  return encodeError(`ERR wrong number of arguments for '${name}' command`);
}

/** RG.EXECUTE <script> [UNBLOCKING] [ID <id>] [DESCRIPTION <text>] [UPGRADE] [REPLACE_WITH <old>] */
/**
 * RG.EXECUTE (JavaScript) and RG.PYEXECUTE (Python): the same options; Python takes
 * REQUIREMENTS last, and only an empty list (no package can be installed here).
 */
async function execute(
  engine: GearsEngine,
  args: Buffer[],
  caller: GearsCaller,
  python = false,
): Promise<GearsReply> {
  if (args.length < 1) return arity(python ? "rg.pyexecute" : "rg.execute");
  if (python && engine.newPythonIsolate === null) return encodeError(`ERR ${PYTHON_OFF}`);
  let unblocking = false;
  let upgrade = false;
  let sessionId: string | undefined;
  let description: string | undefined;
  let replaceWith: string | undefined;
  for (let i = 1; i < args.length; i++) {
    const option = args[i].toString().toUpperCase();
    if (option === "UNBLOCKING") unblocking = true;
    else if (option === "ID") {
      if (i + 1 >= args.length) return encodeError("ERR ID is missing");
      sessionId = args[++i].toString();
      if (!/^[A-Za-z0-9_-]+$/.test(sessionId)) {
        return encodeError("ERR ID must be compose of: ['A'-'Z' | 'a'-'z' | '0' - '9' | '-' | '_']");
      }
    } else if (option === "DESCRIPTION") {
      if (i + 1 >= args.length) return encodeError("ERR DESCRIPTION is missing");
      description = args[++i].toString();
    } else if (option === "UPGRADE") upgrade = true;
    else if (option === "REPLACE_WITH") {
      if (i + 1 >= args.length) return encodeError("ERR REPLACE_WITH is missing");
      replaceWith = args[++i].toString();
    } else if (python && option === "REQUIREMENTS") {
      if (i + 1 < args.length) return encodeError(`ERR ${requirementsError(args.slice(i + 1))}`);
    } else if (python && option === "FORCE_REINSTALL_REQUIREMENTS") continue;
    else return encodeError(`ERR Unknown arguments were given: ${args[i].toString()}`);
  }
  return engine.execute({
    script: args[0].toString(),
    unblocking,
    sessionId,
    description,
    upgrade,
    replaceWith,
    db: caller.db,
    python,
    ...(caller.user === null ? {} : { owner: caller.user }),
  });
}

/** No package is vendored with the proxy and none is downloaded: any requirement is refused. */
function requirementsError(deps: Buffer[]): string {
  return `Could not satisfy requirements: ${deps.map(String).join(" ")} (the proxy installs no Python packages; scripts may use the standard library only)`;
}

/** Whether the caller may act on what `owner` made: its own, or any with +@admin (or without ACLs). */
function mayTouch(caller: GearsCaller, owner: string | null): boolean {
  return caller.user === null || caller.admin || owner === null || owner === caller.user;
}

function finished(engine: GearsEngine, id: string, caller: GearsCaller): Execution | Buffer {
  const execution = engine.get(id);
  if (execution === undefined) return encodeError(NO_EXECUTION);
  if (!mayTouch(caller, execution.owner)) {
    return encodeError("NOPERM this user has no permissions to access another user's execution");
  }
  return execution;
}

function getResults(engine: GearsEngine, args: Buffer[], caller: GearsCaller): GearsReply {
  if (args.length !== 1) return arity("rg.getresults");
  const execution = finished(engine, args[0].toString(), caller);
  if (Buffer.isBuffer(execution)) return execution;
  if (!execution.isFinished) return encodeError("execution is still running");
  return execution.reply();
}

async function getResultsBlocking(
  engine: GearsEngine,
  args: Buffer[],
  caller: GearsCaller,
): Promise<GearsReply> {
  if (args.length !== 1) return arity("rg.getresultsblocking");
  const execution = finished(engine, args[0].toString(), caller);
  if (Buffer.isBuffer(execution)) return execution;
  await execution.waitFinished();
  return execution.reply();
}

function plan(execution: Execution): RespValue[] {
  const steps: RespValue[] = [...execution.action.steps]
    .reverse()
    .map((s) => [b("type"), b(s.type), b("duration"), 0, b("name"), b(s.name), b("arg"), b(s.arg)]);
  steps.push([
    b("type"),
    b("reader"),
    b("duration"),
    execution.readMs,
    b("name"),
    b(execution.action.reader),
    b("arg"),
    b(String(execution.action.arg)),
  ]);
  const end = execution.finishedAt || Date.now();
  return [
    b("status"),
    b(execution.status),
    b("shards_received"),
    execution.partitions.count,
    b("shards_completed"),
    execution.isFinished ? execution.partitions.count : execution.partitionsDone,
    b("results"),
    execution.isFinished ? execution.resultCount : -1,
    b("errors"),
    execution.isFinished ? execution.errors.map(b) : [],
    b("total_duration"),
    execution.startedAt ? end - execution.startedAt : 0,
    b("read_duration"),
    execution.readMs,
    b("steps"),
    steps,
    b("records_read"),
    execution.recordsRead,
  ];
}

/** RG.GETEXECUTION <id> [SHARD|CLUSTER]: the plan and its progress, one entry per shard. */
function getExecution(engine: GearsEngine, args: Buffer[], caller: GearsCaller): Buffer {
  if (args.length < 1 || args.length > 2) return arity("rg.getexecution");
  const mode = args[1]?.toString().toUpperCase();
  if (mode !== undefined && mode !== "SHARD" && mode !== "CLUSTER") return encodeError("unknown subcommand");
  if (mode === "CLUSTER" && !engine.shards.clustered) {
    return encodeError("no cluster detected - use `RG.GETEXECUTION <id> [SHARD]` instead");
  }
  const execution = finished(engine, args[0].toString(), caller);
  if (Buffer.isBuffer(execution)) return execution;
  const shards = mode === "SHARD" ? execution.partitions.shardIds.slice(0, 1) : execution.partitions.shardIds;
  return encodeValue(shards.map((id) => [b("shard_id"), b(id), b("execution_plan"), plan(execution)]));
}

function dumpExecutions(engine: GearsEngine, args: Buffer[]): Buffer {
  if (args.length !== 0) return arity("rg.dumpexecutions");
  return encodeValue(
    engine
      .dump()
      .map(({ execution: e, registered }) => [
        b("executionId"),
        b(e.id),
        b("status"),
        b(e.status),
        b("registered"),
        registered ? 1 : 0,
      ]),
  );
}

function dropExecution(engine: GearsEngine, args: Buffer[], caller: GearsCaller): Buffer {
  if (args.length !== 1) return arity("rg.dropexecution");
  const execution = finished(engine, args[0].toString(), caller);
  if (Buffer.isBuffer(execution)) return execution;
  if (!execution.isFinished) return encodeError("can not drop a not yet finished execution, abort it first.");
  engine.drop(execution.id);
  return OK;
}

async function abortExecution(engine: GearsEngine, args: Buffer[], caller: GearsCaller): Promise<Buffer> {
  if (args.length !== 1) return arity("rg.abortexecution");
  const execution = engine.get(args[0].toString());
  if (execution === undefined) return encodeError("execution does not exist");
  if (!mayTouch(caller, execution.owner)) {
    return encodeError("NOPERM this user has no permissions to access another user's execution");
  }
  execution.abort();
  await execution.waitFinished();
  return OK;
}

function configGet(engine: GearsEngine, args: Buffer[]): Buffer {
  if (args.length < 1) return arity("rg.configget");
  return engine.config.get(args.map(String));
}

async function configSet(engine: GearsEngine, args: Buffer[]): Promise<Buffer> {
  if (args.length < 2 || args.length % 2 !== 0) return arity("rg.configset");
  const pairs: [string, string][] = [];
  for (let i = 0; i < args.length; i += 2) pairs.push([args[i].toString(), args[i + 1].toString()]);
  const reply = engine.config.set(pairs);
  // Each pair is OK or refused on its own, the same way on every thread.
  await engine.config.told(pairs);
  return reply;
}

function infoCluster(engine: GearsEngine, args: Buffer[]): Buffer {
  if (args.length !== 0) return arity("rg.infocluster");
  if (!engine.shards.clustered) return encodeBulk("no cluster mode");
  const masters = engine.shards.masters();
  const shards = masters.map((node, i) => {
    const ranges = engine.shards.slotRanges().filter((r) => r[2] === i);
    const min = Math.min(...ranges.map((r) => r[0]));
    const max = Math.max(...ranges.map((r) => r[1]));
    return [
      b("id"),
      b(node.clusterId),
      b("ip"),
      b(node.host),
      b("port"),
      node.port,
      b("minHslot"),
      min,
      b("maxHslot"),
      max,
    ];
  });
  return encodeValue([b("MyId"), b(engine.proxyId), shards]);
}

async function refreshCluster(engine: GearsEngine, args: Buffer[]): Promise<Buffer> {
  if (args.length !== 0) return arity("rg.refreshcluster");
  await engine.shards.refresh();
  return OK;
}

function registrationArgs(r: Registration): RespValue[] {
  if (r.reader === "CommandReader") return [b("trigger"), r.trigger === null ? null : b(r.trigger)];
  const list = (v: string[] | null): RespValue => (v === null ? null : v.map(b));
  if (r.stream !== null) {
    const o = r.stream;
    return [
      b("batchSize"),
      o.batch,
      b("durationMS"),
      o.durationMs,
      b("stream"),
      b(o.prefix),
      b("trimStream"),
      o.trimStream ? 1 : 0,
      b("onFailedPolicy"),
      b(o.onFailedPolicy),
      b("retryInterval"),
      o.retryIntervalSec,
    ];
  }
  return [
    b("regex"),
    b(r.prefix),
    b("eventTypes"),
    list(r.eventTypes),
    b("keyTypes"),
    list(r.keyTypes),
    b("readValue"),
    r.readValue ? 1 : 0,
    b("hookCommands"),
    list(r.commands),
  ];
}

async function dumpRegistrations(engine: GearsEngine, args: Buffer[]): Promise<Buffer> {
  if (args.length !== 0) return arity("rg.dumpregistrations");
  const elsewhere = await engine.registrationsElsewhere.counters();
  const here = engine.registrationCounters();
  return encodeValue(
    engine.registry.all().map((r) => {
      const st = mergeCounters([here[r.id], ...elsewhere.flatMap((c) => c[r.id] ?? [])]);
      const data: RespValue[] = [
        b("mode"),
        b(r.mode),
        b("numTriggered"),
        st.numTriggered,
        b("numSuccess"),
        st.numSuccess,
        b("numFailures"),
        st.numFailures,
        b("numAborted"),
        st.numAborted,
        b("lastRunDurationMS"),
        st.lastRunDurationMS,
        b("totalRunDurationMS"),
        st.totalRunDurationMS,
        b("avgRunDurationMS"),
        b(avgRunDurationMS(st)),
      ];
      if (r.reader === "KeysReader") {
        // Events waiting now, and those queued past MaxQueuedEvents (none dropped).
        data.push(b("numQueued"), st.numQueued, b("numQueuedOverBound"), st.numQueuedOverBound);
      }
      if (r.consumer !== null) {
        data.push(b("lastEstimatedLagMS"), st.lastLagMS, b("avgEstimatedLagMS"), st.avgLagMS);
      }
      data.push(
        b("lastError"),
        st.lastError === null ? null : b(st.lastError),
        b("args"),
        registrationArgs(r),
      );
      if (r.consumer !== null) data.push(b("status"), b(r.consumer.status));
      if (r.reader === "KeysReader" && engine.keyspaceStatus !== null && !engine.keyspaceStatus.configured) {
        data.push(
          b("keyspaceNotifications"),
          b("not enabled on every shard: events from writes are missing there"),
        );
      }
      return [
        b("id"),
        b(r.id),
        b("reader"),
        b(r.reader),
        b("desc"),
        r.action.desc === null ? null : b(r.action.desc),
        b("RegistrationData"),
        data,
        b("session"),
        b(r.sessionId),
        b("language"),
        b(sessionLanguage(engine, r.sessionId)),
      ];
    }),
  );
}

async function unregister(engine: GearsEngine, args: Buffer[], caller: GearsCaller): Promise<Buffer> {
  if (args.length < 1 || args.length > 2) return arity("rg.unregister");
  const sessionId = engine.registry.all().find((r) => r.id === args[0].toString())?.sessionId;
  const owner = sessionId === undefined ? null : (engine.registry.session(sessionId)?.owner ?? null);
  if (!mayTouch(caller, owner)) {
    return encodeError("NOPERM this user has no permissions to access another user's registration");
  }
  return (await engine.unregister(args[0].toString())) ? OK : encodeError("execution is not registered");
}

function sessionLanguage(engine: GearsEngine, sessionId: string): string {
  const session = engine.registry.session(sessionId);
  return session === undefined ? "javascript" : languageOf(session.isolate);
}

/**
 * RG.DUMPSESSIONS [VERBOSE] [DEAD] [SESSIONS <id> ...], as RedisGears parses it: options in
 * any order before SESSIONS, which takes the rest; an unknown option is an error, and a named
 * session that does not exist is answered in its place by a string saying so.
 */
function dumpSessions(engine: GearsEngine, args: Buffer[]): Buffer {
  let verbose = false;
  let only: string[] | null = null;
  for (let i = 0; i < args.length; i++) {
    const word = args[i].toString();
    const option = word.toUpperCase();
    if (option === "VERBOSE") verbose = true;
    else if (option === "DEAD")
      continue; // a replaced session ends with its registrations: none is dead
    else if (option === "SESSIONS") {
      only = args.slice(i + 1).map(String);
      break;
    } else return encodeError(`Unknown option ${word}`);
  }
  const entry = (s: GearsSession): RespValue[] => [
    b("ID"),
    b(s.id),
    b("sessionDescription"),
    s.description === null ? null : b(s.description),
    b("registrations"),
    s.registrations.map((r) => (verbose ? [b("id"), b(r.id), b("reader"), b(r.reader)] : b(r.id))),
    b("language"),
    b(languageOf(s.isolate)),
  ];
  if (only === null) return encodeValue(engine.registry.allSessions().map(entry));
  return encodeValue(
    only.map((id) => {
      const session = engine.registry.session(id);
      return session === undefined ? b(`Session ${id} does not exists`) : entry(session);
    }),
  );
}

/** RG.PAUSEREGISTRATIONS / RG.UNPAUSEREGISTRATIONS <id> ...: StreamReader registrations stop or resume reading. */
async function setPaused(engine: GearsEngine, args: Buffer[], paused: boolean): Promise<Buffer> {
  const ids = args.map(String);
  if (paused && ids[0]?.toUpperCase() === "ABORTPENDING") ids.shift();
  if (ids.length === 0) return arity(paused ? "rg.pauseregistrations" : "rg.unpauseregistrations");
  // All or nothing: every id is checked before any is changed.
  for (const id of ids) {
    const error = engine.registry.checkPausable(id, paused);
    if (error !== null) return encodeError(`ERR ${error}`);
  }
  for (const id of ids) engine.registry.setPaused(id, paused);
  await engine.registrationsElsewhere.setPaused(ids, paused);
  return OK;
}

async function clearRegistrationsStats(engine: GearsEngine, args: Buffer[]): Promise<Buffer> {
  if (args.length !== 0) return arity("rg.clearregistrationsstats");
  engine.registry.clearStats();
  await engine.registrationsElsewhere.clearStats();
  return OK;
}

/** RG.TRIGGER / RG.TRIGGERONKEY: one run of a CommandReader registration on [name, ...args]. */
async function trigger(engine: GearsEngine, args: Buffer[], onKey: boolean): Promise<Buffer> {
  if (args.length < (onKey ? 2 : 1)) return arity(onKey ? "rg.triggeronkey" : "rg.trigger");
  const name = args[0].toString();
  const found = engine.registry.byTrigger(name);
  if (found === undefined) return encodeError("ERR subcommand not found");
  const partitions = new Partitions(engine.shards);
  const partition = onKey ? partitions.partitionOfSlot(keySlot(args[1])) : 0;
  const record = args.map((a) => a.toString());
  const execution = await engine.registry.runCommand(found, partitions, partition, record);
  if (execution.errors.length > 0) return encodeError(`ERR ${execution.errors[0]}`);
  return encodeValue((execution.results ?? []).map(replyValueToResp));
}

const HANDLERS = new Map<string, Handler>([
  ["rg.execute", execute],
  ["rg.pyexecute", (engine, args, caller) => execute(engine, args, caller, true)],
  ["rg.getresults", getResults],
  ["rg.getresultsblocking", getResultsBlocking],
  ["rg.getexecution", getExecution],
  ["rg.dumpexecutions", dumpExecutions],
  ["rg.dropexecution", dropExecution],
  ["rg.abortexecution", abortExecution],
  ["rg.configget", configGet],
  ["rg.configset", configSet],
  ["rg.infocluster", infoCluster],
  ["rg.refreshcluster", refreshCluster],
  ["rg.dumpregistrations", dumpRegistrations],
  ["rg.unregister", unregister],
  ["rg.dumpsessions", dumpSessions],
  ["rg.pydumpsessions", dumpSessions],
  ["rg.clearregistrationsstats", clearRegistrationsStats],
  ["rg.trigger", (engine, args) => trigger(engine, args, false)],
  ["rg.pauseregistrations", (engine, args) => setPaused(engine, args, true)],
  ["rg.unpauseregistrations", (engine, args) => setPaused(engine, args, false)],
  ["rg.triggeronkey", (engine, args) => trigger(engine, args, true)],
]);

/** The commands the gears engine answers (the ACL category @gears). */
export const GEARS_COMMANDS: readonly string[] = [...HANDLERS.keys(), ...TF_COMMANDS];

/** Whether the client must wait for this command's reply before its next command runs. */
export function holdsClient(name: string, args: Buffer[]): boolean {
  // A T&F call ran inside Redis before the client's next command: the proxy keeps that order.
  if (TF_COMMANDS.has(name)) return true;
  if (name === "rg.getresultsblocking" || name === "rg.trigger" || name === "rg.triggeronkey") return true;
  return (
    (name === "rg.execute" || name === "rg.pyexecute") &&
    !args.some((a) => a.toString().toUpperCase() === "UNBLOCKING")
  );
}

/**
 * For a command that holds the client: a key that a following held command with the same key
 * may pass the hold with. TFCALLs of one library wait in order in one queue and go into the
 * isolate together (src/gears/tf/call-batcher.ts), so a client's next TFCALL of that library
 * joins the batch instead of waiting for the reply before it.
 */
export function holdJoinKey(name: string, args: Buffer[]): string | null {
  if (name !== "tfcall" || args.length === 0) return null;
  const target = args[0].toString();
  const dot = target.indexOf(".");
  return dot === -1 ? null : `tfcall:${target.slice(0, dot)}`;
}

/**
 * Who sends a gears command: what the reply's encoding, the scripts' database and (later)
 * permissions depend on. The client room fills it in; gears never sees a client object.
 */
export interface GearsCaller {
  /** The client's protocol: replies the gears build are encoded in it. */
  proto: Protocol;
  /** The database the client selected. */
  db: number;
  /** The client's id (CLIENT ID). */
  clientId: number;
  /** The client's ACL user (--aclfile): owns what it creates; null without ACLs. */
  user: string | null;
  /** The user may act on other users' executions and registrations (+@admin). */
  admin: boolean;
}

/**
 * Whether the gears engine answers this command (lower-case name, arguments after it): RG.*,
 * TFUNCTION/TFCALL/TFCALLASYNC, and CONFIG GET/SET of T&F's settings (redisgears_2.*).
 */
export function isGearsCommand(name: string, args: readonly Buffer[]): boolean {
  if (name.startsWith("rg.") || TF_COMMANDS.has(name)) return true;
  return name === "config" && isTfConfig(args);
}

/**
 * isGearsCommand, less a CONFIG that also names the server's settings (touchesServerSettings):
 * what a user of the server's own ACL, or a transaction, leaves to the server.
 */
export function isGearsCommandAlone(name: string, args: readonly Buffer[]): boolean {
  return isGearsCommand(name, args) && !(name === "config" && touchesServerSettings(args));
}

/**
 * Executions held elsewhere: by the other threads of a --threads proxy, or by the other
 * proxies in front of the same Redis.
 */
export interface ExecutionsElsewhere {
  /**
   * An execution-id command for an execution this engine does not hold: the reply of the
   * one that holds it; null when none there does. Waits as long as the command does
   * (RG.GETRESULTSBLOCKING waits for the execution).
   */
  byId(name: string, args: Buffer[], caller: GearsCaller): Promise<GearsReply | null>;
  /**
   * RG.DUMPEXECUTIONS replies of the engines there, each listing its own executions (see
   * answerForElsewhere); those that do not answer within a few seconds are left out.
   */
  dump(): Promise<Buffer[]>;
}

/** The commands that name an execution by id: answered by the thread that ran it. */
const BY_EXECUTION_ID = new Set([
  "rg.getresults",
  "rg.getresultsblocking",
  "rg.getexecution",
  "rg.dropexecution",
  "rg.abortexecution",
]);
const elsewhere = new WeakMap<GearsEngine, ExecutionsElsewhere[]>();

/**
 * Executions unknown here are looked for through `remote` too, after those added before it:
 * the other threads (src/threads/peers.ts), then the other proxies (executions-across-proxies.ts).
 */
export function findExecutionsElsewhere(engine: GearsEngine, remote: ExecutionsElsewhere): void {
  const chain = elsewhere.get(engine);
  if (chain === undefined) elsewhere.set(engine, [remote]);
  else chain.push(remote);
}

/**
 * A question from another thread or proxy, answered from this engine alone: an execution-id
 * command's reply when it holds that execution (null otherwise), or RG.DUMPEXECUTIONS of its
 * own executions. Never asks further (the asker asks the others itself).
 */
export async function answerForElsewhere(
  engine: GearsEngine,
  name: string,
  args: Buffer[],
  caller: GearsCaller,
): Promise<GearsReply | null> {
  if (name === "rg.dumpexecutions") return dumpExecutions(engine, []);
  if (!BY_EXECUTION_ID.has(name) || args.length === 0 || engine.get(args[0].toString()) === undefined) {
    return null;
  }
  return runGearsCommand(engine, name, args, caller);
}

/**
 * RG.DUMPEXECUTIONS of every thread and proxy, one entry per execution id: this engine's and
 * those `replies` list. Grouped by the proxy id in the execution id, each group in its
 * engine's order, so that every thread answers the same list.
 */
function mergeDumps(replies: Buffer[]): Buffer {
  const seen = new Set<string>();
  const entries: { owner: string; entry: RespValue[] }[] = [];
  for (const reply of replies) {
    const listed = decodeReply(reply);
    if (!Array.isArray(listed)) continue;
    for (const entry of listed) {
      if (!Array.isArray(entry) || !Buffer.isBuffer(entry[1])) continue;
      const id = entry[1].toString();
      if (seen.has(id)) continue;
      seen.add(id);
      entries.push({ owner: id.slice(0, id.lastIndexOf("-")), entry });
    }
  }
  entries.sort((x, y) => (x.owner < y.owner ? -1 : x.owner > y.owner ? 1 : 0));
  return encodeValue(entries.map((e) => e.entry));
}

async function dumpEverywhere(engine: GearsEngine, chain: ExecutionsElsewhere[]): Promise<Buffer> {
  const theirs = await Promise.all(chain.map((remote) => remote.dump().catch(() => [])));
  return mergeDumps([dumpExecutions(engine, []), ...theirs.flat()]);
}

/** Runs a gears command; the reply as RESP bytes. Unknown RG commands get Redis' unknown-command error. */
export async function runGearsCommand(
  engine: GearsEngine,
  name: string,
  args: Buffer[],
  caller: GearsCaller,
): Promise<GearsReply> {
  if (name === "config") return tfConfigCommand(engine.tf, engine.router, args, caller.proto);
  if (TF_COMMANDS.has(name)) return runTfCommand(engine.tf, name, args, caller);
  const handler = HANDLERS.get(name);
  const chain = elsewhere.get(engine);
  if (chain !== undefined && name === "rg.dumpexecutions" && args.length === 0) {
    return dumpEverywhere(engine, chain);
  }
  if (
    chain !== undefined &&
    BY_EXECUTION_ID.has(name) &&
    args.length >= 1 &&
    engine.get(args[0].toString()) === undefined
  ) {
    for (const remote of chain) {
      const reply = await remote.byId(name, args, caller);
      if (reply !== null) return reply;
    }
  }
  if (handler === undefined) {
    return encodeError(
      `ERR unknown command '${name}', with args beginning with: ${args
        .slice(0, 3)
        .map((a) => `'${a}' `)
        .join("")}`,
    );
  }
  try {
    return await handler(engine, args, caller);
  } catch (err) {
    return encodeError(`ERR ${err instanceof Error ? err.message : String(err)}`);
  }
}
