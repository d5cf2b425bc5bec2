import { ServiceError } from '../errors';
import type { WechatClient } from '../wechat/client';
import type { SessionKeyStore } from '../wechat/session-keys';
import type { UserCache } from './cache';
import { toUser, type DateFormatter, type Profile, type User, type UserRow } from './model';
import type { UserRepository } from './repository';

export interface UserServiceDeps {
  repository: UserRepository;
  cache: UserCache;
  wechat: WechatClient;
  sessionKeys: SessionKeyStore;
  formatDate: DateFormatter;
  /** Told of every store failure that fails a call (metrics count them). */
  onStoreError?(store: 'mysql' | 'redis', op: string, err: unknown): void;
}

/** Business rules of the user service: what each call means, whatever the transport. */
export class UserService {
  /** One MySQL read per cold openid per process, however many callers miss at once. */
  private readonly inflight = new Map<string, Promise<string | null>>();

  constructor(private readonly deps: UserServiceDeps) {}

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

  /** Registers the user unless the openid exists; either way answers the stored user. */
  async register(openid: string, profile: Profile): Promise<User> {
    const { repository, cache, formatDate } = this.deps;
    let row: UserRow | undefined;
    try {
      await repository.insertIfAbsent({ openid, ...profile });
      [row] = await repository.findByOpenid(openid);
    } catch (err) {
      throw this.unavailable('mysql', 'register', err);
    }
    if (!row) throw new ServiceError('unavailable', 'the user could not be read back');
    const user = toUser(row, formatDate);
    await cache.fill(openid, row.version, JSON.stringify(user));
    return user;
  }

  /**
   * The user as JSON, from the cache or else from MySQL (then cached). JSON rather than an
   * object because the hot path hands the cached bytes straight to the response.
   */
  async findJson(openid: string): Promise<string> {
    const cached = await this.deps.cache.get(openid);
    if (cached !== null) return cached;
    let pending = this.inflight.get(openid);
    if (!pending) {
      pending = this.load(openid).finally(() => this.inflight.delete(openid));
      this.inflight.set(openid, pending);
    }
    const json = await pending;
    if (json === null) throw new ServiceError('notFound', 'no such user');
    return json;
  }

  private async load(openid: string): Promise<string | null> {
    let rows: UserRow[];
    try {
      rows = await this.deps.repository.findByOpenid(openid);
    } catch (err) {
      throw this.unavailable('mysql', 'find', err);
    }
    if (rows.length > 1) throw new ServiceError('duplicate', 'several users have this openid');
    const [row] = rows;
    if (!row) return null;
    const json = JSON.stringify(toUser(row, this.deps.formatDate));
    await this.deps.cache.fill(openid, row.version, json);
    return json;
  }

  /**
   * Changes a profile. The cache is invalidated (a tombstone at the next version) while the
   * row is locked and before it changes; if Redis does not confirm, the update is refused and
   * nothing changes, so an acknowledged update can never be followed by a stale read.
   */
  async update(userId: number, patch: Partial<Profile>): Promise<void> {
    const { repository, cache } = this.deps;
    let found: boolean;
    try {
      found = await repository.updateProfile(userId, patch, async ({ openid, version }) => {
        try {
          await cache.invalidate(openid, version + 1);
        } catch (err) {
          void cache.revert(openid, version + 1);
          throw this.unavailable('redis', 'invalidate', err);
        }
      });
    } catch (err) {
      if (err instanceof ServiceError) throw err;
      throw this.unavailable('mysql', 'update', err);
    }
    if (!found) throw new ServiceError('notFound', 'no such user');
  }

  /** Idempotent: forgets the cached profile and WeChat session_key of this openid. */
  async logout(openid: string): Promise<void> {
    try {
      await Promise.all([this.deps.cache.drop(openid), this.deps.sessionKeys.remove(openid)]);
    } catch (err) {
      throw this.unavailable('redis', 'logout', err);
    }
  }

  /** Exchanges a wx.login code for the openid; session_key stays in Redis, server-side. */
  async openidFromCode(jsCode: string): Promise<{ openid: string; unionid?: string }> {
    const session = await this.deps.wechat.code2Session(jsCode);
    try {
      await this.deps.sessionKeys.save(session);
    } catch (err) {
      throw this.unavailable('redis', 'session_save', err, 'the session store');
    }
    return session.unionid ? { openid: session.openid, unionid: session.unionid } : { openid: session.openid };
  }
}
