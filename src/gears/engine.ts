import { randomBytes } from "node:crypto";
import type { Logger } from "../observability/log.js";
import type { Router } from "../routing/router.js";
import { encodeBulk, encodeError, OK } from "../resp/encode.js";
import { GEARS_GUEST_SOURCE } from "../sandbox/guest/gears-guest.js";
import { GearsConfig } from "./config.js";
import { topLevelError } from "./errors.js";
import { Execution } from "./execution.js";
import type { Action, IsolateFactory } from "./guest-isolate.js";
import { GearsBridge } from "./host-bridge.js";
import { Partitions } from "./partitions.js";

export interface ExecuteRequest {
  script: string;
  unblocking: boolean;
  sessionId?: string;
  description?: string;
}

/**
 * RG.EXECUTE and the executions it creates: runs scripts in isolates, keeps the list of
 * executions (bounded by MaxExecutions), and runs at most ExecutionThreads of them at once;
 * the others wait in status "created".
 */
export class GearsEngine {
  readonly config = new GearsConfig();
  /** This proxy's id in execution ids: `<40 hex>-<n>`. */
  readonly proxyId = randomBytes(20).toString("hex");
  private counter = 0;
  private readonly executions = new Map<string, Execution>();
  private running = 0;
  private readonly waiting: Execution[] = [];

  constructor(
    readonly router: Router,
    private readonly log: Logger,
    private readonly newIsolate: IsolateFactory,
  ) {}

  get(id: string): Execution | undefined {
    return this.executions.get(id);
  }

  list(): Execution[] {
    return [...this.executions.values()];
  }

  drop(id: string): void {
    this.executions.delete(id);
  }

  /** RG.EXECUTE: the reply to send (OK, an execution id, [results, errors], or an error). */
  async execute(request: ExecuteRequest): Promise<Buffer> {
    let partitions: Partitions | null = null;
    const bridge = new GearsBridge(
      this.router,
      () => (partitions ??= new Partitions(this.router)),
      this.config,
      this.log,
    );
    const limits = {
      memoryLimitMb: this.config.number("ScriptMemoryLimitMB"),
      timeoutMs: this.config.number("ScriptTimeoutMS"),
    };
    const isolate = await this.newIsolate(limits, bridge);
    let actions: Action[];
    try {
      await isolate.evalScript(GEARS_GUEST_SOURCE, "gears-library");
      await isolate.evalScript(request.script, "script");
      actions = (await isolate.call("__gears.actions", [])) as unknown as Action[];
    } catch (err) {
      await isolate.dispose().catch(() => {});
      return encodeError(`ERR ${topLevelError(err)}`);
    }
    const runIndex = actions.findIndex((a) => a.kind === "run");
    if (runIndex === -1) {
      await isolate.dispose();
      return OK;
    }
    partitions ??= new Partitions(this.router);
    const execution = new Execution(
      `${this.proxyId}-${++this.counter}`,
      isolate,
      actions[runIndex],
      runIndex,
      partitions,
    );
    this.add(execution);
    this.schedule(execution);
    if (request.unblocking) return encodeBulk(execution.id);
    await execution.waitFinished();
    this.executions.delete(execution.id);
    return execution.reply();
  }

  /** Keeps at most MaxExecutions: the oldest finished go first, then the oldest at all. */
  private add(execution: Execution): void {
    const max = this.config.number("MaxExecutions");
    if (max > 0) {
      while (this.executions.size >= max) {
        const victim = this.list().find((e) => e.isFinished) ?? this.list()[0];
        this.executions.delete(victim.id);
      }
    }
    this.executions.set(execution.id, execution);
  }

  private schedule(execution: Execution): void {
    this.waiting.push(execution);
    this.startWaiting();
  }

  private startWaiting(): void {
    const threads = Math.max(1, this.config.number("ExecutionThreads"));
    while (this.running < threads && this.waiting.length > 0) {
      const next = this.waiting.shift()!;
      if (next.isFinished) continue;
      this.running++;
      void next.run().finally(() => {
        this.running--;
        this.startWaiting();
      });
    }
  }
}
