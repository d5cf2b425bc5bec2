import DataLoader from 'dataloader';
import type { Knex } from 'knex';
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from '../db/failover';
import { inTransaction, runStatement } from '../db/transaction';
import type { Profile, UserRow } from './model';
import { SEALED_PREFIX, UnreadablePhoneError, type PhoneCipher } from './phone-cipher';

// The hot read, as fixed SQL: knex's query builder cost ~12-25 us per call more than a raw
// statement (measured, 20,000 lookups at 20 in parallel), paid by every cache miss; and knex's
// raw query ~19 µs more than the statement sent on a pooled connection (`select` below).
const COLUMNS = 'id, openid, unionid, nick_name, avatar, gender, phone, version, ctime, mtime';
const FIND_BY_OPENID = `SELECT ${COLUMNS} FROM users WHERE openid = ? LIMIT 2`;
const findByOpenids = (n: number) => `SELECT ${COLUMNS} FROM users WHERE openid IN (?${',?'.repeat(n - 1)})`;

/** What may change in a row: the profile (update), and the unionid WeChat tells later. */
export type RowPatch = Partial<Profile & { unionid: string }>;

/**
 * The columns a patch may set, in the order the UPDATE lists them. Only these names reach
 * the SQL, whatever keys a patch carries at run time.
 */
const PATCHABLE = ['nick_name', 'avatar', 'gender', 'phone', 'unionid'] as const satisfies readonly (keyof RowPatch)[];
const ASSIGNMENTS = PATCHABLE.map((column) => `\`${column.replace(/`/g, '``')}\` = ?, `);
const PATCHABLE_SET = new Set<string>(PATCHABLE);

const LOCK_ROW = 'SELECT openid, version, avatar FROM users WHERE id = ? FOR UPDATE';
/**
 * A phone that is plain text (at most 32 characters: PhoneCipher.isSealed) or sealed with
 * another key than the one LIKE `?` names (key ids are case-sensitive; the column's collation
 * is not).
 */
const NEEDS_REKEY = "phone <> '' AND (CHAR_LENGTH(phone) <= 32 OR phone COLLATE utf8mb4_bin NOT LIKE ?)";
const LOCK_BY_OPENID = 'SELECT id, openid, avatar, version FROM users WHERE openid = ? LIMIT 2 FOR UPDATE';
const DELETE_ROW = 'DELETE FROM users WHERE id = ?';
const RECORD_DELETION = 'INSERT INTO account_deletions (user_id, reason) VALUES (?, ?)';

/** Why an account was deleted, as account_deletions keeps it. */
export type DeletionReason = 'user' | 'wechat_cancellation';

/** What a deletion found under its lock: the row's id, version and avatar (its files go next). */
export type DeletedRow = Pick<UserRow, 'id' | 'openid' | 'avatar' | 'version'>;
/** The UPDATE for each subset of PATCHABLE (bit i: PATCHABLE[i] is set), built once. */
const updates: string[] = [];

/**
 * The UPDATE of a patch, and its values (the phone's, if any, at `phoneAt`: it is sealed once
 * the row's openid is known). A key set to undefined is left out, as knex left it out; a key
 * outside PATCHABLE fails the update before it starts (it would have failed in MySQL as an
 * unknown column).
 */
function writeOf(patch: RowPatch, id: number): { sql: string; values: unknown[]; phoneAt: number } {
  for (const key in patch) {
    if (!PATCHABLE_SET.has(key)) throw new Error(`users.${key} cannot be patched`);
  }
  const values: unknown[] = [];
  let set = 0;
  let phoneAt = -1;
  for (let i = 0; i < PATCHABLE.length; i++) {
    const value = patch[PATCHABLE[i]!];
    if (value === undefined) continue;
    set |= 1 << i;
    if (PATCHABLE[i] === 'phone') phoneAt = values.length;
    values.push(value);
  }
  values.push(id);
  let sql = updates[set];
  if (sql === undefined) {
    sql = 'UPDATE users SET ';
    for (let i = 0; i < PATCHABLE.length; i++) if (set & (1 << i)) sql += ASSIGNMENTS[i];
    // mtime moves forward by at least one second per update: see updateProfile.
    sql += 'version = version + 1, mtime = GREATEST(CURRENT_TIMESTAMP, mtime + INTERVAL 1 SECOND) WHERE id = ?';
    updates[set] = sql;
  }
  return { sql, values, phoneAt };
}

