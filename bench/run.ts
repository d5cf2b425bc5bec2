/**
 * `npm run bench`: seeds the bench database, starts the compiled service and its bare floors
 * as child processes, drives each with wrk (autocannon when wrk is not installed), and writes
 * BENCHMARKS.md. `npm run bench -- --help` lists the options.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import Redis from 'ioredis';
import mysql from 'mysql2/promise';
import sharp from 'sharp';
import pkg from '../package.json';
import { parseDatabaseUrl } from '../src/db/connection';
import {
  countMatching,
  cpuTicksOf,
  CLK_TCK,
  deleteMatching,
  ForeignCpu,
  freePort,
  mb,
  postJson,
  ServerProcess,
  sleep,
} from './lib';
import { combine, fire, wrkAvailable, type Bodies, type LoadResult, type LoadSettings, type Target } from './load';
import { formatProfile, summarizeProfile } from './profile';
import {
  ATTACK_NOTE,
  BURST_NOTE,
  CACHED_ATTACK,
  CACHED_UPLOAD,
  CACHED_BURST,
  CACHED_W1,
  CACHED_W2,
  FLOOR_MYSQL,
  FLOOR_REDIS,
  FLOOR_REDIS_PIPELINE,
  FLOOR_KOA,
  FLOOR_UPDATE,
  FLOOR_UPDATE_GALERA,
  GET,
  ORDER,
  section,
  storedReports,
  UNCACHED,
  UPDATE,
  UPDATE_GALERA,
  writeBenchmarks,
  type Row,
  type RunReport,
} from './report';
import { prepareBufferPool } from './buffer-pool';
import { BENCH_PHONE_KEYS, benchOpenid, ensureSeeded } from './seed';
import { galeraMissing, TestGaleraCluster } from '../test/helpers/galera-cluster';

const ROOT = resolve(__dirname, '..');

const HELP = `npm run bench -- [options]

  --users N          users to seed (default 100000; e.g. 1000000)
  --reseed           empty the bench table and seed again even if it holds N users
  --batch N          rows per INSERT while seeding (default 5000)
  --generator G      wrk (default when it is on PATH) or autocannon (in this process; the fallback)
  --threads N        wrk threads (default 1: one event loop serves 50 connections with CPU to spare)
  --connections N    connections of the load generator (default 50)
  --pipelining N     autocannon pipelining (default 1; wrk does not pipeline)
  --duration S       seconds measured per scenario (default 5)
  --warmup S         seconds of warm-up before each measurement (default 2)
  --timeout S        seconds before a request counts as timed out (default 10)
  --working-set N    users the cached scenarios draw from, warmed first (default 10000)
  --burst N          connections of the launch surge a fresh service takes before its cached row
                     (default 1500; 0 leaves the row out)
  --rounds N         measurements of every scenario, interleaved; the table shows medians (default 5)
  --attack-half-open N  half-open connections of the attack row (default 300; 0 with --attack-rate 0
                     leaves it and the uploading row out)
  --attack-rate N    maximum-size bodies a second of the attack row (default 200)
  --attack-size N    bytes of each attack body (default 16384, the body limit)
  --mysql URL        MySQL server, without a database (default mysql://root@127.0.0.1:3306)
  --redis URL        Redis (default redis://127.0.0.1:6379/0)
  --prefix P         Redis key prefix of the bench, deleted at start and end (default bench:)
  --buffer-pool M    fit (default): raise InnoDB's buffer pool to hold the users table for the run,
                     then put it back; keep: measure the server as it is
  --galera-users N   users seeded on a 3-node Galera cluster behind HAProxy (deploy/), started for
                     the run, for the update row through it and its floor through the same path
                     (default 10000; 0, or galera-4/haproxy missing, leaves the rows out)
  --no-profile       skip the extra run under node --cpu-prof
  --profile-only     measure nothing else: the cached path under node --cpu-prof, driven for
                     --duration s (default 20 here) after --warmup s; prints the summary
  --no-build         use dist/ as it is (default: npm run build first)
  --no-write         print the results, leave BENCHMARKS.md alone
  --service-flags=F  extra node flags for the WORKERS=1 services (the quiet one and each round's
                     fresh one), e.g. --service-flags="--cpu-prof"
                     (split on spaces; to look inside the measured process; implies --no-write)
  --report-only      measure nothing: rewrite BENCHMARKS.md from the results stored in it
  --help             this text`;

function options() {
  const { values } = parseArgs({
    options: {
      users: { type: 'string', default: '100000' },
      reseed: { type: 'boolean', default: false },
      batch: { type: 'string', default: '5000' },
      generator: { type: 'string' },
      threads: { type: 'string', default: '1' },
      connections: { type: 'string', default: '50' },
      pipelining: { type: 'string', default: '1' },
      duration: { type: 'string' },
      warmup: { type: 'string', default: '2' },
      timeout: { type: 'string', default: '10' },
      'working-set': { type: 'string', default: '10000' },
      burst: { type: 'string', default: '1500' },
      rounds: { type: 'string', default: '5' },
      'attack-half-open': { type: 'string', default: '300' },
      'attack-rate': { type: 'string', default: '200' },
      'attack-size': { type: 'string', default: '16384' },
      'profile-only': { type: 'boolean', default: false },
      mysql: { type: 'string', default: process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306' },
      redis: { type: 'string', default: process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/0' },
      prefix: { type: 'string', default: 'bench:' },
      'no-profile': { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      'no-write': { type: 'boolean', default: false },
      'report-only': { type: 'boolean', default: false },
      'service-flags': { type: 'string', default: '' },
      'buffer-pool': { type: 'string', default: 'fit' },
      'galera-users': { type: 'string', default: '10000' },
      help: { type: 'boolean', default: false },
    },
  });
  const int = (name: keyof typeof values, min: number) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}`);
    return n;
  };
  const users = int('users', 1);
  const bufferPool = values['buffer-pool'];
  const generator = values.generator ?? (wrkAvailable() ? 'wrk' : 'autocannon');
  if (generator !== 'wrk' && generator !== 'autocannon') throw new Error('--generator must be wrk or autocannon');
  if (generator === 'wrk' && !wrkAvailable())
    throw new Error('--generator wrk: wrk is not on PATH (apt-get install wrk)');
  const profileOnly = values['profile-only']!;
  values.duration ??= profileOnly ? '20' : '5';
  if (bufferPool !== 'fit' && bufferPool !== 'keep') throw new Error('--buffer-pool must be fit or keep');
  return {
    help: values.help!,
    users,
    reseed: values.reseed!,
    batch: int('batch', 1),
    load: {
      generator,
      threads: int('threads', 1),
      connections: int('connections', 1),
      pipelining: int('pipelining', 1),
      duration: int('duration', 1),
      warmup: int('warmup', 0),
      timeout: int('timeout', 1),
    } satisfies LoadSettings,
    workingSet: Math.min(users, int('working-set', 1)),
    burst: int('burst', 0),
    rounds: int('rounds', 1),
    attack: { halfOpen: int('attack-half-open', 0), rate: int('attack-rate', 0), size: int('attack-size', 2) },
    profileOnly,
    mysqlUrl: values.mysql!.replace(/\/+$/, ''),
    redisUrl: values.redis!,
    prefix: values.prefix!,
    profile: !values['no-profile'],
    build: !values['no-build'],
    bufferPool: bufferPool as 'fit' | 'keep',
    galeraUsers: int('galera-users', 0),
    serviceFlags: values['service-flags']!.split(/\s+/).filter(Boolean),
    // A service run under extra flags is not the service as deployed: its numbers stay out of
    // BENCHMARKS.md.
    write: !values['no-write'] && !values['service-flags'],
    reportOnly: values['report-only']!,
  };
}

const log = (line: string) => process.stderr.write(`${line}\n`);

/**
 * Mark-compacts the service has run so far (prom-client's GC histogram on /metrics; a series
 * not there yet is 0). A process whose allocation sites V8 has pretenured runs several a second
 * under a load that otherwise needs one every few seconds, and loses about a quarter of its
 * throughput for life (README, Scaling); the count shows which state a run measured.
 */
