/**
 * `npm run bench`: seeds the bench database, starts the built service and its floors as child
 * processes, runs every scenario of SCENARIOS once a round with wrk, and writes BENCHMARKS.md
 * (bench/report.ts). docs/performance.md says what the rows mean; `npm run bench -- --help`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Redis from 'ioredis';
import mysql from 'mysql2/promise';
import sharp from 'sharp';
import pkg from '../package.json';
import { parseDatabaseUrl } from '../src/db/connection';
import { galeraMissing, TestGaleraCluster } from '../test/helpers/galera-cluster';
import { scrape } from '../test/helpers/metrics';
import { keyLayout } from '../src/redis/keys';
import { benchOpenid, launch, log, mib, othersCpu, Proc, read, ROOT, scanKeys, sleep, wrk } from './lib';
import type { Bodies, Load } from './lib';
import { formatProfile, summarizeProfile } from './profile';
import { fmt, ratio, section, stat, verdict, writeBenchmarks } from './report';
import type { Facts, Options, Row, RowDef, Round, Target } from './report';
import { BENCH_PHONE_KEYS, bufferPool, seed } from './setup';

const OPTIONS: Record<string, [string | boolean, string]> = {
  users: ['100000', 'users to seed (e.g. 1000000): each count has its database and its section of BENCHMARKS.md'],
  reseed: [false, 'empty the bench table and seed it again even if it holds the users'],
  rounds: ['5', 'rounds: every scenario once a round, its floor before it in odd rounds, after in even'],
  duration: ['', 'seconds measured per scenario (default 5; 20 with --profile-only)'],
  warmup: ['2', 'seconds of the same load before each measurement, not counted'],
  connections: ['50', "wrk's connections"],
  'working-set': ['10000', 'users the cached scenarios draw from, logged in (cached) at the start of each round'],
  burst: ['1500', 'connections of the surge before the after-a-burst row (0 leaves the row out)'],
  'attack-half-open': ['300', 'half-open connections of the attack row (0 and --attack-rate 0: no attack, no upload)'],
  'attack-rate': ['200', 'bodies a second, each at the 16 KiB body limit, of the attack row'],
  mysql: [process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306', 'MySQL server, without a database'],
  redis: [process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/0', 'Redis; the keys under bench: are removed'],
  'week-users': ['10000', 'users of the week-of-launches rows (at most --users; 0: no such rows)'],
  'galera-users': ['10000', 'users on a 3-node Galera cluster behind HAProxy, started for its two rows (0: none)'],
  'buffer-pool': ['fit', "fit: InnoDB's buffer pool raised to hold the users table for the run; keep: as it is"],
  'service-flags': ['', 'node flags for the WORKERS=1 services, e.g. "--cpu-prof" (implies --no-write)'],
  'profile-only': [false, 'measure nothing else: the cached path under node --cpu-prof, summarized'],
  'no-profile': [false, 'skip the run of the cached path under node --cpu-prof after the rounds'],
  'no-build': [false, 'use dist/ as it is (default: build first)'],
  'no-write': [false, 'print the results, leave BENCHMARKS.md and bench/results alone'],
  'report-only': [false, 'measure nothing: rewrite BENCHMARKS.md from bench/results'],
  help: [false, 'this text'],
};
const { values: v } = parseArgs({
  options: Object.fromEntries(
    Object.entries(OPTIONS).map(([k, [d]]) => [k, d === false ? { type: 'boolean' } : { type: 'string', default: d }]),
  ),
});
const words = (text: unknown) => String(text).split(/\s+/).filter(Boolean);
const int = (name: string, min: number, fallback?: number) => {
  const n = v[name] === '' && fallback !== undefined ? fallback : Number(v[name]);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}`);
  return n;
};
const opts = {
  users: int('users', 1),
  rounds: int('rounds', 1),
  duration: int('duration', 1, v['profile-only'] ? 20 : 5),
  warmup: int('warmup', 0),
  connections: int('connections', 1),
  workingSet: Math.min(int('users', 1), int('working-set', 1)),
  burst: int('burst', 0),
  attack: { halfOpen: int('attack-half-open', 0), rate: int('attack-rate', 0) },
  serviceFlags: words(v['service-flags']),
  galeraUsers: int('galera-users', 0),
  weekUsers: Math.min(int('users', 1), int('week-users', 0)),
};

/** Pause after a run before looking at Redis or stopping a server: in-flight requests finish. */
const settle = () => sleep(1000);
const BURST_S = 3;
const LOGIN = '/service/user/loginByOpenid';
const P = 'bench:';
const redis = new Redis(String(v.redis), { maxRetriesPerRequest: 1, lazyConnect: true }); // connects when used
const dropProfiles = async () => void (await scanKeys(redis, `${P}user:*:profile`, true));
const cleanSessions = async () =>
  (await scanKeys(redis, `${P}session:*`, true)) + (await scanKeys(redis, `${P}user:*:sessions`, true));

