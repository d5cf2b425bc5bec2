import { commitOutcomeUnknown } from '../db/failover';
import { ServiceError } from '../errors';
import type { Logger } from '../logger';
import type { IssuedSession, SessionDraft, SessionStore } from '../sessions/store';
import { isMalformedAnswer, type WechatClient, type WechatSession } from '../wechat/client';
import type { SessionKeyStore } from '../wechat/session-keys';
import { NO_USER, type CachedUser, type UserCache } from './cache';
import type { ContentCheck } from './content';
import {
  extendJson,
  openUserJson,
  toUser,
  userJson,
  type DateFormatter,
  type Profile,
  type User,
  type UserRow,
} from './model';
import { UnreadablePhoneError, type PhoneCipher } from './phone-cipher';
import type { DeletedRow, DeletionReason, RowPatch, UserRepository } from './repository';

/** The session fields added to a login answer, beside the document's user fields. */
export type SessionFields = {
  token: string;
  token_expires_at: number;
};

export interface UserServiceDeps {
  repository: UserRepository;
  cache: UserCache;
  sessions: SessionStore;
  wechat: WechatClient;
  sessionKeys: SessionKeyStore;
  /** Opens the phone of a cached profile (the repository's own cipher: see openUserJson). */
  phones: PhoneCipher;
  formatDate: DateFormatter;
  logger: Logger;
  /** WeChat's content check of the nicknames and avatars login and update store. */
  content?: Pick<ContentCheck, 'enabled' | 'checkNickname' | 'checkAvatar'>;
  /** Told of every store failure that fails a call (metrics count them). */
  onStoreError?(store: 'mysql' | 'redis', op: string, err: unknown): void;
  /**
   * Told, once an update is committed, of the avatar it replaced: read under the row lock, so
   * of concurrent updates each is told exactly the value it overwrote (the media it named can
   * then be released at once, by whichever route changed it).
   */
  onAvatarReplaced?(userId: number, replaced: string): Promise<void>;
}

const noSuchUser = () => new ServiceError('notFound', 'no such user');

const sessionFields = (s: IssuedSession): SessionFields => ({ token: s.token, token_expires_at: s.expires_at });

/** A live session as the user's copy of their data shows it: times only, never the token. */
export type LiveSession = Awaited<ReturnType<SessionStore['listLive']>>[number];

/** A user read from MySQL, with the row version its cache entry is filled at. */
interface RowRead {
  version: number;
  /** As cached: the phone as stored (ciphertext). */
  user: CachedUser;
  /** `user.json` with the phone in the clear: the answer. */
  answer: string;
}

/** What callers of find() get: the cached user's ids and its JSON as answered (phone opened). */
type FoundUser = CachedUser;

/** Business rules of the user service: what each call means, whatever the transport. */
export class UserService {
  /** One MySQL read per cold openid per process, however many callers miss at once. */
  private readonly inflight = new Map<string, Promise<RowRead | null>>();

  constructor(private readonly deps: UserServiceDeps) {}

  /**
   * The answer to a stored phone that does not open for its row: the route's "other error",
   * and an error line for the operator (a value copied from another row, or a key removed too
   * early). Never the number, never another user's.
   */
  private unreadable(err: UnreadablePhoneError, userId: number | null): ServiceError {
    this.deps.logger.error(
      { userId: err.userId ?? userId, keyId: err.keyId, reason: err.reason },
      'stored phone cannot be decrypted for its row',
    );
    return new ServiceError('unreadable', 'the stored phone number cannot be decrypted');
  }

  /** A cached user's JSON, phone opened, `fields` appended. */
  private opened(openid: string, json: string, userId: number | null, fields?: Record<string, unknown>): string {
    try {
      return openUserJson(json, openid, this.deps.phones, fields);
    } catch (err) {
      if (!(err instanceof UnreadablePhoneError)) throw err;
      // The hot path knows no user_id: the cached JSON does (parsed on this failure only).
      throw this.unreadable(err, userId ?? ((JSON.parse(json) as User).user_id || null));
    }
  }

