/**
 * A thread's side of --threads (supervisor.ts): asks every thread through the supervisor and
 * answers their questions about its own clients, counters and executions, so that a user sees
 * one proxy.
 */
import { clientListText, killMatching } from "../client/client-command.js";
import { followConfigSet, type ProxyContext, type ThreadLink } from "../client/context.js";
import { proxySection } from "../client/info-command.js";
import { answerForElsewhere, findExecutionsElsewhere, type GearsCaller } from "../gears/commands.js";
import type { RegistrationCounters } from "../gears/registration-counters.js";
import type { GearsReply } from "../gears/result-chunks.js";
import { listStatsOf, type ListStats } from "../gears/tf/list-stats.js";
import { AggregatorRegistry } from "prom-client";
import { mergeSlowLogRows, type SlowLogRow } from "../observability/slowlog.js";
import {
  THREADS_ENV,
  THREAD_ENV,
  isThreadMessage,
  type AclChangeAnswer,
  type AclLogAnswer,
  type AclUsersAnswer,
  type ThreadMessage,
  type ThreadNote,
  type ThreadQuery,
} from "./messages.js";
import type { AccessControl, AclChange, AclOutcome } from "../acl/access-control.js";
import { mergeAclLogs, type AclLogEntry } from "../acl/acl-log.js";
import type { RemoteClients } from "../client/tracking/table.js";
import type { WritePeers } from "../gears/events/peer-writes.js";

/** A thread that does not answer a question about clients or counters within this is left out. */
const ASK_TIMEOUT_MS = 5000;
/**
 * How long a thread's keyspace triggers wait for the others to say who wrote a notification
 * (their journals wait up to a second for their writes' replies, then for a barrier).
 */
const KEY_WRITES_TIMEOUT_MS = 2000;

/** INFO proxy fields that are per thread and summed; the others are the asking thread's. */
const SUMMED = new Set([
  "connected_clients",
  "total_connections_received",
  "rejected_connections",
  "total_commands_processed",
  "protocol_errors",
  "client_output_limit_disconnections",
  "evicted_clients",
  "clients_memory",
  "used_memory_rss",
]);

const asBuffer = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** A SlowLogRow after the trip between processes (Buffers arrive as Uint8Arrays). */
type RowOnTheWire = [number, number, number, Uint8Array[], Uint8Array, Uint8Array];

/** Sums the SUMMED fields of the threads' proxy sections into the first one, and says how many threads. */
export function sumProxySections(sections: string[]): string {
  const totals = new Map<string, number>();
  for (const text of sections) {
    for (const line of text.split("\r\n")) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon);
      if (colon > 0 && SUMMED.has(name))
        totals.set(name, (totals.get(name) ?? 0) + Number(line.slice(colon + 1)));
    }
  }
  const lines = (sections[0] ?? "").split("\r\n").map((line) => {
    const name = line.slice(0, line.indexOf(":"));
    return totals.has(name) ? `${name}:${totals.get(name)}` : line;
  });
  const at = lines.findIndex((l) => l.startsWith("process_id:"));
  lines.splice(at + 1, 0, `threads:${sections.length}`);
  return lines.join("\r\n");
}

/** This process as one thread of a --threads proxy; null when it is not one. */
export function threadLinkFromEnv(): ClusterLink | null {
  const index = process.env[THREAD_ENV];
  const count = process.env[THREADS_ENV];
  if (index === undefined || count === undefined || process.send === undefined) return null;
  // The supervisor is gone (SIGKILLed): a thread does not outlive it.
  process.once("disconnect", () => process.exit(1));
  return new ClusterLink(Number(index), Number(count));
}

export class ClusterLink implements ThreadLink, RemoteClients {
  private ctx: ProxyContext | null = null;
  private nextId = 1;
  private readonly asked = new Map<number, (answers: unknown[]) => void>();
  /** Told when the supervisor asks for a graceful shutdown. */
  onStop: () => void = () => {};
  /** The supervisor's id of the last ACL change this thread applied (ids grow in the supervisor's order). */
  private aclGeneration = 0;
  /**
   * While this thread waits for the running threads' users (it just started), the ACL changes
   * that arrive, to apply on top of them; null once it has them.
   */
  private aclSyncing: { id: number; change: AclChange; by: number }[] | null = null;