/** Users drawn without replacement: the working set first, the rest for the uncached path. */
const perm = Int32Array.from({ length: opts.users }, (_, i) => i);
for (let i = opts.users - 1; i > 0; i--) {
  const j = Math.floor(Math.random() * (i + 1));
  [perm[i], perm[j]] = [perm[j]!, perm[i]!];
}
const working = perm.subarray(0, opts.workingSet);
const rest = opts.users > opts.workingSet ? perm.subarray(opts.workingSet) : perm;
const outside = { kind: 'sequence', ids: rest, cursor: { at: 0, wrapped: false } } as const;
let ids = { lo: 0, hi: opts.users - 1 };
const BODIES = {
  /** loginByOpenid of a working-set user, at random. */
  cached: () => ({ kind: 'pick', ids: working }),
  /** loginByOpenid of users outside the working set, none twice (unless a run sends more than there are). */
  outside: () => outside,
  /** update of a random user's nick_name. */
  updates: () => ({ kind: 'update', ...ids }),
  /** the same, of a user seeded on the Galera cluster. */
  galeraUpdates: () => ({ kind: 'update', ...galera!.ids! }),
} satisfies Record<string, () => Bodies>;

/** Each started when a scenario first needs it and kept up (an idle one costs no CPU); `x floor`: bench/floors.ts x. */
const SERVERS: Record<string, () => Promise<Proc>> = {
  service: () => startService('service WORKERS=1', 1, opts.serviceFlags),
  service2: () => startService('service WORKERS=2', 2),
  galeraService: async () => startService('service via HAProxy', 1, [], await viaGalera()),
  galeraFloor: async () => startFloor('update', await viaGalera(), 'update floor via HAProxy'),
};
const servers: Record<string, Proc> = {};
const server = async (key: string) => (servers[key] ??= await (SERVERS[key]?.() ?? startFloor(key.split(' ')[0]!)));

interface Scenario extends RowDef {
  /** The server it loads (see SERVERS; default service), or one its `before` puts in `servers`. */
  server?: string;
  path?: string;
  /** What wrk sends (default cached). */
  bodies?: keyof typeof BODIES;
  /** Left out of this run. */
  skip?: boolean;
  /** Before the warm-up, between the warm-up and the measurement, and after it: facts for the row. */
  before?(): Promise<Facts | void>;
  measured?(): Promise<void>;
  after?(): Promise<Facts | void>;
  /**
   * Node arguments of a process that runs beside the load through the warm-up and measurement,
   * its CPU reported: it prints READY when it is under way, and FACTS {…} when sent SIGTERM.
   */
  beside?(target: Proc): string[];
  /** Measures instead of wrk, in the first round only (what it counts, rounds do not change): facts for the row. */
  run?(target: Proc): Promise<Facts>;
}

const REDIS_FLOOR = 'floor: node:http + ioredis';
const CACHED = 'loginByOpenid cached, WORKERS=1';
const MYSQL_FLOOR = 'floor: node:http + ioredis + mysql2, a miss';
const TXN_FLOOR = 'floor: node:http + mysql2 transaction';
const GALERA_FLOOR = 'floor: mysql2 transaction via HAProxy to Galera';
const UPDATE = '/service/user/update';
const TSX = ['--import', 'tsx'];
const sum = (row: Row, key: string) => row.rounds.reduce((a, r) => a + (r.facts?.[key] ?? 0), 0);

