import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createKnex, dropDatabase, type Knex } from '../../src/db/knex';
import { DEMO_USERS } from '../../src/db/seeds/demo-users';
import { RUN_ID, TEST_ENV, testConfig } from '../helpers/env';

const ROOT = join(__dirname, '..', '..');

describe('knex CLI: npm run migrate, seed, migrate:rollback (knexfile.ts)', function () {
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