  constructor(
    readonly index: number,
    readonly count: number,
  ) {}

  serve(ctx: ProxyContext): void {
    this.ctx = ctx;
    ctx.tracking.remote = this;
    process.on("message", (message: unknown) => {
      if (isThreadMessage(message)) this.receive(message);
    });
    findExecutionsElsewhere(ctx.gears, {
      byId: (name, args, caller) => this.gears(name, args, caller),
      dump: () => this.gearsDump(),
    });
    const toldConfig =
      (via: "rg" | "config") =>
      (pairs: [string, string][]): Promise<void> =>
        this.applied({ kind: "gears-config", pairs, via, from: this.index });
    ctx.gears.config.told = toldConfig("rg");
    ctx.gears.config.tf.told = toldConfig("config");
    ctx.gears.registrationsElsewhere = {
      counters: async () => {
        const answers = await this.ask({ kind: "registration-counters", from: this.index }, ASK_TIMEOUT_MS);
        return answers.filter(
          (a): a is Record<string, RegistrationCounters> => typeof a === "object" && a !== null,
        );
      },
      clearStats: () => this.applied({ kind: "registrations-clear-stats", from: this.index }),
      setPaused: (ids, paused) =>
        this.applied({ kind: "registrations-pause", ids, paused, from: this.index }),
    };
    ctx.gears.tf.listStatsElsewhere = {
      stats: async (library) => {
        const answers = await this.ask({ kind: "tf-list-stats", library, from: this.index }, ASK_TIMEOUT_MS);
        return answers.filter((a): a is ListStats => typeof a === "object" && a !== null);
      },
    };
    ctx.gears.peersFollow = () => this.applied({ kind: "follow-store", from: this.index });
    if (this.count > 1) ctx.gears.tf.keyspaceTriggers.joinPeers(this.writePeers());
    const acl = ctx.acl;
    if (acl !== null) {
      acl.peers = {
        change: (change, by) => this.aclChange(change, by),
        log: (count) => this.aclLog(count),
        resetLog: () => this.applied({ kind: "acl-log-reset" }),
      };
      // Changes reach this thread from now on (it is ready); the users changed before come
      // from a running thread (ACL SETUSER since the start), not from the aclfile.
      this.aclSyncing = [];
    }
    this.send({ t: "ready" });
    if (acl !== null)
      void this.ask({ kind: "acl-users" }, ASK_TIMEOUT_MS).then((answers) => this.adoptUsers(acl, answers));
  }

  /**
   * ACL SETUSER/DELUSER/LOAD on every thread: this thread's outcome; an error when a thread did
   * not answer (the users may then differ between threads: said, never silent).
   */
  private async aclChange(change: AclChange, by: number): Promise<AclOutcome> {
    const answers = (await this.ask({ kind: "acl-change", change, by }, ASK_TIMEOUT_MS)) as AclChangeAnswer[];
    const outcomes = answers.filter((a) => typeof a === "object" && a !== null && "thread" in a);
    const applied = outcomes.flatMap((a) => ("outcome" in a ? [a] : []));
    const mine = applied.find((a) => a.thread === this.index) ?? applied[0];
    const agreed = applied.every((a) => JSON.stringify(a.outcome) === JSON.stringify(mine?.outcome));
    if (mine === undefined || outcomes.length < this.count || !agreed) {
      this.ctx?.log.error(
        { change: change.op, answered: outcomes.length, threads: this.count, agreed },
        "an ACL change did not reach every thread alike",
      );
      return {
        error: `ERR the ACL change reached ${outcomes.length} of ${this.count} threads${agreed ? "" : " with different outcomes"}: the threads' users may differ (see the proxy's log)`,
      };
    }
    return mine.outcome;
  }

