import type { Knex } from 'knex';
import type { Connection, QueryError, ResultSetHeader } from 'mysql2';
import { connectionUnusable, markCommitFailure, withRetry, type RetryPolicy } from './failover';

/** A statement's answer: the rows of a SELECT, or the result header of a write. */
export type QueryResult = object[] | ResultSetHeader;

/**
 * Runs one statement of the transaction. mysql2 escapes the values into the `?` placeholders
 * before sending; a failed statement's error carries the template, never the values.
 */
export type TxQuery = <R extends QueryResult = ResultSetHeader>(sql: string, values?: readonly unknown[]) => Promise<R>;

/** What of knex's client this module uses: its pool, whose connections are mysql2's. */
interface PoolClient {
  acquireConnection(): Promise<PooledConnection>;
  releaseConnection(conn: PooledConnection): Promise<void>;
}

/**
 * The innodb_lock_wait_timeout (seconds) inTransaction has set on a connection's session.
 *
 * The statement timeout only stops the client waiting (see `dispose`): a statement stuck on a row
 * lock goes on waiting in the server for innodb_lock_wait_timeout (50 s by default) after its
 * socket is gone, while the pool opens a replacement. On a hot row that is up to DB_POOL_MAX
 * orphaned server connections per round of timeouts, which can exhaust max_connections. The
 * session variable bounds that wait by the query timeout, rounded up to whole seconds: the
 * client gives up first or at about the same time (when the server's lock wait error wins,
 * the call fails all the same and keeps its connection). Unlike the statement-time limits
 * (MySQL's max_execution_time covers only SELECT; max_statement_time is MariaDB's), it means
 * the same on MySQL and MariaDB.
 *
 * Set once per connection: the setting stays on the pooled connection, and there it also
 * bounds the lock waits of the service's other statements run on it (the repository's knex
 * queries, whose client-side timeout is the same value): acceptable and intended. It is not
 * set in knexConfig's afterCreate because that config is shared with the knex CLI, whose
 * migrations may rightly wait longer for a lock.
 */
const lockWaitSet = Symbol('innodb_lock_wait_timeout set');

/** `__knex__disposed`: knex's mark on a connection its pool must destroy rather than hand out again. */
type PooledConnection = Connection & {
  __knex__disposed?: unknown;
  stream?: { destroy(): void };
  [lockWaitSet]?: number;
};

/**
 * Runs `work` inside BEGIN ... COMMIT on one connection of the knex instance's pool.
 *
 * Why not `db.transaction()`: the update route is CPU-bound, and knex's transaction with its
 * builders costs about twice the CPU of this (BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT,
 * 50 at once on a pool of 10: ~900 us a transaction against ~490 us, where a bare mysql2
 * callback chain on the same pool takes ~430 us).
 *
 * Any error from `work` or from a statement rolls back and is rethrown as it was (a
 * ServiceError thrown by `work` stays one). The connection goes back to the pool in every
 * case, except one that may still be busy or broken: see `dispose`. Each statement, BEGIN,
 * COMMIT and ROLLBACK included, fails after `timeoutMs`, as knex's `.timeout()` did, so a
 * paused server fails the call rather than hanging it; a row lock wait it leaves behind in
 * the server ends about as soon (see `lockWaitSet`). Acquiring waits at most the pool's
 * acquire timeout. `work` must not use `query` after it has settled.
 *
 * A failed COMMIT does not mean nothing was written. When COMMIT times out (or its
 * connection breaks), it may have reached the server: a paused server holds it in its socket
 * buffer and applies it once resumed; a slow one may have applied it already. The outcome is
 * unknown, and the call fails all the same. For UserService.update the client gets
 * -2 (try again) for an update that may or may not have been applied. Readers are kept off a
 * stale profile either way by the tombstone at the new version that update writes before it
 * commits and does not revert on a MySQL failure: while it lives (tombstoneMs, a minute or
 * more) the cache can only be filled at the new version, so readers get the row from MySQL as
 * it is, and once the COMMIT lands, the new one. Only a COMMIT applied after the tombstone has
 * expired (a server stalled for longer than that) could let a reader who read the old row
 * just before cache it.
 *
 * With `retry`, the whole transaction (`work` included) runs again, after a jittered wait, when
 * it failed in a way that left nothing applied: a deadlock or Galera certification conflict
 * (1213, rolled back by the server), or a connection lost before COMMIT was sent (a failover).
 * Never when COMMIT was sent and not answered: that error is marked (commitOutcomeUnknown in
 * failover.ts) and thrown.
 */
