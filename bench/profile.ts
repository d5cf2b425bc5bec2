/** Where a process's CPU went, from a V8 .cpuprofile (node --cpu-prof): self time per function, origin and group. */
import { readFileSync } from 'node:fs';
import type { Profiler } from 'node:inspector';
import { relative, sep } from 'node:path';

export interface ProfileLine {
  name: string;
  selfMs: number;
  share: number;
  where?: string;
  /** The JS function that called it most, for native frames like writev. */
  caller?: string;
}
export type ProfileSummary = ReturnType<typeof summarizeProfile>;

const PACKAGES: Record<string, string> = {
  'koa stack (koa, router, koa-body, compose, helpers)':
    'koa @koa/router koa-compose koa-body co-body raw-body inflation formidable delegates on-finished ee-first ' +
    'statuses type-is media-typer mime-types accepts negotiator cookies content-type content-disposition ' +
    'http-errors http-assert depd vary encodeurl escape-html fresh destroy parseurl path-to-regexp only',
  joi: 'joi @hapi/hoek @hapi/topo @sideway/address @sideway/formula',
  ioredis:
    'ioredis redis-parser redis-errors denque standard-as-callback cluster-key-slot debug lodash.defaults lodash.isarguments',
  'JSON (parse, stringify, bourne)': '@hapi/bourne',
  'prom-client': 'prom-client tdigest bintrees',
  pino: 'pino sonic-boom fast-redact quick-format-unescaped atomic-sleep thread-stream',
};
const GROUP = new Map(Object.entries(PACKAGES).flatMap(([group, names]) => names.split(' ').map((n) => [n, group])));
const NM = `${sep}node_modules${sep}`;

/** Self time per function, origin and group; samples before `fromUs` (start-up) are left out. */
export function summarizeProfile(file: string, root: string, top = 15, fromUs = 0) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profiler.Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const ancestors = function* (id: number) {
    for (let p = parent.get(id); p !== undefined; p = parent.get(p)) yield byId.get(p)!.callFrame;
  };
  /** Where a script is: [its package (or the service's directory), the file from there]. */
  const locate = (url: string): [string, string] => {
    const p = url.replace(/^file:\/\//, '');
    const nm = p.lastIndexOf(NM);
    const file = nm >= 0 ? p.slice(nm + NM.length) : relative(root, p);
    const parts = file.split(sep);
    if (nm >= 0) return [parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!, file];
    return [parts.length > 2 ? parts.slice(0, -1).join('/') : parts.join('/'), file];
  };
  const where = (url: string, line: number) =>
    !url ? '(native)' : `${url.startsWith('node:') ? url : locate(url)[1]}:${line + 1}`;
  const origin = (url: string) =>
    !url ? 'native: GC, C++ bindings (writev…), V8' : url.startsWith('node:') ? 'node core (node:…)' : locate(url)[0];
  const category = (id: number) => {
    const { functionName: name, url } = byId.get(id)!.callFrame;
    if (name === '(garbage collector)') return 'GC';
    if (!url && /^(JSON\.)?(parse|stringify)$/.test(name)) return 'JSON (parse, stringify, bourne)';
    // A native frame does the work of the nearest script above it.
    const script = url || [...ancestors(id)].find((f) => f.url)?.url || '';
    if (/^node:(internal\/)?crypto/.test(script)) return 'crypto';
    if (!url && /^write(v|Utf8String|Buffer|Latin1String|AsciiString)$/.test(name))
      return 'socket writes (native writev)';
    if (!url) return undefined;
    if (url.startsWith('node:')) return 'node core JS (http, net, streams)';
    const from = origin(url);
    return GROUP.get(from) ?? (/^(dist\/)?src/.test(from) ? 'own code (src/)' : undefined);
  };
  // Who asked a native frame for its work: the nearest named caller outside node's core, else inside it.
  const caller = (id: number) => {
    const named = [...ancestors(id)].filter((f) => f.url && f.functionName);
    const f = named.find((c) => !c.url.startsWith('node:')) ?? named[0];
    return f && `${f.functionName} (${where(f.url, f.lineNumber)})`;
  };
  // Sample times are V8's monotonic clock, the one process.hrtime reads.
  const selfUs = new Map<number, number>();
  let at = profile.startTime;
  profile.samples?.forEach((id, i) => {
    at += profile.timeDeltas?.[i] ?? 0;
    if (at >= fromUs) selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas?.[i] ?? 0));
  });
  let total = 0;
  let idle = 0;
  const tables = { functions: new Map<string, ProfileLine>(), origins: new Map(), categories: new Map() };
  const callers = new Map<string, Map<string, number>>();
  const add = (table: Map<string, ProfileLine>, key: string, us: number, line: Partial<ProfileLine> = {}) => {
    const l = table.get(key) ?? { name: key, selfMs: 0, share: 0, ...line };
    l.selfMs += us / 1000;
    table.set(key, l);
  };
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    if (functionName === '(idle)') {
      idle += us;
      continue;
    }
    total += us;
    const name = functionName || '(anonymous)';
    const key = `${name}@${where(url, lineNumber)}`;
    add(tables.functions, key, us, { name, where: where(url, lineNumber) });
    add(tables.origins, origin(url), us);
    const group = category(id);
    if (group) add(tables.categories, group, us);
    const by = url ? undefined : caller(id);
    if (by)
      callers.set(key, (callers.get(key) ?? new Map<string, number>()).set(by, (callers.get(key)?.get(by) ?? 0) + us));
  }
  for (const [key, m] of callers) tables.functions.get(key)!.caller = [...m].sort((a, b) => b[1] - a[1])[0]![0];
  const finish = (m: Map<string, ProfileLine>) =>
    [...m.values()]
      .map((l) => ({ ...l, share: total ? (l.selfMs * 1000) / total : 0 }))
      .sort((a, b) => b.selfMs - a.selfMs)
      .slice(0, top);
  return {
    /** Sampled time with the process busy (every sample but `(idle)`); shares are of this. */
    totalMs: total / 1000,
    idleMs: idle / 1000,
    functions: finish(tables.functions),
    /** By origin: a package under node_modules, node's internals, a directory of the service. */
    origins: finish(tables.origins),
    /** By the part of the request path it serves (packages grouped, GC, writes, …). */
    categories: finish(tables.categories),
  };
}

/** The summary as plain text, for the console (`npm run bench -- --profile-only`). */
export function formatProfile(s: ProfileSummary): string {
  const pct = (l: ProfileLine) => `${(l.share * 100).toFixed(1).padStart(5)} %  ${l.selfMs.toFixed(0).padStart(6)} ms`;
  return [
    `busy ${s.totalMs.toFixed(0)} ms, idle ${s.idleMs.toFixed(0)} ms; shares are of the busy time (self time)`,
    '\nby group:',
    ...s.categories.map((c) => `  ${pct(c)}  ${c.name}`),
    '\nby origin:',
    ...s.origins.map((o) => `  ${pct(o)}  ${o.name}`),
    '\ntop functions:',
    ...s.functions.map((f) => `  ${pct(f)}  ${f.name}  ${f.where}${f.caller ? `  <- ${f.caller}` : ''}`),
  ].join('\n');
}
