import { encodeError, encodeInteger, encodeValue } from "../resp/encode.js";
import { DEFAULT_MAX_QUEUED_EVENTS } from "./events/event-queue.js";
import { TF_CONFIG_PREFIX, TfConfig } from "./tf/config.js";

const MAX_SCRIPT_MEMORY_MB = 2048;
const MAX_SCRIPT_TIMEOUT_MS = 1_000_000_000;

/** RG.CONFIGGET/RG.CONFIGSET: the built-in settings of spec section 5, plus free-form extras. */
export class GearsConfig {
  private readonly numbers = new Map<string, number>([
    ["MaxExecutions", 1000],
    ["MaxExecutionsPerRegistration", 100],
    ["ProfileExecutions", 0],
    ["ExecutionMaxIdleTime", 5000],
    ["ScriptMemoryLimitMB", 64],
    ["ScriptTimeoutMS", 5000],
    // The bytes one execution's results may hold in the proxy (RESP-encoded), in MB.
    ["MaxResultsMB", 256],
    ["ExecutionThreads", 3],
    // Several proxies share the shards' keyspace events and timers by leases of this length.
    ["EventLeaseMS", 5000],
    // A stream entry unacknowledged this long by its consumer (a dead proxy) is claimed by another.
    ["StreamClaimIdleMS", 30000],
    // Keyspace events a registration's queue (or a library's keyspace trigger queue) holds
    // before writes through the proxy wait for its handler; writes straight to the shards
    // queue past it, counted (numQueuedOverBound, num_queued_over_bound) and logged.
    ["MaxQueuedEvents", DEFAULT_MAX_QUEUED_EVENTS],
  ]);
  /** Built-ins fixed at start: set by --gears-config, refused by RG.CONFIGSET once started. */
  private readonly readOnly = new Set(["ExecutionThreads"]);
  private started = false;
  private readonly extra = new Map<string, string>();
  /** T&F's settings (CONFIG GET/SET redisgears_2.*); `--gears-config redisgears_2.<name>=v` sets them at start. */
  readonly tf = new TfConfig();

  /**
   * Set by a --threads proxy (threads/peers.ts): a client's RG.CONFIGSET (or CONFIG SET of
   * T&F's settings, through TfConfig's own) is told to the other threads, which apply it with
   * followSet(); resolves once they have, so that the next command on any connection sees it.
   */
  told: (pairs: [string, string][]) => Promise<void> = () => Promise.resolve();

  /**
   * A run-time set made on another thread of this proxy, applied here by the same rules:
   * RG.CONFIGSET's pair by pair (`via` "rg"), CONFIG SET's of T&F's settings all or nothing.
   */
  followSet(pairs: [string, string][], via: "rg" | "config"): void {
    if (via === "rg") this.set(pairs);
    else this.tf.set(pairs);
  }

  /** The proxy serves clients from now on: the start-only settings are fixed. */
  markStarted(): void {
    this.started = true;
  }

  number(name: string): number {
    return this.numbers.get(name)!;
  }

  /** A value for the guest's configGet(): built-in or extra; null when unknown. */
  lookup(name: string): string | number | null {
    return this.numbers.get(name) ?? this.extra.get(name) ?? null;
  }

  get(names: string[]): Buffer {
    const parts = names.map((name) => {
      const n = this.numbers.get(name);
      if (n !== undefined) return encodeInteger(n);
      const e = this.extra.get(name);
      if (e !== undefined) return encodeValue(Buffer.from(e));
      return encodeError(`Unsupported config parameter: ${name}`);
    });
    return Buffer.concat([Buffer.from(`*${parts.length}\r\n`), ...parts]);
  }

  /** Why setting `name` to `value` at start would fail (RG.CONFIGSET's error text); null when it would not. */
  settingError(name: string, value: string): string | null {
    const reply = this.set([[name, value]]).toString();
    const at = reply.indexOf("\r\n-");
    return at === -1 ? null : reply.slice(at + 3, reply.indexOf("\r\n", at + 3));
  }

  set(pairs: [string, string][]): Buffer {
    const parts = pairs.map(([name, value]) => {
      if (name.toLowerCase().startsWith(TF_CONFIG_PREFIX)) {
        const error = this.tf.apply(name.slice(TF_CONFIG_PREFIX.length).toLowerCase(), value, false);
        return error === null ? encodeValue("OK") : encodeError(error);
      }
      if (this.numbers.has(name)) {
        if (this.started && this.readOnly.has(name))
          return encodeError(`Config value ${name} not modifiable at runtime`);
        const n = Number(value);
        if (!/^\d+$/.test(value) || !Number.isSafeInteger(n))
          return encodeError(`Failed setting config value ${name}`);
        if (
          // QuickJS's wasm module declares 2 GB of memory at most: above that no isolate starts.
          (name === "ScriptMemoryLimitMB" && (n < 16 || n > MAX_SCRIPT_MEMORY_MB)) ||
          // Its timers (with some slack added) must stay below 2^31-1 ms, past which a timer fires at once.
          (name === "ScriptTimeoutMS" && (n < 1 || n > MAX_SCRIPT_TIMEOUT_MS)) ||
          (name === "MaxResultsMB" && n < 1) ||
          (name === "EventLeaseMS" && n < 300) ||
          (name === "StreamClaimIdleMS" && n < 100) ||
          (name === "MaxQueuedEvents" && n < 1)
        ) {
          return encodeError(`Failed setting config value ${name}`);
        }
        this.numbers.set(name, n);
        return encodeValue("OK");
      }
      this.extra.set(name, value);
      return encodeValue("OK - value was saved in extra config dictionary");
    });
    return Buffer.concat([Buffer.from(`*${parts.length}\r\n`), ...parts]);
  }
}