  private async aclLog(count: number): Promise<AclLogEntry[]> {
    const answers = await this.ask({ kind: "acl-log", count }, ASK_TIMEOUT_MS);
    return mergeAclLogs(
      answers.filter((a): a is AclLogAnswer => Array.isArray(a)),
      count,
    );
  }

  /** This thread starting: the users of the running threads, then the changes that came meanwhile. */
  private adoptUsers(acl: AccessControl, answers: unknown[]): void {
    const states = answers.filter(
      (a): a is AclUsersAnswer => typeof a === "object" && a !== null && "lines" in a,
    );
    const newest = states.sort((x, y) => y.generation - x.generation)[0];
    const pending = this.aclSyncing ?? [];
    this.aclSyncing = null;
    // None: this is the only thread, or all start together (all read the same aclfile).
    const generation = newest?.generation ?? 0;
    if (newest !== undefined) {
      const outcome = acl.apply({ op: "sync", lines: newest.lines }, 0);
      if ("error" in outcome)
        this.ctx?.log.error({ error: outcome.error }, "could not take the other threads' ACL users");
      this.aclGeneration = Math.max(this.aclGeneration, generation);
    }
    if (answers.length === 0) {
      // Not even this thread answered in time: the running threads' users never came.
      this.ctx?.log.error(
        "a thread started with the users of the aclfile (or --user lines): the other threads did not tell theirs",
      );
    }
    for (const { id, change, by } of pending) {
      if (id <= generation) continue;
      acl.apply(change, by);
      this.aclGeneration = Math.max(this.aclGeneration, id);
    }
  }

  async clientList(args: string[]): Promise<string> {
    const answers = await this.ask({ kind: "client-list", args }, ASK_TIMEOUT_MS);
    return answers.filter((a): a is string => typeof a === "string").join("");
  }

  async clientKill(args: string[], callerId: number): Promise<number> {
    // The asking thread checked the filters; another may refuse a USER it has no client of.
    const answers = await this.ask({ kind: "client-kill", args, callerId }, ASK_TIMEOUT_MS);
    return answers.reduce<number>((n, a) => n + (typeof a === "number" ? a : 0), 0);
  }

  async clientUnblock(id: number, withError: boolean): Promise<number> {
    const answers = await this.ask({ kind: "client-unblock", id, withError }, ASK_TIMEOUT_MS);
    return answers.some((a) => a === 1) ? 1 : 0;
  }

  async proxySection(): Promise<string> {
    const answers = await this.ask({ kind: "info" }, ASK_TIMEOUT_MS);
    const sections = answers.filter((a): a is string => typeof a === "string");
    // The fields not summed (port, uptime, upstreams) are this thread's.
    const mine = `\r\nprocess_id:${process.pid}\r\n`;
    sections.sort((a, b) => Number(b.includes(mine)) - Number(a.includes(mine)));
    return sumProxySections(sections);
  }

  async slowlogGet(count: number): Promise<SlowLogRow[]> {
    const answers = await this.ask({ kind: "slowlog-get", count }, ASK_TIMEOUT_MS);
    const lists = answers.filter((a): a is RowOnTheWire[] => Array.isArray(a));
    return mergeSlowLogRows(
      lists.map((rows) =>
        rows.map(([id, at, us, argv, addr, name]) => [
          id,
          at,
          us,
          argv.map(asBuffer),
          asBuffer(addr),
          asBuffer(name),
        ]),
      ),
      count,
    );
  }

  async slowlogLen(): Promise<number> {
    const answers = await this.ask({ kind: "slowlog-len" }, ASK_TIMEOUT_MS);
    return answers.reduce<number>((n, a) => n + (typeof a === "number" ? a : 0), 0);
  }

  async slowlogReset(): Promise<void> {
    await this.ask({ kind: "slowlog-reset" }, ASK_TIMEOUT_MS);
  }

