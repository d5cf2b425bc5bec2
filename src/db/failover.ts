import type { Knex } from 'knex';

/**
 * What a failed statement means when the database is a cluster behind a proxy (Galera behind
 * HAProxy, docs/scaling.md): whether its connection may serve again, and whether the work may
 * be run again. Connections die in a failover, a node cut off from its cluster refuses every
 * statement, and Galera reports a certification conflict as a deadlock at COMMIT.
 */

interface DbError {
  fatal?: boolean;
  errno?: number;
  code?: string;
  sqlState?: string;
}

/** 1213: a deadlock, or Galera's certification conflict (at COMMIT); rolled back either way. */
const ER_LOCK_DEADLOCK = 1213;
/**
 * Server errors after which this connection is no use, whatever the next statement: 1047 is a
 * Galera node outside the primary component ("WSREP has not yet prepared node for application
 * use"; HAProxy's check sends new connections elsewhere, a pooled one stays on that node); 1053
 * the server shutting down; 1927 the connection killed.
 */
const NODE_GONE = new Set([1047, 1053, 1927]);
/** Network failures of a connection, or of opening one (the proxy refusing while a node is down). */
const CONNECTION_LOST = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'PROTOCOL_CONNECTION_LOST']);

const asDbError = (err: unknown): DbError => (typeof err === 'object' && err !== null ? (err as DbError) : {});

/** True when the connection that failed with `err` must never be handed out again. */
export function connectionUnusable(err: unknown): boolean {
  const e = asDbError(err);
  return e.fatal === true || (e.errno !== undefined && NODE_GONE.has(e.errno)) || CONNECTION_LOST.has(e.code ?? '');
}

/** Set on an error thrown after COMMIT was sent and before the server answered it. */
const commitUnknown = Symbol('commit outcome unknown');

/**
 * Marks `err`, thrown by a COMMIT, when the server may have applied it: the answer never came
 * (connection lost, statement timeout). An answered error (a deadlock, a certification
 * conflict) means the transaction was rolled back.
 */
export function markCommitFailure(err: unknown): void {
  const e = asDbError(err);
  if (typeof err === 'object' && err !== null && (e.fatal === true || e.sqlState === undefined)) {
    (err as { [commitUnknown]?: true })[commitUnknown] = true;
  }
}

export function commitOutcomeUnknown(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { [commitUnknown]?: true })[commitUnknown] === true;
}

/**
 * Whether work that failed with `err` may simply be run again: it was rolled back by the server
 * (a deadlock or certification conflict), or its connection was lost before any COMMIT was
 * sent (the server rolls back what a vanished client left uncommitted). Never after a COMMIT
 * whose outcome is unknown. A statement timeout is not retried: the server is slow or paused,
 * and another attempt would only double the caller's wait.
 */
export function retryable(err: unknown): boolean {
  if (commitOutcomeUnknown(err)) return false;
  const e = asDbError(err);
  return e.errno === ER_LOCK_DEADLOCK || connectionUnusable(err);
}

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** The n-th retry waits a random time up to baseDelayMs * 2^(n-1) (full jitter). */
  baseDelayMs: number;
  /** Told of each retry, before its wait. */
  onRetry?(err: unknown, attempt: number): void;
}

/**
 * Three attempts, the retries after up to 50 and 100 ms: enough for a failover (the proxy has
 * the next node at once: a dead node refuses connections, and HAProxy redispatches them), and
 * jittered so that the requests a failover failed together do not all come back together.
 */
export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, baseDelayMs: 50 };

/**
 * Runs `work` until it succeeds, fails with an error that is not `retryable`, or has used
 * `policy.attempts`; the last error is rethrown as it was. `work` must be safe to run again
 * whole: a transaction, or an idempotent statement.
 */
export async function withRetry<T>(work: () => Promise<T>, policy: RetryPolicy = DEFAULT_RETRY): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (err) {
      if (attempt >= policy.attempts || !retryable(err)) throw err;
      policy.onRetry?.(err, attempt);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * policy.baseDelayMs * 2 ** (attempt - 1)));
    }
  }
}

/** `__knex__disposed`: knex's mark on a connection its pool must destroy rather than hand out again. */
interface Disposable {
  __knex__disposed?: unknown;
}

interface QueryingClient {
  _query(connection: Disposable, obj: unknown): Promise<unknown>;
}

// knex ships no types for its dialect classes; this one is knex's own 'mysql2' client.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const MySQL2Client = require('knex/lib/dialects/mysql2') as new (config: Knex.Config) => QueryingClient;

/**
 * knex's mysql2 client, except that a connection whose statement failed with an error that
 * leaves it unusable is marked for the pool to destroy (knex issue #4794: knex marks only
 * connections that emit 'error', and mysql2 hands a failure during a query to the query's
 * callback instead). Without it, a connection on a Galera node that lost its quorum would fail
 * every statement it is lent for, for as long as the node stays up.
 */
export class EvictingMySQL2Client extends MySQL2Client {
  override _query(connection: Disposable, obj: unknown): Promise<unknown> {
    return super._query(connection, obj).catch((err: unknown) => {
      if (connectionUnusable(err) && !connection.__knex__disposed) connection.__knex__disposed = err;
      throw err;
    });
  }
}
