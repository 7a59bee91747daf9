import type { Logger } from "../observability/log.js";
import { isBlocking, SUBSCRIBE_FAMILY } from "../routing/command-kinds.js";
import { NO_KEYS, type Router } from "../routing/router.js";
import type { RespValue } from "../resp/values.js";
import { RawJson, type HostBridge, type JsonValue } from "../sandbox/types.js";
import type { GearsConfig } from "./config.js";
import { replyToJson } from "./json-values.js";
import { readKeyValue } from "./readers.js";
import type { Partitions } from "./partitions.js";
import { executeMany } from "./read-ahead.js";
import { executeBatch, executeTable, tableOfFlat } from "./execute-batch.js";

/** What a script's session does for it: registrations and timers. */
export interface SessionCalls {
  /** register() in the script: the new registration's id. */
  register(actionIndex: number): string;
  /** registerTimeEvent(): callback number `id` every `seconds`, while `keyName` (if any) exists. */
  registerTimeEvent(id: number, seconds: number, keyName: string | null): void;
}

/**
 * The ACL check of the user a script runs as (who registered it): null when the command
 * may run, else the NOPERM error. Supplied by the client room; gears knows no users.
 */
export type CommandGuard = (name: string, argv: readonly Buffer[]) => string | null;

/** Commands that would tie up or change the state of a shared upstream connection. */
const NOT_FROM_SCRIPTS = new Set([
  "multi",
  "exec",
  "discard",
  "watch",
  "unwatch",
  "select",
  "monitor",
  "quit",
  "reset",
  "hello",
  "auth",
  "client",
  // SYNC/PSYNC turn the connection into a replication link (the RDB then comes as its
  // "reply"), REPLCONF belongs to that link; READONLY, READWRITE and ASKING change how the
  // connection's next commands are served.
  "sync",
  "psync",
  "replconf",
  "readonly",
  "readwrite",
  "asking",
  // A line Redis takes for an HTTP request: it closes the connection (client/http-line.ts).
  "post",
  "host:",
  ...SUBSCRIBE_FAMILY,
]);

/** SCRIPT DEBUG YES/SYNC would turn a shared connection's next EVALs into debugger sessions. */
function isScriptDebug(name: string, argv: readonly Buffer[]): boolean {
  return name === "script" && argv[1]?.toString().toLowerCase() === "debug";
}

/** Why a script may not send this command through the shared connections; null when it may. */
export function scriptCommandRefusal(name: string, argv: readonly Buffer[]): string | null {
  return NOT_FROM_SCRIPTS.has(name) || isBlocking(name, argv) || isScriptDebug(name, argv)
    ? `ERR '${name}' cannot be called from a gears script`
    : null;
}

/** Scripts' own commands: RedisGears refused to hook them, as Redis refuses them in scripts. */
const SCRIPT_COMMANDS = new Set(["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"]);

/**
 * Why a command hook may not intercept `name` (RedisGears' text); null when it may. Its
 * callNext() runs the command on a shared upstream connection, as a script's execute() does:
 * a hooked SUBSCRIBE left that connection in subscriber mode for every client after it.
 */
export function hookRefusal(name: string): string | null {
  return NOT_FROM_SCRIPTS.has(name) || SCRIPT_COMMANDS.has(name) || isBlocking(name, [])
    ? "Can not hook a command which are not allowed inside a script"
    : null;
}

/**
 * Why a KeysReader registration's `commands` may not name `name`; null when it may. As a hook
 * (hookRefusal), and not XREAD/XREADGROUP, blocking or not by their arguments: a client's XREAD
 * BLOCK run in the proxy's path would hold a shared connection (RedisGears refused them too,
 * for their keys' positions). A hook's callNext() checks each call's arguments instead.
 */
export function commandsRefusal(name: string): string | null {
  if (name === "xread" || name === "xreadgroup")
    return "Can not hook a command with moveable keys by key prefix";
  return hookRefusal(name);
}

/** A batch of a guest's async host calls, each run as its sync call, all at once. */
export function callEach(
  bridge: Pick<HostBridge, "callSync">,
  calls: { name: string; args: JsonValue[] }[],
): Promise<({ ok: JsonValue | RawJson } | { error: string })[]> {
  return Promise.all(
    calls.map((c) =>
      bridge.callSync(c.name, c.args).then(
        (ok) => ({ ok }),
        (err: Error) => ({ error: err.message }),
      ),
    ),
  );
}

const LOG_LEVELS: Record<string, "debug" | "info" | "warn"> = {
  debug: "debug",
  verbose: "debug",
  notice: "info",
  warning: "warn",
};

/**
 * The proxy's side of a script's host calls: execute() goes through the same router as
 * clients' commands (so slot routing and redirects apply); a keyless command called from a
 * step runs on the shard of that step's partition.
 */
export class GearsBridge implements HostBridge {
  constructor(
    private readonly router: Router,
    private readonly partitions: () => Partitions,
    private readonly config: GearsConfig,
    private readonly log: Logger,
    private readonly session: SessionCalls,
  ) {}

  /** The database the script's commands run in: the client's, or the one its session was registered from. */
  db = 0;
  /** The rights of the user the script runs as; null when there are no ACLs. */
  guard: CommandGuard | null = null;

