import { encodeError, encodeValue, OK } from "../../resp/encode.js";
import type { Protocol } from "../../resp/values.js";
import { RespMap } from "../../resp/values.js";

/** The T&F settings a proxy applies (reference 4.3), read and set as CONFIG redisgears_2.<name>. */
interface Setting {
  value: number | string;
  min?: number;
  max?: number;
  choices?: string[];
  runtime: boolean;
}

export const TF_CONFIG_PREFIX = "redisgears_2.";

const MB = 1024 * 1024;

/** T&F's settings at their defaults. */
function defaultSettings(): Map<string, Setting> {
  return new Map<string, Setting>([
    ["lock-redis-timeout", { value: 500, min: 100, max: 1e9, runtime: true }],
    ["db-loading-lock-redis-timeout", { value: 30000, min: 100, max: 1e9, runtime: true }],
    ["library-fatal-failure-policy", { value: "abort", choices: ["abort", "kill"], runtime: true }],
    ["v8-maxmemory", { value: 200 * MB, min: 50 * MB, max: 1024 * MB, runtime: false }],
    ["v8-library-initial-memory-usage", { value: 2 * MB, min: 1 * MB, max: 10 * MB, runtime: false }],
    ["v8-library-initial-memory-limit", { value: 3 * MB, min: 2 * MB, max: 20 * MB, runtime: false }],
    ["v8-library-memory-usage-delta", { value: 1 * MB, min: 1 * MB, max: 10 * MB, runtime: false }],
    ["execution-threads", { value: 1, min: 1, max: 32, runtime: false }],
    ["remote-task-default-timeout", { value: 500, min: 1, max: Number.MAX_SAFE_INTEGER, runtime: true }],
    ["error-verbosity", { value: 1, min: 1, max: 2, runtime: true }],
  ]);
}

/** Every T&F setting's full name (redisgears_2.<name>), as CONFIG GET lists it. */
export const TF_SETTING_NAMES: readonly string[] = [...defaultSettings().keys()].map(
  (n) => TF_CONFIG_PREFIX + n,
);

/** Whether CONFIG GET's `pattern` matches one of T&F's settings (CONFIG GET *, redisgears*...). */
export function matchesTfSetting(pattern: string): boolean {
  const re = globToRegExp(pattern);
  return TF_SETTING_NAMES.some((name) => re.test(name));
}

export class TfConfig {
  private readonly settings = defaultSettings();

  number(name: string): number {
    return Number(this.settings.get(name)!.value);
  }

  text(name: string): string {
    return String(this.settings.get(name)!.value);
  }

  /** Sets a value (at start, or at run time when `runtime`); an error text or null. */
  apply(name: string, value: string, runtime: boolean): string | null {
    const s = this.settings.get(name);
    if (s === undefined)
      return `ERR Unknown option or number of arguments for CONFIG SET - '${TF_CONFIG_PREFIX}${name}'`;
    // T&F refuses any run-time set of a load-time setting. Setting one to the value it has
    // changes nothing, and tools that read `CONFIG GET *` and write every pair back (Redis's
    // own "CONFIG sanity" test among them) would fail through the proxy where the same server
    // without it passes: that one case is accepted.
    if (runtime && !s.runtime && value !== String(s.value)) {
      return `ERR CONFIG SET failed (possibly related to argument '${TF_CONFIG_PREFIX}${name}') - can't set immutable config`;
    }
    if (s.choices !== undefined) {
      if (!s.choices.includes(value.toLowerCase())) {
        return `ERR CONFIG SET failed (possibly related to argument '${TF_CONFIG_PREFIX}${name}') - argument(s) must be one of the following: ${s.choices.join(", ")}`;
      }
      s.value = value.toLowerCase();
      return null;
    }
    if (!/^-?\d+$/.test(value)) {
      return `ERR CONFIG SET failed (possibly related to argument '${TF_CONFIG_PREFIX}${name}') - argument couldn't be parsed into an integer`;
    }
    const n = Number(value);
    if (n < s.min! || n > s.max!) {
      return `ERR CONFIG SET failed (possibly related to argument '${TF_CONFIG_PREFIX}${name}') - argument must be between ${s.min} and ${s.max} inclusive`;
    }
    if (name === "db-loading-lock-redis-timeout" && n < this.number("lock-redis-timeout")) {
      return "ERR The db-loading-lock-redis-timeout value can't be less than lock-redis-timeout value.";
    }
    s.value = n;
    // Raising the lock timeout past the loading one raises that too.
    if (name === "lock-redis-timeout" && n > this.number("db-loading-lock-redis-timeout")) {
      this.settings.get("db-loading-lock-redis-timeout")!.value = n;
    }
    return null;
  }

