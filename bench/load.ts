import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { CLK_TCK } from './lib';
import { benchOpenid } from './seed';

/** Which program sends the load: wrk (C, a process of its own) when it is installed. */
export type GeneratorName = 'wrk' | 'autocannon';

/** The client side, identical for every scenario and its floor. */
export interface LoadSettings {
  generator: GeneratorName;
  /** wrk threads (each one event loop); autocannon ignores it. */
  threads: number;
  connections: number;
  pipelining: number;
  /** Seconds measured. */
  duration: number;
  /** Seconds of the same load, run first and thrown away. */
  warmup: number;
  /** Seconds before a request counts as timed out. */
  timeout: number;
}
export interface LoadResult {
  /** Responses received in the measured window (any status). */
  requests: number;
  seconds: number;
  rps: number;
  /** Latency percentiles in ms, from every response's own time (microsecond resolution). */
  p50: number;
  p99: number;
  max: number;
  /** Socket errors, timeouts included. */
  errors: number;
  non2xx: number;
  /** Non-2xx answers, plus HTTP 2xx whose envelope is not {"code":0,…}: the service answered an error. */
  notOk: number;
  /** CPU the load generator itself used, as a share of one core over its run (1 = a whole core). */
  generatorCpu: number;
}

/**
 * What a scenario sends, described rather than built, so that wrk's Lua script (bench/wrk/post.lua)
 * and autocannon make the same bodies: loginByOpenid bodies `{"openid":"bench_<n>"}` for n
 * picked at random from `ids`, at random in lo..hi, or in `ids`' order from `cursor.at` (without
 * replacement; the cursor moves on by what was sent), or update bodies for a random user id.
 */
export type Bodies =
  | { kind: 'pick'; ids: ArrayLike<number> }
  | { kind: 'range'; lo: number; hi: number }
  | { kind: 'sequence'; ids: ArrayLike<number>; cursor: { at: number; wrapped: boolean } }
  | { kind: 'update'; lo: number; hi: number };

export interface Target {
  url: string;
  bodies: Bodies;
}

const OK_PREFIX = '{"code":0,';
const openidBody = (n: number) => `{"openid":"${benchOpenid(n)}"}`;
const randomIn = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));

/** The JavaScript body builder of a target (autocannon's side). */
function bodyBuilder(bodies: Bodies): () => string {
  switch (bodies.kind) {
    case 'pick':
      return () => openidBody(bodies.ids[Math.floor(Math.random() * bodies.ids.length)]!);
    case 'range':
      return () => openidBody(randomIn(bodies.lo, bodies.hi));
    case 'sequence':
      return () => {
        const { ids, cursor } = bodies;
        if (cursor.at >= ids.length) {
          cursor.at = 0;
          cursor.wrapped = true;
        }
        return openidBody(ids[cursor.at++]!);
      };
    case 'update': {
      let k = 0;
      return () => `{"user_id":${randomIn(bodies.lo, bodies.hi)},"update":{"nick_name":"改名😀${++k}"}}`;
    }
  }
}

/** Whether wrk is on PATH. */
export function wrkAvailable(): boolean {
  return spawnSync('wrk', ['--version'], { stdio: 'ignore' }).error === undefined;
}

const WRK_SCRIPT = join(__dirname, 'wrk', 'post.lua');
/** Bodies of a `sequence` target handed to one wrk run: more than 50,000 req/s could send. */
const SEQUENCE_PER_SECOND = 50_000;

interface WrkJson {
  requests: number;
  duration_us: number;
  connect: number;
  read: number;
  write: number;
  timeout: number;
  status: number;
  non2xx: number;
  notok: number;
  sent: number;
  used: number;
  wrapped: number;
  p50: number;
  p99: number;
  max: number;
  cpu_ticks: number;
}

/**
 * One wrk run (bench/wrk/post.lua). Numbers go to the script through a temporary file, one a
 * line. Its CPU share is utime + stime of the wrk process (read by the script from
 * /proc/self/stat just before it exits, so its start-up is included) over its wall-clock life.
 */