/** Lookups batched into one query at most. */
const MAX_BATCH = 100;

/**
 * The rows, or an error when an id is past 2^53. users.id is BIGINT UNSIGNED, and mysql2
 * (supportBigNumbers) answers such an id as a string: user_id would leave as a JSON string,
 * or as a number a JavaScript client rounds to another user's. AUTO_INCREMENT gets nowhere
 * near it by itself; only a row written by hand can, and its lookups then fail, alone.
 */
function jsonSafe(rows: UserRow[]): UserRow[] | Error {
  const unsafe = rows.find((row) => typeof row.id !== 'number');
  return unsafe ? new Error(`users.id ${String(unsafe.id)} is past Number.MAX_SAFE_INTEGER`) : rows;
}

/** A row as MySQL answers it: `phone` as stored. */
type StoredRow = Omit<UserRow, 'sealedPhone'>;

/** The users table, and nothing else: no cache, no business rules. */
export class UserRepository {
  /**
   * Lookups made in one event-loop turn leave as one query. Each query is a socket write
   * that wakes MariaDB, and on a 2-core machine that write and the wake-up cost more than the
   * lookup itself (measured: ~55 us of the floor's ~115 us of CPU per request); a burst of
   * cache misses arrives together (their Redis replies come in one read), so it shares one.
   * No memo: each load is a fresh read (DataLoader's cache is off).
   */
  private readonly byOpenid = new DataLoader<string, UserRow[]>((openids) => this.findMany(openids), {
    cache: false,
    maxBatchSize: MAX_BATCH,
    batchScheduleFn: (run) => setImmediate(run),
  });

  /**
   * Every statement here may run again when the database lost it (a failover:
   * src/db/failover.ts): the reads, the idempotent insert, and the update's transaction whole,
   * never after a COMMIT whose outcome is unknown.
   */
  constructor(
    private readonly db: Knex,
    private readonly queryTimeoutMs: number,
    private readonly phones: PhoneCipher,
    private readonly retry: RetryPolicy = DEFAULT_RETRY,
  ) {}

  /**
   * The rows with their phones opened (each bound to its own row's openid), or the error of one
   * that does not open: an UnreadablePhoneError naming the row, never another user's number.
   */
  private opened(rows: StoredRow[]): UserRow[] | Error {
    const safe = jsonSafe(rows as UserRow[]);
    if (safe instanceof Error) return safe;
    // New objects: a batch answers an openid asked twice with the same rows.
    const opened: UserRow[] = [];
    for (const row of safe) {
      try {
        opened.push({ ...row, sealedPhone: row.phone, phone: this.phones.open(row.phone, row.openid, false) });
      } catch (err) {
        if (err instanceof UnreadablePhoneError) err.userId = row.id;
        return err as Error;
      }
    }
    return opened;
  }

  /** At most two rows: enough to tell "one user" from "several rows for one openid". */
  findByOpenid(openid: string): Promise<UserRow[]> {
    return this.byOpenid.load(openid);
  }

  private async findMany(openids: readonly string[]): Promise<(UserRow[] | Error)[]> {
    if (openids.length === 1) return [this.opened(await this.select(FIND_BY_OPENID, [openids[0]!]))];
    const rows = await this.select(findByOpenids(openids.length), openids as string[]);
    // Matched back as SQL matched them: openid's collation (utf8mb4_bin) is binary but PAD
    // SPACE, so a row imported as 'abc ' answers 'abc', as the lone SELECT does. A requested
    // openid holds no white space (schemas.ts).
    const found = new Map<string, StoredRow[]>();
    for (const row of rows) {
      const key = row.openid.replace(/ +$/, '');
      const list = found.get(key);
      if (list) list.push(row);
      else found.set(key, [row]);
    }
    return openids.map((openid) => this.opened(found.get(openid)?.slice(0, 2) ?? []));
  }

  /** A read every cache miss pays: one statement on a pooled connection, not knex's raw query (db/transaction.ts). */
  private select(sql: string, bindings: string[]): Promise<StoredRow[]> {
    return runStatement<StoredRow[]>(this.db, this.queryTimeoutMs, sql, bindings, this.retry);
  }

  /** The openid of a user_id, or null: whom WeChat's content check is asked about on `update`. */
  async openidOf(id: number): Promise<string | null> {
    const [rows] = (await this.db.raw('SELECT openid FROM users WHERE id = ?', [id]).timeout(this.queryTimeoutMs)) as [
      { openid: string }[],
      unknown,
    ];
    return rows[0]?.openid ?? null;
  }

