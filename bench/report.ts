import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { LoadResult, LoadSettings } from './load';
import type { ProfileSummary } from './profile';

export interface Row {
  scenario: string;
  /** The floor row this one is compared with (by scenario name). */
  floor?: string;
  /** The median over rounds (see combine in load.ts). */
  result: LoadResult;
  /** Each round's req/s, p99 and the share of the machine's CPU other tenants used meanwhile. */
  perRound?: { rps: number; p99: number; other: number; fullGcs?: number }[];
  /** Largest RSS of one service process during this scenario (bytes). */
  rssMax?: number;
  /** How many processes the server had (node:cluster primary + workers). */
  processes?: number;
  note?: string;
}

export interface RunReport {
  date: string;
  cores: number;
  cpuModel: string;
  node: string;
  mariadb: string;
  /** Buffer pool and table size: whether the table fits in memory. */
  mysqlMemory?: string;
  redis: string;
  users: number;
  /** How long seeding took, here or in the earlier run whose rows were kept. */
  seedSeconds: number | null;
  seedKept?: boolean;
  workingSet: number;
  rounds: number;
  settings: LoadSettings;
  rows: Row[];
  /** Largest RSS of one service process over the whole run (warm-ups included), and when. */
  rssMax: number;
  rssMaxDuring: string;
  rssIdle: number;
  /** The measured uncached run: responses, openids sent (in-flight ones included), profiles it filled. */
  uncached: { requests: number; sent: number; misses: number };
  workersNote: string;
  /** The after-a-burst processes: their surges (all rounds) and largest RSS (outside the RSS target). */
  surge?: { connections: number; seconds: number; requests: number; failed: number; rssPeak: number };
  profile?: { file: string; summary: ProfileSummary; scenario: string };
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ms = (n: number) => (n < 10 ? n.toFixed(2) : n.toFixed(1));
const mib = (bytes: number) => (bytes / (1024 * 1024)).toFixed(0);
/** Both units: MiB as the rest of the report, MB as the 150 MB target is written. */
const mibMb = (bytes: number) => `${mib(bytes)} MiB (${(bytes / 1e6).toFixed(0)} MB)`;

export function rowFor(report: RunReport, scenario: string): Row | undefined {
  return report.rows.find((r) => r.scenario === scenario);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/**
 * A path against its floor: the median over rounds of the ratio within each round (a path
 * and its floor measured minutes apart would compare two different machines), or the ratio of
 * the medians when the rounds do not pair up.
 */
function ratios(report: RunReport, row: Row): { rps?: number; p99?: number } {
  const floor = row.floor ? rowFor(report, row.floor) : undefined;
  if (!floor) return {};
  const a = row.perRound;
  const b = floor.perRound;
  if (a && b && a.length === b.length && a.length > 0) {
    return {
      rps: median(a.map((r, i) => r.rps / b[i]!.rps)),
      p99: median(a.map((r, i) => r.p99 / b[i]!.p99)),
    };
  }
  return {
    rps: floor.result.rps ? row.result.rps / floor.result.rps : undefined,
    p99: floor.result.p99 ? row.result.p99 / floor.result.p99 : undefined,
  };
}

/** Each round's mark-compacts per second in the service (single-process services only). */
function fullGcs(row: Row): string {
  const rounds = row.perRound ?? [];
  if (!rounds.length || rounds.some((x) => x.fullGcs === undefined)) return '—';
  return rounds.map((x) => x.fullGcs!.toFixed(1)).join(', ');
}

export function resultsTable(report: RunReport): string {
  const lines = [
    "| scenario | req/s | rounds' req/s | p50 ms | p99 ms | errors / non-2xx / code≠0 | floor | req/s ÷ floor | p99 ÷ floor | RSS max MiB | procs | full GCs/s | others' CPU |",
    '| --- | ---: | --- | ---: | ---: | :---: | --- | ---: | ---: | ---: | ---: | --- | --- |',
  ];
  for (const row of report.rows) {
    const r = row.result;
    const q = ratios(report, row);
    const bad = `${r.errors} / ${r.non2xx} / ${r.notOk - r.non2xx}`;
    lines.push(
      `| ${row.scenario}${row.note ? ` (${row.note})` : ''} | ${fmt(r.rps)} | ${(row.perRound ?? []).map((x) => fmt(x.rps)).join(', ')} | ${ms(r.p50)} | ${ms(r.p99)} | ${bad} | ${row.floor ?? '—'} | ${
        q.rps !== undefined ? q.rps.toFixed(2) : '—'
      } | ${q.p99 !== undefined ? q.p99.toFixed(2) : '—'} | ${row.rssMax ? mib(row.rssMax) : '—'} | ${row.processes ?? '—'} | ${fullGcs(row)} | ${(row.perRound ?? []).map((x) => `${(x.other * 100).toFixed(0)} %`).join(', ')} |`,
    );
  }
  return lines.join('\n');
}

const verdict = (ok: boolean | undefined) => (ok === undefined ? 'n/a' : ok ? 'met' : '**not met**');

export function targetsTable(report: RunReport): string {
  const cached = rowFor(report, CACHED_W1);
  const burst = rowFor(report, CACHED_BURST);
  const uncached = rowFor(report, UNCACHED);
  const w2 = rowFor(report, CACHED_W2);
  const lines = ['| target | measured | |', '| --- | --- | --- |'];
  if (cached) {
    const q = ratios(report, cached);
    const errs = cached.result.errors + cached.result.notOk;
    lines.push(
      `| cached loginByOpenid req/s ≥ 0.8 × Redis floor | ${q.rps?.toFixed(2) ?? '—'} × | ${verdict(q.rps === undefined ? undefined : q.rps >= 0.8)} |`,
    );
    lines.push(
      `| cached loginByOpenid p99 ≤ 2 × Redis floor's | ${q.p99?.toFixed(2) ?? '—'} × | ${verdict(q.p99 === undefined ? undefined : q.p99 <= 2)} |`,
    );
    lines.push(`| cached loginByOpenid: zero errors | ${errs} | ${verdict(errs === 0)} |`);
  }
  if (burst) {
    // What the row guards is the collector's state the surge leaves behind: a process whose
    // request sites V8 pretenured runs several full GCs a second in every round.
    const gcs = (burst.perRound ?? []).map((r) => r.fullGcs).filter((x): x is number => x !== undefined);
    const worst = gcs.length ? Math.max(...gcs) : undefined;
    lines.push(
      `| cached loginByOpenid after a burst: full GCs/s ≤ 1 in every round | ${worst === undefined ? '—' : `at most ${worst.toFixed(1)}`} | ${verdict(worst === undefined ? undefined : worst <= 1)} |`,
    );
    const errs = burst.result.errors + burst.result.notOk;
    lines.push(`| cached loginByOpenid after a burst: zero errors | ${errs} | ${verdict(errs === 0)} |`);
    const q = ratios(report, burst);
    const quiet = cached ? ratios(report, cached).rps : undefined;
    lines.push(
      `| cached loginByOpenid after a burst, req/s and p99 ÷ Redis floor's | ${q.rps?.toFixed(2) ?? '—'} × and ${q.p99?.toFixed(2) ?? '—'} ×` +
        `${q.rps !== undefined && quiet ? ` (${(q.rps / quiet).toFixed(2)} × the quiet process's ratio)` : ''} | reported |`,
    );
  }
  if (uncached) {
    const q = ratios(report, uncached);
    lines.push(
      `| uncached loginByOpenid req/s ≥ 0.8 × MySQL floor | ${q.rps?.toFixed(2) ?? '—'} × | ${verdict(q.rps === undefined ? undefined : q.rps >= 0.8)} |`,
    );
  }
  lines.push(
    `| RSS of one service process < 150 MB through the run (${report.settings.connections}-connection scenarios) | ${mibMb(report.rssMax)}, during ${report.rssMaxDuring} | ${verdict(report.rssMax < 150e6)} |`,
  );
  if (report.surge) {
    const { connections, seconds, requests, failed, rssPeak } = report.surge;
    const times = Math.round(connections / report.settings.connections);
    lines.push(
      `| RSS of a fresh process through its ${fmt(connections)}-connection, ${seconds} s surge (${fmt(requests)} requests over all rounds, ${fmt(failed)} failed) and its cached row; the 150 MB target is not applied at ${times} × the connections | ${mibMb(rssPeak)} | reported |`,
    );
  }
  if (cached && w2) {
    const a = cached.perRound;
    const b = w2.perRound;
    const speedup =
      a && b && a.length === b.length && a.length
        ? median(b.map((r, i) => r.rps / a[i]!.rps))
        : w2.result.rps / cached.result.rps;
    lines.push(
      `| cached loginByOpenid, WORKERS=2 vs WORKERS=1 | ${fmt(w2.result.rps)} vs ${fmt(cached.result.rps)} req/s (${speedup.toFixed(2)} ×, median of the rounds' ratios); ${w2.processes} vs ${cached.processes} processes | reported |`,
    );
  }
  return lines.join('\n');
}

export function profileSection(report: RunReport): string {
  if (!report.profile) return '';
  const { summary, scenario } = report.profile;
  const out = [
    `### Where the service spends its CPU (${scenario})`,
    '',
    `One more run of that scenario with the service under \`node --cpu-prof\` (the profiler slows it, so`,
    `these numbers are not in the table), from start to shutdown: ${fmt(summary.totalMs)} ms busy, ${fmt(summary.idleMs)} ms idle.`,
    `Shares are of the busy time. Self time, by origin:`,
    '',
    '| origin | self ms | share |',
    '| --- | ---: | ---: |',
    ...summary.origins.map((o) => `| ${o.name} | ${fmt(o.selfMs)} | ${(o.share * 100).toFixed(1)} % |`),
    '',
    'Top functions by self time (for a native frame, the JavaScript function that called it most):',
    '',
    '| function | where | self ms | share |',
    '| --- | --- | ---: | ---: |',
    ...summary.functions.map(
      (f) =>
        `| \`${f.name}\` | ${f.where}${f.caller ? `, from \`${f.caller}\`` : ''} | ${fmt(f.selfMs)} | ${(f.share * 100).toFixed(1)} % |`,
    ),
  ];
  return out.join('\n');
}

export const FLOOR_REDIS = 'floor: node:http + ioredis';
export const FLOOR_MYSQL = 'floor: node:http + mysql2';
export const CACHED_W1 = 'loginByOpenid cached, WORKERS=1';
export const CACHED_W2 = 'loginByOpenid cached, WORKERS=2';
export const CACHED_BURST = 'loginByOpenid cached, fresh WORKERS=1 after a burst';
export const BURST_NOTE = (connections: number, seconds: number) =>
  `${fmt(connections)} connections of launches for ${seconds} s first`;
export const UNCACHED = 'loginByOpenid uncached';
export const GET = 'get (cached)';
export const UPDATE = 'update nick_name';

/**
 * While the service does not fork, the WORKERS=1 and WORKERS=2 rows measure the same code:
 * how far apart their ratios land is this run's resolution, worth saying next to the targets.
 */
function resolutionNote(report: RunReport): string {
  const a = rowFor(report, CACHED_W1);
  const b = rowFor(report, CACHED_W2);
  if (!a || !b || (a.processes ?? 1) > 1 || (b.processes ?? 1) > 1) return '';
  const qa = ratios(report, a).rps;
  const qb = ratios(report, b).rps;
  if (qa === undefined || qb === undefined) return '';
  return (
    `Both cached rows ran the same single-process service, so the gap between their ratios to the floor ` +
    `(${qa.toFixed(2)} and ${qb.toFixed(2)}) is this run's resolution: a difference smaller than that is noise ` +
    '(more `--rounds` or a longer `--duration` narrow it).'
  );
}

export function section(report: RunReport): string {
  const s = report.settings;
  const u = report.uncached;
  const missRate = u.sent ? Math.min(1, u.misses / u.sent) : 0;
  return [
    `## ${fmt(report.users)} users`,
    '',
    `${report.date} · ${report.cores} cores (${report.cpuModel}) · Node ${report.node} · MariaDB ${report.mariadb} · Redis ${report.redis}` +
      (report.mysqlMemory ? ` · ${report.mysqlMemory}` : ''),
    '',
    `Seeded ${fmt(report.users)} users${report.seedSeconds === null ? '' : ` in ${report.seedSeconds.toFixed(1)} s`}` +
      `${report.seedKept ? ' (by an earlier run; its rows were kept)' : ''}. ` +
      `autocannon: ${s.connections} connections, pipelining ${s.pipelining}; every row was measured in each of ${report.rounds} interleaved rounds ` +
      `(${s.warmup} s warm-up, then ${s.duration} s measured), and shows the median round. ` +
      `Cached rows use a working set of ${fmt(report.workingSet)} users, warmed first; the uncached rounds sent ${fmt(u.sent)} openids, ` +
      `each round's drawn without replacement across the ${fmt(report.users - report.workingSet)} users outside the working set, with the profile cache emptied just before; ` +
      `they made ${fmt(u.misses)} cache fills, ` +
      `a miss rate of ${(missRate * 100).toFixed(1)} %. ${report.workersNote}` +
      (rowFor(report, CACHED_BURST)
        ? ' The row after a burst started a fresh single-process service in each round and, before its warm-up, ' +
          'sent it the surge of logins (any user) its note names: with allocation-site pretenuring on, such a surge ' +
          "has V8 allocate each later request's objects in the old generation for the rest of the process's life " +
          '(README, Scaling).'
        : ''),
    '',
    resultsTable(report),
    '',
    `Service RSS: ${mib(report.rssIdle)} MiB idle after start, at most ${mib(report.rssMax)} MiB in one process (during ${report.rssMaxDuring})` +
      (report.surge ? `; ${mib(report.surge.rssPeak)} MiB in a fresh process through its surge.` : '.'),
    '',
    '### Targets (reported, not enforced)',
    '',
    targetsTable(report),
    '',
    resolutionNote(report),
    '',
    profileSection(report),
  ]
    .join('\n')
    .trimEnd();
}

const INTRO = `# Benchmarks

Written by \`npm run bench\` (\`bench/\`); rerun it rather than editing this file. Options:
\`npm run bench -- --help\`; \`--users 1000000\` writes its own section and the scale comparison.

The service runs from the compiled build (\`dist/src/server.js\`) as a child process against the
real MariaDB (its own database, \`user_service_bench_<users>\`) and Redis (its own key prefix,
removed at the start and the end), with \`LOG_LEVEL=warn\` and **rate limits off**
(\`RATE_LIMIT_IP=0\`, \`RATE_LIMIT_OPENID=0\`: the bench measures the service's path, not the
limiter's refusals). autocannon drives it from the parent process over loopback.

**Read the ratios, not the absolute numbers.** The machine is small and shared: the load
generator, the server, MariaDB and Redis compete for the same cores. Each service path is
compared with its *floor*, a bare \`node:http\` server run the same way with the same client
settings that does only the I/O the path cannot avoid. All servers stay up for the whole run;
the scenarios are measured in rounds, each round running every floor next to its paths, and
the table shows each scenario's median round (the req/s of every round beside it):

- **node:http + ioredis** (\`bench/floors/redis-floor.ts\`), the floor of cached
  \`loginByOpenid\` (and of \`get\`, which needs less): parses the same JSON body, makes the
  same one Redis round trip as the service (its login script: read the cached profile, store
  the session and its index entry) and answers the same envelope.
- **node:http + mysql2** (\`bench/floors/mysql-floor.ts\`), the floor of uncached
  \`loginByOpenid\` (and, loosely, of \`update\`): the same indexed \`SELECT … WHERE openid = ?\`
  through a pool of the service's size (\`DB_POOL_MAX\`).

Columns: req/s over the measured seconds (median round); p50/p99 of every response's latency; errors (socket
errors and timeouts) / non-2xx answers / HTTP 200 answers whose envelope code is not 0; RSS max
is the largest resident set of one service process during that row, sampled every 100 ms from
\`/proc/<pid>/status\`; procs is how many processes the server had (node:cluster primary + workers).
The ratios to the floor are the median over rounds of each round's own ratio (a path and its
floor measured in the same round), so they need not equal the quotient of the two medians
shown. Others' CPU is, per round, the share of the machine's CPU (all cores) used by processes
other than the bench, its servers, MariaDB and Redis during the measurement: a round where it
is high was disturbed by another tenant of the machine. Full GCs/s is, per round, how many
mark-compacts the single-process service ran per second of the measurement (from its own
/metrics): a cached round with several per second measured a process in the slow state the
README's Scaling section describes.`;

const DATA = /<!-- bench-data (.*?) -->/;
const SECTION = /<!-- bench:(\d+) -->\n([\s\S]*?)\n<!-- \/bench:\1 -->/g;

/**
 * 1,000,000 against 100,000 users. The two runs happen minutes or days apart on a shared
 * machine, so raw req/s compare two machines; the Redis floor does not depend on the number of
 * users at all (it reads the same 10,000 cached profiles), so each path is first divided by its
 * own run's Redis floor: what is left of the change is the path's, not the machine's. The
 * verdict is on that adjusted change.
 */
function scaleSection(reports: RunReport[]): string {
  const base = reports.find((r) => r.users === 100_000);
  const big = reports.find((r) => r.users === 1_000_000);
  if (!base || !big) return '';
  const floorA = rowFor(base, FLOOR_REDIS)?.result.rps;
  const floorB = rowFor(big, FLOOR_REDIS)?.result.rps;
  const lines = [
    '## Scale: 1,000,000 vs 100,000 users',
    '',
    `From the two sections above (runs of ${base.date} and ${big.date}). Target: within 10 %. The runs are ` +
      'minutes or days apart on a shared machine, so raw req/s also measure how fast the machine was that day. ' +
      'The Redis floor does not depend on the number of users (it reads the same cached working set), so the ' +
      '*adjusted* change divides each run by its own Redis floor first; the verdict is on it. The last column ' +
      'divides each path by its own floor instead: for the uncached path, the MySQL floor runs the same indexed ' +
      "SELECT on the same table, so what is left is the service's own change, whatever the database did " +
      `(this MariaDB: ${base.mysqlMemory ?? '?'} at 100k, ${big.mysqlMemory ?? '?'} at 1M).`,
    '',
    '| scenario | req/s 100k | req/s 1M | raw 1M ÷ 100k | adjusted 1M ÷ 100k | | 1M ÷ 100k, each ÷ its own floor |',
    '| --- | ---: | ---: | ---: | ---: | --- | ---: |',
  ];
  for (const name of [FLOOR_REDIS, CACHED_W1, UNCACHED, FLOOR_MYSQL]) {
    const a = rowFor(base, name);
    const b = rowFor(big, name);
    if (!a || !b) continue;
    const raw = b.result.rps / a.result.rps;
    const adjusted = floorA && floorB ? b.result.rps / floorB / (a.result.rps / floorA) : undefined;
    const judged = name === CACHED_W1 || name === UNCACHED;
    const ownA = a.floor ? rowFor(base, a.floor)?.result.rps : undefined;
    const ownB = b.floor ? rowFor(big, b.floor)?.result.rps : undefined;
    const own = ownA && ownB ? (b.result.rps / ownB / (a.result.rps / ownA)).toFixed(2) : '—';
    lines.push(
      `| ${name} | ${fmt(a.result.rps)} | ${fmt(b.result.rps)} | ${raw.toFixed(2)} | ${
        name === FLOOR_REDIS ? '1 (by definition)' : (adjusted?.toFixed(2) ?? '—')
      } | ${judged ? verdict(adjusted === undefined ? undefined : Math.abs(adjusted - 1) <= 0.1) : 'for reference'} | ${own} |`,
    );
  }
  return lines.join('\n');
}

/** Reads the reports stored in an existing BENCHMARKS.md (one per seed size). */
export function storedReports(file: string): RunReport[] {
  if (!existsSync(file)) return [];
  const text = readFileSync(file, 'utf8');
  const out: RunReport[] = [];
  for (const m of text.matchAll(SECTION)) {
    const data = DATA.exec(m[2]!);
    if (data) out.push(JSON.parse(data[1]!.replace(/-\\->/g, '-->')) as RunReport);
  }
  return out;
}

/**
 * Rewrites BENCHMARKS.md: the intro, one section per seed size (this run's replaces the one of
 * the same size, the others are kept) and the scale comparison when both sizes are there.
 */
export function writeBenchmarks(file: string, report?: RunReport): string {
  const reports = storedReports(file).filter((r) => r.users !== report?.users);
  if (report) reports.push(report);
  reports.sort((a, b) => a.users - b.users);
  const parts = [INTRO];
  for (const r of reports) {
    // The JSON rides along in a comment so a later run can compare with it.
    const data = JSON.stringify(r).replace(/-->/g, '-\\->');
    parts.push(`<!-- bench:${r.users} -->\n${section(r)}\n\n<!-- bench-data ${data} -->\n<!-- /bench:${r.users} -->`);
  }
  const scale = scaleSection(reports);
  if (scale) parts.push(scale);
  const text = `${parts.join('\n\n')}\n`;
  writeFileSync(file, text);
  return scale;
}
