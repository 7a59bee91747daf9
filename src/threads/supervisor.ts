/**
 * --threads N: the process the user started forks N copies of itself (node:cluster), which
 * share its listening ports (the primary accepts and hands connections round-robin) and each
 * run a whole proxy with its own upstream connections. The primary serves no client: it relays
 * the threads' questions to each other (messages.ts), passes signals on, and replaces a thread
 * that died.
 *
 * Processes rather than worker threads: Node 20 cannot share a listening socket between worker
 * threads or hand an accepted one to them, so each would need its own port.
 */
import cluster, { type Worker } from "node:cluster";
import os from "node:os";
import type { Logger } from "../observability/log.js";
import type { HostPort } from "../config.js";
import { THREADS_ENV, THREAD_ENV, UPSTREAM_ENV, isThreadMessage, type ThreadMessage } from "./messages.js";

/** The event loops --threads asks for; null when the value is neither a positive integer nor `auto`. */
export function threadCount(value: string): number | null {
  if (value.trim().toLowerCase() === "auto") return os.availableParallelism();
  if (!/^\d+$/.test(value.trim())) return null;
  const n = Number(value);
  return n >= 1 ? n : null;
}

/** True in a process the supervisor forked. */
export function isThread(): boolean {
  return cluster.isWorker;
}

interface Pending {
  from: Worker;
  localId: number;
  answers: unknown[];
  waiting: Set<number>;
}

/** What the supervisor owns besides its threads: the redis-server it started for them. */
export interface Shared {
  /** Handed to every thread in place of --upstream. */
  upstream: HostPort;
  /** Awaited once every thread exited after a signal, before the supervisor exits. */
  stop(): Promise<void>;
}

/** The upstream the supervisor hands this thread, if it started one for them. */
export function upstreamFromSupervisor(): HostPort | null {
  const given = process.env[UPSTREAM_ENV];
  const colon = given?.lastIndexOf(":") ?? -1;
  if (given === undefined || colon < 0) return null;
  return { host: given.slice(0, colon), port: Number(given.slice(colon + 1)) };
}

/** Runs the primary until every thread exited after a signal; then exits the process. */
export function superviseThreads(
  count: number,
  log: Logger,
  shutdownTimeoutMs: number,
  shared?: Shared,
): void {
  // Buffers (gears replies) cross as bytes rather than as JSON.
  cluster.setupPrimary({ serialization: "advanced" });
  const threads = new Map<number, Worker>();
  /** Threads that answer questions (the others are still starting). */
  const ready = new Set<Worker>();
  const pending = new Map<number, Pending>();
  let nextId = 1;
  let stopping = false;

  // A thread killed a moment ago can still look connected: the write fails with EPIPE, reported
  // to the callback instead of as an 'error' event that would bring the supervisor down.
  const send = (worker: Worker, message: ThreadMessage): void => {
    if (!worker.isConnected()) return;
    worker.send(message, undefined, (err: Error | null) => {
      if (err) log.debug({ err, thread: worker.id }, "a message to a thread that is going away was lost");
    });
  };
  const settle = (id: number): void => {
    const p = pending.get(id);
    if (p === undefined || p.waiting.size > 0) return;
    pending.delete(id);
    send(p.from, { t: "answers", id: p.localId, answers: p.answers });
  };
  const relay = (worker: Worker, message: unknown): void => {
    if (!isThreadMessage(message)) return;
    if (message.t === "ready") ready.add(worker);
    else if (message.t === "ask") {
      const id = nextId++;
      const live = [...ready].filter((w) => w.isConnected());
      pending.set(id, {
        from: worker,
        localId: message.id,
        answers: [],
        waiting: new Set(live.map((w) => w.id)),
      });
      for (const w of live) send(w, { t: "query", id, query: message.query });
      settle(id);
    } else if (message.t === "tell") {
      const to = threads.get(message.thread);
      if (to !== undefined && ready.has(to)) send(to, message);
    } else if (message.t === "answer") {
      const p = pending.get(message.id);
      if (p === undefined || !p.waiting.delete(worker.id)) return;
      p.answers.push(message.answer);
      settle(message.id);
    }
  };
  const fork = (index: number): void => {
    const env: Record<string, string> = { [THREAD_ENV]: String(index), [THREADS_ENV]: String(count) };
    if (shared !== undefined) env[UPSTREAM_ENV] = `${shared.upstream.host}:${shared.upstream.port}`;
    const worker = cluster.fork(env);
    threads.set(index, worker);
    worker.on("message", (message: unknown) => relay(worker, message));
    // The IPC channel of a dying thread; its exit below is what the supervisor acts on.
    worker.on("error", (err: Error) => log.debug({ err, thread: index }, "a thread's channel failed"));
    worker.on("exit", (code, signal) => {
      if (threads.get(index) === worker) threads.delete(index);
      ready.delete(worker);
      // A question waits for no answer from a thread that is gone.
      for (const [id, p] of pending) if (p.waiting.delete(worker.id)) settle(id);
      if (stopping) {
        if (threads.size === 0)
          void (shared?.stop() ?? Promise.resolve()).then(
            () => process.exit(0),
            (err: unknown) => {
              log.error({ err }, "error while stopping the embedded redis-server");
              process.exit(1);
            },
          );
        return;
      }
      log.error({ thread: index, code, signal }, "a thread exited: starting another");
      fork(index);
    });
  };
  for (let i = 0; i < count; i++) fork(i);
  log.info({ threads: count }, `gears-proxy supervising ${count} threads`);

  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, "second signal: stopping the threads now");
      for (const w of threads.values()) w.process.kill("SIGKILL");
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, "shutting down the threads");
    // A message, not a signal: a terminal's Ctrl-C already signalled every thread, and a
    // second signal would make them exit at once.
    for (const w of threads.values()) send(w, { t: "stop" });
    setTimeout(() => {
      for (const w of threads.values()) w.process.kill("SIGKILL");
      process.exit(1);
    }, shutdownTimeoutMs + 2000).unref();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  // Each thread re-reads its TLS files (cli.ts); the supervisor holds none.
  process.on("SIGHUP", () => {
    for (const w of threads.values()) if (w.isConnected()) w.process.kill("SIGHUP");
  });
}
