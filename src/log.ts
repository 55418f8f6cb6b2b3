import { pino, type Logger } from 'pino';

export type { Logger };

/** The root logger; services and consumers derive child loggers carrying `svc`, stream, etc. */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { ...bindings }, timestamp: pino.stdTimeFunctions.isoTime });
}
