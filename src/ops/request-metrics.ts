import { Counter, type Metric, type Registry } from 'prom-client';
import type { RequestObservation } from '../http/observe';

/** The durations of one route and code: counts per bucket (not cumulative), as prom-client keeps them. */
interface Durations {
  labels: { route: string; code: string };
  buckets: Float64Array;
  sum: number;
  count: number;
}

/** One route, code and status: requests not yet handed to the counter, and where their durations go. */
interface Series {
  labels: { route: string; code: string; status: string };
  unscraped: number;
  durations: Durations;
}

/**
 * http_requests_total (a prom-client Counter) and http_request_duration_seconds (a histogram),
 * counted in plain numbers on the request's path. prom-client's labelled inc() and observe()
 * validate and hash their labels on every call: ~0.87 µs a request with the key that found the
 * child, 2 % of a cached launch's CPU (docs/performance.md). Here a request costs one Map lookup
 * and a few additions; the counter takes its counts when scraped (its collect()), and the
 * histogram answers a scrape in the shape prom-client's Histogram does, so /metrics,
 * Registry.merge and the cluster's aggregation read both as before
 * (test/ops/request-metrics.test.ts holds them to prom-client's own, sample for sample). Label
 * sets are bounded as before: routes from the specs, codes from the document.
 */
export class RequestMetrics {
  /** By route, then code, then status: looked up without building a key. */
  private readonly series = new Map<string, Map<number | null, Map<number, Series>>>();
  private readonly durations = new Map<string, Durations>();
  /** The histogram's upper bounds, ascending (+Inf implied). */
  private readonly bounds: readonly number[];

  constructor(
    registry: Registry,
    counter: { name: string; help: string },
    histogram: { name: string; help: string; buckets: readonly number[] },
  ) {
    this.bounds = [...histogram.buckets].sort((a, b) => a - b);
    const all = () => this.allSeries();
    new Counter({
      ...counter,
      labelNames: ['route', 'code', 'status'] as const,
      registers: [registry],
      collect() {
        for (const s of all()) {
          if (s.unscraped === 0) continue;
          this.inc(s.labels, s.unscraped);
          s.unscraped = 0;
        }
      },
    });
    registry.registerMetric(this.histogramMetric(histogram) as unknown as Metric);
  }

  observe({ route, code, status, seconds }: RequestObservation): void {
    const s = this.series.get(route)?.get(code)?.get(status) ?? this.addSeries(route, code, status);
    s.unscraped++;
    const d = s.durations;
    d.count++;
    d.sum += seconds;
    // The first bound at or above the value, as prom-client's findBound; past the last, +Inf only.
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (seconds <= bounds[i]!) {
        d.buckets[i]!++;
        break;
      }
    }
  }

  private addSeries(route: string, code: number | null, status: number): Series {
    const label = code === null ? 'none' : String(code);
    const key = `${route}\0${label}`;
    let durations = this.durations.get(key);
    if (!durations) {
      durations = { labels: { route, code: label }, buckets: new Float64Array(this.bounds.length), sum: 0, count: 0 };
      this.durations.set(key, durations);
    }
    const s = { labels: { route, code: label, status: String(status) }, unscraped: 0, durations };
    let byCode = this.series.get(route);
    if (!byCode) this.series.set(route, (byCode = new Map()));
    let byStatus = byCode.get(code);
    if (!byStatus) byCode.set(code, (byStatus = new Map()));
    byStatus.set(status, s);
    return s;
  }

  private *allSeries(): Iterable<Series> {
    for (const byCode of this.series.values()) for (const byStatus of byCode.values()) yield* byStatus.values();
  }

  /**
   * The histogram as prom-client's Registry reads a metric for /metrics, merge() and the cluster's
   * sum: name, help, type, aggregator, get(). Nothing here resets metrics, so it has no reset().
   */
  private histogramMetric({ name, help }: { name: string; help: string }) {
    const durations = this.durations;
    const bounds = this.bounds;
    const shape = { name, help, type: 'histogram', aggregator: 'sum' } as const;
    return {
      ...shape,
      get: async () => {
        const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
        for (const d of durations.values()) {
          let cumulative = 0;
          for (let i = 0; i < bounds.length; i++) {
            cumulative += d.buckets[i]!;
            values.push({ labels: { le: bounds[i]!, ...d.labels }, value: cumulative, metricName: `${name}_bucket` });
          }
          values.push({ labels: { le: '+Inf', ...d.labels }, value: d.count, metricName: `${name}_bucket` });
          values.push({ labels: { ...d.labels }, value: d.sum, metricName: `${name}_sum` });
          values.push({ labels: { ...d.labels }, value: d.count, metricName: `${name}_count` });
        }
        return { ...shape, values };
      },
    };
  }
}
