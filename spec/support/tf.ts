/**
 * The setup of the T&F spec files: a backend (one redis-server or a 3-master cluster), an
 * in-process proxy in front of it, an ioredis client through the proxy and a direct view of
 * the backend; with `clean`, the libraries are deleted after each test.
 */
import { Redis } from "ioredis";
import { startProxy, type RunningProxy } from "../harness/index.js";
import { Backend, Direct, serverAvailable, type BackendMode, type ServerKind } from "./backend.js";

/** A T&F library's code: the prologue line, then the body. */
export const tfLibrary = (name: string, body: string, version = "1.0"): string =>
  `#!js api_version=${version} name=${name}\n${body}`;

export interface TfSetup {
  backend: Backend;
  proxy: RunningProxy;
  /** A client through the proxy. */
  c: Redis;
  /** The backend straight, bypassing the proxy. */
  direct: Direct;
}

/** Deletes every library the proxy lists. */
export async function deleteLibraries(c: Redis): Promise<void> {
  const libs = (await c.call("TFUNCTION", "LIST")) as unknown[][];
  for (const l of libs) await c.call("TFUNCTION", "DELETE", String(l[l.indexOf("name") + 1]));
}

/** Registers the hooks in the calling describe(); the fields are set once its before() ran. */
export function useTfProxy(mode: BackendMode, options: { clean: boolean; server?: ServerKind }): TfSetup {
  const t = {} as TfSetup;
  const server = options.server ?? "redis";
  before(async function () {
    if (!serverAvailable(server)) this.skip();
    t.backend = await Backend.start(mode, server);
    t.proxy = await startProxy([{ port: t.backend.seed.port }]);
    t.c = new Redis(t.proxy.port);
    t.direct = new Direct(t.backend);
  });
  if (options.clean) afterEach(() => t.c !== undefined && deleteLibraries(t.c));
  after(async () => {
    t.c?.disconnect();
    await t.proxy?.close();
    await t.backend?.stop();
  });
  return t;
}
