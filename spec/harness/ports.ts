import net from "node:net";

/** Highest port usable for a cluster node: its bus port (port + 10000) must stay below 65536. */
export const MAX_CLUSTER_PORT = 55534;

/** Ports already handed out by this process, so concurrent callers never get the same one. */
const handedOut = new Set<number>();

/** Binds `port` (0 = any) on 127.0.0.1 and releases it; resolves the bound port or undefined if taken. */
function probe(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once("error", () => resolve(undefined));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => {
      const address = server.address();
      const bound = typeof address === "object" && address !== null ? address.port : undefined;
      server.close(() => resolve(bound));
    });
  });
}

/** A TCP port on 127.0.0.1 that was free a moment ago and has not been handed out by this process. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await probe(0);
    if (port !== undefined && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("freePort: could not find a free port");
}

/** A free port below 55535 whose cluster bus port (port + 10000) is free as well. */
export async function freeClusterPort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = await probe(0);
    if (port === undefined || port > MAX_CLUSTER_PORT || handedOut.has(port) || handedOut.has(port + 10000)) {
      continue;
    }
    if ((await probe(port + 10000)) === undefined) continue;
    handedOut.add(port);
    handedOut.add(port + 10000);
    return port;
  }
  throw new Error("freeClusterPort: could not find a free port pair (port, port + 10000)");
}
