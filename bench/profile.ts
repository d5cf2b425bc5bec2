import { readFileSync } from 'node:fs';
import { relative, sep } from 'node:path';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileLine {
  name: string;
  where: string;
  selfMs: number;
  share: number;
  /** The JS function that called it most (by self time), for native frames like writev. */
  caller?: string;
}

export interface ProfileSummary {
  /** Sampled time with the process busy (every sample but `(idle)`); shares are of this. */
  totalMs: number;
  idleMs: number;
  functions: ProfileLine[];
  /** Self time grouped by origin: a package under node_modules, node's internals, the service's src/. */
  origins: ProfileLine[];
  /** Self time in the groups the optimisation work asks about (see CATEGORIES); shares may not sum to 1. */
  categories: ProfileLine[];
}

/** Packages by the part of the request path they serve. */
const PACKAGES: Record<string, string[]> = {
  'koa stack (koa, router, koa-body, compose, helpers)': [
    'koa',
    '@koa/router',
    'koa-compose',
    'koa-body',
    'co-body',
    'raw-body',
    'inflation',
    'formidable',
    'delegates',
    'on-finished',
    'ee-first',
    'statuses',
    'type-is',
    'media-typer',
    'mime-types',
    'accepts',
    'negotiator',
    'cookies',
    'content-type',
    'content-disposition',
    'http-errors',
    'http-assert',
    'depd',
    'vary',
    'encodeurl',
    'escape-html',
    'fresh',
    'destroy',
    'parseurl',
    'path-to-regexp',
    'only',
  ],
  joi: ['joi', '@hapi/hoek', '@hapi/topo', '@sideway/address', '@sideway/formula'],
  ioredis: [
    'ioredis',
    'redis-parser',
    'redis-errors',
    'denque',
    'standard-as-callback',
    'cluster-key-slot',
    'debug',
    'lodash.defaults',
    'lodash.isarguments',
  ],
  'JSON (parse, stringify, bourne)': ['@hapi/bourne'],
  'prom-client': ['prom-client', 'tdigest', 'bintrees'],
  pino: ['pino', 'sonic-boom', 'fast-redact', 'quick-format-unescaped', 'atomic-sleep', 'thread-stream'],
};
const PACKAGE_GROUP = new Map(Object.entries(PACKAGES).flatMap(([group, names]) => names.map((n) => [n, group])));
const GC = 'GC';
const CRYPTO = 'crypto';
const WRITES = 'socket writes (native writev)';
const JSON_GROUP = 'JSON (parse, stringify, bourne)';
const NODE_CORE = 'node core JS (http, net, streams)';
const OWN = 'own code (src/)';

