import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Redis from 'ioredis';
import {
  formatSession,
  readSession,
  SessionReader,
  sessionKeys,
  VERIFY_SESSION_LUA,
  type RedisClient,
  type Session,
} from '../src';
import { cleanUp, newToken, PREFIX, testRedis } from './redis';

const keys = sessionKeys(PREFIX);
const now = () => Math.floor(Date.now() / 1000);

function sessionOf(over: Partial<Session> = {}): Session {
  const issued = now();
  return {
    v: 1,
    user_id: 7,
    unionid: null,
    openid: 'o_reader',
    issued_at: issued,
    expires_at: issued + 3600,
    idle_timeout: 600,
    ...over,
  };
}

describe('wechat-user-sessions: reading a session from Redis', () => {
  let redis: RedisClient;
  let reader: SessionReader;

  /** Stores `json` under a fresh token's key, with a TTL of `ttlMs`; answers the token. */
  async function store(json: string, ttlMs = 60_000): Promise<string> {
    const token = newToken();
    await redis.set(keys.session(token), json, 'PX', ttlMs);
    return token;
  }

  before(() => {
    redis = testRedis();
    reader = new SessionReader(redis, { keyPrefix: PREFIX });
  });
  after(async () => {
    await cleanUp(redis);
    redis.disconnect();
  });

  it('answers the session of a token and slides its TTL to the idle timeout', async () => {
    const s = sessionOf({ unionid: 'u1' });
    const token = await store(formatSession(s), 5_000);
    expect(await reader.verify(token)).to.deep.equal(s);
    expect(await redis.pttl(keys.session(token))).to.be.within(590_000, 600_000);
    expect(await readSession(redis, token, { keyPrefix: PREFIX })).to.deep.equal(s);
  });

  it('never slides a session past its absolute expiry', async () => {
    const s = sessionOf({ expires_at: now() + 5, idle_timeout: 600 });
    const token = await store(formatSession(s), 1_000);
    expect(await reader.verify(token)).to.deep.equal(s);
    expect(await redis.pttl(keys.session(token))).to.be.within(3_000, 5_000);
  });

  it('ends a session past its absolute expiry, even if its key is still there', async () => {
    const token = await store(formatSession(sessionOf({ expires_at: now() - 1 })));
    expect(await reader.verify(token)).to.equal(null);
    expect(await redis.exists(keys.session(token))).to.equal(0);
  });

  it('refuses an unknown token, a missing key and a key under another prefix', async () => {
    expect(await reader.verify(newToken())).to.equal(null);
    const token = await store(formatSession(sessionOf()));
    expect(await new SessionReader(redis, { keyPrefix: `${PREFIX}other:` }).verify(token)).to.equal(null);
    expect(await reader.verify(token)).to.not.equal(null);
  });

  it('refuses a version it does not know and leaves that session as it was', async () => {
    const json = JSON.stringify({ ...sessionOf(), v: 2 });
    const token = await store(json, 30_000);
    expect(await reader.verify(token)).to.equal(null);
    expect(await redis.get(keys.session(token))).to.equal(json);
    expect(await redis.pttl(keys.session(token))).to.be.within(1, 30_000);
  });

  it('accepts a version 1 session with fields it does not know', async () => {
    const s = sessionOf();
    const token = await store(JSON.stringify({ ...s, scope: 'orders' }));
    expect(await reader.verify(token)).to.deep.equal(s);
  });

  it('refuses, without an error, what is not a session JSON', async () => {
    for (const raw of ['not json', '[1,2]', '{"v":1}', JSON.stringify({ ...sessionOf(), expires_at: 'x' })]) {
      const token = await store(raw);
      expect(await reader.verify(token), raw).to.equal(null);
    }
  });

  it('refuses what is not token-shaped without asking Redis', async () => {
    // Never connected, and no offline queue: any command would reject.
    const offline = new Redis({ lazyConnect: true, enableOfflineQueue: false });
    const r = new SessionReader(offline, { keyPrefix: PREFIX });
    for (const bad of [undefined, '', 'short', 'A'.repeat(33), '*'.repeat(32), 42]) {
      expect(await r.verify(bad)).to.equal(null);
    }
    await r.verify(newToken()).then(
      () => expect.fail('a token-shaped one goes to Redis'),
      (err: Error) => expect(err.message).to.match(/offline queue|stream isn't writeable|closed/i),
    );
    offline.disconnect();
  });

  it('runs each Redis call through the guard it is given', async () => {
    let calls = 0;
    const guarded = new SessionReader(redis, {
      keyPrefix: PREFIX,
      guard: (call) => {
        calls += 1;
        return call();
      },
    });
    const token = await store(formatSession(sessionOf()));
    expect(await guarded.verify(token)).to.not.equal(null);
    expect(await guarded.verify('short')).to.equal(null);
    expect(calls).to.equal(1);
  });

  it('is the script the README gives to other languages', () => {
    const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
    expect(readme).to.include(VERIFY_SESSION_LUA);
  });
});