  /** The argv of the command a running hook or trigger was called for (getCommand, callNext). */
  command: string[] | null = null;
  /** Set by overrideReply() while a `commands` registration handles its command's events. */
  overriddenReply: { value: JsonValue } | null = null;

  async callSync(name: string, args: JsonValue[]): Promise<JsonValue | RawJson> {
    switch (name) {
      case "execute":
        return this.execute(args);
      case "executeEach":
        return this.executeEach(args[0]);
      case "executeMany":
        return executeMany(this.router, this.partitions, args, this.db, this.guard);
      case "configGet":
        return this.config.lookup(String(args[0]));
      case "hashtag":
        return this.partitions().hashtag(typeof args[0] === "number" ? args[0] : 0);
      case "register":
        return this.session.register(Number(args[0]));
      case "registerTimeEvent":
        this.session.registerTimeEvent(
          Number(args[0]),
          Number(args[1]),
          args[2] === null ? null : String(args[2]),
        );
        return null;
      case "getCommand":
        return this.command;
      case "callNext":
        return this.callNext(args);
      case "readValue":
        return readKeyValue((argv) => this.router.call(argv, this.db), Buffer.from(String(args[0])));
      case "overrideReply":
        if (this.command === null) {
          throw new Error(
            "overrideReply() can only be called for an event of a registration with 'commands'",
          );
        }
        this.overriddenReply = { value: args[0] ?? null };
        return null;
      default:
        throw new Error(`unknown host call '${name}'`);
    }
  }

  callAsync(
    calls: { name: string; args: JsonValue[] }[],
    repliesUnused = false,
  ): Promise<({ ok: JsonValue | RawJson } | { error: string })[]> {
    // A batched foreach's one executeEach (an event entry's usual batch): straight to it, not
    // through a batch of one call that takes "another path" to callSync.
    if (calls.length === 1 && calls[0].name === "executeEach") {
      return this.executeEach(calls[0].args[0]).then(
        (ok) => [{ ok }],
        (err: Error) => [{ error: err.message }],
      );
    }
    return executeBatch(
      this.router,
      this.db,
      calls,
      (name, argv) => scriptCommandRefusal(name, argv) ?? this.guard?.(name, argv) ?? null,
      (call) => this.callSync(call.name, call.args),
      repliesUnused,
    );
  }

  /**
   * A batched foreach's execute() calls, back to back in one list (`partition, n, name,
   * ...args` each: execute-batch.ts tableOfFlat), sent at once. Nothing reads their replies
   * (the foreach ignores them), only whether each failed: the answer is
   * `{failed: [[index, "error message"], ...]}`, empty when every call succeeded.
   */
  private async executeEach(list: JsonValue | undefined): Promise<RawJson> {
    const calls = tableOfFlat(Array.isArray(list) ? list : []);
    if (calls === null)
      throw new Error("executeEach: a list of calls (partition, n, name, ...args) expected");
    const outcomes = await executeTable(
      this.router,
      this.db,
      calls,
      (name, argv) => scriptCommandRefusal(name, argv) ?? this.guard?.(name, argv) ?? null,
      (i) => this.callSync("execute", [calls.part[i], ...calls.flat.slice(calls.from[i], calls.to[i])]),
      true,
    );
    const failed: string[] = [];
    for (let i = 0; i < outcomes.length; i++) {
      const o = outcomes[i];
      if ("error" in o) failed.push(`[${i},${JSON.stringify(o.error)}]`);
    }
    return new RawJson(`{"failed":[${failed.join(",")}]}`);
  }

  notify(name: string, args: JsonValue[]): void {
    if (name !== "log") return;
    const level = LOG_LEVELS[String(args[0])] ?? "info";
    this.log[level]({ source: "script" }, String(args[1]));
  }

  /** A hook's callNext(...): the hooked command itself (or with the arguments given) on Redis. */
  private async callNext(args: JsonValue[]): Promise<JsonValue> {
    const command = this.command;
    if (command === null) throw new Error("callNext() can only be called from a command hook");
    const argv = [command[0], ...(args.length > 0 ? args.map(String) : command.slice(1))];
    // XREAD BLOCK and the like are known by their arguments only.
    const refusal = scriptCommandRefusal(
      command[0].toLowerCase(),
      argv.map((a) => Buffer.from(a)),
    );
    if (refusal !== null) throw new Error(refusal);
    return replyToJson(await this.router.call(argv, this.db));
  }

  private async execute(args: JsonValue[]): Promise<JsonValue> {
    const partition = typeof args[0] === "number" ? args[0] : null;
    const argv = args.slice(1).map((a) => Buffer.from(String(a)));
    if (argv.length === 0) throw new Error("ERR wrong number of arguments for 'execute'");
    const name = argv[0].toString().toLowerCase();
    const refusal = scriptCommandRefusal(name, argv) ?? this.guard?.(name, argv) ?? null;
    if (refusal !== null) throw new Error(refusal);
    let reply: RespValue;
    if (partition !== null && this.router.slotOf(name, argv) === NO_KEYS) {
      reply = await this.partitions().shard(partition).call(argv);
    } else {
      reply = await this.router.call(argv, this.db);
    }
    return replyToJson(reply);
  }
}
