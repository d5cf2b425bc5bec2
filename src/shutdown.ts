import type { Server, ServerResponse } from 'node:http';

export interface Drainer {
  /** Requests being answered now. */
  readonly inflight: number;
  /**
   * Stops accepting connections, lets the requests in flight finish and closes every
   * connection. Resolves true when all of that happened within `graceMs`; otherwise cuts the
   * remaining connections and resolves false.
   */
  drain(graceMs: number): Promise<boolean>;
}

/**
 * Graceful close of a Node HTTP server: it stops accepting, and while draining every answer
 * carries `Connection: close`; the server's 'close' (all connections gone) is the signal that
 * nothing is in flight.
 *
 * A keep-alive connection idle at that moment is left to end by itself: the client closes it
 * (clients drop an idle connection before the `Keep-Alive: timeout` the server announced), or
 * sends its next request, answered with `Connection: close`, or Node closes it once it has been
 * idle past HTTP_KEEP_ALIVE_TIMEOUT_MS, when no client that heeds the announcement still uses
 * it. Closing it at once (what server.close() does, through closeIdleConnections()) races the
 * client's next request already on its way: the client gets ECONNRESET (11 to 20 of ~26,000
 * requests over two reloads with 16 keep-alive clients). So a drain takes up to
 * HTTP_KEEP_ALIVE_TIMEOUT_MS (+1 s, Node's margin) when a client holds an idle connection;
 * SHUTDOWN_GRACE_MS must exceed that.
 *
 * The answers in flight sit in the slots of an array, reused through a list of free slots,
 * rather than in a Set: adding to and deleting from a Set on every request made the service's
 * scavenges much dearer (minor GC time per request roughly doubled) and cost about a fifth of
 * the CPU of a cached loginByOpenid (bench, issue 4).
 */
export function drainer(server: Server): Drainer {
  const slots: (ServerResponse | undefined)[] = [];
  const free: number[] = [];
  let draining = false;
  server.on('request', (_req, res: ServerResponse) => {
    const slot = free.length > 0 ? free.pop()! : slots.length;
    slots[slot] = res;
    if (draining) res.setHeader('Connection', 'close');
    res.once('close', () => {
      slots[slot] = undefined;
      free.push(slot);
    });
  });

  return {
    get inflight() {
      return slots.length - free.length;
    },
    async drain(graceMs) {
      draining = true;
      for (const res of slots) if (res && !res.headersSent) res.setHeader('Connection', 'close');
      const closed = new Promise<boolean>((resolve) => stopAccepting(server, () => resolve(true)));
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), graceMs);
      });
      const clean = await Promise.race([closed, late]);
      clearTimeout(timer);
      if (!clean) {
        server.closeAllConnections();
        await closed;
      }
      return clean;
    },
  };
}

/** server.close() without the closeIdleConnections() it begins with (see drainer). */
function stopAccepting(server: Server, onClosed: () => void): void {
  const closeIdle = server.closeIdleConnections;
  server.closeIdleConnections = () => undefined;
  try {
    server.close(onClosed);
  } finally {
    server.closeIdleConnections = closeIdle;
  }
}
