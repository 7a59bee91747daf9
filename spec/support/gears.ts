/**
 * Helpers of the gears spec files: ioredis connections, pipelines, error replies and
 * RG.EXECUTE's `[results, errors]` reply.
 */
import { expect } from "chai";
import { Redis, type RedisOptions } from "ioredis";

/** An ioredis connection to 127.0.0.1:port that does not retry. */
export function connect(port: number, options: RedisOptions = {}): Redis {
  return new Redis({ port, host: "127.0.0.1", maxRetriesPerRequest: 0, ...options });
}

/** Runs a pipeline; any error reply fails the test. */
export async function execAll(p: ReturnType<Redis["pipeline"]>): Promise<unknown[]> {
  const out = (await p.exec()) ?? [];
  for (const [err] of out) if (err) throw err;
  return out.map(([, value]) => value);
}

/** A reply as ioredis hands it over (bulk strings as strings). */
export type Reply = string | number | null | Error | Reply[];

export interface Outcome {
  results: Reply[];
  errors: string[];
}

export function asArray(v: unknown, what: string): Reply[] {
  if (!Array.isArray(v)) throw new Error(`${what}: expected an array, got ${JSON.stringify(v)}`);
  return v as Reply[];
}

export function str(v: unknown): string {
  if (typeof v !== "string") throw new Error(`expected a string, got ${JSON.stringify(v)}`);
  return v;
}

/** The message of a rejected promise (an error reply). */
export async function rejection(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
  throw new Error("expected an error reply");
}

/** A `[results, errors]` reply. */
export function outcome(reply: unknown, what = "[results, errors]"): Outcome {
  const a = asArray(reply, what);
  expect(a).to.have.length(2);
  return { results: asArray(a[0], "results"), errors: asArray(a[1], "errors").map(str) };
}

/** `[results, errors]` of a blocking RG.EXECUTE. */
export async function run(client: Redis, script: string): Promise<Outcome> {
  return outcome(await client.call("RG.EXECUTE", script), "RG.EXECUTE");
}
