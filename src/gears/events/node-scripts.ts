import { createHash } from "node:crypto";
import type { Logger } from "../../observability/log.js";
import type { Shards } from "../../routing/shards.js";
import type { Arg } from "../../resp/encode.js";
import { RespError, type RespValue } from "../../resp/values.js";

/**
 * A Lua script that works on keys of many slots of one cluster node, given as ARGV (so the
 * call itself names no key and goes to whichever master it is sent to). Redis >= 7.0 only:
 * the `allow-cross-slot-keys` flag does not exist before.
 */
export class NodeScript {
  readonly sha: string;

  constructor(
    /** What the script does, for the log when a node refuses it. */
    readonly name: string,
    readonly body: string,
  ) {
    this.sha = createHash("sha1").update(body).digest("hex");
  }
}

/**
 * After a node refused a script (NOPERM: a user without EVALSHA; a script error; a server
 * older than 7.0), the per-slot commands are used there for this long before the script is
 * tried again: not every second.
 */
const REFUSED_MS = 60_000;

/** What is known of one master: whether it runs scripts of many slots. */
interface NodeState {
  /** The major version, once INFO said it (undefined: not asked yet, or the ask failed). */
  major: number | undefined;
  /** The script is not tried on this node before this time. */
  refusedUntil: number;
  /** The refusals logged already, so a lasting one is logged once. */
  logged: Set<string>;
}

/**
 * Runs NodeScripts on cluster masters, and knows where they cannot run: a master older than
 * Redis 7.0, or one that refused them (ACL, scripting errors). A caller given null instead
 * of replies takes its per-slot path. One per Shards (per proxy), so every registration
 * learns a node's refusal from the first, and it is logged once.
 */
export class NodeScripts {
  private readonly nodes = new Map<string, NodeState>();

  constructor(
    private readonly shards: Shards,
    private readonly log: Logger,
  ) {}

  /** The master serving a slot, as Shards names it. */
  nodeForSlot(slot: number): string {
    return this.shards.idForSlot(slot);
  }

  /**
   * `script` on master `node` with `argv` as ARGV: its reply, an array of `expected`
   * elements; null when it cannot run there now (the caller reads per slot instead).
   * A node that cannot be reached rejects, as a per-slot command there would.
   */
  async run(
    node: string,
    script: NodeScript,
    argv: readonly Arg[],
    expected: number,
  ): Promise<RespValue[] | null> {
    const state = this.stateOf(node);
    if (Date.now() < state.refusedUntil) return null;
    if (state.major === undefined) {
      const info = await this.shards.callNode(node, ["INFO", "server"]);
      const version = /^redis_version:(\d+)\./m.exec(info instanceof RespError ? "" : String(info));
      if (version === null) return null;
      state.major = Number(version[1]);
    }
    if (state.major < 7) {
      this.refuse(node, state, script, `Redis ${state.major}.x has no scripts of many slots`);
      // Asked again when the refusal ends: the node may have been upgraded meanwhile.
      state.major = undefined;
      return null;
    }
    let reply = await this.shards.call(node, ["EVALSHA", script.sha, 0, ...argv]);
    // Not loaded there yet (or the node restarted): EVAL runs it and keeps it for the next EVALSHA.
    if (reply instanceof RespError && reply.message.startsWith("NOSCRIPT"))
      reply = await this.shards.call(node, ["EVAL", script.body, 0, ...argv]);
    if (reply instanceof RespError) {
      this.refuse(node, state, script, reply.message);
      return null;
    }
    if (!Array.isArray(reply) || reply.length !== expected) {
      this.refuse(node, state, script, "unexpected reply");
      return null;
    }
    return reply;
  }

  private stateOf(node: string): NodeState {
    let state = this.nodes.get(node);
    if (state === undefined) {
      state = { major: undefined, refusedUntil: 0, logged: new Set() };
      this.nodes.set(node, state);
    }
    return state;
  }

  private refuse(node: string, state: NodeState, script: NodeScript, why: string): void {
    state.refusedUntil = Date.now() + REFUSED_MS;
    const key = `${script.name}|${why}`;
    if (state.logged.has(key)) return;
    state.logged.add(key);
    this.log.warn(
      { node, script: script.name, err: why },
      "a node refused a script of many slots: its streams are read per slot",
    );
  }
}

const perShards = new WeakMap<Shards, NodeScripts>();

/** The proxy's NodeScripts (one per Shards). */
export function nodeScriptsOf(shards: Shards, log: Logger): NodeScripts {
  let scripts = perShards.get(shards);
  if (scripts === undefined) perShards.set(shards, (scripts = new NodeScripts(shards, log)));
  return scripts;
}
