import type { Logger } from "../observability/log.js";
import { isBlocking, SUBSCRIBE_FAMILY } from "../routing/command-kinds.js";
import { NO_KEYS, type Router } from "../routing/router.js";
import type { RespValue } from "../resp/values.js";
import type { HostBridge, JsonValue } from "../sandbox/types.js";
import type { GearsConfig } from "./config.js";
import { replyToJson } from "./json-values.js";
import type { Partitions } from "./partitions.js";

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
  ...SUBSCRIBE_FAMILY,
]);

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
    /** register() in the script: the new registration's id. */
    private readonly onRegister: (actionIndex: number) => string,
  ) {}

  async callSync(name: string, args: JsonValue[]): Promise<JsonValue> {
    switch (name) {
      case "execute":
        return this.execute(args);
      case "configGet":
        return this.config.lookup(String(args[0]));
      case "hashtag":
        return this.partitions().hashtag(typeof args[0] === "number" ? args[0] : 0);
      case "register":
        return this.onRegister(Number(args[0]));
      default:
        throw new Error(`unknown host call '${name}'`);
    }
  }

  callAsync(
    calls: { name: string; args: JsonValue[] }[],
  ): Promise<({ ok: JsonValue } | { error: string })[]> {
    return Promise.all(
      calls.map((c) =>
        this.callSync(c.name, c.args).then(
          (ok) => ({ ok }),
          (err: Error) => ({ error: err.message }),
        ),
      ),
    );
  }

  notify(name: string, args: JsonValue[]): void {
    if (name !== "log") return;
    const level = LOG_LEVELS[String(args[0])] ?? "info";
    this.log[level]({ source: "script" }, String(args[1]));
  }

  private async execute(args: JsonValue[]): Promise<JsonValue> {
    const partition = typeof args[0] === "number" ? args[0] : null;
    const argv = args.slice(1).map((a) => Buffer.from(String(a)));
    if (argv.length === 0) throw new Error("ERR wrong number of arguments for 'execute'");
    const name = argv[0].toString().toLowerCase();
    if (NOT_FROM_SCRIPTS.has(name) || isBlocking(name, argv)) {
      throw new Error(`ERR '${name}' cannot be called from a gears script`);
    }
    let reply: RespValue;
    if (partition !== null && this.router.slotOf(name, argv) === NO_KEYS) {
      reply = await this.partitions().shard(partition).call(argv);
    } else {
      reply = await this.router.call(argv);
    }
    return replyToJson(reply);
  }
}