/** A readable location: `ioredis/built/Command.js:37`, `node:internal/…:12`, `dist/src/app.js:20`. */
function location(url: string, root: string, line: number): string {
  if (!url) return '';
  if (url.startsWith('node:')) return `${url}:${line}`;
  const path = url.replace(/^file:\/\//, '');
  const nm = path.lastIndexOf(`${sep}node_modules${sep}`);
  return `${nm >= 0 ? path.slice(nm + 14) : relative(root, path)}:${line}`;
}

/** Where a script comes from: `koa`, `@koa/router`, `node:internal`, `src/users`, … */
function origin(url: string, root: string): string {
  if (!url) return 'native: GC, C++ bindings (writev…), V8';
  if (url.startsWith('node:')) return 'node core (node:…)';
  const path = url.replace(/^file:\/\//, '');
  const nm = path.lastIndexOf(`${sep}node_modules${sep}`);
  if (nm >= 0) {
    const parts = path.slice(nm + 14).split(sep);
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  const rel = relative(root, path);
  const dirs = rel.split(sep);
  return dirs.length > 2 ? dirs.slice(0, dirs.length - 1).join('/') : rel;
}

/**
 * Self time per function and per origin from a V8 .cpuprofile (node --cpu-prof): each sample
 * is charged, with its time delta, to the function on top of the stack.
 */
export function summarizeProfile(file: string, root: string, top = 15, fromUs = 0): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // The nearest named ancestor outside node's core (who asked for the write), else the
  // nearest named one inside it.
  const jsCaller = (id: number): string | undefined => {
    let core: string | undefined;
    for (let p = parent.get(id); p !== undefined; p = parent.get(p)) {
      const f = byId.get(p)!.callFrame;
      if (!f.url || !f.functionName) continue;
      const here = `${f.functionName} (${location(f.url, root, f.lineNumber + 1)})`;
      if (!f.url.startsWith('node:')) return here;
      core ??= here;
    }
    return core;
  };
  // The nearest ancestor with a script: whose work a native frame does.
  const scriptOf = (id: number): string => {
    for (let p: number | undefined = id; p !== undefined; p = parent.get(p)) {
      const url = byId.get(p)!.callFrame.url;
      if (url) return url;
    }
    return '';
  };
  const categoryOf = (id: number): string | undefined => {
    const { functionName, url } = byId.get(id)!.callFrame;
    if (functionName === '(garbage collector)') return GC;
    if (!url && /^(JSON\.)?(parse|stringify)$/.test(functionName)) return JSON_GROUP;
    const script = url || scriptOf(id);
    if (/^node:(internal\/)?crypto/.test(script)) return CRYPTO;
    if (!url && /^write(v|Utf8String|Buffer|Latin1String|AsciiString)$/.test(functionName)) return WRITES;
    if (!url) return undefined;
    if (url.startsWith('node:')) return NODE_CORE;
    const from = origin(url, root);
    return PACKAGE_GROUP.get(from) ?? (from.startsWith('dist/src') || from.startsWith('src') ? OWN : undefined);
  };
  const categories = new Map<string, ProfileLine>();
  const callers = new Map<string, Map<string, number>>();
  const selfUs = new Map<number, number>();
  // Sample times are V8's monotonic clock, the one process.hrtime reads: samples before
  // `fromUs` (start-up, module loading) are left out.
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    at += profile.timeDeltas[i] ?? 0;
    if (at < fromUs) continue;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    if (byId.get(id)!.callFrame.functionName === '(idle)') idle += us;
    else total += us;
  }
  const fns = new Map<string, ProfileLine>();
  const origins = new Map<string, ProfileLine>();
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    if (functionName === '(idle)') continue;
    const name = functionName || '(anonymous)';
    const from = origin(url, root);
    const where = location(url, root, lineNumber + 1) || '(native)';
    const key = `${name}@${where}`;
    const f = fns.get(key) ?? { name, where, selfMs: 0, share: 0 };
    f.selfMs += us / 1000;
    fns.set(key, f);
    if (!url) {
      const caller = jsCaller(id);
      if (caller) {
        const m = callers.get(key) ?? new Map<string, number>();
        m.set(caller, (m.get(caller) ?? 0) + us);
        callers.set(key, m);
      }
    }
    const o = origins.get(from) ?? { name: from, where: '', selfMs: 0, share: 0 };
    o.selfMs += us / 1000;
    origins.set(from, o);
    const category = categoryOf(id);
    if (category) {
      const c = categories.get(category) ?? { name: category, where: '', selfMs: 0, share: 0 };
      c.selfMs += us / 1000;
      categories.set(category, c);
    }
  }
  for (const [key, m] of callers) {
    const top = [...m.entries()].sort((a, b) => b[1] - a[1])[0];
    if (top) fns.get(key)!.caller = top[0];
  }
  const finish = (m: Map<string, ProfileLine>) =>
    [...m.values()]
      .map((l) => ({ ...l, share: total ? (l.selfMs * 1000) / total : 0 }))
      .sort((a, b) => b.selfMs - a.selfMs)
      .slice(0, top);
  return {
    totalMs: total / 1000,
    idleMs: idle / 1000,
    functions: finish(fns),
    origins: finish(origins),
    categories: finish(categories),
  };
}

/** The summary as plain text, for the console (`npm run bench -- --profile-only`). */
export function formatProfile(summary: ProfileSummary): string {
  const pct = (l: ProfileLine) => `${(l.share * 100).toFixed(1).padStart(5)} %  ${l.selfMs.toFixed(0).padStart(6)} ms`;
  return [
    `busy ${summary.totalMs.toFixed(0)} ms, idle ${summary.idleMs.toFixed(0)} ms; shares are of the busy time (self time)`,
    '',
    'by group:',
    ...summary.categories.map((c) => `  ${pct(c)}  ${c.name}`),
    '',
    'by origin:',
    ...summary.origins.map((o) => `  ${pct(o)}  ${o.name}`),
    '',
    'top functions:',
    ...summary.functions.map((f) => `  ${pct(f)}  ${f.name}  ${f.where}${f.caller ? `  <- ${f.caller}` : ''}`),
  ].join('\n');
}
