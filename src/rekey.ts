import { Presets, SingleBar } from 'cli-progress';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, requirePhoneKeys } from './config';
import { createLogger } from './logger';
import { createServices } from './services';

/**
 * `npm run rekey`, or `node dist/src/rekey.js` from the build: seals every users.phone that is
 * plain text or names another key than the first of PHONE_KEYS, in batches, while the service
 * runs (docs/phone-encryption.md). Each batch is one short transaction on its own rows, so
 * the table is never locked as a whole, and a phone written meanwhile is never overwritten
 * (UserService.rekeyPhones). Stopped (Ctrl-C) or failed, it can simply be run again: it finds
 * only what is left; `--after <id>` skips the rows before that id.
 *
 * Exit status: 0 when no row is left to do, 1 when some are (unreadable ones, say), 2 on a
 * configuration or connection failure.
 */

const USAGE = 'usage: npm run rekey -- [--batch <rows, default 200>] [--after <users.id>]';

/** Progress on a terminal, a line every few seconds elsewhere (a job's log). */
function progress(total: number) {
  if (process.stderr.isTTY) {
    const bar = new SingleBar(
      {
        format: 'rekey [{bar}] {percentage}% | {value}/{total} rows | {resealed} sealed | ETA {eta_formatted}',
        stream: process.stderr,
        hideCursor: true,
      },
      Presets.shades_classic,
    );
    bar.start(total, 0, { resealed: 0 });
    return {
      update: (done: number, resealed: number) => bar.update(Math.min(done, total), { resealed }),
      stop: () => bar.stop(),
    };
  }
  let last = 0;
  return {
    update(done: number, resealed: number) {
      if (Date.now() - last < 5000) return;
      last = Date.now();
      process.stderr.write(`rekey: ${done}/${total} rows, ${resealed} sealed\n`);
    },
    stop() {},
  };
}

async function main(): Promise<number> {
  let batch: number;
  let after: number;
  try {
    const { values } = parseArgs({ options: { batch: { type: 'string' }, after: { type: 'string' } } });
    batch = Number(values.batch ?? 200);
    after = Number(values.after ?? 0);
    if (!Number.isInteger(batch) || batch < 1 || batch > 5000 || !Number.isInteger(after) || after < 0) {
      throw new Error('--batch is 1-5000 rows, --after a users.id');
    }
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const config = loadConfig();
  const keys = requirePhoneKeys(config);
  // Warnings and errors only (an unreadable row is an error line), on stderr beside the bar.
  const quiet = ['silent', 'fatal', 'error'].includes(config.logLevel) ? config.logLevel : 'warn';
  const logger = createLogger({ level: quiet, format: 'json' }, process.stderr);
  const services = await createServices(config, logger);
  let stopping = false;
  const stop = () => {
    if (stopping) process.exit(130);
    stopping = true;
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    const { users } = services;
    const total = await users.countPhonesToRekey();
    const bar = progress(total);
    let found = 0;
    let resealed = 0;
    let unreadable = 0;
    try {
      while (!stopping) {
        const done = await users.rekeyPhones(after, batch);
        if (!done) break;
        after = done.lastId;
        found += done.found;
        resealed += done.resealed;
        unreadable += done.unreadable;
        bar.update(found, resealed);
      }
    } finally {
      bar.stop();
    }
    const left = await users.countPhonesToRekey();
    process.stdout.write(
      `rekey: ${resealed} phone(s) sealed with key "${keys[0]!.id}"; ${found - resealed - unreadable} already ` +
        `sealed with it by the service meanwhile; ${unreadable} unreadable (see the error lines); ` +
        `${left} left that are plain text or name another key\n`,
    );
    if (stopping) process.stdout.write(`rekey: stopped after users.id ${after}; run it again to go on\n`);
    return left === 0 ? 0 : 1;
  } finally {
    await services.close();
  }
}

if (require.main === module) {
  main().then(
    (status) => process.exit(status),
    (err: unknown) => {
      const message = err instanceof ConfigError ? err.message : `rekey failed: ${(err as Error)?.message ?? err}`;
      process.stderr.write(`${message}\n`);
      process.exit(2);
    },
  );
}