  /** CONFIG GET's name/value pairs of T&F's settings matching any of `patterns`, each once. */
  entries(patterns: readonly string[]): [Buffer, Buffer][] {
    const res = patterns.map(globToRegExp);
    const entries: [Buffer, Buffer][] = [];
    for (const [name, s] of this.settings) {
      const full = TF_CONFIG_PREFIX + name;
      if (res.some((re) => re.test(full))) entries.push([Buffer.from(full), Buffer.from(String(s.value))]);
    }
    return entries;
  }

  /** CONFIG GET redisgears_2.<pattern>: name/value pairs (a map in RESP3), as Redis answers. */
  get(pattern: string, proto: Protocol): Buffer {
    return encodeValue(new RespMap(this.entries([pattern])), proto);
  }

  /** What CONFIG SET of `pairs` would answer, changing nothing: an error text, or null. */
  check(pairs: [string, string][]): string | null {
    const saved = new Map([...this.settings].map(([k, s]) => [k, s.value]));
    let error: string | null = null;
    for (const [full, value] of pairs) {
      error = this.apply(full.toLowerCase().slice(TF_CONFIG_PREFIX.length), value, true);
      if (error !== null) break;
    }
    for (const [k, v] of saved) this.settings.get(k)!.value = v;
    return error;
  }

  /** Told of each setting a CONFIG SET changed. */
  onSet: (name: string) => void = () => {};

  /** A --threads proxy's other threads, told of a client's CONFIG SET here (GearsConfig.told). */
  told: (pairs: [string, string][]) => Promise<void> = () => Promise.resolve();

  /** CONFIG SET redisgears_2.<name> <value> [...]: all or nothing, as Redis does. */
  set(pairs: [string, string][]): Buffer {
    const saved = new Map([...this.settings].map(([k, s]) => [k, s.value]));
    for (const [full, value] of pairs) {
      const error = this.apply(full.toLowerCase().slice(TF_CONFIG_PREFIX.length), value, true);
      if (error !== null) {
        for (const [k, v] of saved) this.settings.get(k)!.value = v;
        return encodeError(error);
      }
    }
    for (const [full] of pairs) this.onSet(full.toLowerCase().slice(TF_CONFIG_PREFIX.length));
    return OK;
  }
}

/**
 * A CONFIG GET pattern as Redis matches it (util.c stringmatchlen, case-insensitive): `*`,
 * `?`, `[...]` with `^` and ranges, `\\` escaping the next character.
 */
function globToRegExp(glob: string): RegExp {
  const escape = (c: string): string => c.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "\\" && i + 1 < glob.length) re += escape(glob[++i]);
    else if (c === "[") {
      let j = i + 1;
      let set = "";
      if (glob[j] === "^") {
        set += "^";
        j++;
      }
      for (; j < glob.length && glob[j] !== "]"; j++) {
        if (glob[j] === "\\" && j + 1 < glob.length) set += escape(glob[++j]);
        else if (glob[j + 1] === "-" && j + 2 < glob.length && glob[j + 2] !== "]") {
          const [a, b] = [glob[j], glob[j + 2]].sort();
          set += `${escape(a)}-${escape(b)}`;
          j += 2;
        } else set += escape(glob[j]);
      }
      // An unclosed class runs to the end, as in Redis.
      re += set === "" || set === "^" ? (set === "^" ? "[^]" : "(?!)") : `[${set}]`;
      i = j;
    } else re += escape(c);
  }
  return new RegExp(`^${re}$`, "is");
}
