import { createHash } from "node:crypto";

const MAX_SCRIPTS = 10_000;

/**
 * Bodies of the Lua scripts clients sent through the proxy, by SHA1, so an EVALSHA that
 * meets NOSCRIPT (a shard that restarted or failed over) can be loaded and retried.
 */
export class ScriptCache {
  private readonly bodies = new Map<string, Buffer>();

  remember(body: Buffer): string {
    const sha = createHash("sha1").update(body).digest("hex");
    if (!this.bodies.has(sha)) {
      if (this.bodies.size >= MAX_SCRIPTS) this.bodies.delete(this.bodies.keys().next().value!);
      this.bodies.set(sha, Buffer.from(body));
    }
    return sha;
  }

  body(sha: string): Buffer | undefined {
    return this.bodies.get(sha.toLowerCase());
  }

  /** `sha@node` of the scripts the proxy loaded on a node itself (loadOnce). */
  private readonly loaded = new Set<string>();

  /**
   * Whether the proxy should load a script on a node before an EVALSHA of it goes there:
   * true once per script and node. Loaded ahead, on the connection the EVALSHA takes, the
   * script is there when it runs; a NOSCRIPT and a retry would let the commands pipelined
   * behind the EVALSHA run before it.
   */
  loadOnce(sha: string, node: string): boolean {
    const key = `${sha.toLowerCase()}@${node}`;
    if (this.loaded.has(key)) return false;
    if (this.loaded.size >= MAX_SCRIPTS) this.loaded.clear();
    this.loaded.add(key);
    return true;
  }

  clear(): void {
    this.bodies.clear();
    this.loaded.clear();
  }
}
