/** The first line of a T&F library: `#!js api_version=1.0 name=<lib>` (reference 1.1, 1.6). */

export interface Prologue {
  engine: string;
  apiVersion: string;
  name: string;
}

const SUPPORTED = ["1.0", "1.1"];

const INVALID =
  'Invalid or missing prologue. The rules for the prologue are: a) It starts on the first line. b) It is formatted as follows: "#!<engine name> <key>=<value>".';

/** The prologue of `code`, or T&F's error text. */
export function parsePrologue(code: string): Prologue | { error: string } {
  const end = code.indexOf("\n");
  const line = (end === -1 ? code : code.slice(0, end)).replace(/\r$/, "");
  if (!line.startsWith("#!")) return { error: INVALID };
  const parts = line
    .slice(2)
    .split(" ")
    .filter((p) => p !== "");
  if (parts.length === 0) return { error: INVALID };
  const engine = parts[0];
  const props = new Map<string, string>();
  const unknown: string[] = [];
  const duplicated: string[] = [];
  for (const part of parts.slice(1)) {
    const eq = part.indexOf("=");
    if (eq <= 0) return { error: INVALID };
    const key = part.slice(0, eq);
    if (key !== "api_version" && key !== "name") unknown.push(key);
    else if (props.has(key)) duplicated.push(key);
    props.set(key, part.slice(eq + 1));
  }
  if (unknown.length > 0) {
    return {
      error: `Unknown prologue properties provided: ${unknown.map((k) => `"${k}"`).join(", ")}. Known properties: api_version, name.`,
    };
  }
  if (duplicated.length > 0)
    return { error: `Duplicated prologue properties found: ${duplicated.join(", ")}.` };
  const version = props.get("api_version");
  if (version === undefined) return { error: "The api version is missing from the prologue." };
  const name = props.get("name");
  if (name === undefined) return { error: "The library name is missing from the prologue." };
  const m = /^(\d+)\.(\d+)$/.exec(version);
  if (m === null) {
    return {
      error: `The API version has been incorrectly specified: "${version}". The expected format is "<major>.<minor>". An example: "1.1".`,
    };
  }
  // Any 1.x runs with the newest compatible minor; 1.1 is the newest.
  if (m[1] !== "1") {
    return {
      error: `An unsupported API version was requested: ${version}. The supported versions are ${SUPPORTED.join(", ")}.`,
    };
  }
  const apiVersion = Number(m[2]) >= 1 ? "1.1" : "1.0";
  return { engine, apiVersion, name };
}
