import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { TEST_ENV } from './env';

const ROOT = join(__dirname, '..', '..');

export interface SpawnedService {
  proc: ChildProcess;
  url: string;
  /** The operations listener (OPS_PORT): /metrics, /readyz, /docs. */
  opsUrl: string;
  /** Every JSON log line the process wrote to stdout so far, parsed. */
  logs: Record<string, unknown>[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

/**
 * The real entry point (`node --import tsx src/server.ts`) in its own process, configured
 * for this run through the environment; resolves once it logs that it listens.
 */
export async function spawnService(
  env: Record<string, string | number> = {},
  // `-r tsx/cjs` instead of `--import tsx` spares the off-thread loader's 13 MB, for tests that
  // hold the process to a memory target.
  { nodeFlags = [], loader = ['--import', 'tsx'] }: { nodeFlags?: string[]; loader?: string[] } = {},
): Promise<SpawnedService> {
  const proc = spawn(process.execPath, [...nodeFlags, ...loader, 'src/server.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      ...TEST_ENV,
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
      ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal, at: performance.now() })),
  );
  createInterface({ input: proc.stderr! }).on('line', (line) => stderr.push(line));
  const { url, opsUrl } = await new Promise<{ url: string; opsUrl: string }>((resolve, reject) => {
    // A process that never says it listens is killed: the caller has nothing to stop it with.
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`no "listening" within 20 s: ${stderr.join('\n')}`));
    }, 20_000);
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      logs.push(entry);
      if (entry.msg === 'listening') {
        clearTimeout(timer);
        resolve({ url: `http://127.0.0.1:${entry.port}`, opsUrl: `http://127.0.0.1:${entry.opsPort}` });
      }
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before listening: ${stderr.join('\n')}`));
    });
  });
  return { proc, url, opsUrl, logs, stderr, exited };
}
