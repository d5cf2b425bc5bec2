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
    call: (route, body, opts) => post(running.url, route, body, opts),
    // A drain waits for idle keep-alive connections to end by themselves (src/shutdown.ts): up
    // to HTTP_KEEP_ALIVE_TIMEOUT_MS for those fetch keeps after a test's last request. A test
    // that stops its service is done calling it, so they are closed first, sparing every suite
    // that wait; test/ops/shutdown.test.ts and reload.test.ts drain the real way.
    async stop(graceMs) {
      running.server.closeIdleConnections();
      try {
        return await running.stop(graceMs);
      } finally {
        unwatch();
      }
    },
  };
}
