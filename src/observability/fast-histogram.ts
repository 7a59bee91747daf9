/**
 * A histogram with one label, cheap enough to observe every upstream request. Hand-written
 * because prom-client's labelled observe() re-validates and re-hashes its labels on each call,
 * a cost the request path cannot pay; here an observation is a bucket search and three adds.
 * prom-client's registry still formats it, as any of its own metrics.
 */
import type { Metric, Registry } from "prom-client";

interface Series {
  /** Observations per bucket, not cumulative; the last slot is above every bound (+Inf). */
  counts: Float64Array;
  sum: number;
  count: number;
}

/** One sample of the exposition: the registry writes `metricName{labels} value`. */
interface Sample {
  metricName: string;
  labels: Record<string, string>;
  value: number;
}

export class FastHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelName: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    // The registry only calls get() and reads name, help, type and aggregator.
    registry.registerMetric(this as unknown as Metric);
  }

  /** The function that records an observation for one label value. */
  observer(labelValue: string): (value: number) => void {
    let series = this.series.get(labelValue);
    if (series === undefined) {
      series = { counts: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 };
      this.series.set(labelValue, series);
    }
    const bounds = this.bounds;
    const target = series;
    return (value) => {
      let i = 0;
      while (i < bounds.length && value > bounds[i]) i++;
      target.counts[i]++;
      target.sum += value;
      target.count++;
    };
  }

  /** Observations so far per label value (a counter of the same events reads them at scrape). */
  counts(): [string, number][] {
    return [...this.series].map(([labelValue, series]) => [labelValue, series.count]);
  }

  /** What the registry prints: cumulative buckets, then the sum and the count, per label value. */
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }> {
    const values: Sample[] = [];
    for (const [labelValue, series] of this.series) {
      let cumulative = 0;
      series.counts.forEach((n, i) => {
        cumulative += n;
        const le = i < this.bounds.length ? String(this.bounds[i]) : "+Inf";
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { le, [this.labelName]: labelValue },
          value: cumulative,
        });
      });
      values.push({
        metricName: `${this.name}_sum`,
        labels: { [this.labelName]: labelValue },
        value: series.sum,
      });
      values.push({
        metricName: `${this.name}_count`,
        labels: { [this.labelName]: labelValue },
        value: series.count,
      });
    }
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }
}
