/**
 * Helpers of the registration spec files: RG.DUMPREGISTRATIONS / RG.DUMPSESSIONS parsed,
 * RG.EXECUTE; the polling helpers of ./polling.js are re-exported for them.
 */
import { expect } from "chai";
import type { Redis } from "ioredis";

export { eventually, sleep, stable } from "./polling.js";

export function asArray(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what}: expected an array, got ${JSON.stringify(v)}`);
  return v as unknown[];
}

export function str(v: unknown, what = "value"): string {
  if (typeof v !== "string") throw new Error(`${what}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}

/** A flat [name, value, name, value...] array as a map. */
export function fields(v: unknown, what: string): Map<string, unknown> {
  const list = asArray(v, what);
  const out = new Map<string, unknown>();
  for (let i = 0; i + 1 < list.length; i += 2) out.set(str(list[i], `${what} field name`), list[i + 1]);
  return out;
}

export interface Stats {
  mode: string;
  numTriggered: number;
  numSuccess: number;
  numFailures: number;
  numAborted: number;
  lastRunDurationMS: number;
  totalRunDurationMS: number;
  lastError: string | null;
}

export interface RegistrationInfo {
  id: string;
  reader: string;
  desc: unknown;
  session: string;
  stats: Stats;
  args: Map<string, unknown>;
  /** Every RegistrationData field, for the reader-specific ones. */
  data: Map<string, unknown>;
}

export interface SessionInfo {
  id: string;
  description: unknown;
  registrations: string[];
}

export function num(v: unknown, what: string): number {
  if (typeof v !== "number") throw new Error(`${what}: expected an integer, got ${JSON.stringify(v)}`);
  return v;
}

/** RG.DUMPREGISTRATIONS, parsed. */
export async function registrations(c: Redis): Promise<RegistrationInfo[]> {
  const reply = asArray(await c.call("RG.DUMPREGISTRATIONS"), "RG.DUMPREGISTRATIONS");
  return reply.map((entry) => {
    const top = fields(entry, "registration");
    const data = fields(top.get("RegistrationData"), "RegistrationData");
    const lastError = data.get("lastError");
    return {
      id: str(top.get("id"), "id"),
      reader: str(top.get("reader"), "reader"),
      desc: top.get("desc"),
      session: str(top.get("session"), "session"),
      stats: {
        mode: str(data.get("mode"), "mode"),
        numTriggered: num(data.get("numTriggered"), "numTriggered"),
        numSuccess: num(data.get("numSuccess"), "numSuccess"),
        numFailures: num(data.get("numFailures"), "numFailures"),
        numAborted: num(data.get("numAborted"), "numAborted"),
        lastRunDurationMS: num(data.get("lastRunDurationMS"), "lastRunDurationMS"),
        totalRunDurationMS: num(data.get("totalRunDurationMS"), "totalRunDurationMS"),
        lastError: lastError === null ? null : str(lastError, "lastError"),
      },
      args: fields(data.get("args"), "args"),
      data,
    };
  });
}

/** The registrations of one session. */
export async function registrationsOf(c: Redis, session: string): Promise<RegistrationInfo[]> {
  return (await registrations(c)).filter((r) => r.session === session);
}

/** The one registration of a session. */
export async function onlyRegistrationOf(c: Redis, session: string): Promise<RegistrationInfo> {
  const regs = await registrationsOf(c, session);
  expect(regs, `registrations of session ${session}`).to.have.length(1);
  return regs[0];
}

export async function statsOf(c: Redis, id: string): Promise<Stats> {
  const reg = (await registrations(c)).find((r) => r.id === id);
  if (reg === undefined) throw new Error(`registration ${id} is not in RG.DUMPREGISTRATIONS`);
  return reg.stats;
}

/** RG.DUMPSESSIONS [args], parsed. */
export async function sessions(c: Redis, ...args: string[]): Promise<SessionInfo[]> {
  const reply = asArray(await c.call("RG.DUMPSESSIONS", ...args), "RG.DUMPSESSIONS");
  return reply.map((entry) => {
    const f = fields(entry, "session");
    return {
      id: str(f.get("ID"), "ID"),
      description: f.get("sessionDescription"),
      registrations: asArray(f.get("registrations"), "registrations").map((r) => str(r, "registration id")),
    };
  });
}

/** RG.EXECUTE <script> [options...]: the reply (OK for a script that registered). */
export async function execute(c: Redis, script: string, ...options: string[]): Promise<unknown> {
  return c.call("RG.EXECUTE", script, ...options);
}

/** The message of a rejected promise (an error reply). */
export async function rejection(promise: Promise<unknown>): Promise<string> {
  let value: unknown;
  try {
    value = await promise;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  throw new Error(`expected an error reply, got ${JSON.stringify(value)}`);
}