  /** The answer to a failed MySQL or Redis call: the route's "other error", reported once. */
  private unavailable(
    store: 'mysql' | 'redis',
    op: string,
    cause: unknown,
    what = store === 'mysql' ? 'the database' : 'the cache',
  ): ServiceError {
    this.deps.onStoreError?.(store, op, cause);
    return new ServiceError('unavailable', `${what} is unavailable, try again`, { cause });
  }

  /**
   * Registers the user unless the openid exists; either way answers the stored user and a
   * session: the presented one (the request's token) when it is a live session of this user,
   * as loginByOpenid keeps it, or else a new one. `unionid` is WeChat's (or the gateway's),
   * when the call proved one.
   */
  async register(
    openid: string,
    profile: Profile,
    unionid?: string,
    presented?: string,
  ): Promise<User & Partial<SessionFields>> {
    const { repository, formatDate, content } = this.deps;
    let row: UserRow | undefined;
    let inserted = false;
    try {
      // Read first: the insert would spend an id even on an openid that exists.
      [row] = await repository.findByOpenid(openid);
      if (!row) {
        // Only a nickname about to be stored is checked: an existing user's login stores nothing.
        await content?.checkNickname(profile.nick_name, openid);
        await repository.insertIfAbsent({ openid, unionid, ...profile });
        [row] = await repository.findByOpenid(openid);
        inserted = row !== undefined && row.avatar === profile.avatar;
      }
      if (row && unionid && row.unionid !== unionid && (await this.rememberUnionid(row.id, unionid))) {
        [row] = await repository.findByOpenid(openid);
      }
    } catch (err) {
      if (err instanceof UnreadablePhoneError) throw this.unreadable(err, null);
      if (err instanceof ServiceError) throw err;
      throw this.unavailable('mysql', 'register', err);
    } finally {
      // A read in flight may have found no user before this insert.
      this.endSharing(openid);
    }
    if (!row) throw this.unavailable('mysql', 'register', new Error('the user could not be read back'));
    if (inserted) content?.checkAvatar({ user_id: row.id, openid }, row.avatar);
    const user = toUser(row, formatDate);
    const read = this.rowRead(row);
    const kept = inserted ? null : await this.tryKeep(presented, openid, read.user, read);
    const session = kept ?? (await this.tryIssue(openid, row.id, read));
    return session ? { ...user, ...sessionFields(session) } : user;
  }

  /**
   * Stores the unionid WeChat told for a user whose row has another (or none), through the
   * same path as `update`, so no reader is served the row without it afterwards. Best effort:
   * a login is not refused because the unionid could not be kept; the next proven login tries
   * again. Answers whether it was stored.
   */
  private async rememberUnionid(userId: number, unionid: string): Promise<boolean> {
    try {
      await this.update(userId, { unionid });
      return true;
    } catch (err) {
      this.deps.logger.warn({ err: (err as Error)?.message, userId }, 'unionid not stored');
      return false;
    }
  }

