import { startServer, type RunningServer } from '../../src/server';
import { watchService } from './contract';
import { testConfig } from './env';
import { post, type Answer } from './http';

/** Collects every log line the service writes, for tests that check what is (not) logged. */
export class LogCapture {
  readonly lines: string[] = [];
  write(line: string): void {
    this.lines.push(line);
  }
  get text(): string {
    return this.lines.join('');
  }
}

export interface TestService extends RunningServer {
  call<T = any>(route: string, body: unknown, opts?: Parameters<typeof post>[3]): Promise<Answer<T>>;
}

/** The real service (real MySQL, real Redis) on a free port, configured for this run. */
export async function startService(
  overrides: Record<string, string | number> = {},
  logTo?: LogCapture,
): Promise<TestService> {
  const running = await startServer(testConfig(overrides), logTo);
  // Every answer it gives is held to the document it serves (helpers/contract.ts).
  const unwatch = await watchService(running.url, running.opsUrl);
  return {
    ...running,
    async stop(graceMs) {
      try {
        return await running.stop(graceMs);
      } finally {
        unwatch();
      }
    },
    call: (route, body, opts) => post(running.url, route, body, opts),
  };
}
