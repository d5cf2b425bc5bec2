import pino, { type Logger, type DestinationStream } from 'pino';

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
  'phone',
  '*.phone',
  'req.headers.authorization',
  'req.headers.cookie',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'user-service' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
