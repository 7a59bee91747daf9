import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The repository's own virtualenv (gitignored), made on first use. */
const VENV = path.resolve(".venv");
const PYTHON = path.join(VENV, "bin", "python");

let ready: Promise<string> | null = null;

/** A python with redis-py 8 installed: creates .venv and installs it with pip if needed. */
export function redisPy(): Promise<string> {
  ready ??= (async () => {
    if (!fs.existsSync(PYTHON)) await run("python3", ["-m", "venv", VENV]);
    try {
      await run(PYTHON, [
        "-c",
        "import redis, sys; sys.exit(0 if redis.__version__.startswith('8.') else 1)",
      ]);
    } catch {
      await run(PYTHON, ["-m", "pip", "install", "-q", "redis>=8,<9"], { timeout: 180_000 });
    }
    return PYTHON;
  })();
  return ready;
}

/** Runs a python script with redis-py; resolves with its output even when it exits non-zero. */
export async function runPython(script: string, args: string[]): Promise<{ code: number; output: string }> {
  const python = await redisPy();
  try {
    const { stdout, stderr } = await run(python, [script, ...args], { timeout: 120_000 });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : 1, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}
