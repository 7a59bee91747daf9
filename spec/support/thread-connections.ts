import { eventually } from "./polling.js";
import { RawClient, toText } from "./raw-client.js";

/** The pid of the thread serving a connection: INFO proxy's process_id is the answering thread's. */
export async function threadOf(c: RawClient): Promise<string> {
  return /process_id:(\d+)/.exec(String(toText(await c.call("INFO", "proxy"))))![1];
}

/**
 * `count` connections to a --threads 2 proxy on `port`, some on each thread: the supervisor
 * deals connections to the threads in turn once both listen, so they are opened again until
 * they span both.
 */
export async function connectionsOnBothThreads(port: number, count: number): Promise<RawClient[]> {
  const conns: RawClient[] = [];
  await eventually(
    async () => {
      for (const c of conns.splice(0)) c.close();
      for (let i = 0; i < count; i++) conns.push(await RawClient.connect(port));
      const threads = new Set<string>();
      for (const c of conns) threads.add(await threadOf(c));
      return threads.size;
    },
    (n) => n === 2,
    "connections on both threads",
    60_000,
  );
  return conns;
}
