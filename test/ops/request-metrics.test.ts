import { expect } from 'chai';
import { AggregatorRegistry, Counter, Histogram, Registry } from 'prom-client';
import type { RequestObservation } from '../../src/http/observe';
import { RequestMetrics } from '../../src/ops/request-metrics';

const COUNTER = { name: 'test_http_requests_total', help: 'requests' };
const BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const HISTOGRAM = { name: 'test_http_request_duration_seconds', help: 'durations', buckets: BUCKETS };

/** prom-client's own Counter and Histogram, fed as the service fed them before RequestMetrics. */
function reference() {
  const registry = new Registry();
  const counter = new Counter({ ...COUNTER, labelNames: ['route', 'code', 'status'], registers: [registry] });
  const histogram = new Histogram({ ...HISTOGRAM, labelNames: ['route', 'code'], registers: [registry] });
  return {
    registry,
    observe({ route, code, status, seconds }: RequestObservation) {
      const c = code === null ? 'none' : String(code);
      counter.labels({ route, code: c, status: String(status) }).inc();
      histogram.labels({ route, code: c }).observe(seconds);
    },
  };
}

function ours() {
  const registry = new Registry();
  const metrics = new RequestMetrics(registry, COUNTER, HISTOGRAM);
  return { registry, observe: (sample: RequestObservation) => metrics.observe(sample) };
}

/** A scrape's samples, one line each, sorted: the same metrics in any label or series order compare equal. */
function samples(text: string): string[] {
  return text
    .split('\n')
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const m = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line)!;
      const labels = (m[2] ?? '').split(',').filter(Boolean).sort().join(',');
      return `${m[1]}{${labels}} ${m[3]}`;
    })
    .sort();
}

describe('request metrics (counted without prom-client on the request path)', () => {
  // Deterministic: the same observations on both sides, durations on and around every bound.
  let seed = 7;
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  const routes = ['login', 'get', 'update', 'unmatched', 'healthz'];
  const codes = [0, -1, -4, 404, null];
  const durations = [...BUCKETS, ...BUCKETS.map((b) => b * 1.0001), ...BUCKETS.map((b) => b * 0.5), 0, 12, 1e-7];
  const sample = (): RequestObservation => ({
    route: routes[Math.floor(random() * routes.length)]!,
    code: codes[Math.floor(random() * codes.length)]!,
    status: random() < 0.9 ? 200 : 503,
    seconds: random() < 0.5 ? durations[Math.floor(random() * durations.length)]! : random() * 0.2,
  });

  it('answers every scrape with the samples prom-client would, counts taken between scrapes included', async () => {
    const [a, b] = [ours(), reference()];
    let scraped = 0;
    for (const n of [1, 10, 0, 500, 3_000]) {
      for (let i = 0; i < n; i++) {
        const s = sample();
        a.observe(s);
        b.observe(s);
      }
      const [mine, theirs] = [await a.registry.metrics(), await b.registry.metrics()];
      expect(samples(mine)).to.deep.equal(samples(theirs));
      // The same page, comments included (HELP and TYPE lines).
      expect(mine.split('\n').filter((l) => l.startsWith('#'))).to.deep.equal(
        theirs.split('\n').filter((l) => l.startsWith('#')),
      );
      scraped++;
    }
    expect(scraped).to.equal(5);
    expect(samples(await a.registry.metrics()).length).to.be.above(100);
  });

  it('sums across workers as prom-client sums its own (WORKERS=N)', async () => {
    const workers = [ours(), ours(), ours()];
    const refs = [reference(), reference(), reference()];
    for (let i = 0; i < 2_000; i++) {
      const s = sample();
      workers[i % 3]!.observe(s);
      refs[i % 3]!.observe(s);
    }
    const summed = async (list: { registry: Registry }[]) =>
      AggregatorRegistry.aggregate(await Promise.all(list.map((w) => w.registry.getMetricsAsJSON()))).metrics();
    expect(samples(await summed(workers))).to.deep.equal(samples(await summed(refs)));
  });

  it('holds no series it was not given, and as many as label sets seen, however many requests', async () => {
    const a = ours();
    expect(samples(await a.registry.metrics())).to.deep.equal([]);
    for (let i = 0; i < 10_000; i++) a.observe({ route: 'get', code: i % 2 ? 0 : -4, status: 200, seconds: i / 1e6 });
    const lines = samples(await a.registry.metrics());
    // 2 counter series; 2 histogram series of 12 bounds, +Inf, sum and count.
    expect(lines).to.have.length(2 + 2 * 15);
    expect(lines).to.include('test_http_requests_total{code="0",route="get",status="200"} 5000');
    expect(lines).to.include('test_http_request_duration_seconds_count{code="-4",route="get"} 5000');
  });
});