  configSet(argv: readonly Buffer[]): void {
    void this.ask({ kind: "config-set", argv: [...argv], from: this.index }, ASK_TIMEOUT_MS);
  }

  async metricsText(): Promise<string> {
    const answers = await this.ask({ kind: "metrics" }, ASK_TIMEOUT_MS);
    // Counters and histograms add up; prom-client's gauges say how they combine (sum by default).
    return AggregatorRegistry.aggregate(answers.filter((a): a is object[] => Array.isArray(a))).metrics();
  }

  /** An execution-id command for an execution another thread ran; null when none did. */
  private async gears(name: string, args: Buffer[], caller: GearsCaller): Promise<GearsReply | null> {
    // No timeout: RG.GETRESULTSBLOCKING waits for the execution as long as it runs.
    const answers = await this.ask({ kind: "gears", name, args, caller }, 0);
    for (const a of answers) {
      if (a instanceof Uint8Array) return asBuffer(a);
      if (Array.isArray(a)) return a.map((part) => asBuffer(part as Uint8Array));
    }
    return null;
  }

  /** Who wrote which keys, between this thread's keyspace triggers and the other threads'. */
  private writePeers(): WritePeers {
    return {
      tell: (writes) => {
        for (let thread = 0; thread < this.count; thread++)
          if (thread !== this.index) this.tell(thread, { kind: "key-writes", writes });
      },
      settle: async (keys) => {
        const query: ThreadQuery = { kind: "key-writes-settle", keys, from: this.index };
        const answers = await this.ask(query, KEY_WRITES_TIMEOUT_MS);
        return answers.flatMap((a) => (Array.isArray(a) ? a.filter((k) => typeof k === "string") : []));
      },
    };
  }

  /** Every thread's RG.DUMPEXECUTIONS of its own executions (this one's too). */
  private async gearsDump(): Promise<Buffer[]> {
    const answers = await this.ask(
      { kind: "gears", name: "rg.dumpexecutions", args: [], caller: null },
      ASK_TIMEOUT_MS,
    );
    return answers.filter((a): a is Uint8Array => a instanceof Uint8Array).map(asBuffer);
  }

  /** The thread that deals client id `id` (ClientRegistry: index + 1, then every count-th). */
  private threadOf(id: number): number {
    return (((id - 1) % this.count) + this.count) % this.count;
  }

  elsewhere(id: number): boolean {
    return id > 0 && this.threadOf(id) !== this.index;
  }

  invalidate(to: number, from: number, values: readonly Buffer[]): void {
    this.tell(this.threadOf(to), { kind: "tracking-invalidate", to, from, values: [...values] });
  }

  private tell(thread: number, note: ThreadNote): void {
    this.send({ t: "tell", thread, note });
  }

  private noted(note: ThreadNote): void {
    if (note.kind === "key-writes") {
      // With more than two threads, those of shards a third one handles are its business.
      const gears = this.ctx?.gears;
      return gears?.tf.keyspaceTriggers.peerWrites(
        note.writes.filter((w) => gears.registry.ownsShard(w.shard)),
      );
    }
    const tracking = this.ctx?.tracking;
    if (tracking === undefined) return;
    if (note.kind === "tracking-broken") return tracking.redirectBroken(note.to, note.redirect);
    if (!tracking.deliverRedirected(note.to, note.values.map(asBuffer)))
      this.tell(this.threadOf(note.from), { kind: "tracking-broken", to: note.from, redirect: note.to });
  }

  /** Resolves once every thread answered `query` (applied it), or ASK_TIMEOUT_MS passed. */
  private async applied(query: ThreadQuery): Promise<void> {
    await this.ask(query, ASK_TIMEOUT_MS);
  }