export function inTransaction<T>(
  db: Knex,
  timeoutMs: number,
  work: (query: TxQuery) => Promise<T>,
  retry?: RetryPolicy,
): Promise<T> {
  return retry ? withRetry(() => once(db, timeoutMs, work), retry) : once(db, timeoutMs, work);
}

/**
 * One statement on a connection of the knex instance's pool, bounded as a transaction's are
 * (`timeoutMs` from its start, the same disposal of a connection left busy or broken), retried
 * under `retry` as withRetry allows. For the reads every cache miss pays: knex's raw query with
 * its `.timeout()` cost 71.0 µs of the process's CPU a SELECT by openid, this 52.3 (20 in
 * parallel, alternating blocks of 4,000 in one process).
 */
export function runStatement<R extends QueryResult>(
  db: Knex,
  timeoutMs: number,
  sql: string,
  values: readonly unknown[],
  retry?: RetryPolicy,
): Promise<R> {
  const run = () => statementOnce<R>(db, timeoutMs, sql, values);
  return retry ? withRetry(run, retry) : run();
}

function statementOnce<R>(db: Knex, timeoutMs: number, sql: string, values: readonly unknown[]): Promise<R> {
  // Announced as knex announces its own queries, for whoever listens (the tests count reads so).
  if (db.listenerCount('query') > 0) db.emit('query', { method: 'raw', sql, bindings: values });
  return onPooledConnection(db, timeoutMs, (statements) => statements.run(sql, values) as Promise<R>);
}

/**
 * `work` with the statements of one connection of the knex instance's pool, each timed by
 * `timeoutMs`; the connection goes back to the pool afterwards, whatever happened (unless
 * disposed: knex's pool then destroys it).
 */
async function onPooledConnection<T>(
  db: Knex,
  timeoutMs: number,
  work: (statements: Statements, conn: PooledConnection) => Promise<T>,
): Promise<T> {
  const client = db.client as PoolClient;
  const conn = await client.acquireConnection();
  const statements = new Statements(conn, timeoutMs);
  try {
    return await work(statements, conn);
  } finally {
    statements.end();
    // Synchronous in tarn; its promise is resolved already and not worth a turn.
    void client.releaseConnection(conn);
  }
}

function once<T>(db: Knex, timeoutMs: number, work: (query: TxQuery) => Promise<T>): Promise<T> {
  return onPooledConnection(db, timeoutMs, (statements, conn) => transaction(statements, conn, timeoutMs, work));
}

async function transaction<T>(
  statements: Statements,
  conn: PooledConnection,
  timeoutMs: number,
  work: (query: TxQuery) => Promise<T>,
): Promise<T> {
  let open = true;
  const query: TxQuery = <R extends QueryResult>(sql: string, values?: readonly unknown[]) =>
    open ? (statements.run(sql, values) as Promise<R>) : Promise.reject(new Error('the transaction has already ended'));
  try {
    const lockWait = Math.max(1, Math.ceil(timeoutMs / 1000));
    if (conn[lockWaitSet] !== lockWait) {
      await statements.run(`SET SESSION innodb_lock_wait_timeout = ${lockWait}`);
      conn[lockWaitSet] = lockWait;
    }
    await statements.run('BEGIN');
    let result: T;
    try {
      result = await work(query);
    } finally {
      // Closed before COMMIT or ROLLBACK is sent: a statement `work` started late (unawaited,
      // or after it settled) would queue behind them and run in autocommit, perhaps once the
      // connection is back in the pool.
      open = false;
    }
    await statements.run('COMMIT').catch((err: unknown) => {
      // Unanswered, it may have been applied: withRetry must not run the work again.
      markCommitFailure(err);
      throw err;
    });
    return result;
  } catch (err) {
    // A disposed connection is closed and gets no ROLLBACK: the server rolls back whatever was
    // not committed once it finds the client gone, but a COMMIT already sent may still apply.
    if (!conn.__knex__disposed) {
      await statements.run('ROLLBACK').catch((rollbackErr: unknown) => dispose(conn, rollbackErr));
    }
    throw err;
  }
}

