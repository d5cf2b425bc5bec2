/**
 * The report writer: each run is stored as bench/results/<users>.json, and BENCHMARKS.md is
 * rewritten from every stored run, one section per user count, the numbers only:
 * docs/performance.md says how to read them.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { log, median, mib, type Load } from './lib';

/** What a scenario's hooks and its beside process report, per round (counts, bytes). */
export type Facts = Record<string, number>;
export interface Round extends Load {
  /** CPU of the server's process tree, and of the beside process, as a share of one core. */
  cpu: number;
  beside?: number;
  /** Share of the machine's CPU that others (not the bench, its servers, MariaDB, Redis) used. */
  other: number;
  /** Largest RSS of one process of the server, and how many processes it had. */
  rss: number;
  procs: number;
  /** Full GCs a second (single-process services). */
  gcs?: number;
  facts?: Facts;
}
export interface Row {
  name: string;
  rounds: Round[];
  /** What a row measured without wrk (no rounds) counted. */
  facts?: Facts;
}
/** The options of a run (see run.ts) that its report shows. */
export type Options = Record<'connections' | 'rounds' | 'warmup' | 'duration' | 'workingSet' | 'burst', number> & {
  attack: { halfOpen: number; rate: number };
  galeraUsers?: number;
};
/** A goal, and whether a row meets it from its ratios to its `vs` row and its stats. */
export type Target = [string, (q: { rps: number; p99: number }, s: ReturnType<typeof stat>) => boolean];
export interface RunReport {
  users: number;
  date: string;
  machine: string;
  load: Options;
  /** Seconds seeding took; null when the rows of an earlier run were kept. */
  seedSeconds: number | null;
  rows: Row[];
  /** Largest RSS of one service process held to the 150 MB target, over the whole run. */
  rss: { max: number; during: string };
  profile?: { scenario: string; summary: import('./profile').ProfileSummary };
}
/** How a row is shown: what it is compared with, its target, a line of what else it measured. */
export interface RowDef {
  name: string;
  /** Its name in other rows' "vs" column. */
  short?: string;
  vs?: string;
  note?: string | ((row: Row, load: Options) => string);
  target?: Target;
  reported?(row: Row, of: (name: string) => Row | undefined): string;
  /** What its beside process is, in the CPU column. */
  by?: string;
  /** In the 1M vs 100k comparison: the machine's gauge, a judged path, or a reference. */
  scale?: 'gauge' | 'judged' | 'reference';
}

export const fmt = (n: number | undefined, digits = 0) =>
  n === undefined || !Number.isFinite(n)
    ? '—'
    : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ms = (n: number) => (n < 10 ? n.toFixed(2) : n.toFixed(1));
const pct = (x: number) => (x * 100).toFixed(0);
const defined = (xs: (number | undefined)[]) => xs.filter((x): x is number => typeof x === 'number');

/** A row over its rounds: medians of rates, latencies and CPU (a median shrugs off one bad round), sums of errors. */
export function stat(row: Row) {
  const all = (key: keyof Round) => defined(row.rounds.map((x) => x[key] as number | undefined));
  const max = (key: keyof Round) => (all(key).length ? Math.max(...all(key)) : undefined);
  const mid = (key: keyof Round) => (all(key).length ? median(all(key)) : undefined);
  return {
    ...{ rps: mid('rps')!, min: Math.min(...all('rps')), max: max('rps')!, p50: mid('p50')!, p99: mid('p99')! },
    ...{ errors: all('errors').reduce((a, x) => a + x, 0), cpu: mid('cpu')!, gen: mid('gen')!, beside: mid('beside') },
    ...{ rss: max('rss')!, procs: max('procs')!, gcs: max('gcs') },
  };
}

/**
 * A row against another: the median over rounds of the ratio within each round (a path and its
 * floor measured minutes apart would compare two different machines), else the ratio of medians.
 */
export function ratio(row?: Row, base?: Row): { rps: number; p99: number } {
  if (!row || !base) return { rps: NaN, p99: NaN };
  const [a, b] = [row.rounds, base.rounds];
  if (a.length === b.length)
    return { rps: median(a.map((r, i) => r.rps / b[i]!.rps)), p99: median(a.map((r, i) => r.p99 / b[i]!.p99)) };
  return { rps: stat(row).rps / stat(base).rps, p99: stat(row).p99 / stat(base).p99 };
}

/** Others' share of the machine above which a run's numbers say more about them than about the service. */
const DISTURBED = 0.25;
export const verdict = (ok: boolean) => (ok ? 'met' : '**not met**');

