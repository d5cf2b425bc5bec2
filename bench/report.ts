import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LoadResult, LoadSettings } from './load';
import type { ProfileSummary } from './profile';

export interface Row {
  scenario: string;
  /** The row this one is compared with (by scenario name): its floor, or its clean twin. */
  floor?: string;
  /** The median over rounds (see combine in load.ts). */
  result: LoadResult;
  /**
   * Each round's req/s and p99, the share of the machine's CPU other tenants used meanwhile, and
   * the CPU (share of one core) of the server, of the load generator and of the attacker.
   */
  perRound?: {
    rps: number;
    p99: number;
    other: number;
    fullGcs?: number;
    cpu?: number;
    gen?: number;
    attack?: number;
  }[];
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
  /** Runs stored before wrk was used have no generator: autocannon. */
  settings: Omit<LoadSettings, 'generator' | 'threads'> & Partial<Pick<LoadSettings, 'generator' | 'threads'>>;
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
  /** The attack row's attacker: its settings, and its bodies over all rounds by HTTP status. */
  attack?: {
    halfOpen: number;
    rate: number;
    size: number;
    sent: number;
    late: number;
    answered: Record<string, number>;
    halfOpenAlive: number[];
  };
  profile?: { file: string; summary: ProfileSummary; scenario: string };
}

export const FLOOR_REDIS = 'floor: node:http + ioredis';
export const FLOOR_REDIS_PIPELINE = 'floor: node:http + ioredis pipeline';
export const FLOOR_KOA = 'floor: Koa + @koa/router + ioredis';
export const FLOOR_MYSQL = 'floor: node:http + mysql2';
export const FLOOR_UPDATE = 'floor: node:http + mysql2 transaction';
export const CACHED_W1 = 'loginByOpenid cached, WORKERS=1';
export const CACHED_ATTACK = 'loginByOpenid cached, WORKERS=1, under attack';
export const CACHED_UPLOAD = 'loginByOpenid cached, WORKERS=1, one user uploading';
export const CACHED_W2 = 'loginByOpenid cached, WORKERS=2';
export const CACHED_BURST = 'loginByOpenid cached, fresh WORKERS=1 after a burst';
export const BURST_NOTE = (connections: number, seconds: number) =>
  `a ${fmt(connections)}-connection, ${seconds} s surge first`;
export const ATTACK_NOTE = (a: { halfOpen: number; rate: number; size: number }) =>
  `${fmt(a.halfOpen)} half-open + ${fmt(a.rate)}/s × ${fmt(a.size)} B bodies`;
export const UNCACHED = 'loginByOpenid uncached';
export const GET = 'get (cached)';
export const UPDATE = 'update nick_name';
export const FLOOR_UPDATE_GALERA = 'floor: mysql2 transaction via HAProxy to Galera';
export const UPDATE_GALERA = 'update nick_name via HAProxy to Galera';

/** The order of the table. */
export const ORDER = [
  FLOOR_REDIS,
  FLOOR_REDIS_PIPELINE,
  FLOOR_KOA,
  CACHED_W1,
  CACHED_ATTACK,
  CACHED_UPLOAD,
  CACHED_BURST,
  CACHED_W2,
  GET,
  FLOOR_MYSQL,
  UNCACHED,
  FLOOR_UPDATE,
  UPDATE,
  FLOOR_UPDATE_GALERA,
  UPDATE_GALERA,
];

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ms = (n: number) => (n < 10 ? n.toFixed(2) : n.toFixed(1));
const mib = (bytes: number) => (bytes / (1024 * 1024)).toFixed(0);
const pct = (x: number) => (x * 100).toFixed(0);
/** Both units: MiB as the rest of the report, MB as the 150 MB target is written. */
const mibMb = (bytes: number) => `${mib(bytes)} MiB (${(bytes / 1e6).toFixed(0)} MB)`;
const generatorOf = (report: RunReport) => report.settings.generator ?? 'autocannon';

