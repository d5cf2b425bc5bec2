import { expect } from 'chai';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { createKnex, dropDatabase, type Knex } from '../../src/db/knex';
import { migrationNames } from '../../src/db/migrations';
import { DEMO_USERS } from '../../src/db/seeds/demo-users';
import { RUN_ID, TEST_ENV, testConfig } from '../helpers/env';

const ROOT = join(__dirname, '..', '..');
/** The repository's migrations, as knex records them. */
const existing = migrationNames();

describe('knex CLI: npm run migrate, seed, migrate:rollback', function () {
  this.timeout(60_000);
  // A database of its own: rolling back must not take the suite's table away.
  const url = `${TEST_ENV.DATABASE_URL.replace(/\/[^/]+$/, '')}/user_service_test_${RUN_ID}_cli`;
  const settings = testConfig({ DATABASE_URL: url }).db;
  let db: Knex;

  const npm = (script: string) => {
    const run = spawnSync('npm', ['run', '--silent', script], {
      cwd: ROOT,
      env: { ...process.env, ...TEST_ENV, DATABASE_URL: url },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(run.status, `npm run ${script}: ${run.stderr}${run.stdout}`).to.equal(0);
    return run.stdout;
  };
  const tables = async () => (await db.raw('SHOW TABLES'))[0].map((row: object) => Object.values(row)[0]);

  before(() => {
    db = createKnex(settings);
  });
  after(async () => {
    await db.destroy();
    await dropDatabase(settings);
  });

  it('creates the database and the table, seeds demo users idempotently, and rolls back', async () => {
    npm('migrate');
    expect(await tables()).to.include('users');
    expect(npm('migrate:status')).to.match(/No Pending Migration files Found/i);

    npm('seed');
    npm('seed'); // again: nothing doubles, nothing changes
    const rows = await db('users').select('openid', 'nick_name', 'gender', 'phone').orderBy('openid');
    expect(rows).to.deep.equal(
      DEMO_USERS.map(({ openid, nick_name, gender, phone }) => ({ openid, nick_name, gender, phone })),
    );

    npm('migrate:rollback');
    expect(await tables()).to.not.include('users');
  });
});

/** Every file a clone would hold (tracked, or new and not ignored), copied from the working tree. */
function copyRepository(to: string): void {
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: ROOT,
    encoding: 'utf8',
  })
    .split('\0')
    .filter((file) => file && existsSync(join(ROOT, file)));
  for (const file of files) {
    mkdirSync(dirname(join(to, file)), { recursive: true });
    copyFileSync(join(ROOT, file), join(to, file));
  }
  // What `npm ci` would install; links keep the copy cheap. The workspace packages are the
  // copy's own (as npm links them), so the copy builds and runs its own packages/.
  mkdirSync(join(to, 'node_modules'));
  const workspaces = workspaceLinks();
  for (const entry of readdirSync(join(ROOT, 'node_modules'))) {
    const target = workspaces.get(entry);
    symlinkSync(target ? join(to, target) : join(ROOT, 'node_modules', entry), join(to, 'node_modules', entry));
  }
}

/** The lockfile's workspace links: package name to its folder (packages/...). */
function workspaceLinks(): Map<string, string> {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { link?: boolean; resolved?: string }>;
  };
  const links = new Map<string, string>();
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (entry.link && entry.resolved) links.set(path.replace(/^node_modules\//, ''), entry.resolved);
  }
  return links;
}

/**
 * node_modules as `npm ci --omit=dev` would lay it out: a link to each top-level package the
 * lockfile does not mark as a dev dependency. Run with --preserve-symlinks, a module found
 * through these links resolves its own imports here too, so nothing can reach tsx, ts-node or
 * typescript through the real node_modules beside them.
 */
