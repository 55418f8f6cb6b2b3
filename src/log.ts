import { pino, type DestinationStream, type Logger } from 'pino';
import { traceLogFields } from './observability/tracing.js';

export type { Logger };

/**
 * The root logger; services and consumers derive child loggers carrying `svc`, stream, etc.
 * A line written inside a span also carries its `traceId`. Lines go to stdout unless
 * `destination` is given.
 */
export function createLogger(level: string, bindings: Record<string, unknown> = {}, destination?: DestinationStream): Logger {
  const options = { level, base: { ...bindings }, timestamp: pino.stdTimeFunctions.isoTime, mixin: traceLogFields };
  return destination === undefined ? pino(options) : pino(options, destination);
}
