import { gearsGuestSource, pythonGuestSource } from "./guest-bundles.js";
import type { PythonIsolate } from "./guest-isolate.js";

/**
 * Loads a Python script into a Pyodide isolate: the GearsBuilder library (the same
 * JavaScript engine RG.EXECUTE uses), RedisGears' Python API over it, then the script in
 * the session's globals. Afterwards the isolate answers the GearsGuest facade as a
 * JavaScript one does.
 */
export async function loadPythonScript(isolate: PythonIsolate, script: string): Promise<void> {
  await isolate.evalScript(gearsGuestSource(), "gears-library");
  await isolate.evalPython(pythonGuestSource(), "gears-python");
  // A JSON string is a valid Python string literal (same escapes; other characters as they are).
  await isolate.evalPython(`_gears_run_script(${JSON.stringify(script)})`, "gears-python-run");
}
