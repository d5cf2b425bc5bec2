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
});
