import cluster from 'node:cluster';
import { getHeapStatistics } from 'node:v8';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { RequestObservation } from '../http/observe';
import { RequestMetrics } from './request-metrics';

export interface PoolStats {
  used: number;
  free: number;
  pendingAcquires: number;
  pendingCreates: number;
  max: number;
}

/** Which store failed, and in which operation: the labels of the *_errors_total counters. */
export type Store = 'mysql' | 'redis';

const PREFIX = 'user_service_';

let processRegistry: Registry | undefined;

/**
 * prom-client's process and Node.js metrics (CPU, memory, event loop lag, GC, handles), once
 * per process: they describe the process, however many services a test builds in it.
 */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
    // Summed over the workers of WORKERS=N like every other metric, RSS would say nothing about
    // the bound each process has (its own heap cap): these two keep the largest process's.
    new Gauge({
      name: `${PREFIX}process_resident_memory_max_bytes`,
      help: 'Resident memory of the largest process (one process, or the largest worker of WORKERS=N)',
      aggregator: 'max',
      registers: [processRegistry],
      collect() {
        this.set(process.memoryUsage.rss());
      },
    });
    new Gauge({
      name: `${PREFIX}process_heap_limit_bytes`,
      help: "V8's heap limit of one process (--max-old-space-size and the young generation)",
      aggregator: 'max',
      registers: [processRegistry],
      collect() {
        this.set(getHeapStatistics().heap_size_limit);
      },
    });
  }
  return processRegistry;
}

/** The message a worker sends its primary to get every worker's metrics, and the answer. */
const SCRAPE = 'userServiceScrape';
interface ScrapeMessage {
  [SCRAPE]: 'ask' | 'answer';
  id: number;
  text?: string;
  error?: string;
}
const scrapeMessage = (message: unknown): ScrapeMessage | undefined =>
  typeof message === 'object' && message !== null && SCRAPE in message ? (message as ScrapeMessage) : undefined;

/** How long a worker waits for its primary's aggregated answer (prom-client gives workers 5 s). */
const SCRAPE_WAIT_MS = 6000;

/**
 * In the primary of WORKERS=N: answers a worker's scrape with the metrics of every worker,
 * summed (prom-client's AggregatorRegistry asks each over IPC). The primary serves no HTTP, so
 * the worker that got the scrape relays it.
 */
export function serveClusterMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, message) => {
    if (scrapeMessage(message)?.[SCRAPE] !== 'ask') return;
    const { id } = message as ScrapeMessage;
    aggregator.clusterMetrics().then(
      (text) => worker.isConnected() && worker.send({ [SCRAPE]: 'answer', id, text } satisfies ScrapeMessage),
      (err: Error) =>
        worker.isConnected() && worker.send({ [SCRAPE]: 'answer', id, error: err.message } satisfies ScrapeMessage),
    );
  });
}

let scrapes = 0;
const waiting = new Map<number, (answer: ScrapeMessage) => void>();

/** In a worker: every worker's metrics, through the primary. */
function clusterText(): Promise<string> {
  const id = ++scrapes;
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      waiting.delete(id);
      reject(new Error('the primary did not answer the scrape'));
    }, SCRAPE_WAIT_MS);
    waiting.set(id, (answer) => {
      clearTimeout(timer);
      waiting.delete(id);
      if (answer.error !== undefined) reject(new Error(answer.error));
      else resolve(answer.text ?? '');
    });
    process.send?.({ [SCRAPE]: 'ask', id } satisfies ScrapeMessage);
  });
}

let workerSetUp = false;
/** In a worker: answer the primary's metric requests with these registries, and take its answers. */
function setUpWorker(registries: Registry[]): void {
  AggregatorRegistry.setRegistries(registries);
  if (workerSetUp) return;
  workerSetUp = true;
  // Installs prom-client's listener that answers the primary's requests.
  new AggregatorRegistry();
  process.on('message', (message: unknown) => {
    const answer = scrapeMessage(message);
    if (answer?.[SCRAPE] === 'answer') waiting.get(answer.id)?.(answer);
  });
}

