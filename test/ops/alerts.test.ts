import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { scrape } from '../helpers/metrics';
import { startService, type TestService } from '../helpers/service';

const DEPLOY = join(__dirname, '..', '..', 'deploy');
const RULES = join(DEPLOY, 'prometheus-alerts.yml');
const DASHBOARD = join(DEPLOY, 'grafana-dashboard.json');

/** The metric names a PromQL text uses: the service's own, and the Node/process ones prom-client exports. */
function metricNames(promql: string): Set<string> {
  return new Set(promql.match(/\b(?:user_service|nodejs|process)_[a-z0-9_]+\b/g) ?? []);
}

/** A histogram's series are its name with _bucket, _count or _sum; the exposition's # TYPE line has the name. */
const family = (name: string, types: Set<string>) =>
  types.has(name) ? name : [...types].find((t) => /^(.*)_(bucket|count|sum)$/.exec(name)?.[1] === t);

describe('deploy/: Prometheus alert rules and the Grafana dashboard', function () {
  this.timeout(30_000);
  let svc: TestService;
  before(async () => {
    svc = await startService();
  });
  after(async () => {
    await svc.stop();
  });

  it('passes promtool check rules', () => {
    const check = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
    expect(check.error, 'promtool (Debian package prometheus; .ci/run installs it)').to.equal(undefined);
    expect(check.status, check.stdout + check.stderr).to.equal(0);
    expect(check.stdout).to.match(/SUCCESS: \d+ rules found/);
  });

  it('names only metrics the service exports, in the rules and in every dashboard panel', async () => {
    const rules = readFileSync(RULES, 'utf8');
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr));
    expect(exprs.length).to.be.greaterThan(10);
    const named = metricNames([rules, ...exprs].join('\n'));
    const { text } = await scrape(svc.opsUrl);
    const types = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    const unknown = [...named].filter((name) => !family(name, types));
    expect(unknown).to.deep.equal([]);
    // What the issue asks the rules to watch.
    for (const watched of [
      'user_service_ready',
      'user_service_http_requests_total',
      'user_service_http_shed_total',
      'user_service_redis_breaker_open',
      'user_service_db_pool_connections',
      'nodejs_gc_duration_seconds_count',
      'user_service_process_resident_memory_max_bytes',
    ]) {
      expect(metricNames(rules).has(watched), watched).to.equal(true);
    }
  });
});