  /**
   * The hot path of every mini-program launch: the user as JSON (from the cache when it can)
   * with a session. A launch that presents a live session of this very user (`presented`, the
   * request's token) keeps it, slid, and no new one is stored: a user who launches every day
   * holds one session, not one per launch. Without Redis the answer has no token rather than
   * no user.
   */
  async loginByOpenid(openid: string, unionid?: string, presented?: string): Promise<string> {
    const { sessions, cache } = this.deps;
    if (unionid) {
      // A proven login (js_code, gateway) may bring a unionid the row does not have yet: one
      // more read, paid only by such logins, keeps the plain launch at one round trip.
      const known = await this.findCached(openid);
      if (known.unionid !== unionid) await this.rememberUnionid(known.userId, unionid);
    }
    // A hit costs one Redis round trip: the script that reads the profile keeps the presented
    // session or stores the new one.
    const draft = sessions.draft(openid);
    const presentedKey = sessions.presentedKey(presented, openid) ?? undefined;
    const cached = await cache.getWithSession(openid, draft, presentedKey);
    if (cached === NO_USER) throw noSuchUser();
    // The session is stored by then: a phone that does not open leaves it unanswered, harmless.
    if (typeof cached === 'string') return this.opened(openid, cached, null, sessionFields(draft));
    if (cached !== null) {
      const kept = { token: presented!, expires_at: cached.keptUntil };
      return this.opened(openid, cached.json, null, sessionFields(kept));
    }
    // A miss: the caller that read the row fills the cache in the script that stores its session.
    const { user, answer, read, filled } = await this.loadOnce(openid);
    try {
      const kept = presentedKey ? await this.tryKeep(presented, openid, user, read) : null;
      const session = kept ?? (await this.tryIssue(openid, user.userId, read, draft));
      return session ? extendJson(answer, sessionFields(session)) : answer;
    } finally {
      filled?.();
    }
  }

  /**
   * The presented session, kept for this user (SessionStore.keep), and the row just read
   * cached beside it; null when it is not the user's, or Redis cannot tell (a new one then).
   */
  private async tryKeep(
    token: string | undefined,
    openid: string,
    user: CachedUser,
    read?: RowRead,
  ): Promise<IssuedSession | null> {
    let kept: IssuedSession | null;
    try {
      kept = await this.deps.sessions.keep(token, { user_id: user.userId, openid, unionid: user.unionid });
    } catch {
      return null;
    }
    if (kept && read) await this.deps.cache.fill(openid, read.version, read.user);
    return kept;
  }

  /** The user as JSON, from the cache or else from MySQL (then cached). */
  async get(openid: string): Promise<string> {
    return (await this.find(openid)).json;
  }

  /** The user of a live session, with its expiry (POST /session, for non-Node services). */
  async sessionUser(token: string): Promise<string> {
    let session;
    try {
      session = await this.deps.sessions.verify(token);
    } catch (err) {
      throw this.unavailable('redis', 'session_verify', err, 'the session store');
    }
    if (!session) throw new ServiceError('unauthenticated', 'invalid or expired token');
    const user = await this.find(session.openid);
    return extendJson(user.json, { token_expires_at: session.expires_at });
  }

  /** The user, its JSON as answered (phone opened). */
  private async find(openid: string): Promise<FoundUser> {
    const cached = await this.deps.cache.get(openid);
    if (cached === NO_USER) throw noSuchUser();
    if (cached) return { ...cached, json: this.opened(openid, cached.json, cached.userId) };
    return (await this.readAndFill(openid)).answer;
  }

  /** The user's ids, its JSON as cached (phone sealed): for callers that need no phone. */
  private async findCached(openid: string): Promise<CachedUser> {
    const cached = await this.deps.cache.get(openid);
    if (cached === NO_USER) throw noSuchUser();
    return cached ?? (await this.readAndFill(openid)).user;
  }

  private async readAndFill(openid: string): Promise<{ user: CachedUser; answer: FoundUser }> {
    const { user, answer, read, filled } = await this.loadOnce(openid);
    // Not awaited: the answer does not depend on it, and the versioned fill is safe in any
    // order against a concurrent update (see cache.ts). Commands on one connection run in
    // order, so a later read from this process still finds it. fill() never rejects.
    if (read) void this.deps.cache.fill(openid, read.version, read.user).finally(filled);
    return { user, answer: { ...user, json: answer } };
  }