/**
 * The service's Prometheus metrics. Labels are bounded by construction: route names come from
 * the route specs (or `unmatched`), codes from the API document, ops from this code.
 */
export class Metrics {
  readonly registry = new Registry();

  private readonly requests = new RequestMetrics(
    this.registry,
    {
      name: `${PREFIX}http_requests_total`,
      help: 'HTTP requests answered, by route name, document code (none outside the envelope) and HTTP status',
    },
    {
      name: `${PREFIX}http_request_duration_seconds`,
      help: 'Time to answer an HTTP request, by route name and document code',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    },
  );

  readonly cacheHits = new Counter({
    name: `${PREFIX}cache_hits_total`,
    help: 'Profile reads answered from Redis',
    registers: [this.registry],
  });

  readonly cacheMisses = new Counter({
    name: `${PREFIX}cache_misses_total`,
    help: 'Profile reads Redis did not have (MySQL was asked)',
    registers: [this.registry],
  });

  private readonly cacheErrors = new Counter({
    name: `${PREFIX}cache_errors_total`,
    help: 'Best-effort cache operations that failed and were skipped (get: served from MySQL; fill: not cached)',
    labelNames: ['op'] as const,
    registers: [this.registry],
  });

  private readonly storeErrors: Record<Store, Counter<'op'>> = {
    redis: new Counter({
      name: `${PREFIX}redis_errors_total`,
      help: 'Redis failures: failed commands by operation, and connection errors (op="connection")',
      labelNames: ['op'] as const,
      registers: [this.registry],
    }),
    mysql: new Counter({
      name: `${PREFIX}mysql_errors_total`,
      help: 'MySQL failures (unreachable, timed out, refused) by operation',
      labelNames: ['op'] as const,
      registers: [this.registry],
    }),
  };

