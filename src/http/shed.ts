import type { Context, Middleware } from 'koa';
import type { RouteState } from './route';

const LEAVE = Symbol('leave the shedder');

/**
 * Gives the request's slot back before it is answered: for a request that will now wait on its
 * client (an upload's body) under a bound of its own, so that slow clients cannot fill the gate
 * the JSON routes share. Idempotent; nothing for a request the gate did not admit.
 */
export function leaveShedder(ctx: Context): void {
  (ctx.state as { [LEAVE]?: () => void })[LEAVE]?.();
}

/** Seconds a shed client is told to wait: long enough for a burst to pass, short for a user. */
const RETRY_AFTER_SECONDS = 1;

/**
 * Load shedding: at most `max` requests of this process are past their body at once. One more
 * is answered HTTP 503 with Retry-After at once, in the envelope, and never queued: a queue
 * only turns a burst into latency for everyone and memory for the process.
 *
 * It sits after the body's bytes are read and before they are parsed: a request whose body is
 * still arriving holds no slot (a client that stalls mid-body is the HTTP timeouts' business,
 * and must not be able to fill this gate), and a shed request costs no parse, guard or store.
 * An upload, whose body its handler reads, leaves the gate first (leaveShedder) under bounds of
 * its own (media/upload.ts).
 */
export class LoadShedder {
  private current = 0;

  constructor(
    private readonly max: number,
    private readonly onShed: () => void,
  ) {}

  /** Requests admitted and not yet answered. */
  get inflight(): number {
    return this.current;
  }

  gate(): Middleware {
    return async (ctx, next) => {
      if (this.current >= this.max) {
        this.onShed();
        ctx.status = 503;
        ctx.set('Retry-After', String(RETRY_AFTER_SECONDS));
        ctx.body = { code: 503, msg: 'server busy, retry later', data: null };
        (ctx.state as RouteState).code = 503;
        return;
      }
      this.current += 1;
      let left = false;
      const leave = () => {
        if (!left) this.current -= 1;
        left = true;
      };
      (ctx.state as { [LEAVE]?: () => void })[LEAVE] = leave;
      try {
        await next();
      } finally {
        leave();
      }
    };
  }
}
