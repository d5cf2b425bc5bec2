import type { Server } from 'node:http';
import type { DestinationStream } from 'pino';
import { createApp } from './app';
import { ConfigError, loadConfig, type Config } from './config';
import { ensureDatabase, migrateLatest } from './db/knex';
import { createLogger } from './logger';
import { createServices } from './services';

export interface RunningServer {
  server: Server;
  url: string;
  stop(): Promise<void>;
}

/**
 * Prepares the database, builds the services and listens. Used by main() and the tests
 * (which may capture the log through `logTo`).
 */
export async function startServer(config: Config, logTo?: DestinationStream): Promise<RunningServer> {
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, env: config.env }, logTo);
  await ensureDatabase(config.db);
  const services = await createServices(config, logger);
  try {
    const applied = await migrateLatest(services.db);
    if (applied.length) logger.info({ migrations: applied }, 'migrations applied');
  } catch (err) {
    await services.close();
    throw err;
  }
  const app = createApp({
    logger,
    users: services.users,
    bodyLimit: config.bodyLimit,
    metrics: services.metrics,
    readiness: services.readiness,
  });
  const server = app.listen(config.port, config.host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  logger.info({ port, host: config.host }, 'listening');

  return {
    server,
    url: `http://${host}:${port}`,
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      await services.close();
    },
  };
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const running = await startServer(config);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`${signal}: shutting down\n`);
    running.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`failed to start: ${(err as Error)?.message ?? err}\n`);
    process.exit(1);
  });
}