// What the rows below do beyond loading a server with wrk, and what they say, row by row.
const CACHED_TARGET: Target = ['≥ 0.8, p99 ≤ 1, no errors', (q, s) => q.rps >= 0.8 && q.p99 <= 1 && !s.errors];
const atLeast = (x: number): Target => [`≥ ${x}`, (q) => q.rps >= x];
type Of = (name: string) => Row | undefined;
const koaLine = (koa: Row, of: Of) =>
  `cached ÷ Koa floor (the service's own cost): ${fmt(ratio(of(CACHED), koa).rps, 2)} ×`;
const workersLine = (row: Row, of: Of) =>
  `WORKERS=2 ÷ WORKERS=1, cached: ${fmt(ratio(row, of(CACHED)).rps, 2)} × (${stat(row).procs} vs ${stat(of(CACHED)!).procs} processes)`;

/** What a beside process sent and how it was answered, over all rounds. */
const answered = (row: Row) =>
  `${fmt(sum(row, 'sent'))} bodies sent (${Object.keys(row.rounds[0]?.facts ?? {})
    .filter((k) => k.startsWith('HTTP '))
    .map((k) => `${k}: ${fmt(sum(row, k))}`)
    .join(', ')}; ${fmt(sum(row, 'late'))} not sent, all connections busy)`;

/** The attack row's attacker (bench/attack.ts): slowloris connections and bodies at the limit, full of keys. */
const noAttack = !opts.attack.halfOpen && !opts.attack.rate;
const attacker = (p: Proc) => [...TSX, 'bench/attack.ts', p.url, `${opts.attack.halfOpen}`, `${opts.attack.rate}`];
const attackNote = (_: Row, o: Options) => `${o.attack.halfOpen} half-open + ${o.attack.rate}/s × 16 KiB bodies`;
const attacked = (row: Row) =>
  `attacker: ${answered(row)}; half-open alive at each round's end: ${row.rounds.map((r) => r.facts?.halfOpenAlive).join(', ')}`;

/** The uploading row's user (bench/attack.ts too): a session of bench_0 each round, a 1600x1200 photo made once. */
const PHOTO = join(os.tmpdir(), `user-service-bench-avatar-${process.pid}.jpg`);
const MEDIA = join(os.tmpdir(), `user-service-bench-media-${process.pid}`);
let token: string | undefined;
async function uploading() {
  const noise = { type: 'gaussian' as const, mean: 128, sigma: 40 };
  const photo = { width: 1600, height: 1200, channels: 3 as const, background: '#888', noise };
  if (!existsSync(PHOTO)) await sharp({ create: photo }).jpeg({ quality: 60 }).toFile(PHOTO);
  [token] = await launch(`${(await server('service')).url}${LOGIN}`, [0]);
  if (!token) throw new Error('the uploading row: bench_0 got no session');
}
const uploader = (p: Proc) => [...TSX, 'bench/attack.ts', p.url, '0', '1000', '8', token!, PHOTO];
const uploaded = (row: Row) => `uploader: ${answered(row)}`;

/**
 * `update` through HAProxy to a 3-node Galera cluster (test/helpers, configured from deploy/),
 * started and seeded when its rows first need it, its own Redis prefix (the openids are the same).
 */
const missing = opts.galeraUsers ? galeraMissing() : [];
let galera: { cluster: TestGaleraCluster; env?: NodeJS.ProcessEnv; ids?: { lo: number; hi: number } } | undefined;
async function viaGalera(): Promise<NodeJS.ProcessEnv> {
  if (galera?.env) return galera.env;
  galera = { cluster: await TestGaleraCluster.create() };
  const url = `${galera.cluster.url}/user_service_bench_${opts.users}`;
  galera.ids = await seed({ url, poolMax: 10, acquireTimeoutMs: 10_000 }, opts.galeraUsers, false);
  return (galera.env = { ...baseEnv, DATABASE_URL: url, REDIS_KEY_PREFIX: `${P}galera:` });
}
const viaProxy = { path: UPDATE, bodies: 'galeraUpdates', skip: !opts.galeraUsers || missing.length > 0 } as const;
const galeraNote = (_: Row, o: Options) => `3-node Galera behind HAProxy, ${fmt(o.galeraUsers)} users`;

