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