  private ask(query: ThreadQuery, timeoutMs: number): Promise<unknown[]> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.asked.delete(id);
              resolve([]);
            }, timeoutMs)
          : null;
      this.asked.set(id, (answers) => {
        if (timer !== null) clearTimeout(timer);
        resolve(answers);
      });
      this.send({ t: "ask", id, query });
    });
  }

  private send(message: ThreadMessage): void {
    // A failed write means the supervisor is gone: 'disconnect' (above) ends this thread, so the
    // error needs no 'error' event of its own.
    process.send?.(message, undefined, undefined, () => {});
  }

  private receive(message: ThreadMessage): void {
    if (message.t === "answers") {
      const done = this.asked.get(message.id);
      this.asked.delete(message.id);
      done?.(message.answers);
    } else if (message.t === "query") {
      void this.answer(message.query, message.id).then(
        (answer) => this.send({ t: "answer", id: message.id, answer }),
        (err: unknown) => this.send({ t: "answer", id: message.id, answer: `ERR ${String(err)}` }),
      );
    } else if (message.t === "tell") this.noted(message.note);
    else if (message.t === "stop") this.onStop();
  }

  /** `id`: the supervisor's id of the query (they grow in the order it relays them). */
  private async answer(query: ThreadQuery, id: number): Promise<unknown> {
    const ctx = this.ctx;
    if (ctx === null) return null;
    // A query naming its sender is for the other threads: the sender did its part already
    // (or answers for itself), and its null answer is left out by the asker.
    if ("from" in query && query.from === this.index) return null;
    switch (query.kind) {
      case "acl-change": {
        // Applied at once (before any await): the changes keep the supervisor's order.
        if (ctx.acl === null) return null;
        if (this.aclSyncing !== null) {
          this.aclSyncing.push({ id, change: query.change, by: query.by });
          return { thread: this.index, syncing: true } satisfies AclChangeAnswer;
        }
        this.aclGeneration = id;
        return {
          thread: this.index,
          outcome: ctx.acl.apply(query.change, query.by),
        } satisfies AclChangeAnswer;
      }
      case "acl-users":
        // A thread still waiting for the others' users has none to give.
        if (ctx.acl === null || this.aclSyncing !== null) return null;
        return { generation: this.aclGeneration, lines: ctx.acl.lines() } satisfies AclUsersAnswer;
      case "acl-log":
        return ctx.acl?.log.newest(query.count) ?? [];
      case "acl-log-reset":
        ctx.acl?.log.reset();
        return null;
      case "client-list":
        return clientListText(ctx.clients.all(), query.args) ?? "";
      case "client-kill":
        return killMatching(ctx, query.args, query.callerId);
      case "client-unblock":
        return ctx.clients.get(query.id)?.unblock(query.withError) ?? 0;
      case "info":
        return proxySection(ctx);
      case "metrics":
        return ctx.metrics === null ? null : ctx.metrics.registry.getMetricsAsJSON();
      case "slowlog-get":
        return ctx.slowlog.rows(query.count, this);
      case "slowlog-len":
        return ctx.slowlog.length;
      case "slowlog-reset":
        ctx.slowlog.reset();
        return null;
      case "config-set": {
        // The asking thread followed it as the command passed (dispatch.ts).
        followConfigSet(ctx, query.argv.map(asBuffer));
        return null;
      }
      case "key-writes-settle":
        return ctx.gears.tf.keyspaceTriggers.settleForPeer(query.keys);
      case "gears":
        return answerForElsewhere(
          ctx.gears,
          query.name,
          query.args.map(asBuffer),
          query.caller as GearsCaller,
        );
      case "follow-store":
        // The writing thread waits for this answer outside its store queues.
        await ctx.gears.followStoreNow();
        return null;
      case "registration-counters":
        return ctx.gears.registrationCounters();
      case "registrations-clear-stats":
        ctx.gears.registry.clearStats();
        return null;
      case "registrations-pause":
        for (const id of query.ids)
          if (ctx.gears.registry.checkPausable(id, query.paused) === null)
            ctx.gears.registry.setPaused(id, query.paused);
        return null;
      case "tf-list-stats":
        return listStatsOf(ctx.gears.tf, query.library);
      case "gears-config":
        ctx.gears.config.followSet(query.pairs, query.via);
        return null;
    }
  }
}