/**
 * A fresh process whose first load is a surge of launches (a deploy at peak): the requests it
 * holds in flight at each young collection are what V8 judges allocation sites by, and a wrong
 * verdict (pretenuring, [scaling.md](../docs/scaling.md)) costs a quarter of its throughput for life.
 */
async function surge(): Promise<Facts> {
  const fresh = (servers.fresh = await startService('fresh WORKERS=1', 1, opts.serviceFlags));
  // Two threads: one thread opening 1,500 connections spends the surge connecting.
  const r = await wrk(`${fresh.url}${LOGIN}`, { kind: 'range', lo: 0, hi: opts.users - 1 }, BURST_S, opts.burst, 2);
  await settle();
  await cleanSessions();
  return { requests: r.requests, failed: r.errors };
}
const stopFresh = async () => (await stop(servers.fresh!), { rssPeak: servers.fresh!.peak });
const GC_TARGET: Target = ['≤ 1 full GC/s, no errors', (_, s) => s.gcs !== undefined && s.gcs <= 1 && !s.errors];
const burstNote = (_: Row, o: Options) => `a ${fmt(o.burst)}-connection, ${BURST_S} s surge first`;
const surged = (row: Row) =>
  `surge: ${fmt(sum(row, 'requests'))} requests (${fmt(sum(row, 'failed'))} failed); RSS of its process ` +
  `${mib(Math.max(...row.rounds.map((r) => r.facts?.rssPeak ?? 0)))}, outside the 150 MB target`;

let uncachedFrom = 0;
async function emptyCache() {
  await settle();
  await dropProfiles();
  await cleanSessions();
  uncachedFrom = outside.cursor.at;
}
async function misses(): Promise<Facts> {
  await settle();
  const fills = await scanKeys(redis, `${P}user:*:profile`);
  const sent = (outside.cursor.at - uncachedFrom + outside.ids.length) % outside.ids.length;
  return { sent, misses: Math.min(fills, sent), wrapped: outside.cursor.wrapped ? 1 : 0 };
}
/** The uncached row and its floor: openids of no other row, each once, the cache emptied after the warm-up. */
const uncached = { bodies: 'outside', before: dropProfiles, measured: emptyCache } as const;
const missRate = (row: Row) =>
  `${((sum(row, 'misses') / Math.max(1, sum(row, 'sent'))) * 100).toFixed(0)} % misses of ${fmt(sum(row, 'sent'))} openids` +
  (sum(row, 'wrapped') ? ', wrapped' : '');

/**
 * A week of launches (3 a day for 7 days, no time passing) by `--week-users` users Redis holds nothing of
 * at first, launch k of all before k + 1 of any, the client sending its last token (`keep`) or none.
 */
