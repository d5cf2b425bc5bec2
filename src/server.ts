import cluster from 'node:cluster';
import type { Server } from 'node:http';
import type { DestinationStream } from 'pino';
import { createApp, createOpsApp } from './app';
import { runPrimary } from './cluster';
import { ConfigError, loadConfig, requirePhoneKeys, type Config } from './config';
import { createKnex, ensureDatabase, migrateLatest } from './db/knex';
import { createListener, listen } from './http/listener';
import type { Logger } from './logger';
import { createLogger } from './logger';
import { createServices } from './services';
import { drainer } from './shutdown';
import { PREPARE_ENV, shutdownDelay, superviseServer } from './signals';

export interface RunningServer {
  server: Server;
  url: string;
  /** The operations listener (OPS_PORT): /metrics, /readyz, /docs, /openapi.json. */
  opsServer: Server;
  opsUrl: string;
  /**
   * Graceful stop: /readyz turns 503 and the service keeps serving for SHUTDOWN_DELAY_MS, then
   * the listener closes, requests in flight get up to `graceMs` (SHUTDOWN_GRACE_MS) to finish,
   * then Redis and the MySQL pool are closed.
   * Resolves true when everything finished in time, false when requests had to be cut.
   */
  stop(graceMs?: number): Promise<boolean>;
  /** Ends the SHUTDOWN_DELAY_MS wait of stop() early, or skips it when called before. */
  skipDelay(): void;
  /** Whether the stores answer now, as /readyz would say (before any shutdown). */
  ready(): Promise<boolean>;
  logger: Logger;
}

/** Creates the database if it is missing and applies the migrations. */
export async function prepareDatabase(config: Config, logger: Logger): Promise<void> {
  await ensureDatabase(config.db);
  const db = createKnex(config.db);
  try {
    const applied = await migrateLatest(db);
    if (applied.length) logger.info({ migrations: applied }, 'migrations applied');
  } finally {
    await db.destroy();
  }
}

/**
 * Prepares the database (unless a WORKERS primary did), builds the services and listens.
 * Used by main() and the tests (which may capture the log through `logTo`).
 */
export async function startServer(
  config: Config,
  logTo?: DestinationStream,
  { prepare = true }: { prepare?: boolean } = {},
): Promise<RunningServer> {
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, env: config.env }, logTo);
  if (prepare) await prepareDatabase(config, logger);
  const services = await createServices(config, logger);
  const api = createApp(config, services, logger).callback();
  const server = createListener(api, config.http);
  const connections = drainer(server);
  const opsServer = createListener(
    createOpsApp(services, logger, api, config.ops.port, config.push.token !== '').callback(),
    config.http,
  );
  const port = await listen(server, config.port, config.host);
  const opsPort = await listen(opsServer, config.ops.port, config.ops.host).catch(async (err: Error) => {
    server.close();
    await services.close();
    throw new Error(`OPS_PORT ${config.ops.port}: ${err.message}`);
  });
  const local = (h: string) => (h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h);
  logger.info({ port, host: config.host, opsPort, opsHost: config.ops.host }, 'listening');

  const delay = shutdownDelay(config.shutdownDelayMs);
  return {
    server,
    url: `http://${local(config.host)}:${port}`,
    opsServer,
    opsUrl: `http://${local(config.ops.host)}:${opsPort}`,
    logger,
    skipDelay: () => delay.skip(),
    ready: async () => (await services.readiness.report()).status === 'ready',
    async stop(graceMs = config.shutdownGraceMs) {
      services.readiness.draining = true;
      // The load balancer sees /readyz fail and stops sending before the listener closes.
      await delay.wait(logger);
      const start = performance.now();
      logger.info({ inflight: connections.inflight, graceMs }, 'shutting down: no new connections');
      let clean = await connections.drain(graceMs);
      if (!clean) logger.warn({ graceMs }, 'grace period over: requests still in flight were cut');
      // The pool waits for connections in use; bound that by what is left of the grace period.
      const left = Math.max(1000, graceMs - (performance.now() - start));
      let timer: NodeJS.Timeout | undefined;
      const closed = await Promise.race([
        services.close().then(() => true),
        new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), left))),
      ]);
      clearTimeout(timer);
      if (!closed) logger.warn('Redis or the MySQL pool did not close in time');
      // The ops listener outlives the drain, so that /readyz says "draining" meanwhile.
      const opsClosed = new Promise((resolve) => opsServer.close(resolve));
      opsServer.closeAllConnections();
      await opsClosed;
      clean &&= closed;
      logger.info({ ms: Math.round(performance.now() - start), clean }, 'shutdown complete');
      return clean;
    },
  };
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
    requirePhoneKeys(config);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  if (config.workers > 1 && cluster.isPrimary) {
    // The primary prepares the database once, then only supervises: workers serve.
    const logger = createLogger({ level: config.logLevel, format: config.logFormat, env: config.env });
    await prepareDatabase(config, logger);
    runPrimary({
      workers: config.workers,
      graceMs: config.shutdownGraceMs,
      delayMs: config.shutdownDelayMs,
      repeatMs: config.shutdownRepeatMs,
      logger,
    });
    return;
  }
  // A worker prepares the database only when it is the first of a reload (new migrations).
  const prepare = cluster.isPrimary || process.env[PREPARE_ENV] === '1';
  const running = await startServer(config, undefined, { prepare });
  superviseServer(running, { repeatMs: config.shutdownRepeatMs, delayMs: config.shutdownDelayMs });
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`failed to start: ${(err as Error)?.message ?? err}\n`);
    process.exit(1);
  });
}
