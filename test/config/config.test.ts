import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../../src/config';
import { TEST_PHONE_KEYS } from '../helpers/env';

const ROOT = join(__dirname, '..', '..');
const PRODUCTION = { NODE_ENV: 'production', PHONE_KEYS: TEST_PHONE_KEYS };

describe('configuration', () => {
  it('has the documented defaults', () => {
    const config = loadConfig({ ...PRODUCTION });
    expect(config.port).to.equal(3000);
    expect(config.db.url).to.equal('mysql://root@127.0.0.1:3306/user_service');
    expect(config.redis.url).to.equal('redis://127.0.0.1:6379/0');
    expect(config.wechat.apiBase).to.equal('https://api.weixin.qq.com');
    expect(config.timeZone).to.equal('Asia/Shanghai');
    expect(config.cache.ttlSeconds).to.equal(86400);
    expect(config.cache.absentTtlMs).to.equal(5000);
    expect(config.logFormat).to.equal('auto');
    expect(config.shutdownGraceMs).to.equal(10_000);
    expect(config.shutdownDelayMs).to.equal(0);
    expect(config.shutdownRepeatMs).to.equal(2000);
    expect(config.readyTimeoutMs).to.equal(2000);
  });

  it('lets the environment override the files, converting numbers', () => {
    const config = loadConfig({
      ...PRODUCTION,
      PORT: '8080',
      TIME_ZONE: 'UTC',
      CACHE_TTL_SECONDS: '60',
      WECHAT_API_BASE: 'http://127.0.0.1:9/',
    });
    expect(config.port).to.equal(8080);
    expect(config.timeZone).to.equal('UTC');
    expect(config.cache.ttlSeconds).to.equal(60);
    expect(config.wechat.apiBase).to.equal('http://127.0.0.1:9');
  });

  it('reads TRUST_PROXY as a number of proxy hops: false 0, true 1, or the number', () => {
    expect(loadConfig({ ...PRODUCTION }).trustProxy).to.equal(0);
    for (const [value, hops] of [
      ['false', 0],
      ['true', 1],
      ['0', 0],
      ['1', 1],
      ['3', 3],
      ['16', 16],
    ] as const) {
      expect(loadConfig({ ...PRODUCTION, TRUST_PROXY: value }).trustProxy, value).to.equal(hops);
    }
    for (const value of ['yes', '17', '-1', '1.5', 'loopback']) {
      expect(() => loadConfig({ ...PRODUCTION, TRUST_PROXY: value }), value)
        .to.throw(ConfigError)
        .with.property('message')
        .that.includes('TRUST_PROXY');
    }
  });

  it("validates WeChat's message push settings: off by default, WeChat's own shapes, each key with what it needs", () => {
    expect(loadConfig({ NODE_ENV: 'production' }).push).to.deep.equal({ token: '', aesKeys: [] });
    const key = 'a'.repeat(42) + 'Z';
    const previous = 'b+/'.repeat(14) + 'c';
    const ok = { NODE_ENV: 'production', WECHAT_APPID: 'wx1', WECHAT_PUSH_TOKEN: 'Tok3n' };
    expect(loadConfig(ok).push).to.deep.equal({ token: 'Tok3n', aesKeys: [] });
    expect(loadConfig({ ...ok, WECHAT_PUSH_AES_KEY: key, WECHAT_PUSH_AES_KEY_PREVIOUS: previous }).push).to.deep.equal({
      token: 'Tok3n',
      aesKeys: [key, previous],
    });
    const refused: [Record<string, string>, string][] = [
      [{ ...ok, WECHAT_PUSH_TOKEN: 'ab' }, 'WECHAT_PUSH_TOKEN'],
      [{ ...ok, WECHAT_PUSH_TOKEN: 'a'.repeat(33) }, 'WECHAT_PUSH_TOKEN'],
      [{ ...ok, WECHAT_PUSH_TOKEN: 'tok-en' }, 'WECHAT_PUSH_TOKEN'],
      [{ ...ok, WECHAT_PUSH_AES_KEY: key.slice(1) }, 'WECHAT_PUSH_AES_KEY'],
      [{ ...ok, WECHAT_PUSH_AES_KEY: `${key.slice(1)}=` }, 'WECHAT_PUSH_AES_KEY'],
      [{ ...ok, WECHAT_PUSH_TOKEN: '', WECHAT_PUSH_AES_KEY: key }, 'WECHAT_PUSH_AES_KEY'],
      [{ ...ok, WECHAT_APPID: '', WECHAT_PUSH_AES_KEY: key }, 'WECHAT_PUSH_AES_KEY'],
      [{ ...ok, WECHAT_PUSH_AES_KEY_PREVIOUS: previous }, 'WECHAT_PUSH_AES_KEY_PREVIOUS'],
      [{ ...ok, WECHAT_PUSH_AES_KEY: key, WECHAT_PUSH_AES_KEY_PREVIOUS: 'short' }, 'WECHAT_PUSH_AES_KEY_PREVIOUS'],
    ];
    for (const [env, name] of refused) {
      expect(() => loadConfig(env), JSON.stringify(env))
        .to.throw(ConfigError)
        .with.property('message')
        .that.includes(name);
    }
  });

  it('settles the content check: auto is on exactly when WECHAT_APPID is set; on needs it', () => {
    const prod = { NODE_ENV: 'production' };
    expect(loadConfig(prod).content).to.deep.equal({
      enabled: false,
      review: 'accept',
      failure: 'open',
      cacheTtlSeconds: 86400,
    });
    expect(loadConfig({ ...prod, WECHAT_APPID: 'wx1' }).content.enabled).to.equal(true);
    expect(loadConfig({ ...prod, WECHAT_APPID: 'wx1', CONTENT_CHECK: 'off' }).content.enabled).to.equal(false);
    expect(() => loadConfig({ ...prod, CONTENT_CHECK: 'on' }))
      .to.throw(ConfigError)
      .with.property('message')
      .that.includes('CONTENT_CHECK');
  });

  const bad: Record<string, string> = {
    CONTENT_CHECK: 'maybe',
    CONTENT_REVIEW: 'ignore',
    CONTENT_CHECK_FAILURE: 'half',
    CONTENT_CACHE_TTL_SECONDS: '0',
    PORT: 'eighty',
    DATABASE_URL: 'postgres://x/y',
    REDIS_URL: 'not a url',
    TIME_ZONE: 'Mars/Olympus',
    CACHE_TTL_SECONDS: '-1',
    CACHE_ABSENT_TTL_MS: '0',
    LOG_LEVEL: 'loud',
    LOG_FORMAT: 'fancy',
    SHUTDOWN_GRACE_MS: '0',
    SHUTDOWN_DELAY_MS: '600001',
    SHUTDOWN_REPEAT_MS: '-1',
    READY_TIMEOUT_MS: 'soon',
    PHONE_MEMO_SIZE: '-1',
  };
  for (const [name, value] of Object.entries(bad)) {
    it(`refuses ${name}=${value} naming the variable`, () => {
      expect(() => loadConfig({ ...PRODUCTION, [name]: value }))
        .to.throw(ConfigError)
        .with.property('message')
        .that.includes(name);
    });
  }

  it('stops the process with one line naming the variable', function () {
    this.timeout(20_000);
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: ROOT,
      env: { ...process.env, NODE_ENV: 'production', PORT: 'eighty' },
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(run.status).to.equal(1);
    const lines = run.stderr.trim().split('\n');
    expect(lines).to.have.length(1);
    expect(lines[0]).to.include('PORT');
  });
});
