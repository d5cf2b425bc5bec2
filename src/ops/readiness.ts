import type { Logger } from '../logger';

export type Check = () => Promise<unknown>;

export interface CheckResult {
  ok: boolean;
  ms: number;
  error?: string;
}

export interface ReadinessReport {
  status: 'ready' | 'not ready' | 'draining';
  checks: Record<string, CheckResult>;
}

/**
 * Runs a check at most once at a time: a probe that arrives while the previous one still waits
 * on a hung server shares it. A stopped (not closed) MySQL would otherwise collect one stuck
 * pooled connection per probe until the pool had none left for real requests.
 */
function singleFlight(check: Check): Check {
  let pending: Promise<unknown> | undefined;
  return () => {
    pending ??= check().finally(() => (pending = undefined));
    return pending;
  };
}

/**
 * /readyz: whether the stores this service needs answer now, each within `timeoutMs`. Logs
 * when a check starts or stops failing (not on every probe). `draining` is set at shutdown so
 * that a load balancer stops sending traffic before the listener closes.
 */
export class Readiness {
  draining = false;
  private readonly checks: Record<string, Check>;
  private readonly failing = new Set<string>();

  constructor(
    checks: Record<string, Check>,
    private readonly timeoutMs: number,
    private readonly logger: Logger,
  ) {
    this.checks = Object.fromEntries(Object.entries(checks).map(([name, check]) => [name, singleFlight(check)]));
  }

  async report(): Promise<ReadinessReport> {
    const entries = await Promise.all(
      Object.entries(this.checks).map(async ([name, check]) => [name, await this.run(name, check)] as const),
    );
    const checks = Object.fromEntries(entries);
    const ok = entries.every(([, r]) => r.ok);
    return { status: this.draining ? 'draining' : ok ? 'ready' : 'not ready', checks };
  }

  private async run(name: string, check: Check): Promise<CheckResult> {
    const start = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    try {
      await Promise.race([check(), timeout]);
      if (this.failing.delete(name)) this.logger.info({ check: name }, 'readiness check passes again');
      return { ok: true, ms: Math.round(performance.now() - start) };
    } catch (err) {
      const error = String((err as Error)?.message ?? err)
        .split('\n', 1)[0]
        .slice(0, 200);
      if (!this.failing.has(name)) this.logger.warn({ check: name, err: error }, 'readiness check fails');
      this.failing.add(name);
      return { ok: false, ms: Math.round(performance.now() - start), error };
    } finally {
      clearTimeout(timer);
    }
  }
}
