import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import type Redis from 'ioredis';

// The same helper the tests use to find a spare port.
export { freePort } from '../test/helpers/redis-server';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One POST with a JSON body; answers the status and the text. */
export function postJson(url: string, body: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    const req = request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': payload.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.end(payload);
  });
}

/**
 * Deletes every key matching a glob (SCAN + UNLINK in batches, never KEYS or FLUSHALL: the
 * Redis is shared). Answers how many were deleted.
 */
export async function deleteMatching(redis: Redis, pattern: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 2000);
    cursor = next;
    if (keys.length) deleted += await redis.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}

/** How many keys match a glob (SCAN; fine for the few hundred thousand keys a bench makes). */
export async function countMatching(redis: Redis, pattern: string): Promise<number> {
  let cursor = '0';
  let n = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 2000);
    cursor = next;
    n += keys.length;
  } while (cursor !== '0');
  return n;
}

/** A memory field of /proc/<pid>/status (VmRSS, VmHWM, ...) in bytes, or null once it is gone. */
function statusBytes(pid: number, field: string): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** VmRSS of a process in bytes, or null once it is gone. */
export function rssOf(pid: number): number | null {
  return statusBytes(pid, 'VmRSS');
}

/** The process and all its descendants (node:cluster workers are children of the primary). */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i]!;
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    // A child belongs to the thread that forked it: read every thread's list.
    for (const t of tasks) {
      let children: string;
      try {
        children = readFileSync(`/proc/${p}/task/${t}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const c of children.split(/\s+/)) if (c) out.push(Number(c));
    }
  }
  return out;
}

/**
 * Samples the RSS of every process of a tree every `intervalMs`: the largest single process
 * (the target is per process) and the largest sum, and how many processes the tree had.
 */
export class RssSampler {
  /** Largest single process since start, never reset: "through the benchmark". */
  peakSingle = 0;
  maxSingle = 0;
  maxTotal = 0;
  maxProcesses = 0;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    private readonly intervalMs = 100,
  ) {}

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
    return this;
  }

  sample(): void {
    let total = 0;
    let count = 0;
    for (const p of processTree(this.pid)) {
      const rss = rssOf(p);
      if (rss === null) continue;
      count += 1;
      total += rss;
      if (rss > this.maxSingle) this.maxSingle = rss;
      if (rss > this.peakSingle) this.peakSingle = rss;
    }
    if (total > this.maxTotal) this.maxTotal = total;
    if (count > this.maxProcesses) this.maxProcesses = count;
  }

  /** Starts a new measurement window (per scenario), keeping the sampler running. */
  reset(): void {
    this.maxSingle = 0;
    this.maxTotal = 0;
    this.maxProcesses = 0;
    this.sample();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

/**
 * A server under test, run as a child process so it never shares the load generator's event loop.
 * It is given an operations port too (OPS_PORT, OPS_HOST): the service serves /metrics and
 * /readyz there; until it does, `opsGet` falls back to the API port.
 */
export class ServerProcess {
  readonly url: string;
  readonly opsUrl: string;
  private readonly proc: ChildProcess;
  private readonly output: string[] = [];
  private outputLines = 0;
  private exited: Promise<number | null>;
  readonly rss: RssSampler;

  constructor(
    readonly name: string,
    readonly port: number,
    opsPort: number,
    args: string[],
    env: NodeJS.ProcessEnv,
    cwd: string,
  ) {
    this.url = `http://127.0.0.1:${port}`;
    this.opsUrl = `http://127.0.0.1:${opsPort}`;
    this.proc = spawn(process.execPath, args, {
      cwd,
      env: { ...env, PORT: String(port), HOST: '127.0.0.1', OPS_PORT: String(opsPort), OPS_HOST: '127.0.0.1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        this.outputLines += 1;
        if (this.output.length < 20) this.output.push(line);
      }
    };
    this.proc.stdout!.on('data', keep);
    this.proc.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
    this.rss = new RssSampler(this.proc.pid!);
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /**
   * The kernel's record of the process's largest RSS (VmHWM), in bytes: unlike the sampler, it
   * misses no peak while the bench's own event loop is busy driving a surge. 0 once it exited.
   */
  get rssHighWater(): number {
    return statusBytes(this.pid, 'VmHWM') ?? 0;
  }

  /** Lines the process wrote (logs at warn level and above, crash messages): count and first few. */
  get log(): { lines: number; first: string[] } {
    return { lines: this.outputLines, first: [...this.output] };
  }

  clearLog(): void {
    this.output.length = 0;
    this.outputLines = 0;
  }

  /** Waits until a POST to `probePath` answers HTTP 200 (any envelope code), then samples RSS. */
  async ready(probePath: string, probeBody: unknown, timeoutMs = 60_000): Promise<this> {
    const deadline = Date.now() + timeoutMs;
    let exitCode: number | null | undefined;
    void this.exited.then((c) => (exitCode = c));
    while (Date.now() < deadline) {
      if (exitCode !== undefined) {
        throw new Error(`${this.name} exited (${exitCode}) before it was ready:\n${this.output.join('\n')}`);
      }
      try {
        const res = await postJson(`${this.url}${probePath}`, probeBody);
        if (res.status === 200) {
          this.rss.start();
          return this;
        }
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`${this.name} was not ready within ${timeoutMs} ms:\n${this.output.join('\n')}`);
  }

  /**
   * GET of an operations path (/metrics, /readyz): on the ops port, or on the API port when the
   * ops port does not answer (a service without the ops listener).
   */
  async opsGet(path: string): Promise<Response> {
    try {
      return await fetch(`${this.opsUrl}${path}`, { signal: AbortSignal.timeout(5000) });
    } catch {
      return fetch(`${this.url}${path}`, { signal: AbortSignal.timeout(5000) });
    }
  }

  /** CPU time of the process and its descendants so far, in seconds. */
  cpuSeconds(): number {
    return processTree(this.pid).reduce((sum, p) => sum + cpuTicksOf(p), 0) / CLK_TCK;
  }

  /** SIGTERM (the service shuts down gracefully), SIGKILL after a grace period. */
  async stop(graceMs = 10_000): Promise<number | null> {
    this.rss.stop();
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

export const mb = (bytes: number) => bytes / (1024 * 1024);

/** Clock ticks a second in /proc (USER_HZ: 100 on every Linux the bench runs on). */
export const CLK_TCK = 100;

/** utime + stime of a process, in clock ticks (0 once it is gone). */
export function cpuTicksOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return 0;
  }
}

/** The machine's CPU time so far: all of it and the busy part (not idle, not I/O wait), in ticks. */
function machineTicks(): { total: number; busy: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  return { total, busy: total - v[3]! - v[4]! };
}

/** Pids of the shared servers the bench drives (their CPU is the bench's doing). */
function backendPids(): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const comm = readFileSync(`/proc/${entry}/comm`, 'utf8').trim();
      if (comm === 'mariadbd' || comm === 'mysqld' || comm === 'redis-server') out.push(Number(entry));
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * How busy the machine was with work that is not the bench's, over one measurement: all busy
 * CPU time minus that of this process and its children (the servers under test) and of
 * MariaDB and Redis, as a share of the machine's capacity (all cores). Other tenants of the
 * shared machine (a test suite in another worktree, say) show up here, and explain odd rounds.
 */
export class ForeignCpu {
  private startMachine = machineTicks();
  private startOurs = new Map<number, number>();
  private readonly backends = backendPids();

  constructor() {
    for (const pid of this.ours()) this.startOurs.set(pid, cpuTicksOf(pid));
    this.startMachine = machineTicks();
  }

  private ours(): number[] {
    return [...processTree(process.pid), ...this.backends];
  }

  /**
   * Share (0..1) of the machine's CPU capacity used by others since construction. `exitedSeconds`:
   * CPU of the bench's own children that have exited meanwhile (wrk), which /proc no longer shows.
   */
  stop(exitedSeconds = 0): number {
    const end = machineTicks();
    let ours = exitedSeconds * CLK_TCK;
    for (const pid of this.ours()) {
      ours += cpuTicksOf(pid) - (this.startOurs.get(pid) ?? 0);
    }
    const total = end.total - this.startMachine.total;
    const busy = end.busy - this.startMachine.busy;
    return total > 0 ? Math.max(0, (busy - ours) / total) : 0;
  }
}
