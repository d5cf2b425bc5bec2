import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './redis-server';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A real Redis Cluster of `masters` redis-server processes on spare ports, made with
 * `redis-cli --cluster create`. Owned by the test that starts it; the shared Redis is untouched.
 */
export class TestRedisCluster {
  private readonly procs: ChildProcess[] = [];
  private constructor(
    readonly ports: number[],
    private readonly dir: string,
  ) {}

  get nodes(): string {
    return this.ports.map((p) => `127.0.0.1:${p}`).join(',');
  }

  static async start(masters = 3): Promise<TestRedisCluster> {
    const ports: number[] = [];
    while (ports.length < masters) {
      const p = await freePort();
      // The cluster bus listens on port + 10000: both must be free and below 65536.
      if (p + 10000 < 65536 && !ports.includes(p) && !ports.includes(p + 10000)) ports.push(p);
    }
    const cluster = new TestRedisCluster(ports, mkdtempSync(join(tmpdir(), 'redis-cluster-')));
    try {
      for (const port of ports) cluster.spawnNode(port);
      for (const port of ports) await cluster.waitFor(port, (out) => out.trim() === 'PONG', ['ping']);
      const create = spawnSync(
        'redis-cli',
        ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
        { encoding: 'utf8', timeout: 30_000 },
      );
      if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
      for (const port of ports)
        await cluster.waitFor(port, (out) => out.includes('cluster_state:ok'), ['cluster', 'info']);
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  private spawnNode(port: number): void {
    const proc = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(this.dir, `nodes-${port}.conf`),
        '--dir',
        this.dir,
        '--save',
        '',
        '--appendonly',
        'no',
        '--loglevel',
        'warning',
      ],
      { stdio: 'ignore' },
    );
    this.procs.push(proc);
  }

  private async waitFor(port: number, ok: (out: string) => boolean, args: string[]): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const res = spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
      if (res.status === 0 && ok(res.stdout)) return;
      await sleep(100);
    }
    throw new Error(`redis cluster node ${port} not ready (${args.join(' ')})`);
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.procs.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.exitCode !== null) return resolve();
            p.once('exit', () => resolve());
            p.kill('SIGKILL');
          }),
      ),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}
