/**
 * What the bench is made of: child processes (started, probed, measured from /proc and stopped
 * one way), wrk runs, and SCANs of the bench's Redis prefix.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import type Redis from 'ioredis';
import { freePort } from '../test/helpers/redis-server';

export const ROOT = resolve(__dirname, '..');
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const log = (line: string): void => void process.stderr.write(`${line}\n`);
export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
export const benchOpenid = (n: number) => `bench_${n}`;
export const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** Clock ticks a second in /proc (USER_HZ: 100 on every Linux the bench runs on). */
const CLK_TCK = 100;
/** /proc of a process that is gone answers nothing (and changes nothing). */
const tryTo = <T>(f: () => T, otherwise: T) => {
  try {
    return f();
  } catch {
    return otherwise;
  }
};
export const read = (file: string) => tryTo(() => readFileSync(file, 'utf8'), '');
const list = (dir: string) => tryTo(() => readdirSync(dir), []);
/** utime + stime of a process, in clock ticks (0 once it is gone). */
const ticksOf = (pid: number) => {
  const rest = read(`/proc/${pid}/stat`).split(') ')[1]?.split(' ') ?? [];
  return rest.length ? Number(rest[11]) + Number(rest[12]) : 0;
};
/** The process and all its descendants (node:cluster workers); a child belongs to the thread that forked it. */
function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++)
    for (const t of list(`/proc/${out[i]}/task`))
      out.push(...read(`/proc/${out[i]}/task/${t}/children`).split(/\s+/).filter(Boolean).map(Number));
  return out;
}

/**
 * A child process of the bench (a server under test, a floor, the attacker): `node <args>` with a
 * small explicit environment and ports of its own, so it never shares the load generator's
 * event loop and no NODE_OPTIONS or tsx loader leaks into it. Every one is stopped the same way.
 */
export class Proc {
  static readonly running = new Set<Proc>();
  readonly name: string;
  readonly url: string;
  /** The service's ops port: /readyz and /metrics. */
  readonly opsUrl: string;
  /** Lines the process wrote (warnings, crash messages): the count and the first few. */
  lines = 0;
  first: string[] = [];
  /** Largest RSS of one process of its tree since it started (VmHWM, which misses no peak). */
  peak = 0;
  private readonly child: ChildProcess;
  private readonly exited: Promise<unknown>;
  private readonly waiting = new Map<string, (line: string) => void>();

