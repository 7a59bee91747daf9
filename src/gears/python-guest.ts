import { gearsGuestSource, pythonGuestSource } from "./guest-bundles.js";
import type { PythonIsolate } from "./guest-isolate.js";

/**
 * Readies a Pyodide isolate for RG.PYEXECUTE: the GearsBuilder library (the same JavaScript
 * engine RG.EXECUTE uses), then RedisGears' Python API over it. The pool runs this while the
 * isolate waits warm, so that a script does not wait for it.
 */
export async function preparePythonIsolate(isolate: PythonIsolate): Promise<void> {
  await isolate.evalScript(gearsGuestSource(), "gears-library");
  await isolate.evalPython(pythonGuestSource(), "gears-python");
}

/**
 * Runs a Python script, in the session's globals, in an isolate preparePythonIsolate()
 * readied. Afterwards the isolate answers the GearsGuest facade as a JavaScript one does.
 */
export async function loadPythonScript(isolate: PythonIsolate, script: string): Promise<void> {
  // A JSON string is a valid Python string literal (same escapes; other characters as they are).
  await isolate.evalPython(`_gears_run_script(${JSON.stringify(script)})`, "gears-python-run");
}
