import type { MemoryHolder } from "./memory-guard.js";
import type { TrackedClient } from "./tracking/table.js";

/** The part of a client session that other sessions may see or act on (CLIENT LIST/KILL). */
export interface ClientHandle extends MemoryHolder, TrackedClient {
  readonly id: number;
  readonly addr: string;
  readonly laddr: string;
  /** One line of CLIENT LIST / CLIENT INFO for this client. */
  describe(): string;
  /** True when idle timeouts do not apply (blocked, subscribed). */
  readonly exemptFromTimeout: boolean;
  readonly idleMs: number;
  /** When it connected (ms since the epoch): CLIENT KILL MAXAGE. */
  readonly createdAt: number;
  readonly name: string;
  /** The user it runs as (CLIENT KILL USER). */
  readonly userName: string;
  readonly isPubSub: boolean;
  /** Whether it subscribes the channel pattern `pattern` (PUBSUB NUMPAT counts it then). */
  subscribesPattern?(pattern: string): boolean;
  kill(reason: string): void;
  /** Proxy shutdown: no further command, the replies owed are written, then the connection ends. */
  shutdown(): Promise<void>;
  /**
   * CLIENT UNBLOCK: ends the blocking command this client waits on (ERROR: with an error);
   * resolves 1 when it was blocked, else 0.
   */
  unblock(withError: boolean): Promise<number>;
}

/** Every connected client, by id. */
export class ClientRegistry {
  private nextId: number;
  private readonly byId = new Map<number, ClientHandle>();

  /** Ids first, first + stride, ...: the threads of a --threads proxy never give the same id. */
  constructor(
    first = 1,
    private readonly stride = 1,
  ) {
    this.nextId = first;
  }

  get size(): number {
    return this.byId.size;
  }

  allocateId(): number {
    const id = this.nextId;
    this.nextId += this.stride;
    return id;
  }

  add(client: ClientHandle): void {
    this.byId.set(client.id, client);
  }

  remove(client: ClientHandle): void {
    this.byId.delete(client.id);
  }

  get(id: number): ClientHandle | undefined {
    return this.byId.get(id);
  }

  all(): IterableIterator<ClientHandle> {
    return this.byId.values();
  }
}
