import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'mysql2/promise';
import { freePort } from './redis-server';

const MARIADBD = existsSync('/usr/sbin/mariadbd') ? '/usr/sbin/mariadbd' : 'mariadbd';
// Small InnoDB files and buffers: this server holds a few rows and must start fast.
const SMALL = ['--innodb-log-file-size=4M', '--innodb-data-file-path=ibdata1:4M:autoextend'];

/**
 * A mariadbd owned by one test: its own data directory (mariadb-install-db, ~2 s) and spare
 * port, which the test may stop, start again, pause (SIGSTOP) and resume. The shared MariaDB
 * on 3306 is never touched. Root has no password, over TCP only.
 */
export class TestMariadbServer {
  private proc?: ChildProcess;
  private constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  static async create(): Promise<TestMariadbServer> {
    const dir = mkdtempSync(join(tmpdir(), 'user-service-mariadb-'));
    const install = spawnSync(
      'mariadb-install-db',
      [
        '--no-defaults',
        `--datadir=${join(dir, 'data')}`,
        '--auth-root-authentication-method=normal',
        '--skip-test-db',
        '--skip-name-resolve',
        '--user=root',
        ...SMALL,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    if (install.status !== 0) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`mariadb-install-db failed: ${install.stderr || install.stdout}`);
    }
    const server = new TestMariadbServer(dir, await freePort());
    await server.start();
    return server;
  }

  /** Server URL without a database: append `/<name>`. */
  get url(): string {
    return `mysql://root@127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.proc = spawn(
      MARIADBD,
      [
        '--no-defaults',
        `--datadir=${join(this.dir, 'data')}`,
        `--port=${this.port}`,
        `--socket=${join(this.dir, 'sock')}`,
        `--pid-file=${join(this.dir, 'pid')}`,
        `--log-error=${join(this.dir, 'error.log')}`,
        '--bind-address=127.0.0.1',
        '--user=root',
        '--skip-name-resolve',
        '--innodb-buffer-pool-size=16M',
        ...SMALL,
      ],
      { stdio: 'ignore' },
    );
    await this.waitReady();
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.proc?.exitCode !== null) throw new Error(`mariadbd exited; see ${join(this.dir, 'error.log')}`);
      try {
        const conn = await createConnection({ host: '127.0.0.1', port: this.port, user: 'root', connectTimeout: 1000 });
        await conn.end();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    throw new Error(`mariadbd on ${this.port} did not start`);
  }

  /** A clean shutdown (SIGTERM), as an operator's restart would do. */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    proc.kill('SIGCONT');
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    await exited;
    this.proc = undefined;
  }

  /** SIGKILL without SIGCONT first: a paused server dies without running another instruction. */
  async crash(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGKILL');
    await exited;
    this.proc = undefined;
  }

  pause(): void {
    this.proc?.kill('SIGSTOP');
  }

  /** Whether every thread of the server has stopped (state T in /proc): SIGSTOP takes effect a moment after kill(). */
  stopped(): boolean {
    const pid = this.proc?.pid;
    if (pid === undefined) return false;
    try {
      return readdirSync(`/proc/${pid}/task`).every((tid) =>
        /^\d+ \(.*\) T /.test(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')),
      );
    } catch {
      return false;
    }
  }

  resume(): void {
    this.proc?.kill('SIGCONT');
  }

  /** Kills the server and removes its data directory. */
  async destroy(): Promise<void> {
    const proc = this.proc;
    if (proc && proc.exitCode === null) {
      proc.kill('SIGCONT');
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGKILL');
      await exited;
    }
    this.proc = undefined;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