const LAUNCHES = 21;
const keys = keyLayout(P);
const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
const bytesOf = async (list: string[]) => {
  const each = await Promise.all(list.map((k) => redis.memory('USAGE', k, 'SAMPLES', 0)));
  return each.reduce<number>((a, b) => a + (b ?? 0), 0);
};
const week = (keep: boolean) => async (service: Proc) => {
  const users = perm.subarray(opts.users - opts.weekUsers);
  const openids = Array.from(users, benchOpenid);
  await Promise.all(openids.map((o) => redis.unlink(keys.profile(o))));
  await cleanSessions();
  await settle();
  const before = await usedMemory();
  let tokens: (string | undefined)[] = [];
  let failed = 0;
  for (let n = 1; n <= LAUNCHES; n++) {
    tokens = await launch(`${service.url}${LOGIN}`, users, keep ? tokens : []);
    failed += tokens.filter((t) => !t).length;
  }
  await settle();
  const grown = (await usedMemory()) - before;
  const indexes = openids.map(keys.userSessions);
  const live = (await Promise.all(indexes.map((k) => redis.zrange(k, 0, -1)))).flat();
  const facts = {
    ...{ keep: Number(keep), users: users.length, failed, grown, live: live.length, indexes: await bytesOf(indexes) },
    ...{ profiles: await bytesOf(openids.map(keys.profile)), sessions: await bytesOf(live.map(keys.session)) },
  };
  await cleanSessions();
  return facts;
};
const weekLine = (row: Row) => {
  const { keep, users, failed, grown, live, profiles, indexes, sessions } = row.facts as Record<string, number>;
  const per = (n: number) => fmt(n / users);
  const bytes = profiles + indexes + sessions;
  return (
    `${row.name} (${fmt(users)} users × ${LAUNCHES} launches, no time passing, ${fmt(failed)} failed): ` +
    `${per(bytes)} B of Redis a user (profile ${per(profiles)}, session index ${per(indexes)}, sessions ` +
    `${per(sessions)}; used_memory grew ${per(grown)}), ${fmt(live / users, 2)} live sessions a user` +
    (keep ? `; ≤ 1 KB a user: ${verdict(bytes / users <= 1024)}` : '')
  );
};

/**
 * Every scenario, in groups: the floors, then the paths compared with them (`vs`). Odd rounds run a group's floors
 * first, even rounds last, so no path always follows its floor; the judged cached row, in a group of its own, runs
 * beside its floor in every round (the machine's speed drifts between minutes). A row loads WORKERS=1 unless it says.
 */
// prettier-ignore
const SCENARIOS: { floors: Scenario[]; paths: Scenario[] }[] = [
  { floors: [{ name: REDIS_FLOOR, short: 'Redis floor', server: 'redis floor', scale: 'gauge' }],
    paths: [{ name: CACHED, short: 'clean row', vs: REDIS_FLOOR, target: CACHED_TARGET, scale: 'judged' }] },
  { floors: [], paths: [
      { name: 'loginByOpenid cached, WORKERS=1, under attack', note: attackNote, vs: CACHED, skip: noAttack,
        beside: attacker, by: 'attacker', reported: attacked },
      // One user uploads a photo from 8 connections as fast as answered: what upload bounds leave the rest.
      { name: 'loginByOpenid cached, WORKERS=1, one user uploading', note: '8 connections uploading for one user',
        vs: CACHED, skip: noAttack, before: uploading, beside: uploader, by: 'uploader', reported: uploaded },
  ] },
  { floors: [
      { name: 'floor: node:http + ioredis pipeline', note: 'for reference', server: 'pipeline floor', vs: REDIS_FLOOR },
      { name: 'floor: Koa + @koa/router + ioredis', note: "the framework's ceiling", server: 'koa floor',
        vs: REDIS_FLOOR, reported: koaLine },
    ],
    paths: [
      { name: 'loginByOpenid cached, fresh WORKERS=1 after a burst', note: burstNote, server: 'fresh', vs: REDIS_FLOOR,
        skip: !opts.burst, before: surge, after: stopFresh, target: GC_TARGET, reported: surged },
      { name: 'loginByOpenid cached, WORKERS=2', server: 'service2', vs: REDIS_FLOOR, reported: workersLine },
      { name: 'get (cached)', path: '/service/user/get', vs: REDIS_FLOOR },
    ] },
  {
    floors: [{ name: MYSQL_FLOOR, short: 'miss floor', server: 'mysql floor', scale: 'reference', ...uncached }],
    paths: [
      { name: 'loginByOpenid uncached', note: missRate, vs: MYSQL_FLOOR, target: atLeast(0.8), scale: 'judged',
        ...uncached, after: misses },
    ],
  },
  {
    floors: [{ name: TXN_FLOOR, short: 'txn floor', server: 'update floor', path: UPDATE, bodies: 'updates' }],
    paths: [
      { name: 'update nick_name', note: 'random users', path: UPDATE, bodies: 'updates', vs: TXN_FLOOR,
        target: atLeast(0.7) },
    ],
  },
  {
    floors: [{ name: GALERA_FLOOR, short: 'txn floor via HAProxy', server: 'galeraFloor', ...viaProxy }],
    paths: [
      { name: 'update nick_name via HAProxy to Galera', note: galeraNote, server: 'galeraService', vs: GALERA_FLOOR,
        ...viaProxy },
    ],
  },
  {
    floors: [],
    paths: [
      { name: 'week of launches, client keeps its token', skip: !opts.weekUsers, run: week(true), reported: weekLine },
      { name: 'week of launches, client drops its token', skip: !opts.weekUsers, run: week(false), reported: weekLine },
    ],
  },
];

