import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import { freePort } from './redis-server';

export const SENTINEL_NAME = 'users';

async function ping(port: number): Promise<boolean> {
  const probe = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  probe.on('error', () => {});
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

async function waitFor(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} within ${ms} ms`);
}

/**
 * A Redis primary, one replica and three sentinels (quorum 2) on spare ports, owned by one test,
 * which may kill the primary: the sentinels then promote the replica (down after 1 s). The
 * shared Redis on 6379 is never touched.
 */
export class TestRedisSentinels {
  private readonly procs = new Map<number, ChildProcess>();
  private constructor(
    readonly dir: string,
    readonly primaryPort: number,
    readonly replicaPort: number,
    readonly sentinelPorts: number[],
  ) {}

  /** REDIS_SENTINELS for the service. */
  get sentinels(): string {
    return this.sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',');
  }

  static async start(): Promise<TestRedisSentinels> {
    const dir = mkdtempSync(join(tmpdir(), 'user-service-sentinel-'));
    const set = new TestRedisSentinels(dir, await freePort(), await freePort(), [
      await freePort(),
      await freePort(),
      await freePort(),
    ]);
    try {
      // In its own directory: a replica's full sync writes an RDB file wherever it runs.
      const server = ['--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--loglevel', 'warning'];
      set.run(set.primaryPort, ['--port', String(set.primaryPort), ...server]);
      set.run(set.replicaPort, [
        '--port',
        String(set.replicaPort),
        '--replicaof',
        '127.0.0.1',
        String(set.primaryPort),
        ...server,
      ]);
      await waitFor(() => ping(set.primaryPort), 10_000, 'the primary did not answer');
      await waitFor(
        async () => (await set.info(set.replicaPort, 'replication')).includes('master_link_status:up'),
        10_000,
        'the replica did not sync',
      );
      for (const port of set.sentinelPorts) {
        const file = join(dir, `sentinel-${port}.conf`);
        writeFileSync(
          file,
          [
            `port ${port}`,
            'bind 127.0.0.1',
            `dir ${dir}`,
            `sentinel monitor ${SENTINEL_NAME} 127.0.0.1 ${set.primaryPort} 2`,
            `sentinel down-after-milliseconds ${SENTINEL_NAME} 1000`,
            `sentinel failover-timeout ${SENTINEL_NAME} 10000`,
            `sentinel parallel-syncs ${SENTINEL_NAME} 1`,
            '',
          ].join('\n'),
        );
        set.run(port, [file, '--sentinel', '--loglevel', 'warning']);
      }
      // Each sentinel must know the replica and the others before a failover can be agreed.
      await waitFor(
        async () =>
          (
            await Promise.all(
              set.sentinelPorts.map(async (port) => {
                const out = await set.command(port, ['SENTINEL', 'MASTER', SENTINEL_NAME]).catch(() => []);
                const fields = new Map<string, string>();
                for (let i = 0; i + 1 < (out as string[]).length; i += 2)
                  fields.set((out as string[])[i]!, (out as string[])[i + 1]!);
                return fields.get('num-slaves') === '1' && fields.get('num-other-sentinels') === '2';
              }),
            )
          ).every(Boolean),
        20_000,
        'the sentinels did not find each other and the replica',
      );
      return set;
    } catch (err) {
      await set.destroy();
      throw err;
    }
  }

  private run(port: number, args: string[]): void {
    this.procs.set(port, spawn('redis-server', args, { stdio: 'ignore' }));
  }

  async command(port: number, args: string[]): Promise<unknown> {
    const client = new Redis({
      port,
      host: '127.0.0.1',
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    client.on('error', () => {});
    try {
      await client.connect();
      return await client.call(args[0]!, ...args.slice(1));
    } finally {
      client.disconnect();
    }
  }

  private async info(port: number, section: string): Promise<string> {
    return String(await this.command(port, ['INFO', section]).catch(() => ''));
  }

  /** The port the sentinels name as the primary now. */
  async primary(): Promise<number> {
    const [, port] = (await this.command(this.sentinelPorts[0]!, [
      'SENTINEL',
      'GET-MASTER-ADDR-BY-NAME',
      SENTINEL_NAME,
    ])) as string[];
    return Number(port);
  }

  /** SIGKILLs the current primary. */
  async killPrimary(): Promise<number> {
    const port = await this.primary();
    const proc = this.procs.get(port);
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await exited;
    }
    return port;
  }

  async destroy(): Promise<void> {
    await Promise.all(
      [...this.procs.values()].map((proc) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return undefined;
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        return exited;
      }),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}