  private constructor(name: string, args: string[], env: NodeJS.ProcessEnv, port: number, opsPort: number) {
    this.name = name;
    this.url = `http://127.0.0.1:${port}`;
    this.opsUrl = `http://127.0.0.1:${opsPort}`;
    const ports = { PORT: String(port), HOST: '127.0.0.1', OPS_PORT: String(opsPort), OPS_HOST: '127.0.0.1' };
    this.child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...env, ...ports },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        for (const [prefix, done] of this.waiting) if (line.startsWith(prefix)) done(line.slice(prefix.length));
        this.lines += 1;
        if (this.first.length < 20) this.first.push(line.slice(0, 300));
      }
    };
    for (const out of [this.child.stdout!, this.child.stderr!]) out.on('data', keep);
    this.exited = new Promise((done) => this.child.once('exit', done));
    Proc.running.add(this);
  }

  /**
   * Starts `node <args>`; with a probe, waits until GET answers 200: /readyz on the ops port (the
   * service), or any path on the port (a floor, which listens once its store answers).
   */
  static async start(name: string, args: string[], env: NodeJS.ProcessEnv, probe?: 'ops' | 'api'): Promise<Proc> {
    const port = await freePort();
    let opsPort = await freePort();
    while (opsPort === port) opsPort = await freePort();
    const proc = new Proc(name, args, env, port, opsPort);
    const url = probe === 'ops' ? `${proc.opsUrl}/readyz` : `${proc.url}/`;
    for (const deadline = Date.now() + 60_000; probe; await sleep(100)) {
      const res = await fetch(url).catch(() => undefined);
      if (res?.status === 200) break;
      const exit = proc.child.exitCode ?? proc.child.signalCode;
      if (exit !== null || Date.now() > deadline) {
        await proc.stop();
        throw new Error(`${name} was not ready (exit ${exit}): ${proc.first.join('\n')}`);
      }
    }
    return proc;
  }

  /** The rest of the first line that starts with `prefix`, once it is printed. */
  line(prefix: string, timeoutMs = 60_000): Promise<string> {
    return new Promise((done, fail) => {
      const timer = setTimeout(() => fail(new Error(`${this.name} printed no ${prefix} line`)), timeoutMs);
      this.waiting.set(prefix, (rest) => (clearTimeout(timer), this.waiting.delete(prefix), done(rest)));
    });
  }

  /** CPU time of the process tree so far, in seconds. */
  cpuSeconds(): number {
    return processTree(this.child.pid!).reduce((sum, p) => sum + ticksOf(p), 0) / CLK_TCK;
  }

  /**
   * Largest RSS of one process of the tree since the last call (VmHWM, reset through
   * /proc/<pid>/clear_refs), and how many processes the tree has.
   */
  rssWindow(): { rss: number; procs: number } {
    const pids = processTree(this.child.pid!);
    let rss = 0;
    for (const pid of pids) {
      const m = /^VmHWM:\s+(\d+) kB/m.exec(read(`/proc/${pid}/status`));
      if (m) rss = Math.max(rss, Number(m[1]) * 1024);
      tryTo(() => writeFileSync(`/proc/${pid}/clear_refs`, '5'), undefined);
    }
    this.peak = Math.max(this.peak, rss);
    return { rss, procs: pids.length };
  }

  /** What it printed since the last look, if anything, for the log. */
  news(when: string): void {
    if (this.lines)
      log(`  ${this.name} printed ${this.lines} lines ${when}, first: ${this.first.slice(0, 3).join(' | ')}`);
    this.lines = 0;
    this.first = [];
  }

  /** SIGTERM (the service shuts down gracefully), SIGKILL after a grace period. */
  async stop(graceMs = 10_000): Promise<void> {
    Proc.running.delete(this);
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/**
 * What wrk sends (bench/wrk/post.lua builds the bodies): loginByOpenid bodies for users picked
 * at random from `ids` or from lo..hi, or in `ids`' order from `cursor.at` (never twice; the
 * cursor moves on by what was sent), or update bodies for a random user id in lo..hi.
 */
export type Bodies =
  | { kind: 'pick'; ids: ArrayLike<number> }
  | { kind: 'range' | 'update'; lo: number; hi: number }
  | { kind: 'sequence'; ids: ArrayLike<number>; cursor: { at: number; wrapped: boolean } };

/** What one wrk run measured. */
export type Load = Awaited<ReturnType<typeof wrk>>;

/** Bodies of a `sequence` handed to one wrk run: more than any run could send in a second. */
const SEQUENCE_PER_SECOND = 50_000;
const LUA = join(__dirname, 'wrk', 'post.lua');

/** One wrk run of `seconds` against `url`, in a process of its own (one thread unless told). */
export async function wrk(url: string, b: Bodies, seconds: number, connections: number, threads = 1) {
  const dir = mkdtempSync(join(os.tmpdir(), 'bench-wrk-'));
  const file = (list: number[]) => (writeFileSync(join(dir, 'ids'), `${list.join('\n')}\n`), join(dir, 'ids'));
  // The next stretch of a sequence (wrapping round at its end): enough for this run.
  const window: number[] = [];
  for (let i = 0; b.kind === 'sequence' && i < Math.min(b.ids.length, SEQUENCE_PER_SECOND * seconds); i++)
    window.push(b.ids[(b.cursor.at + i) % b.ids.length]!);
  const args =
    b.kind === 'pick'
      ? [file(Array.from(b.ids))]
      : b.kind === 'sequence'
        ? [file(window), String(threads)]
        : [String(b.lo), String(b.hi)];
  const wrkArgs = ['-t', `${threads}`, '-c', `${connections}`, '-d', `${seconds}s`, '--timeout', '10s', '-s', LUA];
  const started = process.hrtime.bigint();
  const child = spawn('wrk', [...wrkArgs, url, '--', b.kind, ...args]);
  let out = '';
  for (const s of [child.stdout, child.stderr]) s.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise((done, fail) => child.once('error', fail).once('close', done));
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  rmSync(dir, { recursive: true, force: true });
  const line = /^WRK_JSON (.*)$/m.exec(out);
  if (code !== 0 || !line) throw new Error(`wrk failed (${code}): ${out}`);
  const j = JSON.parse(line[1]!) as Record<string, number>;
  if (b.kind === 'sequence') {
    const used = Math.min(j.used || j.sent!, window.length);
    if (j.wrapped || j.sent! > window.length || b.cursor.at + used >= b.ids.length) b.cursor.wrapped = true;
    b.cursor.at = (b.cursor.at + used) % b.ids.length;
  }
  return {
    requests: j.requests!,
    rps: j.requests! / (j.duration_us! / 1e6),
    /** Latency percentiles in ms. */
    p50: j.p50! / 1000,
    p99: j.p99! / 1000,
    /** Socket errors and timeouts, non-2xx answers, and 2xx answers whose envelope code is not 0. */
    errors: j.connect! + j.read! + j.write! + j.timeout! + j.non2xx! + j.notok!,
    /** CPU wrk itself used, as a share of one core over its life (1 = a whole core). */
    gen: j.cpu_ticks! / CLK_TCK / wall,
  };
}

/**
 * loginByOpenid (`url`) for every user of `ids`, 50 at a time, from this process, the i-th with
 * `token[i]`, if any, as its Authorization: the token of each answer (none: it failed).
 */
export async function launch(url: string, ids: ArrayLike<number>, token: (string | undefined)[] = []) {
  let next = 0;
  const tokens: (string | undefined)[] = [];
  const worker = async () => {
    for (let i = next++; i < ids.length; i = next++) {
      const headers = { 'content-type': 'application/json', ...(token[i] && { authorization: `Bearer ${token[i]}` }) };
      const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ openid: benchOpenid(ids[i]!) }) });
      tokens[i] = /^{"code":0,.*"token":"([^"]+)"/.exec(await res.text())?.[1];
    }
  };
  await Promise.all(Array.from({ length: 50 }, worker));
  return tokens;
}

