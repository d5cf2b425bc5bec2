import { createServer, type RequestListener, type Server } from 'node:http';
import type { Config } from '../config';

export type ListenerLimits = Config['http'];

/**
 * An HTTP server with the connection-level bounds of docs/limits.md: how long a client may take
 * to send its headers and its whole request, how long an idle keep-alive connection is kept,
 * how many connections are open at once and how large the headers may be. The API and the
 * operations listener both use it.
 */
export function createListener(handler: RequestListener, limits: ListenerLimits): Server {
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      maxHeaderSize: limits.maxHeaderSize,
      // Node checks the two timeouts above on this period (30 s by default), so a stalled
      // connection would otherwise outlive its timeout by up to that much.
      connectionsCheckingInterval: Math.min(1000, Math.ceil(limits.headersTimeoutMs / 2)),
    },
    handler,
  );
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  // Past this, Node closes a new connection as soon as it is accepted.
  server.maxConnections = limits.maxConnections;
  return server;
}

/** Listens and resolves with the port actually bound (the configured one, or a free one for 0). */
export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}
