import { execFileSync } from 'node:child_process';

/** The pids pgrep finds for these arguments (none when it finds nothing: it then exits 1). */
export function pgrep(...args: string[]): number[] {
  try {
    return execFileSync('pgrep', args, { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** The pids of a process's children (the workers of a WORKERS primary). */
export const children = (pid: number): number[] => pgrep('-P', String(pid));