/** Counts, or deletes, every key matching a glob: SCAN + UNLINK, never KEYS or FLUSHALL (the Redis is shared). */
export async function scanKeys(redis: Redis, pattern: string, del = false): Promise<number> {
  let n = 0;
  for await (const keys of redis.scanStream({ match: pattern, count: 2000 }) as AsyncIterable<string[]>)
    n += del && keys.length ? await redis.unlink(...keys) : keys.length;
  return n;
}

/** The machine's CPU time so far, in ticks: all of it and the busy part (not idle, not I/O wait). */
function machineTicks(): { total: number; busy: number } {
  const v = read('/proc/stat').split('\n', 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  return { total, busy: total - v[3]! - v[4]! };
}

/**
 * How busy the machine was with work that is not the bench's over one measurement: all busy CPU
 * minus that of the bench and its children and of the MariaDB and Redis it drives (`backends`),
 * as a share of all cores. Other tenants of a shared machine show up here, and explain odd rounds.
 */
export function othersCpu(backends: number[]): (exitedSeconds: number) => number {
  const ours = () => [...processTree(process.pid), ...backends];
  const before = new Map(ours().map((pid) => [pid, ticksOf(pid)]));
  const machine = machineTicks();
  // `exitedSeconds`: CPU of children that have exited meanwhile (wrk), which /proc no longer shows.
  return (exitedSeconds) => {
    const end = machineTicks();
    const since = (pid: number) => Math.max(0, ticksOf(pid) - (before.get(pid) ?? 0)); // 0 once it is gone
    const mine = ours().reduce((sum, pid) => sum + since(pid), exitedSeconds * CLK_TCK);
    const total = end.total - machine.total;
    return total > 0 ? Math.max(0, (end.busy - machine.busy - mine) / total) : 0;
  };
}