  /**
   * From MySQL, with one read and one fill in flight per openid however many callers miss at
   * once. The caller whose call ran the query gets `read` (the row's version), caches it and
   * then calls `filled`; until then the others share its answer instead of querying again,
   * since a caller's Redis miss may come back after the query did but before the fill landed.
   * An update or a registration in this process ends the sharing, so no caller that arrives
   * after either was acknowledged is handed what was read before it. "No such user" is shared
   * the same way, until Redis has it (NO_USER in cache.ts).
   */
  private async loadOnce(
    openid: string,
  ): Promise<{ user: CachedUser; answer: string; read?: RowRead; filled?: () => void }> {
    const shared = this.inflight.get(openid);
    if (shared) {
      const read = await shared;
      if (!read) throw noSuchUser();
      return { user: read.user, answer: read.answer };
    }
    const pending = this.load(openid);
    this.inflight.set(openid, pending);
    const filled = () => this.endSharing(openid, pending);
    let read: RowRead | null;
    try {
      read = await pending;
    } catch (err) {
      filled();
      throw err;
    }
    if (!read) {
      // markAbsent never rejects.
      void this.deps.cache.markAbsent(openid).finally(filled);
      throw noSuchUser();
    }
    return { user: read.user, answer: read.answer, read, filled };
  }

  /** Stops sharing a read: this one only (`pending`), or whatever is in flight for the openid. */
  private endSharing(openid: string, pending?: Promise<RowRead | null>): void {
    if (pending === undefined || this.inflight.get(openid) === pending) this.inflight.delete(openid);
  }

  private async load(openid: string): Promise<RowRead | null> {
    let rows: UserRow[];
    try {
      rows = await this.deps.repository.findByOpenid(openid);
    } catch (err) {
      if (err instanceof UnreadablePhoneError) throw this.unreadable(err, null);
      throw this.unavailable('mysql', 'find', err);
    }
    if (rows.length > 1) throw new ServiceError('duplicate', 'several users have this openid');
    const [row] = rows;
    return row ? this.rowRead(row) : null;
  }

  private rowRead(row: UserRow): RowRead {
    const { cached, answer } = userJson(row, this.deps.formatDate);
    return { version: row.version, user: { userId: row.id, unionid: row.unionid ?? null, json: cached }, answer };
  }

  /**
   * A new session, or null when Redis cannot store one (the caller answers without it). With
   * `fill`, the user just read from MySQL is cached in the same round trip.
   */
  private async tryIssue(
    openid: string,
    userId: number | null,
    fill?: RowRead,
    draft: SessionDraft = this.deps.sessions.draft(openid),
  ): Promise<IssuedSession | null> {
    let stored = true;
    try {
      if (fill) stored = await this.deps.cache.fillWithSession(openid, fill.version, fill.user, draft);
      else await this.deps.sessions.issue({ user_id: userId, openid }, draft);
    } catch (err) {
      this.deps.onStoreError?.('redis', 'session_issue', err);
      this.deps.logger.warn({ err: (err as Error)?.message }, 'session not issued: redis unavailable');
      return null;
    }
    // The row was read just before its user was deleted: no session for a user that is gone.
    if (!stored) throw noSuchUser();
    return draft;
  }

  /**
   * The `update` route's change: a nickname passes WeChat's content check before anything is
   * stored (-11 when refused), and a new avatar URL is sent to it once stored.
   */
  async edit(userId: number, patch: RowPatch): Promise<void> {
    const { content, repository } = this.deps;
    const nickName = patch.nick_name;
    const avatar = patch.avatar;
    if (!content?.enabled || (!nickName && !avatar)) {
      await this.update(userId, patch);
      return;
    }
    let openid: string | null;
    try {
      openid = await repository.openidOf(userId);
    } catch (err) {
      throw this.unavailable('mysql', 'find', err);
    }
    if (openid === null) throw noSuchUser();
    if (nickName) await content.checkNickname(nickName, openid);
    await this.update(userId, patch);
    if (avatar) content.checkAvatar({ user_id: userId, openid }, avatar);
  }

