import type { ErrorBody, ErrorKind } from '../../schemas/platform.js';
import type { ValidationIssue } from '../../schemas/message.js';

/** The HTTP status (and NATS service error code) of each kind of failure. */
export const STATUS_OF_KIND: Readonly<Record<ErrorKind, number>> = {
  invalid: 400,
  unauthorized: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  'rate-limited': 429,
  unavailable: 503,
  internal: 500,
};

/**
 * The append's expected revision was not the aggregate's last revision: somebody else wrote
 * first. The command runner reloads and decides again.
 */
export class ConcurrencyError extends Error {
  override readonly name = 'ConcurrencyError';
  constructor(
    readonly subject: string,
    readonly expectedRevision: number,
    options?: ErrorOptions,
  ) {
    super(`${subject}: expected revision ${expectedRevision} is not the last one`, options);
  }
}

/** A message failed its schema or lacks a required header: it is parked, never retried. */
export class InvalidMessageError extends Error {
  override readonly name = 'InvalidMessageError';
  constructor(
    message: string,
    readonly issues: readonly ValidationIssue[] = [],
  ) {
    super(issues.length === 0 ? message : `${message}: ${formatIssues(issues)}`);
  }
}

/**
 * A rule of the domain refused a command. Services define their errors as instances of this
 * with a stable `code`; anything else a decider throws is a bug, not a rejection.
 */
export class DomainError extends Error {
  override readonly name = 'DomainError';
  constructor(
    readonly code: string,
    readonly kind: ErrorKind,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }

  toBody(): ErrorBody {
    return this.details === undefined
      ? { code: this.code, kind: this.kind, message: this.message }
      : { code: this.code, kind: this.kind, message: this.message, details: this.details };
  }
}

/** No service instance answered a request in time. */
export class RequestTimeoutError extends Error {
  override readonly name = 'RequestTimeoutError';
  constructor(
    readonly subject: string,
    readonly timeoutMs: number,
    options?: ErrorOptions,
  ) {
    super(`no answer on ${subject} within ${timeoutMs} ms`, options);
  }
}

/** No service instance listens on the request's subject. */
export class NoRespondersError extends Error {
  override readonly name = 'NoRespondersError';
  constructor(
    readonly subject: string,
    options?: ErrorOptions,
  ) {
    super(`no service answers ${subject}`, options);
  }
}

/** The service answered a request with an error (`Nats-Service-Error` headers). */
export class RemoteError extends Error {
  override readonly name = 'RemoteError';
  constructor(
    readonly subject: string,
    readonly status: number,
    readonly body: ErrorBody,
  ) {
    super(`${subject}: ${status} ${body.code}: ${body.message}`);
  }
}

function formatIssues(issues: readonly ValidationIssue[]): string {
  return issues.map((i) => `${i.path} ${i.message}`).join('; ');
}

/** Node's socket errors: the server is not there (or went away). */
const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** SQLSTATEs of a Postgres that is down, starting, or ending connections (besides class 08). */
const POSTGRES_DOWN = new Set(['57P01', '57P02', '57P03', '53300']);
/** What pg and ioredis throw, without a code, for a connection that is gone or cannot be made. */
const CONNECTION_LOST =
  /^(Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect|Connection is closed|Stream isn't writeable|Reached the max retries per request limit|LOADING )/;

/**
 * Whether `err` (or one of its causes) says a store is unreachable for now (Postgres or Redis
 * down, restarting or recovering) rather than that the request or the code is wrong: the
 * caller answers 503 and the client tries again, never a 500.
 */
export function isUnavailableError(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (SOCKET_CODES.has(code) || POSTGRES_DOWN.has(code) || /^08[0-9A-Z]{3}$/.test(code)))
      return true;
    if (e.name === 'MaxRetriesPerRequestError' || CONNECTION_LOST.test(e.message)) return true;
  }
  return false;
}
