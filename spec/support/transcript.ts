import { encode, ReceivedText } from "./raw-client.js";
import { eventually } from "./polling.js";

// Sequences of commands on a few raw connections, run once against Redis and once through
// the proxy by the transparency specs: what each connection received is compared as bytes.

/** One write of `send` on connection `on` (default "a"), then a wait until what came since holds `until`. */
export interface Step {
  on?: string;
  send: string[][];
  until: string;
}

export const HELLO_END = "$7\r\nmodules\r\n*0\r\n";

/** What each connection received over the steps, HELLO's client id blanked. */
export async function transcript(port: number, steps: Step[]): Promise<Record<string, string>> {
  const conns = new Map<string, ReceivedText>();
  const waitedTo = new Map<string, number>();
  try {
    for (const step of steps) {
      const name = step.on ?? "a";
      let c = conns.get(name);
      if (c === undefined) conns.set(name, (c = await ReceivedText.open(port)));
      const conn = c;
      // A step that sends nothing waits for what comes unasked, maybe already there.
      const at = step.send.length > 0 ? conn.text.length : (waitedTo.get(name) ?? 0);
      conn.socket.write(Buffer.concat(step.send.map((argv) => encode(argv))));
      await eventually(
        async () => conn.text.slice(at),
        (t) => t.includes(step.until),
        `${name}: ${step.send.map((argv) => argv[0]).join(" ")} until ${JSON.stringify(step.until)}`,
        5000,
      );
      waitedTo.set(name, conn.text.length);
    }
    const out: Record<string, string> = {};
    for (const [name, c] of conns)
      out[name] = c.text
        .replace(/\$2\r\nid\r\n:\d+\r\n/g, "$2\r\nid\r\n:ID\r\n")
        // The proxy presents a cluster as a one-node cluster (cluster emulation).
        .replaceAll("$4\r\nmode\r\n$7\r\ncluster\r\n", "$4\r\nmode\r\n$10\r\nstandalone\r\n");
    return out;
  } finally {
    for (const c of conns.values()) c.socket.destroy();
  }
}