  /**
   * Changes a profile. The cache is invalidated (a tombstone at the next version) while the
   * row is locked and before the change is committed; if Redis does not confirm, the update is
   * refused and nothing changes, so an acknowledged update can never be followed by a stale read.
   * Sessions are left alone. With `precondition` (the avatar the row must still hold), answers
   * whether the patch was applied, false when the row no longer holds it or is gone; without
   * one, a missing user is a notFound ServiceError.
   */
  async update(userId: number, patch: RowPatch, precondition?: Pick<User, 'avatar'>): Promise<boolean> {
    const { repository, cache } = this.deps;
    let found: boolean;
    let changed: string | undefined;
    let replaced: string | undefined;
    try {
      found = await repository.updateProfile(
        userId,
        patch,
        async ({ openid, version, avatar }) => {
          changed = openid;
          if (patch.avatar !== undefined && avatar !== patch.avatar) replaced = avatar;
          try {
            await cache.invalidate(openid, version + 1);
          } catch (err) {
            void cache.revert(openid, version + 1);
            throw this.unavailable('redis', 'invalidate', err);
          }
        },
        precondition,
      );
    } catch (err) {
      if (err instanceof ServiceError) throw err;
      // Applied or not, nobody knows: -2 all the same, and the tombstone written at the new
      // version stays, so no reader caches the row as it was (docs/cache.md).
      throw this.unavailable('mysql', commitOutcomeUnknown(err) ? 'update_commit_unknown' : 'update', err);
    } finally {
      // A read in flight may hold the row as it was before this update committed.
      if (changed !== undefined) this.endSharing(changed);
    }
    if (!found) {
      if (precondition) return false;
      throw noSuchUser();
    }
    if (replaced !== undefined) await this.deps.onAvatarReplaced?.(userId, replaced);
    return true;
  }

  /** How many phones `npm run rekey` has left: plain text, or sealed with another key. */
  async countPhonesToRekey(): Promise<number> {
    return this.deps.repository.countPhonesToRekey();
  }

  /**
   * One batch of `npm run rekey`: up to `limit` rows after `afterId` whose phone is plain
   * text or names another key than the current one, sealed again with the current key. Under
   * the rows' locks, as an update: each from its phone as it is then (a phone written
   * meanwhile is the one sealed, never overwritten), cached profiles tombstoned first. Answers
   * null when no such row is left after `afterId`.
   */
  async rekeyPhones(
    afterId: number,
    limit: number,
  ): Promise<{ lastId: number; found: number; resealed: number; unreadable: number } | null> {
    const { repository, cache, logger } = this.deps;
    const ids = await repository.phonesToRekey(afterId, limit);
    if (ids.length === 0) return null;
    const { resealed, unreadable } = await repository.resealPhones(ids, async (rows) => {
      const done = await Promise.allSettled(rows.map(({ openid, version }) => cache.invalidate(openid, version + 1)));
      const failed = done.find((d) => d.status === 'rejected');
      if (failed) {
        for (const { openid, version } of rows) void cache.revert(openid, version + 1);
        throw this.unavailable('redis', 'invalidate', failed.reason);
      }
    });
    for (const err of unreadable) {
      logger.error(
        { userId: err.userId, keyId: err.keyId, reason: err.reason },
        'stored phone cannot be decrypted for its row',
      );
    }
    return { lastId: ids[ids.length - 1]!, found: ids.length, resealed, unreadable: unreadable.length };
  }

  /**
   * Deletes the user row of an openid, with a record of when and why in account_deletions.
   * Fenced as `update` is: under the row lock, a tombstone (marked with the user_id, see
   * cache.bury) is confirmed by Redis before the deletion commits, or nothing changes (-2). So
   * a concurrent update either committed before (and is deleted with the row) or finds no row
   * after; a reader holding the row from before can neither cache it nor store a session with
   * it. Sessions and the session_key are the caller's to end next (logout), as are files.
   * Answers the row deleted, or null when there was none.
   */
  async deleteUser(openid: string, reason: DeletionReason): Promise<DeletedRow | null> {
    const { repository, cache } = this.deps;
    let deleted: DeletedRow | null;
    let locked = false;
    try {
      deleted = await repository.deleteUser(openid, reason, async ({ id, version }) => {
        locked = true;
        try {
          await cache.bury(openid, version + 1, id);
        } catch (err) {
          void cache.revert(openid, version + 1);
          throw this.unavailable('redis', 'invalidate', err);
        }
      });
    } catch (err) {
      if (err instanceof ServiceError) throw err;
      throw this.unavailable('mysql', 'delete', err);
    } finally {
      if (locked) this.endSharing(openid);
    }
    return deleted;
  }