  private readonly dbRetries = new Counter({
    name: `${PREFIX}db_retries_total`,
    help: 'MySQL work run again: reason "deadlock" (1213, a Galera certification conflict included) or "connection" (lost before COMMIT; a failover)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  dbRetry(reason: 'deadlock' | 'connection'): void {
    this.dbRetries.inc({ reason });
  }

  readonly shedRequests = new Counter({
    name: `${PREFIX}http_shed_total`,
    help: 'Requests answered 503 at once because MAX_INFLIGHT requests were in flight (load shedding)',
    registers: [this.registry],
  });

  readonly peerErrors = new Counter({
    name: `${PREFIX}http_peer_errors_total`,
    help:
      'Requests a client gave up on: bodies it stopped sending (kind="aborted_body") and connection errors ' +
      '(kind="socket": reset, closed mid-request, unparsable HTTP); logged at debug only',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly unreadBodies = new Counter({
    name: `${PREFIX}http_unread_bodies_total`,
    help:
      'Bodies answered before they were read to their end, by what the lingering close did with the rest: ' +
      'read to its end ("drained") or cut at its bound ("cut")',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  private readonly contentChecks = new Counter({
    name: `${PREFIX}content_checks_total`,
    help:
      'WeChat content checks, by kind (text: msgSecCheck of a nickname, cached verdicts included; image: ' +
      "mediaCheckAsync's verdict on an avatar) and verdict (pass, review, risky; error: WeChat gave none)",
    labelNames: ['kind', 'verdict'] as const,
    registers: [this.registry],
  });

  contentCheck(kind: 'text' | 'image', verdict: 'pass' | 'review' | 'risky' | 'error'): void {
    this.contentChecks.inc({ kind, verdict });
  }

  /** Reads the in-flight count at scrape time (set by the app that owns the load shedder). */
  inflightSource?: () => number;
  /** Reads how many keys the rate limits keep in this process (set by the app that owns them). */
  rateLimitKeysSource?: () => number;

  readonly breakerOpens = new Counter({
    name: `${PREFIX}redis_breaker_opens_total`,
    help: 'Times the Redis circuit breaker opened (a Redis timeout or connection error: calls skip Redis for REDIS_BREAKER_COOLDOWN_MS)',
    registers: [this.registry],
  });

  /** Whether /readyz would answer ready now (its store checks run at scrape time). */
  readySource?: () => Promise<boolean>;
  /** Whether the Redis circuit breaker is open now. */
  breakerSource?: () => boolean;

  /**
   * With `clusterWide` (a worker of WORKERS=N), text() answers for every worker: requests served,
   * errors, pool and process metrics summed over the workers.
   */
  private readonly clusterWide: boolean;

  constructor(pool?: () => PoolStats | undefined, clusterWide = false) {
    this.clusterWide = clusterWide && cluster.isWorker;
    if (this.clusterWide) setUpWorker([processMetrics(), this.registry]);
    const inflight = () => this.inflightSource?.();
    const rateLimitKeys = () => this.rateLimitKeysSource?.();
    new Gauge({
      name: `${PREFIX}rate_limit_local_keys`,
      help: 'Clients and client+user pairs the rate limits count in this process while Redis is down (bounded)',
      registers: [this.registry],
      collect() {
        this.set(rateLimitKeys() ?? 0);
      },
    });
    const ready = () => this.readySource?.();
    const breaker = () => this.breakerSource?.();
    new Gauge({
      name: `${PREFIX}ready`,
      help: 'Whether the process would answer /readyz 200 (its stores answer); with WORKERS=N, the least ready worker',
      aggregator: 'min',
      registers: [this.registry],
      async collect() {
        const answer = await ready();
        if (answer !== undefined) this.set(answer ? 1 : 0);
      },
    });
    new Gauge({
      name: `${PREFIX}redis_breaker_open`,
      help: 'Whether the Redis circuit breaker is open now (1: calls skip Redis); with WORKERS=N, any worker',
      aggregator: 'max',
      registers: [this.registry],
      collect() {
        const open = breaker();
        if (open !== undefined) this.set(open ? 1 : 0);
      },
    });
    new Gauge({
      name: `${PREFIX}http_inflight_requests`,
      help: 'API requests of this process past their body and not yet answered (bounded by MAX_INFLIGHT)',
      registers: [this.registry],
      collect() {
        this.set(inflight() ?? 0);
      },
    });
    if (pool) {
      new Gauge({
        name: `${PREFIX}db_pool_connections`,
        help: 'MySQL pool: connections in use, free, and requests waiting to acquire or create one',
        labelNames: ['state'] as const,
        registers: [this.registry],
        collect() {
          const stats = pool();
          if (!stats) return;
          this.set({ state: 'used' }, stats.used);
          this.set({ state: 'free' }, stats.free);
          this.set({ state: 'pending_acquires' }, stats.pendingAcquires);
          this.set({ state: 'pending_creates' }, stats.pendingCreates);
        },
      });
      new Gauge({
        name: `${PREFIX}db_pool_max`,
        help: 'MySQL pool: most connections it may open (DB_POOL_MAX)',
        registers: [this.registry],
        collect() {
          const stats = pool();
          if (stats) this.set(stats.max);
        },
      });
    }
  }

  observeRequest(observation: RequestObservation): void {
    this.requests.observe(observation);
  }

  cacheError(op: string): void {
    this.cacheErrors.inc({ op });
    this.storeErrors.redis.inc({ op });
  }

  storeError(store: Store, op: string): void {
    this.storeErrors[store].inc({ op });
  }

  readonly contentType = this.registry.contentType;

  /** The exposition text: this service's metrics and the process's (every worker's, clusterWide). */
  async text(): Promise<string> {
    if (this.clusterWide) return clusterText();
    return Registry.merge([processMetrics(), this.registry]).metrics();
  }
}
