import { expect } from 'chai';
import { ServiceError } from '../../src/errors';
import { Slots } from '../../src/media/slots';

describe('Slots (the bound on images decoded at once)', () => {
  it('runs at most `max` jobs at a time, queues up to `queueMax` in order, refuses the rest', async () => {
    const slots = new Slots(2, 3, 'uploads');
    let running = 0;
    let peak = 0;
    const order: number[] = [];
    const gates: (() => void)[] = [];
    const job = (i: number) => () =>
      new Promise<number>((resolve) => {
        running++;
        peak = Math.max(peak, running);
        order.push(i);
        gates.push(() => {
          running--;
          resolve(i);
        });
      });
    const accepted = [0, 1, 2, 3, 4].map((i) => slots.run(job(i)));
    let refused: unknown;
    try {
      await slots.run(job(5));
    } catch (err) {
      refused = err;
    }
    expect(refused).to.be.instanceOf(ServiceError);
    expect((refused as ServiceError).kind).to.equal('unavailable');
    expect((refused as ServiceError).message).to.include('too many uploads');
    // Let every job finish, one gate at a time.
    while (order.length < 5 || gates.length) {
      await new Promise((r) => setImmediate(r));
      gates.shift()?.();
    }
    expect(await Promise.all(accepted)).to.deep.equal([0, 1, 2, 3, 4]);
    expect(peak).to.equal(2);
    expect(order).to.deep.equal([0, 1, 2, 3, 4]);
    // A failing job frees its slot too.
    await slots.run(() => Promise.reject(new Error('boom'))).catch(() => undefined);
    expect(await slots.run(async () => 'free')).to.equal('free');
  });

  it('holds at most one job per key in the queue: the next of that key waits behind it, others pass', async () => {
    const slots = new Slots(1, 10);
    const order: string[] = [];
    const gates = new Map<string, () => void>();
    const job = (name: string) => () =>
      new Promise<string>((resolve) => {
        order.push(name);
        gates.set(name, () => resolve(name));
      });
    const runs = [
      slots.run(job('a1'), { key: 'a' }),
      slots.run(job('a2'), { key: 'a' }),
      slots.run(job('a3'), { key: 'a' }),
      slots.run(job('b1'), { key: 'b' }),
    ];
    const settle = async (name: string) => {
      while (!gates.has(name)) await new Promise((r) => setImmediate(r));
      gates.get(name)!();
    };
    await settle('a1');
    await settle('b1');
    await settle('a2');
    await settle('a3');
    expect(await Promise.all(runs)).to.deep.equal(['a1', 'a2', 'a3', 'b1']);
    // b1 came after three of a's, and ran second.
    expect(order).to.deep.equal(['a1', 'b1', 'a2', 'a3']);
  });

  it('skips the job of a caller that has gone: dropped from the queue at once, never run', async () => {
    const slots = new Slots(1, 1);
    let release!: () => void;
    const first = slots.run(() => new Promise<void>((r) => (release = r)));
    const gone = new AbortController();
    let ran = false;
    const queued = slots.run(async () => void (ran = true), { signal: gone.signal });
    gone.abort();
    let err: unknown;
    await queued.catch((e) => (err = e));
    expect((err as { status?: number }).status).to.equal(499);
    // Its queue place is free again: the queue holds one, and another job is accepted.
    const next = slots.run(async () => 'next');
    release();
    await first;
    expect(await next).to.equal('next');
    expect(ran).to.equal(false);
  });
});
