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

  clear(): void {
    this.bodies.clear();
  }
}
