import autocannon from 'autocannon';

/** The client side, identical for every scenario and its floor. */
export interface LoadSettings {
  connections: number;
  pipelining: number;
  /** Seconds measured. */
  duration: number;
  /** Seconds of the same load, run first and thrown away. */
  warmup: number;
  /** Seconds before a request counts as timed out. */
  timeout: number;
}

export interface LoadResult {
  /** Responses received in the measured window (any status). */
  requests: number;
  seconds: number;
  rps: number;
  /** Latency percentiles in ms, from every response's own time (microsecond resolution). */
  p50: number;
  p99: number;
  max: number;
  /** Socket errors, timeouts included. */
  errors: number;
  non2xx: number;
  /** HTTP 2xx whose envelope is not {"code":0,…}: the service answered an error. */
  notOk: number;
}

export interface Target {
  url: string;
  /** Builds the next request body; called once per request. */
  body: () => string;
}

const OK_PREFIX = '{"code":0,';

/**
 * One autocannon run: POSTs of JSON bodies built per request by `setupRequest` (so openids
 * can be random or drawn without replacement), latencies taken from the 'response' event
 * (autocannon's own histogram has 1 ms buckets, too coarse for a few-ms p50), envelope codes
 * checked by `verifyBody`.
 */
export async function fire(
  target: Target,
  settings: LoadSettings,
  seconds: number,
  amount?: number,
): Promise<LoadResult> {
  const latencies: number[] = [];
  const options: autocannon.Options = {
    url: target.url,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    connections: settings.connections,
    pipelining: settings.pipelining,
    timeout: settings.timeout,
    ...(amount !== undefined ? { amount } : { duration: seconds }),
    requests: [
      {
        setupRequest: (req) => {
          req.body = target.body();
          return req;
        },
      },
    ],
    // autocannon hands over the body as a string (it concatenates the chunks).
    verifyBody: (body) => typeof body === 'string' && body.startsWith(OK_PREFIX),
  };
  const started = process.hrtime.bigint();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(options, (err, res) => (err ? reject(err as Error) : resolve(res)));
    instance.on('response', (_client, _status, _bytes, responseTime) => {
      latencies.push(responseTime);
    });
  });
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]! : 0;
  return {
    requests: latencies.length,
    seconds: elapsed,
    rps: latencies.length / elapsed,
    p50: pct(0.5),
    p99: pct(0.99),
    max: latencies.length ? latencies[latencies.length - 1]! : 0,
    errors: result.errors,
    non2xx: result.non2xx,
    notOk: result.mismatches,
  };
}

/** Warm-up (discarded), then the measured run. */
export async function measure(target: Target, settings: LoadSettings): Promise<LoadResult> {
  if (settings.warmup > 0) await fire(target, settings, settings.warmup);
  return fire(target, settings, settings.duration);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/**
 * Several measurements of one scenario (one per round) as one: the median of req/s, p50 and
 * p99 (the machine is noisy; a median shrugs off one disturbed round), the sums of counts.
 */
export function combine(results: LoadResult[]): LoadResult {
  return {
    requests: results.reduce((a, r) => a + r.requests, 0),
    seconds: results.reduce((a, r) => a + r.seconds, 0),
    rps: median(results.map((r) => r.rps)),
    p50: median(results.map((r) => r.p50)),
    p99: median(results.map((r) => r.p99)),
    max: Math.max(...results.map((r) => r.max)),
    errors: results.reduce((a, r) => a + r.errors, 0),
    non2xx: results.reduce((a, r) => a + r.non2xx, 0),
    notOk: results.reduce((a, r) => a + r.notOk, 0),
  };
}
