/** Runs fn and says how long it took. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - start };
}

/** Polls check until it holds (resolving with the time that took) or `ms` have passed. */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 10_000, everyMs = 100): Promise<number> {
  const start = performance.now();
  while (performance.now() - start < ms) {
    if (await check()) return performance.now() - start;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`condition not met within ${ms} ms`);
}