export function section(report: RunReport, defs: RowDef[]): string {
  const def = (name: string) => defs.find((d) => d.name === name);
  const of = (name: string) => report.rows.find((r) => r.name === name);
  const { connections, rounds, warmup, duration, workingSet } = report.load;
  const others = Math.max(0, ...report.rows.flatMap((r) => r.rounds.map((x) => x.other)));
  const lines = [
    `## ${fmt(report.users)} users`,
    '',
    `${report.date} · ${report.machine}. wrk, ${connections} connections, ${rounds} rounds of ${warmup} s warm-up + ` +
      `${duration} s; working set ${fmt(workingSet)}; seeding ${report.seedSeconds === null ? 'kept' : `${report.seedSeconds.toFixed(1)} s`}. ` +
      (others > DISTURBED
        ? `**A disturbed run**: others used up to ${pct(others)} % of the machine in a round; its numbers are noise.`
        : `Others' CPU: at most ${pct(others)} % of the machine in a round.`),
    '',
    '| scenario | req/s | rounds | p50 ms | p99 ms | errors | vs | req/s ratio | p99 ratio | target | CPU % server / wrk | RSS MiB | full GCs/s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |',
  ];
  const reported: string[] = [];
  for (const row of report.rows) {
    const d = def(row.name) ?? { name: row.name };
    if (d.reported) reported.push(`- ${d.reported(row, of)}`);
    if (!row.rounds.length) continue;
    const s = stat(row);
    const q = ratio(row, d.vs ? of(d.vs) : undefined);
    const note = typeof d.note === 'function' ? d.note(row, report.load) : d.note;
    const target = d.target ? `${d.target[0]}: ${verdict(d.target[1](q, s))}` : '';
    lines.push(
      `| ${row.name}${note ? ` (${note})` : ''} | ${fmt(s.rps)} | ${row.rounds.length > 1 ? `${fmt(s.min)}–${fmt(s.max)}` : '—'} | ` +
        `${ms(s.p50)} | ${ms(s.p99)} | ${s.errors} | ${d.vs ? (def(d.vs)?.short ?? d.vs) : '—'} | ${fmt(q.rps, 2)} | ${fmt(q.p99, 2)} | ` +
        `${target} | ${pct(s.cpu)} / ${pct(s.gen)}${s.beside === undefined ? '' : ` + ${d.by ?? 'beside'} ${pct(s.beside)}`} | ` +
        `${(s.rss / 2 ** 20).toFixed(0)} | ${fmt(s.gcs, 1)} |`,
    );
  }
  const gen = Math.max(...report.rows.flatMap((r) => r.rounds.map((x) => x.gen)));
  const { max, during } = report.rss;
  reported.push(
    `- RSS of one service process < 150 MB (${connections}-connection scenarios): ${mib(max)} (${(max / 1e6).toFixed(0)} MB), during ${during}: ${verdict(max < 150e6)}`,
    `- wrk's own CPU: at most ${pct(gen)} % of a core in any round`,
  );
  lines.push('', ...reported);
  if (report.profile) {
    const { summary: p, scenario } = report.profile;
    const pc = (l: { share: number }) => `${(l.share * 100).toFixed(1)} %`;
    const groups = p.categories.filter((c) => c.share >= 0.01).map((c) => `${c.name} ${pc(c)}`);
    const top = p.functions.slice(0, 4).map((f) => `\`${f.name}\` ${pc(f)}`);
    const busy = `\`node --cpu-prof\`; self time, share of ${fmt(p.totalMs)} ms busy`;
    lines.push('', `**Profile** (${scenario}, ${busy}): ${groups.join('; ')}. Top functions: ${top.join(', ')}.`);
  }
  return lines.join('\n');
}

/** 1,000,000 against 100,000 users, each run's rates divided by its gauge row's (which no user count changes). */
function scaleSection(reports: RunReport[], defs: RowDef[]): string {
  const [a, b] = [100_000, 1_000_000].map((n) => reports.find((r) => r.users === n));
  const gauge = defs.find((d) => d.scale === 'gauge')?.name;
  // The median round, as stat() has it; NaN for a row the run does not have.
  const rps = (r: RunReport, name?: string) =>
    median(r.rows.find((x) => x.name === name)?.rounds.map((x) => x.rps) ?? []);
  if (!a || !b || !gauge) return '';
  const lines = [
    '## Scale: 1,000,000 vs 100,000 users',
    '',
    `Target: within 10 %, adjusted by each run's ${defs.find((d) => d.name === gauge)?.short ?? gauge} (runs apart in time measure different machines).`,
    '',
    '| scenario | req/s 100k | req/s 1M | raw 1M ÷ 100k | adjusted | |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const d of defs.filter((x) => x.scale === 'judged' || x.scale === 'reference')) {
    const adjusted = rps(b, d.name) / rps(b, gauge) / (rps(a, d.name) / rps(a, gauge));
    if (!Number.isFinite(adjusted)) continue;
    const judged = d.scale === 'judged' ? verdict(Math.abs(adjusted - 1) <= 0.1) : 'reference';
    lines.push(
      `| ${d.name} | ${fmt(rps(a, d.name))} | ${fmt(rps(b, d.name))} | ${fmt(rps(b, d.name) / rps(a, d.name), 2)} | ${fmt(adjusted, 2)} | ${judged} |`,
    );
  }
  return lines.join('\n');
}

const RESULTS = join(__dirname, 'results');
/** A reader's budget for the whole file. */
const MAX_CHARS = 12_000;

/** Stores `report` (replacing the run of the same user count) and rewrites BENCHMARKS.md from every stored run. */
export function writeBenchmarks(file: string, defs: RowDef[], report?: RunReport): void {
  const reports = new Map(
    readdirSync(RESULTS)
      .filter((f) => /^\d+\.json$/.test(f))
      .map((f) => JSON.parse(readFileSync(join(RESULTS, f), 'utf8')) as RunReport)
      .map((r) => [r.users, r]),
  );
  if (report) {
    // Rows kept from an earlier run: its seeding time still says how long seeding takes.
    report.seedSeconds ??= reports.get(report.users)?.seedSeconds ?? null;
    reports.set(report.users, report);
    writeFileSync(join(RESULTS, `${report.users}.json`), `${JSON.stringify(report, null, 1)}\n`);
  }
  const sorted = [...reports.values()].sort((x, y) => x.users - y.users);
  const intro =
    '# Benchmarks\n\nWritten by `npm run bench` from `bench/results/<users>.json`; do not edit by hand. How to run it, ' +
    'and what each row, floor, ratio and target means: [docs/performance.md](docs/performance.md).';
  const text = `${[intro, ...sorted.map((r) => section(r, defs)), scaleSection(sorted, defs)].filter(Boolean).join('\n\n')}\n`;
  if (text.length > MAX_CHARS) log(`BENCHMARKS.md: ${text.length} characters, over its ${MAX_CHARS}`);
  writeFileSync(file, text);
  log(`wrote ${file}`);
}
