import { encodeValue } from "../resp/encode.js";
import type { JsonValue } from "../sandbox/types.js";
import { encodeResultItems } from "./json-values.js";

/** A reply as one buffer, or as buffers written one after another (a large result set). */
export type GearsReply = Buffer | Buffer[];

/** The gears setting that bounds the bytes one execution's results may hold in the proxy. */
export const MAX_RESULTS_SETTING = "MaxResultsMB";

/** Results past MaxResultsMB: the execution stops, and says which setting to raise. */
export class ResultsTooLarge extends Error {
  constructor(limitMb: number) {
    super(
      `the results exceed ${MAX_RESULTS_SETTING} (${limitMb} MB): the execution was stopped and its results dropped; ` +
        `raise it with RG.CONFIGSET ${MAX_RESULTS_SETTING} <MB>, or reduce the results in the script (count(), limit(), aggregate())`,
    );
  }
}

/** The largest slab results are copied into; the first ones are smaller, for small result sets. */
const SLAB_MAX = 1024 * 1024;
const SLAB_MIN = 16 * 1024;

/**
 * An execution's results as RESP bytes, by partition: the set is held once, compactly, and
 * the reply is written from these buffers without joining them (the results keep the order
 * they would have as one list: partition by partition, each in the order its records were
 * made). The batches the guest hands over are copied into slabs that double up to 1 MB, and
 * a partition's consecutive batches in one slab are one view: a million results are a few
 * dozen buffers, not one allocation per batch among the reading's short-lived ones.
 */
export class ResultChunks {
  private readonly chunks: Buffer[][];
  private readonly counts: number[];
  private total = 0;
  private size = 0;
  private slab: Buffer | null = null;
  private slabUsed = 0;

  constructor(
    partitions: number,
    /** collect: false in run(): one list of results per partition. */
    private readonly byPartition: boolean,
    /** The bound on `bytes`, in MB (0: none). */
    private readonly limitMb: number,
  ) {
    this.chunks = Array.from({ length: partitions }, () => []);
    this.counts = new Array<number>(partitions).fill(0);
  }

  /** How many results (how many lists, by partition). */
  get count(): number {
    return this.byPartition ? this.chunks.length : this.total;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.size;
  }

  /**
   * Adds a batch of one partition's results (values, or `count` results already in RESP);
   * throws ResultsTooLarge past the limit.
   */
  add(partition: number, values: JsonValue[] | string, count = values.length): void {
    if (count === 0) return;
    const chunk = typeof values === "string" ? values : encodeResultItems(values);
    const length = typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.length;
    this.size += length;
    if (this.limitMb > 0 && this.size > this.limitMb * 1024 * 1024) {
      this.clear();
      throw new ResultsTooLarge(this.limitMb);
    }
    this.place(this.chunks[partition], chunk, length);
    this.counts[partition] += count;
    this.total += count;
  }

  /** Copies a batch into the current slab (a new one when it is full), or keeps it apart when large. */
  private place(list: Buffer[], chunk: string | Buffer, length: number): void {
    if (length > SLAB_MAX / 4) {
      list.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
      return;
    }
    if (this.slab === null || this.slabUsed + length > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(Math.min(SLAB_MAX, Math.max(SLAB_MIN, this.size, length)));
      this.slabUsed = 0;
    }
    const slab = this.slab;
    const start = this.slabUsed;
    if (typeof chunk === "string") slab.write(chunk, start);
    else chunk.copy(slab, start);
    this.slabUsed += length;
    const last = list.at(-1);
    // The partition's previous batch ends where this one starts: one view for both.
    if (
      last !== undefined &&
      last.buffer === slab.buffer &&
      last.byteOffset + last.length === slab.byteOffset + start
    )
      list[list.length - 1] = slab.subarray(last.byteOffset - slab.byteOffset, this.slabUsed);
    else list.push(slab.subarray(start, this.slabUsed));
  }

  clear(): void {
    for (const list of this.chunks) list.length = 0;
    this.counts.fill(0);
    this.total = 0;
    this.size = 0;
    this.slab = null;
    this.slabUsed = 0;
  }

  /** `[results, errors]` as buffers to write in order: headers, then the batches as they are. */
  reply(errors: string[]): Buffer[] {
    const out: Buffer[] = [];
    if (this.byPartition) {
      out.push(Buffer.from(`*2\r\n*${this.chunks.length}\r\n`));
      this.chunks.forEach((list, p) => {
        out.push(Buffer.from(`*${this.counts[p]}\r\n`));
        for (const chunk of list) out.push(chunk);
      });
    } else {
      out.push(Buffer.from(`*2\r\n*${this.total}\r\n`));
      for (const list of this.chunks) for (const chunk of list) out.push(chunk);
    }
    out.push(encodeValue(errors.map((e) => Buffer.from(e))));
    return out;
  }
}
