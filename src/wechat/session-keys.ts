import type { RedisBreaker } from '../redis/breaker';
import type { KeyLayout } from '../redis/keys';
import type { RedisClient } from '../redis/client';
import type { WechatSession } from './client';

/**
 * WeChat's session_key, kept server-side under the openid (it decrypts wx.getPhoneNumber and
 * similar payloads). It never leaves this store except to code that runs on the server.
 */
export class SessionKeyStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: KeyLayout,
    private readonly ttlSeconds: number,
    private readonly breaker: RedisBreaker,
  ) {}

  async save(session: WechatSession): Promise<void> {
    const key = this.keys.wechatSession(session.openid);
    const fields: Record<string, string> = { session_key: session.session_key };
    if (session.unionid) fields.unionid = session.unionid;
    await this.breaker.run(() => this.redis.multi().del(key).hset(key, fields).expire(key, this.ttlSeconds).exec());
  }

  /** Whether a session_key is held for the openid (never what it is). */
  async has(openid: string): Promise<boolean> {
    return (await this.breaker.run(() => this.redis.hexists(this.keys.wechatSession(openid), 'session_key'))) === 1;
  }

  async remove(openid: string): Promise<void> {
    await this.breaker.run(() => this.redis.del(this.keys.wechatSession(openid)));
  }
}
