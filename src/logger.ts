import pino, { type Logger, type DestinationStream, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Secrets (session_key, tokens, the WeChat secret) and phone numbers are never passed to the
 * logger on purpose; redaction is the second line of defence for anything that slips through.
 */
export const REDACT_PATHS = [
  'session_key',
  '*.session_key',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'access_token',
  '*.access_token',
  'phone',
  '*.phone',
  'req.headers.authorization',
  'req.headers.cookie',
];

export interface LogSettings {
  level: string;
  format?: 'json' | 'pretty' | 'auto';
  env?: string;
}

/** pino-pretty is a development dependency: `auto` only picks it when it is installed. */
function prettyAvailable(): boolean {
  try {
    require.resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

/** `auto` means pretty for a person at a terminal in development, JSON everywhere else. */
export function wantsPretty(settings: LogSettings): boolean {
  if (settings.format === 'pretty') return true;
  if (settings.format !== 'auto') return false;
  return settings.env === 'development' && process.stdout.isTTY === true && prettyAvailable();
}

/**
 * One JSON object per line on stdout (or on `destination`, which the tests use to capture
 * lines). In pretty mode pino-pretty formats the same objects in a worker thread.
 */
export function createLogger(settings: LogSettings | string, destination?: DestinationStream): Logger {
  const { level, ...rest } = typeof settings === 'string' ? { level: settings } : settings;
  const options: LoggerOptions = {
    level,
    base: { service: 'user-service' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  if (destination) return pino(options, destination);
  if (wantsPretty({ level, ...rest })) {
    options.transport = {
      target: 'pino-pretty',
      options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' },
    };
  }
  return pino(options);
}