  /**
   * What is held about the user of an openid, for their copy (exportData): the user as served,
   * its live sessions' times (never a token) and whether a session_key is held (never its value).
   */
  async holdings(openid: string): Promise<{ user: User; sessions: LiveSession[]; sessionKeyHeld: boolean }> {
    const user = JSON.parse((await this.find(openid)).json) as User;
    try {
      const [sessions, sessionKeyHeld] = await Promise.all([
        this.deps.sessions.listLive(openid),
        this.deps.sessionKeys.has(openid),
      ]);
      return { user, sessions, sessionKeyHeld };
    } catch (err) {
      throw this.unavailable('redis', 'export', err);
    }
  }

  /** Idempotent: ends every session of the openid and forgets its cached profile and session_key. */
  async logout(openid: string): Promise<void> {
    const { cache, sessions, sessionKeys } = this.deps;
    try {
      await Promise.all([sessions.revokeAll(openid), cache.drop(openid), sessionKeys.remove(openid)]);
    } catch (err) {
      throw this.unavailable('redis', 'logout', err);
    }
  }

  /**
   * Exchanges a wx.login code for the openid; session_key stays in Redis, server-side. The
   * answer carries a session, bound to the user when the openid is registered already.
   */
  async openidFromCode(jsCode: string): Promise<{ openid: string; unionid?: string } & SessionFields> {
    const wx = await this.exchange(jsCode);
    // WeChat has spent the js_code by now: a failing lookup must not cost the user the code,
    // so the session is then issued without a user_id (as for an unregistered openid). A store
    // failure was already reported where it happened (load -> unavailable).
    let user: CachedUser | null = null;
    try {
      user = await this.findCached(wx.openid);
    } catch {
      // No user (yet), or none readable now.
    }
    if (user && wx.unionid && user.unionid !== wx.unionid) await this.rememberUnionid(user.userId, wx.unionid);
    let session: IssuedSession;
    try {
      [, session] = await Promise.all([
        this.deps.sessionKeys.save(wx),
        this.deps.sessions.issue({
          user_id: user?.userId ?? null,
          openid: wx.openid,
          unionid: wx.unionid ?? user?.unionid ?? null,
        }),
      ]);
    } catch (err) {
      throw this.unavailable('redis', 'session_save', err, 'the session store');
    }
    return {
      openid: wx.openid,
      ...(wx.unionid ? { unionid: wx.unionid } : {}),
      ...sessionFields(session),
    };
  }

  /**
   * Proof of identity from a wx.login code, for login and loginByOpenid: the openid (and
   * unionid) WeChat answers for it. session_key is kept as getOpenid keeps it, but a Redis
   * failure there does not fail the login: only later decryption needs it.
   */
  async proveCode(jsCode: string): Promise<Pick<WechatSession, 'openid' | 'unionid'>> {
    const wx = await this.exchange(jsCode);
    try {
      await this.deps.sessionKeys.save(wx);
    } catch (err) {
      this.deps.onStoreError?.('redis', 'session_key_save', err);
    }
    return wx.unionid ? { openid: wx.openid, unionid: wx.unionid } : { openid: wx.openid };
  }

  /** jscode2session. WeChat's refusals are the caller's business; an answer that makes no sense is ours. */
  private async exchange(jsCode: string): Promise<WechatSession> {
    try {
      return await this.deps.wechat.code2Session(jsCode);
    } catch (err) {
      if (isMalformedAnswer(err)) this.deps.logger.warn({ reason: (err as Error).message }, 'unusable WeChat answer');
      throw err;
    }
  }
}