  /**
   * Inserts the user unless the openid exists. ON DUPLICATE KEY keeps the first row untouched
   * and is atomic, so concurrent identical logins never make a second row nor fail. It costs
   * an AUTO_INCREMENT value even when it inserts nothing (innodb_autoinc_lock_mode 1 and 2
   * reserve one per row before the duplicate is found), so callers look the openid up first
   * and call this only when it is absent: an id is then spent only by a first login that
   * raced another of the same openid. For the same reason it may be sent again when its answer
   * was lost: applied or not, the openid ends up with exactly one row.
   */
  async insertIfAbsent(user: Profile & { openid: string; unionid?: string | null }): Promise<void> {
    await this.retried(() =>
      this.db
        .raw(
          'INSERT INTO users (openid, unionid, nick_name, avatar, gender, phone) VALUES (?, ?, ?, ?, ?, ?) ' +
            'ON DUPLICATE KEY UPDATE id = id',
          [
            user.openid,
            user.unionid ?? null,
            user.nick_name,
            user.avatar,
            user.gender,
            this.phones.seal(user.phone, user.openid),
          ],
        )
        .timeout(this.queryTimeoutMs),
    );
  }

  private retried<T>(statement: () => PromiseLike<T>): Promise<T> {
    return withRetry(() => Promise.resolve(statement()), this.retry);
  }

  /**
   * Applies a patch under a row lock. `beforeWrite` runs while the row is locked, beside the
   * UPDATE, and the change is committed only once it has returned; if it throws, nothing is
   * committed. Returns false when there is no such user. mtime moves forward by at least one
   * second per update, so a client comparing the second-resolution strings always sees it
   * change. Run again whole (`beforeWrite` too) when it was rolled back or lost before COMMIT.
   * With `precondition`, the patch applies only while the locked row still holds those values
   * (a verdict on one avatar must not clear the next); false, and nothing written, otherwise.
   */
  async updateProfile(
    id: number,
    patch: RowPatch,
    beforeWrite: (current: Pick<UserRow, 'openid' | 'version' | 'avatar'>) => Promise<void>,
    precondition?: Pick<UserRow, 'avatar'>,
  ): Promise<boolean> {
    const { sql, values, phoneAt } = writeOf(patch, id);
    return inTransaction(
      this.db,
      this.queryTimeoutMs,
      async (query) => {
        const [current] = await query<Pick<UserRow, 'openid' | 'version' | 'avatar'>[]>(LOCK_ROW, [id]);
        if (!current) return false;
        if (precondition && current.avatar !== precondition.avatar) return false;
        if (phoneAt >= 0) values[phoneAt] = this.phones.seal(values[phoneAt] as string, current.openid);
        // Side by side: no reader sees the changed row before COMMIT, which waits for both. The
        // row lock and the pooled connection (DB_POOL_MAX of them) are held for one round trip
        // less (measured: ~2.2 -> ~2.0 ms per transaction under the bench's update load).
        const [guard, write] = await Promise.allSettled([beforeWrite(current), query(sql, values)]);
        if (guard.status === 'rejected') throw guard.reason;
        if (write.status === 'rejected') throw write.reason;
        return true;
      },
      this.retry,
    );
  }

  /**
   * Ids after `afterId`, in order, of up to `limit` rows whose phone is plain text or sealed
   * with a key other than the current one: `npm run rekey`'s work. A plain read: no lock.
   */
  async phonesToRekey(afterId: number, limit: number): Promise<number[]> {
    const [rows] = (await this.db
      .raw(`SELECT id FROM users WHERE id > ? AND ${NEEDS_REKEY} ORDER BY id LIMIT ?`, [
        afterId,
        this.currentKeyPattern(),
        limit,
      ])
      .timeout(this.queryTimeoutMs)) as [{ id: number }[], unknown];
    return rows.map((row) => row.id);
  }

  /** How many rows phonesToRekey would still find from the start (a full scan). */
  async countPhonesToRekey(): Promise<number> {
    const [[row]] = (await this.db
      .raw(`SELECT COUNT(*) AS n FROM users WHERE ${NEEDS_REKEY}`, [this.currentKeyPattern()])
      .timeout(this.queryTimeoutMs)) as [[{ n: number }], unknown];
    return Number(row.n);
  }

