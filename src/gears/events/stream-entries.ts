/** Stream entries as a StreamReader registration reads them from XREADGROUP and XAUTOCLAIM replies. */
import type { RespValue } from "../../resp/values.js";

export interface StreamEntry {
  id: string;
  value: Record<string, string>;
  /** Fields and values in order, latin1 (see StreamOptions.rawFields). */
  fields: string[];
}

/** A bulk or simple string reply as text; anything else (nil, an error, an array) as "". */
export function text(v: RespValue | undefined): string {
  return Buffer.isBuffer(v) || typeof v === "string" ? v.toString() : "";
}

/** Entries of an XREADGROUP/XAUTOCLAIM reply: `[[id, [f, v, ...]], ...]`; deleted ones have no fields. */
export function parseEntries(list: RespValue | undefined): StreamEntry[] {
  if (!Array.isArray(list)) return [];
  const entries: StreamEntry[] = [];
  for (const item of list) {
    if (!Array.isArray(item)) continue;
    const fields = item[1];
    const value: Record<string, string> = {};
    const raw: string[] = [];
    if (Array.isArray(fields)) {
      for (let i = 0; i + 1 < fields.length; i += 2) value[text(fields[i])] = text(fields[i + 1]);
      for (const f of fields) raw.push(Buffer.isBuffer(f) ? f.toString("latin1") : text(f));
    }
    entries.push({ id: text(item[0]), value, fields: raw });
  }
  return entries;
}

/** The time part of a stream id, for the lag the registration shows. */
export function idTime(id: string): number {
  return Number(id.slice(0, id.indexOf("-")));
}