export function rowFor(report: RunReport, scenario: string): Row | undefined {
  return report.rows.find((r) => r.scenario === scenario);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/**
 * A row against the row it is compared with: the median over rounds of the ratio within each
 * round (a path and its floor measured minutes apart would compare two different machines), or
 * the ratio of the medians when the rounds do not pair up.
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

/** The median over rounds of one per-round CPU figure, as % of a core, or —. */
function cpuOf(row: Row, key: 'cpu' | 'gen' | 'attack'): string {
  const xs = (row.perRound ?? []).map((r) => r[key]).filter((x): x is number => x !== undefined);
  return xs.length ? pct(median(xs)) : '—';
}

/** Short names for the "vs" column. */
const SHORT: Record<string, string> = {
  [FLOOR_REDIS]: 'Redis floor',
  [FLOOR_MYSQL]: 'MySQL floor',
  [FLOOR_UPDATE]: 'txn floor',
  [CACHED_W1]: 'clean row',
};

export function resultsTable(report: RunReport): string {
  const lines = [
    "| scenario | req/s | rounds' range | p50 ms | p99 ms | errors | vs | req/s ratio | p99 ratio | CPU % of a core: server / generator | RSS MiB | full GCs/s |",
    '| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const row of report.rows) {
    const r = row.result;
    const q = ratios(report, row);
    const rounds = (row.perRound ?? []).map((x) => x.rps);
    const range = rounds.length > 1 ? `${fmt(Math.min(...rounds))}–${fmt(Math.max(...rounds))}` : '—';
    const gcs = (row.perRound ?? []).map((x) => x.fullGcs).filter((x): x is number => x !== undefined);
    const attack = cpuOf(row, 'attack');
    lines.push(
      `| ${row.scenario}${row.note ? ` (${row.note})` : ''} | ${fmt(r.rps)} | ${range} | ${ms(r.p50)} | ${ms(r.p99)} | ` +
        `${r.errors + r.notOk} | ${row.floor ? (SHORT[row.floor] ?? row.floor) : '—'} | ${q.rps?.toFixed(2) ?? '—'} | ` +
        `${q.p99?.toFixed(2) ?? '—'} | ${cpuOf(row, 'cpu')} / ${cpuOf(row, 'gen')}${attack === '—' ? '' : ` + attacker ${attack}`} | ` +
        `${row.rssMax ? mib(row.rssMax) : '—'} | ${gcs.length ? Math.max(...gcs).toFixed(1) : '—'} |`,
    );
  }
  return lines.join('\n');
}

/** Others' share of the machine above which a run's numbers say more about them than about the service. */
const DISTURBED = 0.25;

const verdict = (ok: boolean | undefined) => (ok === undefined ? 'n/a' : ok ? 'met' : '**not met**');
const x2 = (n: number | undefined) => (n === undefined ? '—' : `${n.toFixed(2)} ×`);

/** req/s of `row` ÷ req/s of `base`: the median of the rounds' own ratios when they pair up. */
function rpsRatio(row: Row, base: Row): number {
  const a = base.perRound;
  const b = row.perRound;
  return a && b && a.length === b.length && a.length
    ? median(b.map((r, i) => r.rps / a[i]!.rps))
    : row.result.rps / base.result.rps;
}

export function targetsTable(report: RunReport): string {
  const cached = rowFor(report, CACHED_W1);
  const attack = rowFor(report, CACHED_ATTACK);
  const burst = rowFor(report, CACHED_BURST);
  const uncached = rowFor(report, UNCACHED);
  const update = rowFor(report, UPDATE);
  const w2 = rowFor(report, CACHED_W2);
  const pipeline = rowFor(report, FLOOR_REDIS_PIPELINE);
  const koa = rowFor(report, FLOOR_KOA);
  const lines = ['| target | measured | |', '| --- | --- | --- |'];
  const errors = (row: Row) => row.result.errors + row.result.notOk;
  if (cached) {
    const q = ratios(report, cached);
    lines.push(
      `| cached loginByOpenid req/s ≥ 0.8 × Redis floor | ${x2(q.rps)} | ${verdict(q.rps === undefined ? undefined : q.rps >= 0.8)} |`,
      `| cached loginByOpenid p99 ≤ Redis floor's | ${x2(q.p99)} | ${verdict(q.p99 === undefined ? undefined : q.p99 <= 1)} |`,
      `| cached loginByOpenid: zero errors | ${errors(cached)} | ${verdict(errors(cached) === 0)} |`,
    );
  }
  if (attack && report.attack) {
    const q = ratios(report, attack);
    const a = report.attack;
    const answered = Object.entries(a.answered)
      .map(([status, n]) => `${status}: ${fmt(n)}`)
      .join(', ');
    lines.push(
      `| under attack ÷ clean row, req/s and p99 | ${x2(q.rps)} and ${x2(q.p99)}; ${errors(attack)} errors | reported |`,
      `| the attacker | ${fmt(a.sent)} bodies sent (HTTP ${answered || 'none answered'}; ${fmt(a.late)} not sent, all connections busy); ` +
        `half-open alive at each round's end: ${a.halfOpenAlive.join(', ')} | reported |`,
    );
  }
  if (burst) {
    // What the row guards is the collector's state the surge leaves behind: a process whose
    // request sites V8 pretenured runs several full GCs a second in every round.
    const gcs = (burst.perRound ?? []).map((r) => r.fullGcs).filter((x): x is number => x !== undefined);
    const worst = gcs.length ? Math.max(...gcs) : undefined;
    lines.push(
      `| after a burst: full GCs/s ≤ 1 in every round, zero errors | ${worst === undefined ? '—' : worst.toFixed(1)}; ${errors(burst)} errors | ${verdict(worst === undefined ? undefined : worst <= 1 && errors(burst) === 0)} |`,
    );
  }
  if (uncached) {
    const q = ratios(report, uncached);
    lines.push(
      `| uncached loginByOpenid req/s ≥ 0.8 × MySQL floor | ${x2(q.rps)} | ${verdict(q.rps === undefined ? undefined : q.rps >= 0.8)} |`,
    );
  }
  if (update?.floor === FLOOR_UPDATE) {
    const q = ratios(report, update);
    lines.push(
      `| update req/s ≥ 0.7 × transaction floor | ${x2(q.rps)} | ${verdict(q.rps === undefined ? undefined : q.rps >= 0.7)} |`,
    );
  }
  lines.push(
    `| RSS of one service process < 150 MB (${report.settings.connections}-connection scenarios) | ${mibMb(report.rssMax)}, during ${report.rssMaxDuring} | ${verdict(report.rssMax < 150e6)} |`,
  );
  if (report.surge) {
    const { connections, seconds, requests, failed, rssPeak } = report.surge;
    lines.push(
      `| RSS through a ${fmt(connections)}-connection, ${seconds} s surge (${fmt(requests)} requests, ${fmt(failed)} failed) | ${mibMb(rssPeak)} | reported |`,
    );
  }
  if (cached && w2) {
    const speedup = rpsRatio(w2, cached);
    lines.push(
      `| WORKERS=2 ÷ WORKERS=1, cached | ${x2(speedup)} (${w2.processes} vs ${cached.processes} processes) | reported |`,
    );
  }
  if (pipeline) {
    lines.push(`| pipeline floor ÷ Redis floor | ${x2(ratios(report, pipeline).rps)} | reported |`);
  }
  if (koa) {
    lines.push(`| Koa floor ÷ Redis floor (the framework's ceiling) | ${x2(ratios(report, koa).rps)} | reported |`);
    if (cached) {
      lines.push(
        `| cached loginByOpenid ÷ Koa floor (the service's own cost) | ${x2(rpsRatio(cached, koa))} | reported |`,
      );
    }
  }
  const gens = report.rows
    .flatMap((r) => (r.perRound ?? []).map((x) => x.gen))
    .filter((x): x is number => x !== undefined);
  if (gens.length) {
    lines.push(
      `| ${generatorOf(report)}'s own CPU, any round | at most ${pct(Math.max(...gens))} % of a core | reported |`,
    );
  }
  return lines.join('\n');
}

export function profileSection(report: RunReport): string {
  if (!report.profile) return '';
  const { summary, scenario } = report.profile;
  const share = (l: { share: number }) => `${(l.share * 100).toFixed(1)} %`;
  return [
    `**Profile** (${scenario}, \`node --cpu-prof\`; self time, share of ${fmt(summary.totalMs)} ms busy): ` +
      (summary.categories?.length
        ? `${summary.categories
            .filter((c) => c.share >= 0.01)
            .map((c) => `${c.name} ${share(c)}`)
            .join('; ')}. `
        : '') +
      'Top functions: ' +
      summary.functions
        .slice(0, 4)
        .map((f) => `\`${f.name}\` ${share(f)}`)
        .join(', ') +
      '.',
  ].join('\n');
}

export function section(report: RunReport): string {
  const s = report.settings;
  const u = report.uncached;
  const missRate = u.sent ? Math.min(1, u.misses / u.sent) : 0;
  const others = Math.max(0, ...report.rows.flatMap((r) => (r.perRound ?? []).map((x) => x.other)));
  const generator =
    generatorOf(report) === 'wrk'
      ? `wrk (${s.threads ?? 1} thread${(s.threads ?? 1) > 1 ? 's' : ''})`
      : "autocannon, in the bench's own process (the ratios it gives flatter the service)";
  return [
    `## ${fmt(report.users)} users`,
    '',
    `${report.date} · ${report.cores} cores (${report.cpuModel}) · Node ${report.node} · MariaDB ${report.mariadb} · Redis ${report.redis}` +
      (report.mysqlMemory ? ` · ${report.mysqlMemory}` : '') +
      `. Load: ${generator}, ${s.connections} connections; ${report.rounds} round${report.rounds === 1 ? '' : 's'} of ${s.warmup} s warm-up + ${s.duration} s. ` +
      `Working set ${fmt(report.workingSet)}; uncached: ${fmt(u.sent)} openids sent, ${(missRate * 100).toFixed(1)} % misses. ` +
      `Seeding: ${report.seedSeconds === null ? '?' : `${report.seedSeconds.toFixed(1)} s`}${report.seedKept ? ' (an earlier run)' : ''}. ` +
      (others > DISTURBED
        ? `**A disturbed run**: other processes used up to ${pct(others)} % of the machine in a round; its numbers are noise. `
        : `Others' CPU: at most ${pct(others)} % of the machine in any round. `) +
      report.workersNote,
    '',
    resultsTable(report),
    '',
    targetsTable(report),
    '',
    profileSection(report),
  ]
    .join('\n')
    .trimEnd();
}

const INTRO = `# Benchmarks

Written by \`npm run bench\` (\`bench/\`); do not edit by hand. \`npm run bench -- --help\` lists the options;
\`--users 1000000\` replaces the 1M section, the default the 100k one. Each run's data is in
\`bench/results/<users>.json\`; older runs are in git history.

## Method

The service runs from the build with the flags of \`npm start\`, as a child process, against the real
MariaDB (database \`user_service_bench_<users>\`) and Redis (prefix \`bench:\`, removed at start and end),
\`LOG_LEVEL=warn\`, rate limits off; \`/metrics\` and \`/readyz\` are read on its ops port (\`OPS_PORT\`,
else the API port). **Load comes from wrk**, a C program in its own process (\`bench/wrk/post.lua\` builds
the bodies and counts non-2xx answers and envelope codes ≠ 0 as errors, beside socket errors and
timeouts); autocannon, in the bench's own process, is the fallback. A generator sharing the two cores
caps a lean floor more than the service and flatters every ratio, so each row shows its CPU.

**Read the ratios, not the absolute numbers.** Each path is compared with its *floor*, a bare
\`node:http\` server (\`bench/floors/\`) doing only the I/O the path cannot avoid:

- **Redis floor** (cached \`loginByOpenid\`, \`get\`): the service's own login script (read the cached
  profile, store the session and its index entry) in one round trip. The **pipeline floor** does that
  work as one plain pipeline, to check it. The **Koa floor** does it in a Koa app with @koa/router
  and one route, nothing else: the framework's ceiling, for reference.
- **MySQL floor** (uncached \`loginByOpenid\`): the same indexed \`SELECT … WHERE openid = ?\`.
- **Transaction floor** (\`update\`): BEGIN, \`SELECT … FOR UPDATE\`, UPDATE, COMMIT on a random user
  (the service also tombstones the cached profile in Redis inside it).

Every scenario runs once per round; rounds alternate floors before and after their paths; the table
shows the median round, and a ratio is the median of each round's own ratio. **Under attack** is the
cached path while \`bench/attack.ts\` (its own process) holds half-open connections and streams bodies
at the 16 KiB limit full of keys; its ratio is to the clean row of the same round. **After a burst**
is a fresh process whose first load is a 1,500-connection surge (by autocannon). Errors = socket
errors + timeouts + non-2xx + code ≠ 0. CPU: median round, % of one core (server: its process tree;
generator: wrk, or the whole bench process for autocannon). RSS: largest service process, sampled
every 100 ms. Full GCs/s: worst round, from the service's \`/metrics\`. Others' CPU: the machine's CPU
used by anything but the bench, its servers, MariaDB and Redis.

## Targets

Cached \`loginByOpenid\` ≥ 0.8 × its Redis floor, p99 no worse than the floor's, zero errors; uncached
≥ 0.8 × the MySQL floor; \`update\` ≥ 0.7 × the transaction floor; one service process under 150 MB
RSS; 1M users within 10 % of 100k (adjusted by each run's Redis floor). Reported, not enforced.`;

const RESULTS = join(__dirname, 'results');
/** A reader's budget for the whole file (issue 17). */
const MAX_CHARS = 12_000;

/** 1,000,000 against 100,000 users, each run divided by its own Redis floor (which no user count changes). */
function scaleSection(reports: RunReport[]): string {
  const base = reports.find((r) => r.users === 100_000);
  const big = reports.find((r) => r.users === 1_000_000);
  if (!base || !big) return '';
  if (generatorOf(base) !== generatorOf(big)) {
    return (
      '## Scale: 1,000,000 vs 100,000 users\n\n' +
      `Not compared: the two runs had different load generators (${generatorOf(base)} at 100k, ${generatorOf(big)} at 1M). ` +
      'Run both scales with the same one.'
    );
  }
  const floorA = rowFor(base, FLOOR_REDIS)?.result.rps;
  const floorB = rowFor(big, FLOOR_REDIS)?.result.rps;
  const lines = [
    '## Scale: 1,000,000 vs 100,000 users',
    '',
    `The two sections above (${base.date}, ${generatorOf(base)}; ${big.date}, ${generatorOf(big)}). Target: within 10 %, ` +
      "on the change adjusted by each run's Redis floor (runs apart in time measure different machines).",
    '',
    '| scenario | req/s 100k | req/s 1M | raw 1M ÷ 100k | adjusted | |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const name of [CACHED_W1, UNCACHED, FLOOR_MYSQL]) {
    const a = rowFor(base, name);
    const b = rowFor(big, name);
    if (!a || !b) continue;
    const adjusted = floorA && floorB ? b.result.rps / floorB / (a.result.rps / floorA) : undefined;
    const judged = name !== FLOOR_MYSQL;
    lines.push(
      `| ${name} | ${fmt(a.result.rps)} | ${fmt(b.result.rps)} | ${(b.result.rps / a.result.rps).toFixed(2)} | ${adjusted?.toFixed(2) ?? '—'} | ${
        judged ? verdict(adjusted === undefined ? undefined : Math.abs(adjusted - 1) <= 0.1) : 'reference'
      } |`,
    );
  }
  return lines.join('\n');
}

/** The reports stored in bench/results (one per seed size). */
export function storedReports(dir = RESULTS): RunReport[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /^\d+\.json$/.test(f))
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as RunReport)
    .sort((a, b) => a.users - b.users);
}

/**
 * Stores `report` (replacing the run of the same size) and rewrites BENCHMARKS.md from every
 * stored run: the method, one section per seed size, and the scale comparison.
 */
export function writeBenchmarks(file: string, report?: RunReport, dir = RESULTS): string {
  if (report) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${report.users}.json`), `${JSON.stringify(report, null, 1)}\n`);
  }
  const reports = storedReports(dir);
  const parts = [INTRO, ...reports.map(section)];
  const scale = scaleSection(reports);
  if (scale) parts.push(scale);
  const text = `${parts.join('\n\n')}\n`;
  if (text.length > MAX_CHARS) {
    process.stderr.write(`BENCHMARKS.md: ${text.length} characters, over the ${MAX_CHARS} it is meant to stay under\n`);
  }
  writeFileSync(file, text);
  return scale;
}
