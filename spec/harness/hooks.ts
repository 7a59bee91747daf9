import { redisPy } from "../support/redis-py.js";
import { closeAllProxies } from "./proxy.js";
import { stopAll } from "./registry.js";

/**
 * Mocha root hook plugin (loaded through "require" in .mocharc.json): once the whole run is over,
 * stop every redis-server a test left behind. The process 'exit' handler in registry.ts is the
 * synchronous last resort (SIGKILL) when this hook never runs.
 */
export const mochaHooks = {
  async afterAll(this: Mocha.Context): Promise<void> {
    this.timeout(30_000);
    await closeAllProxies();
    await stopAll();
  },
};

/**
 * Mocha global fixture: runs once in the main process before any spec, also when the specs run
 * in parallel workers, so two workers never make or pip-install the redis-py virtualenv at once.
 */
export async function mochaGlobalSetup(): Promise<void> {
  await redisPy();
}
