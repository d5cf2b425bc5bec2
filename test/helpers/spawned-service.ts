import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { watchService } from './contract';
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

export interface SpawnOptions {
  /** Node flags before the loader (the production ones, say). */
  nodeFlags?: string[];
  /**
   * `-r tsx/cjs` instead of `--import tsx` spares the off-thread loader's 13 MB, for tests that
   * hold the process to a memory target.
   */
  loader?: string[];
  /** Starts it another way (through npm, say) instead of node + loader + src/server.ts. */
  command?: string[];
  /** A process group of its own, for tests that signal the whole group. */
  detached?: boolean;
}

/**
 * The real entry point (`node --import tsx src/server.ts`) in its own process, configured
 * for this run through the environment; resolves once it logs that it listens.
 */
export async function spawnService(
  env: Record<string, string | number> = {},
  { nodeFlags = [], loader = ['--import', 'tsx'], command, detached = false }: SpawnOptions = {},
): Promise<SpawnedService> {
  const argv = command ?? [process.execPath, ...nodeFlags, ...loader, 'src/server.ts'];
  const proc = spawn(argv[0]!, argv.slice(1), {
    cwd: ROOT,
    detached,
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
    // Generous: a WORKERS primary starts its workers after its own start, on a shared machine.
    const timer = setTimeout(() => {
      proc.kill('SIGKILL'); // not left behind by the failed test (a primary's workers follow it)
      reject(new Error(`no "listening" within 60 s: ${stderr.join('\n')}`));
    }, 60_000);
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
  // Its answers are held to the document it serves until it exits (helpers/contract.ts).
  const unwatch = await watchService(url, opsUrl);
  void exited.then(unwatch);
  return { proc, url, opsUrl, logs, stderr, exited };
}
