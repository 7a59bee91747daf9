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

/**
 * An execution's results as RESP bytes, one buffer per batch the guest handed over, by
 * partition: the set is held once, compactly, and the reply is written from these buffers
 * without joining them (the results keep the order they would have as one list: partition
 * by partition, each in the order its records were made).
 */
export class ResultChunks {
  private readonly chunks: Buffer[][];
  private readonly counts: number[];
  private total = 0;
  private size = 0;

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
    const chunk = typeof values === "string" ? Buffer.from(values) : encodeResultItems(values);
    this.size += chunk.length;
    if (this.limitMb > 0 && this.size > this.limitMb * 1024 * 1024) {
      this.clear();
      throw new ResultsTooLarge(this.limitMb);
    }
    this.chunks[partition].push(chunk);
    this.counts[partition] += count;
    this.total += count;
  }

  clear(): void {
    for (const list of this.chunks) list.length = 0;
    this.counts.fill(0);
    this.total = 0;
    this.size = 0;
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
