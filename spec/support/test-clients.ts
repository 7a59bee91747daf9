import { Redis } from "ioredis";
import { RawClient } from "./raw-client.js";

/** Connections a suite opens to the proxy: closed together after each test. */
export class TestClients {
  private readonly raws: RawClient[] = [];
  private readonly ios: Redis[] = [];

  constructor(
    private readonly defaultPort: () => number = () => {
      throw new Error("TestClients: no default port, give one");
    },
  ) {}

  /** A raw RESP connection (to the proxy unless another port is given). */
  async raw(port = this.defaultPort()): Promise<RawClient> {
    return this.track(await RawClient.connect(port));
  }

  /** An ioredis connection that retries a request once. */
  io(port = this.defaultPort()): Redis {
    return this.track(new Redis({ port, host: "127.0.0.1", maxRetriesPerRequest: 1 }));
  }

  /** An ioredis connection that makes no retry and ignores connection errors (a proxy or node may die under it). */
  quiet(port = this.defaultPort()): Redis {
    const c = new Redis({ port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
    c.on("error", () => {});
    return this.track(c);
  }

  /** A connection opened elsewhere, closed with the others. */
  track<C extends RawClient | Redis>(c: C): C {
    if (c instanceof RawClient) this.raws.push(c);
    else this.ios.push(c as Redis);
    return c;
  }

  closeAll(): void {
    for (const c of this.raws.splice(0)) c.close();
    for (const c of this.ios.splice(0)) c.disconnect();
  }
}