async function fullGcCount(proc: ServerProcess): Promise<number | undefined> {
  try {
    const res = await proc.opsGet('/metrics');
    if (res.status !== 200) return undefined;
    const m = /^nodejs_gc_duration_seconds_count\{kind="major"\} (\S+)$/m.exec(await res.text());
    return m ? Number(m[1]) : 0;
  } catch {
    return undefined;
  }
}

/** Waits until the service's /readyz (ops port, else API port) answers 200. */
async function readyz(proc: ServerProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await proc.opsGet('/readyz');
      if (res.status === 200) return;
      last = `${res.status} ${await res.text()}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`${proc.name}: /readyz did not answer 200 within ${timeoutMs} ms (${last})`);
}

/** Fisher–Yates over 0..n-1: draws without replacement. */
function permutation(n: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/** Pause after a run before looking at Redis or stopping a server: in-flight requests finish. */
const SETTLE_MS = 1000;
/** Length of the surge before the after-a-burst row: a dozen young collections or more. */
const BURST_S = 3;

/** What bench/attack.ts reports when it is stopped. */
interface AttackStats {
  sent: number;
  late: number;
  answered: Record<string, number>;
  halfOpenAlive: number;
  reconnects: number;
}

async function main(): Promise<void> {
  const opts = options();
  if (opts.help) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  if (opts.reportOnly) {
    const scale = writeBenchmarks(join(ROOT, 'BENCHMARKS.md'));
    if (scale) process.stdout.write(`${scale}\n`);
    return;
  }
  const settings = opts.load;
  const database = `user_service_bench_${opts.users}`;
  const dbSettings = { url: `${opts.mysqlUrl}/${database}`, poolMax: 10, acquireTimeoutMs: 10_000 };

  if (opts.build) {
    log('build: npm run build');
    const built = spawnSync(
      process.execPath,
      [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
      {
        cwd: ROOT,
        stdio: 'inherit',
      },
    );
    if (built.status !== 0) throw new Error('the build failed');
  }

  const seed = await ensureSeeded(dbSettings, opts.users, { reseed: opts.reseed, batch: opts.batch, log });

  const redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 1 });
  const connect = () => mysql.createConnection(parseDatabaseUrl(dbSettings.url));
  const conn = await connect();
  const [[{ v: mariadb }]] = (await conn.query('SELECT VERSION() AS v')) as unknown as [{ v: string }[]];
  await conn.end();
  const redisVersion = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? '?';

  const P = opts.prefix;
  const cleanAll = async () => deleteMatching(redis, `${P}*`);
  const cleanSessions = async () =>
    (await deleteMatching(redis, `${P}session:*`)) + (await deleteMatching(redis, `${P}user:*:sessions`));
  const dropProfiles = async () => deleteMatching(redis, `${P}user:*:profile`);
  const countProfiles = async () => countMatching(redis, `${P}user:*:profile`);
  const stale = await cleanAll();
  if (stale) log(`redis: removed ${stale} keys left under ${P}`);

  // Everything measured runs as a child process with a small, explicit environment (no
  // NODE_OPTIONS or tsx loader leaking into the service).
  const baseEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: 'production',
    DATABASE_URL: dbSettings.url,
    DB_POOL_MAX: '10',
    REDIS_URL: opts.redisUrl,
    REDIS_KEY_PREFIX: P,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_IP: '0',
    RATE_LIMIT_OPENID: '0',
    MEDIA_DIR: join(os.tmpdir(), `user-service-bench-media-${process.pid}`),
    // As `npm start` runs it (package.json config.malloc_env).
    ...Object.fromEntries(
      String(pkg.config.malloc_env)
        .split(' ')
        .map((kv) => kv.split('=')),
    ),
    PHONE_KEYS: BENCH_PHONE_KEYS,
  };
  const running = new Set<ServerProcess>();
  const start = async (name: string, args: string[], env: NodeJS.ProcessEnv = {}) => {
    const port = await freePort();
    let opsPort = await freePort();
    while (opsPort === port) opsPort = await freePort();
    const proc = new ServerProcess(name, port, opsPort, args, { ...baseEnv, ...env }, ROOT);
    running.add(proc);
    try {
      await proc.ready('/service/user/get', { openid: benchOpenid(0) });
    } catch (err) {
      await proc.stop();
      running.delete(proc);
      throw err;
    }
    return proc;
  };
  /** Shows what a server logged since the last look (warnings under load are worth seeing). */
  const showLog = (proc: ServerProcess, when: string) => {
    const { lines, first } = proc.log;
    if (lines) log(`  ${proc.name} logged ${lines} lines ${when}, first: ${first.slice(0, 3).join(' | ')}`);
    proc.clearLog();
  };
  const stop = async (proc: ServerProcess) => {
    // Requests the client gave up on at the end may still be running in the server.
    await sleep(SETTLE_MS);
    await proc.stop();
    running.delete(proc);
    singleProcess.delete(proc);
    showLog(proc, 'while stopping');
  };
  // The same V8 flags as `npm start` (package.json config.node_flags): the bench measures the
  // service as it is run.
  const serviceFlags = String(pkg.config.node_flags).split(/\s+/).filter(Boolean);
  /** Services that run in one process: their /metrics speaks for the whole service. */
  const singleProcess = new Set<ServerProcess>();
  const startService = async (workers: number, nodeArgs: string[] = []) => {
    const proc = await start(`service WORKERS=${workers}`, [...serviceFlags, ...nodeArgs, 'dist/src/server.js'], {
      WORKERS: String(workers),
    });
    await readyz(proc);
    if (workers === 1) singleProcess.add(proc);
    return proc;
  };
  const floorArgs = (file: string) => ['--import', 'tsx', `bench/floors/${file}`];

  // The working set: distinct users spread over the whole seeded range.
  const perm = permutation(opts.users);
  const workingSet = perm.slice(0, opts.workingSet);
  const randomCached: Bodies = { kind: 'pick', ids: workingSet };

  /** loginByOpenid once per working-set user, so the cached scenarios find them in Redis. */
  const warmCache = async (service: ServerProcess) => {
    const r = await fire(
      {
        url: `${service.url}/service/user/loginByOpenid`,
        bodies: { kind: 'sequence', ids: workingSet, cursor: { at: 0, wrapped: false } },
      },
      settings,
      0,
      workingSet.length,
    );
    log(
      `  cache warmed: ${workingSet.length} working-set users, ${await countProfiles()} profiles in Redis (${r.notOk + r.errors} failed calls)`,
    );
    await cleanSessions();
  };

  // Each scenario is measured once per round; rounds interleave every scenario with its floor,
  // so a disturbance of the shared machine hits a path and its floor alike, and the median
  // over rounds ignores one bad round.
  const samples = new Map<
    string,
    {
      results: LoadResult[];
      other: number[];
      fullGcs: (number | undefined)[];
      cpu: number[];
      attackCpu: (number | undefined)[];
      rssMax: number;
      processes: number;
      extra: Partial<Row>;
    }
  >();
  let rssMax = 0;
  let rssMaxDuring = '';
  const run = async (
    scenario: string,
    proc: ServerProcess,
    target: Target,
    extra: Partial<Row> = {},
    countsForRssTarget = true,
  ) => {
    log(`${scenario}: ${settings.warmup} s warm-up + ${settings.duration} s`);
    if (settings.warmup > 0) await fire(target, settings, settings.warmup);
    return runMeasured(scenario, proc, target, extra, countsForRssTarget);
  };
  const runMeasured = async (
    scenario: string,
    proc: ServerProcess,
    target: Target,
    extra: Partial<Row>,
    countsForRssTarget: boolean,
  ) => {
    proc.rss.reset();
    const gcsBefore = singleProcess.has(proc) ? await fullGcCount(proc) : undefined;
    const foreign = new ForeignCpu();
    const serverCpu = proc.cpuSeconds();
    const attackPid = attacker?.pid;
    const attackTicks = attackPid === undefined ? 0 : cpuTicksOf(attackPid);
    const started = performance.now();
    const r = await fire(target, settings, settings.duration);
    const seconds = (performance.now() - started) / 1000;
    const cpu = (proc.cpuSeconds() - serverCpu) / seconds;
    const attackCpu = attackPid === undefined ? undefined : (cpuTicksOf(attackPid) - attackTicks) / CLK_TCK / seconds;
    // wrk and the attacker are this process's children, but wrk has exited by now.
    const other = foreign.stop(settings.generator === 'wrk' ? r.generatorCpu * seconds : 0);
    const gcsAfter = gcsBefore === undefined ? undefined : await fullGcCount(proc);
    const fullGcs = gcsBefore !== undefined && gcsAfter !== undefined ? (gcsAfter - gcsBefore) / seconds : undefined;
    proc.rss.sample();
    const entry = samples.get(scenario) ?? {
      results: [],
      other: [],
      fullGcs: [],
      cpu: [],
      attackCpu: [],
      rssMax: 0,
      processes: 0,
      extra,
    };
    entry.results.push(r);
    entry.other.push(other);
    entry.cpu.push(cpu);
    entry.attackCpu.push(attackCpu);
    entry.fullGcs.push(fullGcs);
    entry.rssMax = Math.max(entry.rssMax, proc.rss.maxSingle);
    entry.processes = Math.max(entry.processes, proc.rss.maxProcesses);
    samples.set(scenario, entry);
    if (countsForRssTarget && proc.rss.maxSingle > rssMax) {
      rssMax = proc.rss.maxSingle;
      rssMaxDuring = scenario;
    }
    log(
      `  ${r.rps.toFixed(0)} req/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, ` +
        `errors ${r.errors}/${r.non2xx}/${r.notOk - r.non2xx}, RSS max ${mb(proc.rss.maxSingle).toFixed(0)} MiB (${proc.rss.maxProcesses} procs), ` +
        `CPU (% of a core): server ${(cpu * 100).toFixed(0)}, ${settings.generator} ${(r.generatorCpu * 100).toFixed(0)}` +
        (attackCpu === undefined ? '' : `, attacker ${(attackCpu * 100).toFixed(0)}`) +
        `, other tenants ${(other * 100).toFixed(0)} % of the machine` +
        (fullGcs === undefined ? '' : `, ${fullGcs.toFixed(1)} full GCs/s`),
    );
    showLog(proc, 'during the run');
    return r;
  };

  /** The attacker of the attack row while it runs (bench/attack.ts, a process of its own). */
  let attacker: ChildProcess | undefined;
  /**
   * Runs `measure` while bench/attack.ts attacks `proc`: its half-open connections are opened
   * first (a second to connect), and its answer counts are read when it is stopped.
   */
  const underAttack = async (
    proc: ServerProcess,
    measure: () => Promise<unknown>,
    args: string[] = [],
  ): Promise<AttackStats> => {
    const { halfOpen, rate, size } = opts.attack;
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'bench/attack.ts',
        `--url=${proc.url}`,
        `--half-open=${halfOpen}`,
        `--rate=${rate}`,
        `--size=${size}`,
        ...args,
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    attacker = child;
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      // Its half-open connections are open and its bodies flowing before the measurement.
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the attacker was not ready within 60 s')), 60_000);
        child.stdout!.on('data', () => {
          if (out.includes('ATTACK_READY')) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.once('exit', () => reject(new Error(`the attacker exited: ${out}`)));
      });
      await measure();
    } finally {
      child.kill('SIGTERM');
      await exited;
      attacker = undefined;
    }
    const line = /^ATTACK_JSON (.*)$/m.exec(out);
    if (!line) throw new Error(`the attacker printed no stats: ${out}`);
    const stats = JSON.parse(line[1]!) as AttackStats;
    log(
      `  attacker: ${stats.sent} bodies sent (${stats.late} owed but every connection busy), answered ${JSON.stringify(stats.answered)}, ` +
        `${stats.halfOpenAlive} half-open connections alive at the end, ${stats.reconnects} reconnects`,
    );
    return stats;
  };

  const login = (p: ServerProcess) => `${p.url}/service/user/loginByOpenid`;
  let rssIdle: number;
  /** Every service process started, for the peak RSS over the whole run (warm-ups included). */
  const services: ServerProcess[] = [];
  const surge = { connections: opts.burst, seconds: BURST_S, requests: 0, failed: 0, rssPeak: 0 };
  const uncached = { requests: 0, sent: 0, misses: 0 };
  const uncachedCursor = { at: 0, wrapped: false };
  const attackTotals = { sent: 0, late: 0, answered: {} as Record<string, number>, halfOpenAlive: [] as number[] };
  const withAttack = opts.attack.halfOpen > 0 || opts.attack.rate > 0;
  const uploadFile = join(os.tmpdir(), `user-service-bench-avatar-${process.pid}.jpg`);
  const noise = { type: 'gaussian' as const, mean: 128, sigma: 40 };
  const photo = { width: 1600, height: 1200, channels: 3 as const, background: '#888', noise };
  if (withAttack) await sharp({ create: photo }).jpeg({ quality: 60 }).toFile(uploadFile);
  let profile: RunReport['profile'];
  // Whether the table fits in InnoDB's buffer pool decides whether uncached reads touch the disk.
  const bufferPool = await prepareBufferPool(connect, opts.bufferPool, log);
  // Stopped by a signal, the run still puts the server's own buffer pool back, stops its
  // servers and the attacker (a signal sent to the bench alone would leave them running) and
  // empties its prefix.
  const onSignal = () =>
    void bufferPool
      .restore()
      .then(() => attacker?.kill('SIGKILL'))
      .then(() => Promise.all([...running].map((proc) => proc.stop())))
      .then(() => cleanAll())
      .finally(() => process.exit(130));
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  /** Started by rounds() for the Galera rows; stopped at the end, whatever happened. */
  let galeraCluster: TestGaleraCluster | undefined;
  /** Every scenario, `opts.rounds` times, interleaved with the floors. */
  const rounds = async (service1: ServerProcess) => {
    const service2 = await startService(2);
    services.push(service2);
    const redisFloor = await start('redis floor', floorArgs('redis-floor.ts'));
    const pipelineFloor = await start('redis pipeline floor', floorArgs('redis-pipeline-floor.ts'));
    const koaFloor = await start('koa floor', floorArgs('koa-floor.ts'));
    const mysqlFloor = await start('mysql floor', floorArgs('mysql-floor.ts'));
    const updateFloor = await start('update floor', floorArgs('update-floor.ts'));

    // The uncached path draws openids without replacement from the users outside the working
    // set, so no openid repeats within one measured run (unless it sends more than there are).
    // The MySQL floor caches nothing: any user will do.
    const outside = opts.users > opts.workingSet ? perm.subarray(opts.workingSet) : perm;
    const anyUser: Bodies = { kind: 'range', lo: 0, hi: opts.users - 1 };
    const updates: Bodies = { kind: 'update', lo: seed.lo, hi: seed.hi };
    // update through HAProxy to Galera, and the same transaction floor through the same path.
    const missing = opts.galeraUsers > 0 ? galeraMissing() : [];
    if (missing.length) log(`galera: rows left out, missing ${missing.join(', ')}`);
    const galera = (galeraCluster =
      opts.galeraUsers > 0 && !missing.length ? await TestGaleraCluster.create() : undefined);
    const viaProxy = galera && { url: `${galera.url}/${database}`, poolMax: 10, acquireTimeoutMs: 10_000 };
    const galeraSeed =
      viaProxy && (await ensureSeeded(viaProxy, opts.galeraUsers, { reseed: false, batch: opts.batch, log }));
    // Its own key prefix: the same openids are seeded in both databases.
    const galeraEnv = viaProxy && { DATABASE_URL: viaProxy.url, WORKERS: '1', REDIS_KEY_PREFIX: `${P}galera:` };
    const galeraService =
      galeraEnv && (await start('service via HAProxy', [...serviceFlags, 'dist/src/server.js'], galeraEnv));
    const galeraFloor = galeraEnv && (await start('update floor via HAProxy', floorArgs('update-floor.ts'), galeraEnv));

    for (let round = 1; round <= opts.rounds; round++) {
      log(`--- round ${round} of ${opts.rounds}`);
      // The same start for every round: only the working set cached, no sessions.
      await dropProfiles();
      await cleanSessions();
      await warmCache(service1);

      // Odd rounds run each floor before its paths, even rounds after: no path always follows it.
      const floorFirst = round % 2 === 1;
      const redisFloorRuns = async () => {
        await run(FLOOR_REDIS, redisFloor, { url: login(redisFloor), bodies: randomCached }, {}, false);
        await cleanSessions();
        const references = [
          [FLOOR_REDIS_PIPELINE, pipelineFloor, 'for reference'],
          [FLOOR_KOA, koaFloor, "for reference: the framework's ceiling"],
        ] as const;
        for (const [row, floor, note] of references) {
          await run(row, floor, { url: login(floor), bodies: randomCached }, { floor: FLOOR_REDIS, note }, false);
          await cleanSessions();
        }
      };
      if (floorFirst) await redisFloorRuns();
      await run(CACHED_W1, service1, { url: login(service1), bodies: randomCached }, { floor: FLOOR_REDIS });
      await cleanSessions();
      if (withAttack) {
        // The same path while an attacker holds half-open connections and streams bodies at
        // the size limit: judged against the clean row of the same round.
        const stats = await underAttack(service1, () =>
          run(
            CACHED_ATTACK,
            service1,
            { url: login(service1), bodies: randomCached },
            { floor: CACHED_W1, note: ATTACK_NOTE(opts.attack) },
          ),
        );
        attackTotals.sent += stats.sent;
        attackTotals.late += stats.late;
        attackTotals.halfOpenAlive.push(stats.halfOpenAlive);
        for (const [status, n] of Object.entries(stats.answered)) {
          attackTotals.answered[status] = (attackTotals.answered[status] ?? 0) + n;
        }
        await cleanSessions();
        // The same path while one user uploads a 1600x1200 photo from 8 connections, as fast
        // as it is answered: what the upload bounds leave the JSON routes.
        const { text } = await postJson(login(service1), { openid: benchOpenid(0) });
        const token = `--token=${(JSON.parse(text) as { data: { token: string } }).data.token}`;
        const file = ['--half-open=0', '--rate=1000', '--connections=8', token, `--file=${uploadFile}`];
        const note = '8 connections uploading for one user';
        await underAttack(
          service1,
          () =>
            run(CACHED_UPLOAD, service1, { url: login(service1), bodies: randomCached }, { floor: CACHED_W1, note }),
          file,
        );
        await cleanSessions();
      }
      if (opts.burst > 0) {
        // A fresh process whose first load is a surge of launches (a deploy at peak, a
        // marketing push): the requests it holds in flight at each young collection are what V8
        // judges allocation sites by, and a wrong verdict would last the process's life.
        const fresh = await startService(1, opts.serviceFlags);
        // autocannon, whatever the generator: wrk opening 1,500 connections at once spent the
        // surge connecting (a few dozen requests where autocannon sends thousands).
        const b = await fire(
          { url: login(fresh), bodies: anyUser },
          { ...settings, generator: 'autocannon', connections: opts.burst },
          BURST_S,
        );
        log(
          `  burst: ${opts.burst} connections for ${BURST_S} s, ${b.requests} requests (${b.errors + b.notOk} failed)`,
        );
        surge.requests += b.requests;
        surge.failed += b.errors + b.notOk;
        await sleep(SETTLE_MS);
        await cleanSessions();
        await run(
          CACHED_BURST,
          fresh,
          { url: login(fresh), bodies: randomCached },
          { floor: FLOOR_REDIS, note: BURST_NOTE(opts.burst, BURST_S) },
          false,
        );
        // Its connections are many times those of every other scenario: its memory is reported
        // on its own, not against the target the other scenarios are held to.
        surge.rssPeak = Math.max(surge.rssPeak, fresh.rssHighWater, fresh.rss.peakSingle);
        await stop(fresh);
        await cleanSessions();
      }
      await run(CACHED_W2, service2, { url: login(service2), bodies: randomCached }, { floor: FLOOR_REDIS });
      await cleanSessions();
      await run(
        GET,
        service1,
        { url: `${service1.url}/service/user/get`, bodies: randomCached },
        { floor: FLOOR_REDIS },
      );
      if (!floorFirst) await redisFloorRuns();

      const mysqlFloorRun = () => run(FLOOR_MYSQL, mysqlFloor, { url: login(mysqlFloor), bodies: anyUser }, {}, false);
      if (floorFirst) await mysqlFloorRun();
      // Uncached: empty the profile cache, warm up (which fills it), empty it again, measure,
      // then count the profiles the measured run filled: each one is a miss.
      log(`${UNCACHED}: ${settings.warmup} s warm-up + ${settings.duration} s, profile cache emptied before each`);
      await dropProfiles();
      const uncachedTarget: Target = {
        url: login(service1),
        bodies: { kind: 'sequence', ids: outside, cursor: uncachedCursor },
      };
      if (settings.warmup > 0) await fire(uncachedTarget, settings, settings.warmup);
      await sleep(SETTLE_MS);
      await dropProfiles();
      await cleanSessions();
      const from = uncachedCursor.at;
      const wrappedBefore = uncachedCursor.wrapped;
      const u = await runMeasured(UNCACHED, service1, uncachedTarget, { floor: FLOOR_MYSQL }, true);
      await sleep(SETTLE_MS);
      const fills = await countProfiles();
      const sent = (uncachedCursor.at - from + outside.length) % outside.length;
      uncached.requests += u.requests;
      uncached.sent += sent;
      uncached.misses += Math.min(fills, sent);
      log(
        `  ${fills} cache fills for ${sent} openids sent${uncachedCursor.wrapped && !wrappedBefore ? ' (wrapped)' : ''}`,
      );
      await cleanSessions();

      const updateFloorRun = () =>
        run(FLOOR_UPDATE, updateFloor, { url: `${updateFloor.url}/service/user/update`, bodies: updates }, {}, false);
      if (floorFirst) await updateFloorRun();
      await run(
        UPDATE,
        service1,
        { url: `${service1.url}/service/user/update`, bodies: updates },
        { floor: FLOOR_UPDATE, note: 'random users' },
      );
      if (!floorFirst) {
        await updateFloorRun();
        await mysqlFloorRun();
      }
      if (galeraService && galeraFloor && galeraSeed) {
        const target = (proc: ServerProcess): Target => ({
          url: `${proc.url}/service/user/update`,
          bodies: { kind: 'update', lo: galeraSeed.lo, hi: galeraSeed.hi },
        });
        const floorRun = () => run(FLOOR_UPDATE_GALERA, galeraFloor, target(galeraFloor), {}, false);
        if (floorFirst) await floorRun();
        await run(UPDATE_GALERA, galeraService, target(galeraService), {
          floor: FLOOR_UPDATE_GALERA,
          note: `3-node Galera behind HAProxy, ${opts.galeraUsers} users`,
        });
        if (!floorFirst) await floorRun();
      }
    }
    for (const proc of [service2, redisFloor, pipelineFloor, koaFloor, mysqlFloor, updateFloor]) await stop(proc);
    for (const proc of [galeraService, galeraFloor]) if (proc) await stop(proc);
  };

  try {
    // Every server stays up for the whole run (an idle one costs no CPU): the service with
    // WORKERS=1 and with WORKERS=2 (both on the same database and key prefix, like two
    // deployments sharing the cache), and the floors.
    log(`servers: starting the service (WORKERS=1 and WORKERS=2) and the floors; load by ${settings.generator}`);
    const service1 = await startService(1, opts.serviceFlags);
    services.push(service1);
    service1.rss.sample();
    rssIdle = service1.rss.maxSingle;
    if (opts.profileOnly) log('profile only: no rounds, no floors');
    else await rounds(service1);

    // --- The cached path once more, under the profiler (not in the table) -----------------
    // The cache is warmed through service1 first, so the profile holds the cached path and
    // start-up, not 10,000 cache fills.
    if (opts.profile || opts.profileOnly) {
      const dir = join(ROOT, 'bench', 'profiles');
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      log(`profile: the cached scenario, the service under node --cpu-prof, load by ${settings.generator}`);
      await dropProfiles();
      await cleanSessions();
      await warmCache(service1);
      await stop(service1);
      const service = await startService(1, ['--cpu-prof', `--cpu-prof-dir=${dir}`]);
      const target = { url: login(service), bodies: randomCached };
      // Start-up is left out of the summary: the profile is of requests.
      const loadFromUs = Number(process.hrtime.bigint() / 1000n);
      if (settings.warmup > 0) await fire(target, settings, settings.warmup);
      const r = await fire(target, settings, settings.duration);
      log(
        `  under the profiler: ${r.rps.toFixed(0)} req/s, ${settings.generator} ${(r.generatorCpu * 100).toFixed(0)} % of a core`,
      );
      await stop(service);
      // With node:cluster every process writes a profile: the busiest (largest) is a worker.
      const files = readdirSync(dir)
        .filter((f) => f.endsWith('.cpuprofile'))
        .map((f) => join(dir, f))
        .sort((a, b) => statSync(b).size - statSync(a).size);
      if (files[0]) {
        profile = {
          file: files[0],
          scenario: `${CACHED_W1}, ${settings.warmup + settings.duration} s of load by ${settings.generator}, start-up left out`,
          summary: summarizeProfile(files[0], ROOT, 15, loadFromUs),
        };
        log(`  profile: ${files[0]}`);
      }
    } else {
      await stop(service1);
    }
    await cleanSessions();
  } finally {
    // First: it never throws, and nothing after it may keep the server changed.
    await bufferPool.restore();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    for (const proc of running) await proc.stop();
    await galeraCluster?.destroy();
    const removed = await cleanAll();
    log(`redis: removed ${removed} keys under ${P}`);
    redis.disconnect();
  }

  if (opts.profileOnly) {
    if (!profile) throw new Error('the service wrote no profile');
    process.stdout.write(`\n${profile.scenario}: ${profile.file}\n${formatProfile(profile.summary)}\n`);
    return;
  }
  const rows: Row[] = ORDER.filter((name) => samples.has(name)).map((name) => {
    const e = samples.get(name)!;
    const row: Row = {
      scenario: name,
      ...e.extra,
      result: combine(e.results),
      perRound: e.results.map((r, i) => ({
        rps: r.rps,
        p99: r.p99,
        other: e.other[i]!,
        cpu: e.cpu[i]!,
        gen: r.generatorCpu,
        ...(e.attackCpu[i] === undefined ? {} : { attack: e.attackCpu[i] }),
        ...(e.fullGcs[i] === undefined ? {} : { fullGcs: e.fullGcs[i] }),
      })),
      rssMax: e.rssMax,
      processes: e.processes,
    };
    if (name === UNCACHED) {
      row.note = `${((uncached.misses / Math.max(1, uncached.sent)) * 100).toFixed(0)} % misses${uncachedCursor.wrapped ? ', openids wrapped' : ''}`;
    }
    return row;
  });
  // The peak over the whole run also covers warm-ups and cache fills between measurements.
  for (const proc of services) {
    if (proc.rss.peakSingle > rssMax) {
      rssMax = proc.rss.peakSingle;
      rssMaxDuring = `a warm-up or cache fill of ${proc.name}`;
    }
  }
  const cached1 = rows.find((r) => r.scenario === CACHED_W1);
  const cached2 = rows.find((r) => r.scenario === CACHED_W2);
  const workersNote =
    cached1 && cached2 && (cached2.processes ?? 1) <= 1
      ? 'The service does not fork for `WORKERS` yet: both cached rows ran in one process.'
      : 'The WORKERS=2 row ran the service under node:cluster (procs counts the primary and its workers).';

  // Rows kept from an earlier run: its seeding time still says how long seeding takes.
  const earlier = storedReports().find((r) => r.users === opts.users);
  const earlierSeed = earlier?.seedSeconds != null ? { seconds: earlier.seedSeconds } : undefined;
  const cpus = os.cpus();
  const report: RunReport = {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    cores: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? '?',
    node: process.version,
    mariadb,
    mysqlMemory:
      `InnoDB buffer pool ${mb(bufferPool.pool).toFixed(0)} MiB` +
      (bufferPool.raisedFrom ? ` (raised from ${mb(bufferPool.raisedFrom).toFixed(0)} MiB for the run)` : '') +
      `, users table ${mb(bufferPool.table).toFixed(0)} MiB (data + indexes)`,
    redis: redisVersion,
    users: opts.users,
    seedSeconds: seed.seededSeconds ?? earlierSeed?.seconds ?? null,
    seedKept: seed.seededSeconds === null,
    workingSet: opts.workingSet,
    rounds: opts.rounds,
    settings,
    rows,
    rssMax,
    rssMaxDuring,
    rssIdle,
    uncached,
    workersNote,
    ...(surge.rssPeak ? { surge } : {}),
    ...(withAttack && attackTotals.halfOpenAlive.length ? { attack: { ...opts.attack, ...attackTotals } } : {}),
    ...(profile ? { profile: { ...profile, file: profile.file.replace(`${ROOT}/`, '') } } : {}),
  };

  process.stdout.write(`\n${section(report)}\n\n`);
  if (opts.write) {
    const file = join(ROOT, 'BENCHMARKS.md');
    const scale = writeBenchmarks(file, report);
    if (scale) process.stdout.write(`${scale}\n\n`);
    log(`wrote ${file}`);
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${(err as Error)?.stack ?? err}\n`);
  process.exit(1);
});