function productionModules(to: string, from: string): void {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; devOptional?: boolean; link?: boolean; resolved?: string }>;
  };
  for (const [path, entry] of Object.entries(lock.packages)) {
    const name = path.replace(/^node_modules\//, '');
    if (!path.startsWith('node_modules/') || name.includes('/node_modules/')) continue;
    // A workspace package, as the deployed tree has it: its folder, built (package.json, dist).
    if (entry.link && entry.resolved) {
      for (const part of ['package.json', 'dist'])
        cpSync(join(from, entry.resolved, part), join(to, entry.resolved, part), { recursive: true });
      symlinkSync(join(to, entry.resolved), join(to, path));
      continue;
    }
    if (entry.dev || entry.devOptional || !existsSync(join(ROOT, path))) continue;
    mkdirSync(dirname(join(to, path)), { recursive: true });
    symlinkSync(join(ROOT, path), join(to, path));
  }
}

describe('knex CLI in a fresh copy of the repository: migrate:make, list, npm start, rollback, production', function () {
  // Two builds (npm start compiles) and a dozen CLI runs, on a machine that may be busy.
  this.timeout(420_000);
  const url = `${TEST_ENV.DATABASE_URL.replace(/\/[^/]+$/, '')}/user_service_test_${RUN_ID}_clone`;
  const settings = testConfig({ DATABASE_URL: url }).db;
  const env = { ...process.env, ...TEST_ENV, DATABASE_URL: url, LOG_LEVEL: 'info', LOG_FORMAT: 'json' };
  let clone: string;
  // Outside the copy: node would otherwise find the copy's full node_modules in a parent folder.
  let prod: string;
  let db: Knex;

  const run = (cwd: string, command: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}) => {
    const result = spawnSync(command, args, { cwd, env: { ...env, ...extraEnv }, encoding: 'utf8', timeout: 90_000 });
    const output = `${result.stdout}${result.stderr}`;
    expect(result.status, `${command} ${args.join(' ')}: ${output}`).to.equal(0);
    return output;
  };
  const knex = (...args: string[]) => run(clone, 'npx', ['knex', ...args]);
  const recorded = async () =>
    (await db('knex_migrations').select('name', 'batch').orderBy('id')).map((r) => `${r.batch} ${r.name}`);
  const tables = async () => (await db.raw('SHOW TABLES'))[0].map((row: object) => Object.values(row)[0]);

  before(() => {
    clone = mkdtempSync(join(tmpdir(), 'user-service-clone-'));
    copyRepository(clone);
    prod = mkdtempSync(join(tmpdir(), 'user-service-production-'));
    db = createKnex(settings);
  });
  after(async () => {
    await db.destroy();
    await dropDatabase(settings);
    rmSync(clone, { recursive: true, force: true });
    rmSync(prod, { recursive: true, force: true });
  });

  it('records the same names from the CLI (TypeScript), npm start and the production build (JavaScript)', async () => {
    // No --knexfile: knex finds knexfile.ts and loads it through ts-node; the database is created.
    expect(knex('migrate:latest')).to.include(`Batch 1 run: ${existing.length} migrations`);

    const made = /Created Migration: (\S+)/.exec(knex('migrate:make', 'probe'))?.[1];
    expect(made && dirname(made)).to.equal(join(clone, 'src', 'db', 'migrations'));
    const probe = basename(made!, '.ts');
    expect(basename(made!)).to.match(/^\d{14}_probe\.ts$/);
    expect(readFileSync(made!, 'utf8'))
      .to.match(/export async function up\(/)
      .and.match(/export async function down\(/);

    const pending = knex('migrate:list', '--knexfile', 'knexfile.ts');
    expect(pending).to.match(new RegExp(`Found 1 Pending Migration file/files.\\s+${probe}\\s`));
    expect(await recorded()).to.deep.equal(existing.map((name) => `1 ${name}`));

    // npm start compiles the new migration with the rest and applies it before listening.
    const service = spawn('npm', ['start'], { cwd: clone, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise((resolve) => service.once('exit', resolve));
    let stderr = '';
    service.stderr!.on('data', (chunk) => (stderr += chunk));
    const logs: { msg?: string; migrations?: string[] }[] = [];
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`npm start: no "listening" within 240 s: ${stderr}`)), 240_000);
        createInterface({ input: service.stdout! }).on('line', (line) => {
          if (!line.startsWith('{')) return;
          logs.push(JSON.parse(line));
          if (logs.at(-1)!.msg === 'listening') {
            clearTimeout(timer);
            resolve();
          }
        });
        void exited.then(() => {
          clearTimeout(timer);
          reject(new Error(`npm start exited before listening: ${stderr}`));
        });
      });
    } finally {
      try {
        process.kill(-service.pid!, 'SIGTERM'); // npm, its shell and node
      } catch {
        // the whole group has exited already
      }
      await exited;
    }
    expect(logs.find((l) => l.msg === 'migrations applied')?.migrations).to.deep.equal([probe]);
    expect(await recorded()).to.deep.equal([...existing.map((name) => `1 ${name}`), `2 ${probe}`]);
    expect(knex('migrate:list'))
      .to.match(new RegExp(`Found ${existing.length + 1} Completed Migration`))
      .and.match(/No Pending Migration files Found/);

    expect(knex('migrate:rollback')).to.include('Batch 2 rolled back: 1 migrations');
    expect(await recorded()).to.deep.equal(existing.map((name) => `1 ${name}`));
    expect(knex('migrate:rollback', '--knexfile', 'knexfile.ts')).to.include(
      `Batch 1 rolled back: ${existing.length} migrations`,
    );
    expect(await tables()).to.not.include('users');

    // Production: the build (dist/ from npm start) and package.json, production dependencies only.
    mkdirSync(join(prod, 'node_modules'));
    cpSync(join(clone, 'dist'), join(prod, 'dist'), { recursive: true });
    copyFileSync(join(clone, 'package.json'), join(prod, 'package.json'));
    productionModules(prod, clone);
    for (const dev of ['tsx', 'ts-node', 'typescript'])
      expect(existsSync(join(prod, 'node_modules', dev)), dev).to.equal(false);
    const script = (JSON.parse(readFileSync(join(prod, 'package.json'), 'utf8')) as { scripts: Record<string, string> })
      .scripts['migrate:prod']!;
    expect(script).to.match(/^knex /);
    // What `npm run migrate:prod` runs (node_modules/.bin/knex is knex's bin/cli.js).
    const cli = ['--preserve-symlinks', '--preserve-symlinks-main', join('node_modules', 'knex', 'bin', 'cli.js')];
    const prodEnv = { NODE_OPTIONS: '', NODE_ENV: 'test' };
    // The service's build finds the sessions package through its workspace link, built.
    const load = "console.log(typeof require('./dist/src/sessions/store.js').SessionStore)";
    expect(run(prod, process.execPath, ['--preserve-symlinks', '-e', load], prodEnv).trim()).to.equal('function');
    expect(run(prod, process.execPath, [...cli, ...script.split(' ').slice(1)], prodEnv)).to.include(
      `Batch 1 run: ${existing.length + 1} migrations`,
    );
    expect(await recorded()).to.deep.equal([...existing.map((name) => `1 ${name}`), `1 ${probe}`]);
    // npm run rekey's twin from the build, production dependencies only (cli-progress among them).
    const rekey = (JSON.parse(readFileSync(join(prod, 'package.json'), 'utf8')) as { scripts: Record<string, string> })
      .scripts['rekey:prod']!;
    expect(rekey).to.equal('node dist/src/rekey.js');
    expect(run(prod, process.execPath, ['--preserve-symlinks', 'dist/src/rekey.js'], prodEnv)).to.include(
      '0 left that are plain text or name another key',
    );
    expect(
      run(prod, process.execPath, [...cli, 'migrate:rollback', '--knexfile', 'dist/knexfile.js'], prodEnv),
    ).to.include(`Batch 1 rolled back: ${existing.length + 1} migrations`);
    expect(await tables()).to.not.include('users');
  });
});