/** A statement sent and not yet answered: its promise's reject, until it settles. */
interface Pending {
  reject(err: Error): void;
}

/**
 * The statements sent on one borrowed connection (a transaction, or runStatement's one), each
 * failing after `timeoutMs` from its start without an answer, as mysql2's own `timeout` option
 * does (same error code, same connection disposal), but with one timer for the connection's
 * turn, re-armed as each statement starts. mysql2 takes
 * that option only in its query(options) form, which costs ~1.9 us a call against ~0.05 us for
 * query(sql, values, cb) (measured, 10^6 calls each), and arms a timer per statement: update
 * took 229 us of CPU a request with it, 194 us without (bench load, medians of 5 rounds).
 */
class Statements {
  /** In the order sent: mysql2 runs a connection's statements one at a time, in that order. */
  private readonly pending = new Set<Pending>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly conn: PooledConnection,
    private readonly timeoutMs: number,
  ) {}

  run(sql: string, values?: readonly unknown[]): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      const entry: Pending = { reject };
      // Sent behind another, it starts when that one is answered: its time starts there.
      if (this.pending.size === 0) this.startClock();
      this.pending.add(entry);
      try {
        this.conn.query(sql, (values ?? []) as unknown[], (err: QueryError | null, result: unknown) => {
          // Answered after expire() gave up on it (the socket destroyed under it): already rejected.
          if (!this.pending.delete(entry)) return;
          if (this.pending.size > 0) this.startClock();
          if (err) {
            // Fatal, or a node that can serve no statement (failover.ts): never lent out again.
            if (connectionUnusable(err)) dispose(this.conn, err);
            // mysql2 fills the values into the SQL itself and puts that on a server error's `sql`:
            // a phone number would reach the log with the error (a ServiceError's cause). The
            // template says which statement failed all the same. Its other fields (message,
            // sqlMessage, code, errno, sqlState) are the server's and carry no value sent here.
            const sqlError = err as QueryError & { sql?: string };
            if (sqlError.sql !== undefined) sqlError.sql = sql;
            reject(err);
          } else {
            resolve(result);
          }
        });
      } catch (err) {
        // Refused before it was sent (a value that cannot be escaped): nothing runs, nothing to
        // time, and nothing left for expire() to find later.
        this.pending.delete(entry);
        throw err;
      }
    });
  }

  /** A timer that has fired is re-armed by refresh() too; with nothing pending it does nothing. */
  private startClock(): void {
    if (this.timer) this.timer.refresh();
    else this.timer = setTimeout(() => this.expire(), this.timeoutMs);
  }

  /** Every statement still unanswered fails, and the connection, which may still be busy with one, is disposed. */
  private expire(): void {
    if (this.pending.size === 0) return;
    const err = Object.assign(new Error('Query inactivity timeout'), {
      code: 'PROTOCOL_SEQUENCE_TIMEOUT',
      errorno: 'PROTOCOL_SEQUENCE_TIMEOUT',
      syscall: 'query',
    });
    dispose(this.conn, err);
    const pending = [...this.pending];
    this.pending.clear();
    for (const entry of pending) entry.reject(err);
  }

  end(): void {
    clearTimeout(this.timer);
  }
}

/**
 * Closes a connection that must not serve another caller, and marks it so that knex's pool
 * destroys it instead of handing it out. The statement timeout only stops waiting: the statement
 * stays the connection's current command (in the server too), every later statement queues
 * behind it, and the pool's check (`validateConnection`) still finds the connection healthy.
 * The socket is destroyed, not just ended: a paused or hung server never answers the FIN, and
 * the half-closed socket would stay open until it did. The server mostly finds the client
 * gone only when the statement it is running ends (a lock wait: see `lockWaitSet`), and then
 * rolls back the uncommitted transaction, as for any client that goes away. Not so when the
 * statement was COMMIT: once the server has read it, it applies it, socket gone or not.
 */
function dispose(conn: PooledConnection, err: unknown): void {
  if (conn.__knex__disposed) return;
  conn.__knex__disposed = err;
  conn.destroy();
  conn.stream?.destroy();
}