async function fireWrk(target: Target, settings: LoadSettings, seconds: number): Promise<LoadResult> {
  const dir = mkdtempSync(join(os.tmpdir(), 'bench-wrk-'));
  const threads = Math.min(settings.threads, settings.connections);
  const b = target.bodies;
  let args: string[];
  let window: number[] | undefined;
  if (b.kind === 'pick') {
    writeFileSync(join(dir, 'ids'), `${Array.from(b.ids).join('\n')}\n`);
    args = ['pick', join(dir, 'ids')];
  } else if (b.kind === 'sequence') {
    // The next stretch of the sequence (wrapping round at its end), enough for this run.
    const n = Math.min(b.ids.length, SEQUENCE_PER_SECOND * seconds);
    window = [];
    for (let i = 0; i < n; i++) window.push(b.ids[(b.cursor.at + i) % b.ids.length]!);
    writeFileSync(join(dir, 'ids'), `${window.join('\n')}\n`);
    args = ['sequence', join(dir, 'ids'), String(threads)];
  } else {
    args = [b.kind, String(b.lo), String(b.hi)];
  }
  const wrkArgs = [
    '-t',
    String(threads),
    '-c',
    String(settings.connections),
    '-d',
    `${seconds}s`,
    '--timeout',
    `${settings.timeout}s`,
    '-s',
    WRK_SCRIPT,
    target.url,
    '--',
    ...args,
  ];
  const started = process.hrtime.bigint();
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>(
    (resolve, reject) => {
      const child = spawn('wrk', wrkArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      child.once('error', reject);
      child.once('close', (c) => resolve({ code: c, stdout: out, stderr: err }));
    },
  );
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  rmSync(dir, { recursive: true, force: true });
  const line = /^WRK_JSON (.*)$/m.exec(stdout);
  if (code !== 0 || !line) throw new Error(`wrk failed (${code}): ${stderr || stdout}`);
  const j = JSON.parse(line[1]!) as WrkJson;
  if (b.kind === 'sequence' && window) {
    if (j.wrapped || j.sent > window.length) b.cursor.wrapped = true;
    const used = Math.min(j.used || j.sent, window.length);
    if (b.cursor.at + used >= b.ids.length) b.cursor.wrapped = true;
    b.cursor.at = (b.cursor.at + used) % b.ids.length;
  }
  const elapsed = j.duration_us / 1e6;
  return {
    requests: j.requests,
    seconds: elapsed,
    rps: j.requests / elapsed,
    p50: j.p50 / 1000,
    p99: j.p99 / 1000,
    max: j.max / 1000,
    errors: j.connect + j.read + j.write + j.timeout,
    non2xx: j.non2xx,
    notOk: j.non2xx + j.notok,
    generatorCpu: j.cpu_ticks / CLK_TCK / wall,
  };
}

/**
 * One autocannon run, in this process: POSTs of JSON bodies built per request by
 * `setupRequest`, latencies taken from the 'response' event (autocannon's own histogram has
 * 1 ms buckets, too coarse for a few-ms p50), envelope codes checked by `verifyBody`. Its CPU
 * share is this whole process's over the run.
 */
async function fireAutocannon(
  target: Target,
  settings: LoadSettings,
  seconds: number,
  amount?: number,
): Promise<LoadResult> {
  const latencies: number[] = [];
  const body = bodyBuilder(target.bodies);
  const options: autocannon.Options = {
    url: target.url,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    connections: settings.connections,
    pipelining: settings.pipelining,
    timeout: settings.timeout,
    ...(amount !== undefined ? { amount } : { duration: seconds }),
    requests: [
      {
        setupRequest: (req) => {
          req.body = body();
          return req;
        },
      },
    ],
    // autocannon hands over the body as a string (it concatenates the chunks).
    verifyBody: (text) => typeof text === 'string' && text.startsWith(OK_PREFIX),
  };
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(options, (err, res) => (err ? reject(err as Error) : resolve(res)));
    instance.on('response', (_client, _status, _bytes, responseTime) => {
      latencies.push(responseTime);
    });
  });
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]! : 0;
  return {
    requests: latencies.length,
    seconds: elapsed,
    rps: latencies.length / elapsed,
    p50: pct(0.5),
    p99: pct(0.99),
    max: latencies.length ? latencies[latencies.length - 1]! : 0,
    errors: result.errors,
    non2xx: result.non2xx,
    notOk: result.mismatches,
    generatorCpu: (used.user + used.system) / 1e6 / elapsed,
  };
}

/**
 * One run of `seconds` with the configured generator, or of exactly `amount` requests (always
 * autocannon: wrk runs for a time, not a count).
 */
export function fire(target: Target, settings: LoadSettings, seconds: number, amount?: number): Promise<LoadResult> {
  if (settings.generator === 'wrk' && amount === undefined) return fireWrk(target, settings, seconds);
  return fireAutocannon(target, settings, seconds, amount);
}

/** Warm-up (discarded), then the measured run. */
export async function measure(target: Target, settings: LoadSettings): Promise<LoadResult> {
  if (settings.warmup > 0) await fire(target, settings, settings.warmup);
  return fire(target, settings, settings.duration);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/**
 * Several measurements of one scenario (one per round) as one: the median of req/s, p50 and
 * p99 (the machine is noisy; a median shrugs off one disturbed round), the sums of counts.
 */
export function combine(results: LoadResult[]): LoadResult {
  return {
    requests: results.reduce((a, r) => a + r.requests, 0),
    seconds: results.reduce((a, r) => a + r.seconds, 0),
    rps: median(results.map((r) => r.rps)),
    p50: median(results.map((r) => r.p50)),
    p99: median(results.map((r) => r.p99)),
    max: Math.max(...results.map((r) => r.max)),
    errors: results.reduce((a, r) => a + r.errors, 0),
    non2xx: results.reduce((a, r) => a + r.non2xx, 0),
    notOk: results.reduce((a, r) => a + r.notOk, 0),
    generatorCpu: median(results.map((r) => r.generatorCpu)),
  };
}
