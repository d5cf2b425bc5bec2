import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { newOpenid, testConfig } from '../helpers/env';
import { loginBody } from '../helpers/http';
import { startService, type TestService } from '../helpers/service';

const ROOT = join(__dirname, '..', '..');
const PACKAGE = join(ROOT, 'packages', 'sessions');

/** A sibling service as its team would write it: plain JavaScript, koa, ioredis and the package. */
const APP = `
const Koa = require('koa');
const Redis = require('ioredis');
const { requireSession } = require('wechat-user-sessions');

const nodes = (process.env.REDIS_CLUSTER_NODES || '').split(',').filter(Boolean);
const options = { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 2000 };
const redis = nodes.length
  ? new Redis.Cluster(nodes.map((n) => ({ host: n.split(':')[0], port: Number(n.split(':')[1]) })), {
      enableOfflineQueue: false,
      redisOptions: options,
    })
  : new Redis(process.env.REDIS_URL, options);
redis.on('error', () => {});

const app = new Koa();
app.use(requireSession({ redis, keyPrefix: process.env.KEY_PREFIX }));
app.use((ctx) => {
  ctx.body = { code: 0, msg: 'success', data: { orders: [], user: ctx.state.user } };
});
redis.once('ready', () => {
  const server = app.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
});
`;

/** Runs a command to its end within `timeoutMs`; answers its stdout. */
function run(command: string, args: string[], cwd: string, timeoutMs: number): string {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: timeoutMs });
  expect(result.status, `${command} ${args.join(' ')}: ${result.error ?? ''}${result.stderr}`).to.equal(0);
  return result.stdout;
}

const versionOf = (name: string): string =>
  (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;

describe('a sibling service on the packed wechat-user-sessions', function () {
  // Pack (two small builds) and an install from the local npm cache: tens of seconds at most.
  this.timeout(120_000);
  let dir: string;
  let svc: TestService;
  let sibling: ChildProcess | undefined;
  let url: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sessions-sibling-'));
    svc = await startService();
  });
  after(async () => {
    if (sibling && sibling.exitCode === null) {
      const exited = new Promise((r) => sibling!.once('exit', r));
      sibling.kill('SIGTERM');
      await exited;
    }
    await svc?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('packs compiled JavaScript, declarations, the README and package.json only', () => {
    const [packed] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], PACKAGE, 60_000)) as {
      filename: string;
      files: { path: string }[];
    }[];
    const files = packed!.files.map((f) => f.path).sort();
    expect(files).to.include.members(['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts']);
    for (const file of files) expect(file).to.match(/^(package\.json|README\.md|dist\/[a-z]+\.(js|d\.ts))$/);
    // Every module has its declarations; nothing points outside the package (no source maps).
    const js = files.filter((f) => f.endsWith('.js'));
    expect(files.filter((f) => f.endsWith('.d.ts'))).to.have.length(js.length);
    expect(existsSync(join(dir, packed!.filename))).to.equal(true);
  });

  it('installs with koa and ioredis alone, and pulls none of the service', () => {
    const [tarball] = readdirSync(dir).filter((f) => f.endsWith('.tgz'));
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'sibling', private: true }));
    writeFileSync(join(dir, 'app.js'), APP);
    run(
      'npm',
      [
        'install',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        `./${tarball}`,
        `koa@${versionOf('koa')}`,
        `ioredis@${versionOf('ioredis')}`,
      ],
      dir,
      90_000,
    );
    const installed = readdirSync(join(dir, 'node_modules'));
    expect(installed).to.include.members(['wechat-user-sessions', 'koa', 'ioredis']);
    for (const name of ['knex', 'mysql2', 'pino', 'koa-body', 'prom-client', 'sharp', 'joi', '@koa'])
      expect(installed, name).to.not.include(name);
    const manifest = JSON.parse(
      readFileSync(join(dir, 'node_modules', 'wechat-user-sessions', 'package.json'), 'utf8'),
    );
    expect(manifest.dependencies ?? {}).to.deep.equal({});
  });

  it('loads as an ES module too (the app above requires it as CommonJS)', () => {
    const esm = run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "import { requireSession, readSession, VERIFY_SESSION_LUA } from 'wechat-user-sessions';" +
          'console.log(typeof requireSession, typeof readSession, typeof VERIFY_SESSION_LUA)',
      ],
      dir,
      10_000,
    );
    expect(esm.trim()).to.equal('function function string');
  });

  it("accepts a token from login, refuses it after logout, and refuses an unknown one, on the service's Redis", async () => {
    const config = testConfig();
    sibling = spawn(process.execPath, ['app.js'], {
      cwd: dir,
      env: {
        PATH: process.env.PATH,
        REDIS_URL: config.redis.url,
        REDIS_CLUSTER_NODES: config.redis.clusterNodes.join(','),
        KEY_PREFIX: config.redis.keyPrefix,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    sibling.stderr!.on('data', (chunk) => (stderr += chunk));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the sibling did not listen within 10 s: ${stderr}`)), 10_000);
      createInterface({ input: sibling!.stdout! }).on('line', (line) => {
        const match = /^port (\d+)$/.exec(line);
        if (match) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      });
      sibling!.once('exit', (code) => reject(new Error(`the sibling exited (${code}): ${stderr}`)));
    });
    url = `http://127.0.0.1:${port}/orders`;
    const get = async (token: string) => {
      const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
      return { status: res.status, body: (await res.json()) as { code: number; data: any } };
    };

    const openid = newOpenid();
    const login = (await svc.call('login', loginBody(openid))).body.data;
    const accepted = await get(login.token);
    expect(accepted.status).to.equal(200);
    expect(accepted.body).to.deep.equal({
      code: 0,
      msg: 'success',
      data: { orders: [], user: { user_id: login.user_id, openid } },
    });

    expect((await svc.call('logout', { openid })).body.code).to.equal(0);
    const ended = await get(login.token);
    expect(ended.status).to.equal(401);
    expect(ended.body).to.deep.include({ code: -10, data: null });

    const unknown = await get('Q'.repeat(32));
    expect(unknown.status).to.equal(401);
    expect(unknown.body.code).to.equal(-10);
  });
});