  /**
   * Seals the phones of `ids` with the current key, each from its value as it is under the
   * row lock, so a phone written meanwhile is the one sealed and never overwritten with an
   * older one. A row that no longer needs it (written meanwhile with the current key, or gone)
   * is left alone; one whose phone does not open is left as it is and reported. `beforeWrite`
   * runs while the rows are locked, before the change is committed (the cache tombstones),
   * and the version moves as an update's does; mtime does not: the profile has not changed.
   */
  async resealPhones(
    ids: readonly number[],
    beforeWrite: (rows: Pick<UserRow, 'openid' | 'version'>[]) => Promise<void>,
  ): Promise<{ resealed: number; unreadable: UnreadablePhoneError[] }> {
    if (ids.length === 0) return { resealed: 0, unreadable: [] };
    return inTransaction(this.db, this.queryTimeoutMs, async (query) => {
      const rows = await query<Pick<UserRow, 'id' | 'openid' | 'phone' | 'version'>[]>(
        `SELECT id, openid, phone, version FROM users WHERE id IN (?${',?'.repeat(ids.length - 1)}) FOR UPDATE`,
        ids,
      );
      const unreadable: UnreadablePhoneError[] = [];
      const changed: { row: (typeof rows)[number]; sealed: string }[] = [];
      for (const row of rows) {
        if (!this.phones.needsRekey(row.phone)) continue;
        try {
          changed.push({ row, sealed: this.phones.seal(this.phones.open(row.phone, row.openid, false), row.openid) });
        } catch (err) {
          if (!(err instanceof UnreadablePhoneError)) throw err;
          err.userId = row.id;
          unreadable.push(err);
        }
      }
      if (changed.length === 0) return { resealed: 0, unreadable };
      await beforeWrite(changed.map(({ row }) => row));
      const cases = changed.map(() => 'WHEN ? THEN ?').join(' ');
      await query(
        `UPDATE users SET phone = CASE id ${cases} END, version = version + 1 ` +
          `WHERE id IN (?${',?'.repeat(changed.length - 1)})`,
        [...changed.flatMap(({ row, sealed }) => [row.id, sealed]), ...changed.map(({ row }) => row.id)],
      );
      return { resealed: changed.length, unreadable };
    });
  }

  /** LIKE pattern of a value sealed with the current key. */
  private currentKeyPattern(): string {
    return `${SEALED_PREFIX}${this.phones.currentKeyId}.%`.replace(/[_]/g, '\\_');
  }

  /**
   * Deletes the user of an openid and records why, in one transaction, under the same row lock
   * as updateProfile: an update waiting on the lock then finds no row, and one that held it
   * first is committed (and its tombstone written) before this reads the version. `beforeWrite`
   * is updateProfile's: the deletion is committed only once it has returned. Answers the row
   * deleted, or null when there was none.
   */
  async deleteUser(
    openid: string,
    reason: DeletionReason,
    beforeWrite: (current: DeletedRow) => Promise<void>,
  ): Promise<DeletedRow | null> {
    return inTransaction(this.db, this.queryTimeoutMs, async (query) => {
      const rows = await query<DeletedRow[]>(LOCK_BY_OPENID, [openid]);
      if (rows.length > 1) throw new Error('several users have this openid');
      const [current] = rows;
      if (!current) return null;
      const write = async () => {
        await query(DELETE_ROW, [current.id]);
        await query(RECORD_DELETION, [current.id, reason]);
      };
      const [guard, written] = await Promise.allSettled([beforeWrite(current), write()]);
      if (guard.status === 'rejected') throw guard.reason;
      if (written.status === 'rejected') throw written.reason;
      return current;
    });
  }

  /** The avatar URL of each of these users that exists (the media sweep's "is it referenced"). */
  async avatarsOf(ids: number[]): Promise<Map<number, string>> {
    const found = new Map<number, string>();
    for (let i = 0; i < ids.length; i += MAX_BATCH) {
      const rows = (await this.db
        .raw(
          `SELECT id, avatar FROM users WHERE id IN (?${',?'.repeat(Math.min(MAX_BATCH, ids.length - i) - 1)})`,
          ids.slice(i, i + MAX_BATCH),
        )
        .timeout(this.queryTimeoutMs)) as unknown as [{ id: number | string; avatar: string }[]];
      for (const row of rows[0]) found.set(Number(row.id), row.avatar);
    }
    return found;
  }
}