// The environment of every child process: small and explicit.
let baseEnv: NodeJS.ProcessEnv = {};
// The flags of `npm start`: the bench measures the service as it is run.
const NODE_FLAGS = words(pkg.config.node_flags);
const startService = (name: string, workers: number, flags: string[] = [], env = baseEnv) =>
  Proc.start(name, [...NODE_FLAGS, ...flags, 'dist/src/server.js'], { ...env, WORKERS: String(workers) }, 'ops');
const startFloor = (floor: string, env = baseEnv, name = `${floor} floor`) =>
  Proc.start(name, [...TSX, 'bench/floors.ts', floor], env, 'api');
const stop = async (proc: Proc) => {
  await settle(); // requests the client gave up on at the end may still be running in the server
  await proc.stop();
  proc.news('while stopping');
};

/** Mark-compacts so far (prom-client's GC histogram on the ops port); pretenured sites run several a second. */
const fullGcs = async (proc: Proc) =>
  (await scrape(proc.opsUrl).catch(() => undefined))?.value('nodejs_gc_duration_seconds_count', { kind: 'major' });

/** loginByOpenid once per working-set user, so the cached scenarios find them in Redis. */
async function warmCache(service: Proc) {
  const failed = (await launch(`${service.url}${LOGIN}`, working)).filter((t) => !t).length;
  await cleanSessions();
  log(`  cache warmed: ${opts.workingSet} users (${failed} failed calls)`);
}

const backends: number[] = [];
const rows = new Map<string, Row>();
const rss = { max: 0, during: '' };
/** One round of one scenario: its hooks, the warm-up, and the measurement, with the server's own CPU. */
async function measure(s: Scenario) {
  const facts: Facts = { ...(await s.before?.()) };
  const proc = await server(s.server ?? 'service');
  log(`${s.name}: ${s.run ? 'once, without wrk' : `${opts.warmup} s warm-up + ${opts.duration} s`}`);
  if (s.run) return void rows.set(s.name, { name: s.name, rounds: [], facts: { ...facts, ...(await s.run(proc)) } });
  const url = `${proc.url}${s.path ?? LOGIN}`;
  const beside = s.beside && (await Proc.start(`${s.name}: beside`, s.beside(proc), baseEnv));
  if (beside) await beside.line('READY');
  if (opts.warmup) await wrk(url, BODIES[s.bodies ?? 'cached'](), opts.warmup, opts.connections);
  await s.measured?.();
  // Services whose largest process is held to the 150 MB target (the surge's fresh one is not).
  const heldToTarget = proc === servers.service || proc === servers.service2;
  const peak = (at: number, during: string) => heldToTarget && at > rss.max && Object.assign(rss, { max: at, during });
  peak(proc.rssWindow().rss, `a warm-up or cache fill before ${s.name}`);
  const gcs0 = proc === servers.service || proc === servers.fresh ? await fullGcs(proc) : undefined;
  const others = othersCpu(backends);
  const cpu0 = [proc.cpuSeconds(), beside?.cpuSeconds() ?? 0];
  const started = performance.now();
  const r: Load = await wrk(url, BODIES[s.bodies ?? 'cached'](), opts.duration, opts.connections);
  const seconds = (performance.now() - started) / 1000;
  const gcs1 = gcs0 === undefined ? undefined : await fullGcs(proc);
  const window = proc.rssWindow();
  peak(window.rss, s.name);
  const round: Round = {
    ...r,
    ...window,
    cpu: (proc.cpuSeconds() - cpu0[0]!) / seconds,
    other: others(r.gen * seconds), // wrk has exited: its CPU is no longer in /proc
    ...(beside && { beside: (beside.cpuSeconds() - cpu0[1]!) / seconds }),
    ...(gcs1 !== undefined && { gcs: (gcs1 - gcs0!) / seconds }),
  };
  if (beside) {
    const line = beside.line('FACTS ');
    await beside.stop();
    Object.assign(facts, JSON.parse(await line) as Facts);
  }
  Object.assign(facts, await s.after?.());
  if (Object.keys(facts).length) round.facts = facts;
  await cleanSessions();
  if (!rows.has(s.name)) rows.set(s.name, { name: s.name, rounds: [] });
  rows.get(s.name)!.rounds.push(round);
  const pc = (x?: number) => (x === undefined ? '—' : (x * 100).toFixed(0));
  log(
    `  ${fmt(r.rps)} req/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ${r.errors} errors, RSS ${mib(window.rss)} ` +
      `(${window.procs} procs), CPU % of a core: server ${pc(round.cpu)}, wrk ${pc(r.gen)}, beside ${pc(round.beside)}, ` +
      `others ${pc(round.other)} % of the machine, ${fmt(round.gcs, 1)} full GCs/s ${JSON.stringify(round.facts ?? {})}`,
  );
  proc.news('during the run');
}

