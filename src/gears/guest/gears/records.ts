/**
 * Records as the host feeds them, made into the objects a script sees. Values that many
 * records share cross into the isolate once and records name them by index; a value too big
 * to send is read from Redis only if the script touches it.
 */
import { safeString } from "../core/errors.js";
import { host } from "../core/host.js";

/**
 * An event record whose value was too big to send along (a set a handler keeps adding
 * to): `value` is read from Redis the first time the handler touches it.
 */
function lazyValue(rec: { key: unknown; lazyValue?: boolean }): void {
  delete rec.lazyValue;
  Object.defineProperty(rec, "value", LAZY_VALUE);
}

function settleValue(rec: object, v: unknown): void {
  Object.defineProperty(rec, "value", { value: v, writable: true, enumerable: true, configurable: true });
}

/** One accessor shared by every lazy record (it reads `this`): no closures per record. */
const LAZY_VALUE: PropertyDescriptor = {
  get(this: { key: unknown }): unknown {
    const v = host.callSync("readValue", safeString(this.key));
    settleValue(this, v);
    return v;
  },
  set(this: object, v: unknown): void {
    settleValue(this, v);
  },
  enumerable: true,
  configurable: true,
};

/**
 * Event records sent as rows (entry.ts EventRows): four elements each, key, type, event and
 * the index of its value in `values` (-1: read lazily); or, for a record whose four fields
 * are those of an earlier row, that row's position in `rows` alone (a number where a key, a
 * string, would be). Each record is made whole, an object of its own, in the field order the
 * object form gives ({key, type, event, value}), with no field to delete.
 */
function recordsOfRows(rows: unknown[], values: unknown[], from: number[] | null): unknown[] {
  const out: unknown[] = [];
  for (let i = 0; i < rows.length;) {
    let at = i;
    const first = rows[i];
    if (typeof first === "number") {
      at = first;
      i++;
      if (!(at >= 0 && at < i - 1 && typeof rows[at] === "string"))
        throw new TypeError("bad event row reference");
    } else i += 4;
    const ref = rows[at + 3] as number;
    if (from !== null) from.push(at);
    if (ref >= 0) out.push({ key: rows[at], type: rows[at + 1], event: rows[at + 2], value: values[ref] });
    else {
      const rec = { key: rows[at], type: rows[at + 1], event: rows[at + 2] };
      Object.defineProperty(rec, "value", LAZY_VALUE);
      out.push(rec);
    }
  }
  return out;
}

/**
 * A feed's records made from rows, and where each came from (`from[i]`: the position of
 * record i's row in `rows`): what results.ts needs to name an unchanged record among the
 * results by its place in the host's input instead of writing it out.
 */
export interface RowsFed {
  records: unknown[];
  rows: unknown[];
  values: unknown[];
  from: number[];
  /** How many of `records` the feed took (ran through the pipeline). */
  taken: number;
}

/**
 * The records of one feed, as the script sees them, from any of the forms the host sends
 * (a list, its JSON text, or a packed object). Anything else is returned as it is, for
 * the caller to refuse. With `fed`, records made from rows are described there too
 * (RowsFed, `taken` 0); `fed.records` stays empty for the other forms.
 */
export function unpackRecords(records: unknown, fed?: RowsFed): unknown {
  let list: unknown = typeof records === "string" ? JSON.parse(records) : records;
  if (list !== null && typeof list === "object" && !Array.isArray(list)) {
    // {records, values}: records name their value by index, so a value that many
    // records share (events on one key) crosses into the isolate once.
    const packed = list as { records?: unknown; values?: unknown; rows?: unknown };
    const values = Array.isArray(packed.values) ? packed.values : [];
    list = packed.records;
    if (Array.isArray(packed.rows)) {
      const from = fed === undefined ? null : fed.from;
      list = recordsOfRows(packed.rows, values, from);
      if (fed !== undefined) {
        fed.records = list as unknown[];
        fed.rows = packed.rows;
        fed.values = values;
      }
    } else if (Array.isArray(list)) {
      for (const r of list) {
        if (
          r !== null &&
          typeof r === "object" &&
          typeof (r as { valueRef?: unknown }).valueRef === "number"
        ) {
          const rec = r as { valueRef?: number; value?: unknown };
          rec.value = values[rec.valueRef!];
          delete rec.valueRef;
        } else if (r !== null && typeof r === "object" && (r as { lazyValue?: unknown }).lazyValue === true) {
          lazyValue(r as { key: unknown; lazyValue?: boolean });
        }
      }
    }
  }
  return list;
}