/** The cached path once more, on a fresh service under node --cpu-prof (not in the table). */
async function profile() {
  const dir = join(ROOT, 'bench', 'profiles');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  log(`profile: ${CACHED} under node --cpu-prof`);
  const service = await startService('service under --cpu-prof', 1, ['--cpu-prof', `--cpu-prof-dir=${dir}`]);
  const url = `${service.url}${LOGIN}`;
  await warmCache(service);
  const fromUs = Number(process.hrtime.bigint() / 1000n); // start-up and cache fills left out
  if (opts.warmup) await wrk(url, BODIES.cached(), opts.warmup, opts.connections);
  log(`  ${fmt((await wrk(url, BODIES.cached(), opts.duration, opts.connections)).rps)} req/s under the profiler`);
  await stop(service);
  // With node:cluster every process writes one: the largest is the busiest.
  const file = readdirSync(dir)
    .map((f) => join(dir, f))
    .sort((a, b) => statSync(b).size - statSync(a).size)[0];
  if (!file) throw new Error('the service wrote no profile');
  const scenario = `${CACHED}, ${opts.warmup + opts.duration} s, start-up left out`;
  return { file, scenario, summary: summarizeProfile(file, ROOT, 15, fromUs) };
}

async function main(): Promise<void> {
  if (v.help) {
    const lines = Object.entries(OPTIONS).map(([k, [d, text]]) => `  --${k.padEnd(18)} ${text}${d ? ` (${d})` : ''}`);
    return void process.stdout.write(`npm run bench -- [options]\n\n${lines.join('\n')}\n`);
  }
  const file = join(ROOT, 'BENCHMARKS.md');
  const defs = SCENARIOS.flatMap((g) => [...g.floors, ...g.paths]);
  if (v['report-only']) return void writeBenchmarks(file, defs);
  if (!v['no-build']) {
    log('build: tsc -p tsconfig.build.json');
    const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
    const built = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
    if (built.status !== 0) throw new Error('the build failed');
  }
  const url = `${String(v.mysql).replace(/\/+$/, '')}/user_service_bench_${opts.users}`;
  const db = { url, poolMax: 10, acquireTimeoutMs: 10_000 };
  const seeded = (ids = await seed(db, opts.users, Boolean(v.reseed)));
  const connect = () => mysql.createConnection(parseDatabaseUrl(db.url));
  const conn = await connect();
  const query = 'SELECT VERSION() AS version, @@pid_file AS pidFile';
  const [[{ version, pidFile }]] = (await conn.query(query)) as unknown as [{ version: string; pidFile: string }[]];
  await conn.end();
  const redisInfo = await redis.info('server');
  const redisVersion = /redis_version:(\S+)/.exec(redisInfo)?.[1];
  // The servers the bench drives, whose CPU is its doing (not a test suite's servers beside it).
  backends.push(Number(/process_id:(\d+)/.exec(redisInfo)?.[1]), Number(read(pidFile)));
  const stale = await scanKeys(redis, `${P}*`, true);
  if (stale) log(`redis: removed ${stale} keys left under ${P}`);
  if (missing.length) log(`galera: its rows left out, this machine lacks ${missing.join(', ')}`);
  baseEnv = {
    ...{ PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: 'production', LOG_LEVEL: 'warn' },
    ...{ DATABASE_URL: db.url, DB_POOL_MAX: '10', REDIS_URL: String(v.redis), REDIS_KEY_PREFIX: P },
    ...{ RATE_LIMIT_IP: '0', RATE_LIMIT_OPENID: '0', MEDIA_DIR: MEDIA, PHONE_KEYS: BENCH_PHONE_KEYS },
    // As `npm start` runs it (package.json config.malloc_env).
    ...Object.fromEntries(words(pkg.config.malloc_env).map((kv) => kv.split('='))),
  };
  // Whether the table fits in InnoDB's buffer pool decides whether uncached reads touch the disk.
  const pool = await bufferPool(connect, String(v['buffer-pool']));
  // Stopped by a signal, the run still puts the buffer pool back, stops its children and empties its prefix.
  const onSignal = () =>
    void pool
      .restore()
      .then(() => Promise.all([...Proc.running].map((p) => p.stop())))
      .then(() => scanKeys(redis, `${P}*`, true))
      .finally(() => process.exit(130));
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  let profiled: Awaited<ReturnType<typeof profile>> | undefined;
  try {
    if (!v['profile-only']) {
      for (let round = 1; round <= opts.rounds; round++) {
        log(`--- round ${round} of ${opts.rounds}`);
        // The same start for every round: only the working set cached, no sessions.
        await dropProfiles();
        await warmCache(await server('service'));
        for (const group of SCENARIOS) {
          const order = round % 2 ? [...group.floors, ...group.paths] : [...group.paths, ...group.floors];
          for (const s of order) if (!s.skip && (round === 1 || !s.run)) await measure(s);
        }
      }
      for (const proc of [...Proc.running]) await stop(proc);
    }
    if (!v['no-profile']) profiled = await profile();
  } finally {
    await pool.restore(); // first: it never throws, and nothing after it may leave the server changed
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    for (const proc of Proc.running) await proc.stop();
    await galera?.cluster.destroy();
    log(`redis: removed ${await scanKeys(redis, `${P}*`, true)} keys under ${P}`);
    for (const dir of [MEDIA, PHOTO]) rmSync(dir, { recursive: true, force: true });
    redis.disconnect();
  }
  if (v['profile-only']) {
    const { scenario, file: cpuprofile, summary } = profiled!;
    return void process.stdout.write(`\n${scenario}: ${cpuprofile}\n${formatProfile(summary)}\n`);
  }
  const report = {
    users: opts.users,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    machine: `${os.cpus().length} cores (${os.cpus()[0]?.model.trim()}) · Node ${process.version} · MariaDB ${version} · Redis ${redisVersion} · ${pool.text}`,
    load: opts,
    seedSeconds: seeded.seconds,
    rows: [...rows.values()],
    rss,
    ...(profiled && { profile: { scenario: profiled.scenario, summary: profiled.summary } }),
  };
  process.stdout.write(`\n${section(report, defs)}\n\n`);
  // A service run under extra flags is not the service as deployed.
  if (!v['no-write'] && !opts.serviceFlags.length) writeBenchmarks(file, defs, report);
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${(err as Error)?.stack ?? err}\n`);
  process.exit(1);
});
