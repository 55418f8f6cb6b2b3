import { assertNever } from '../eventstore/decider.js';
import { Ajv, type Options as AjvOptions } from 'ajv';
import addFormats from 'ajv-formats';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Logger } from 'pino';
import { v4 as uuidv4, validate as isUuid } from 'uuid';
import type { ErrorBody, ErrorKind } from '../../schemas/platform.js';
import type { CommandOutcome } from '../eventstore/commands.js';
import { DomainError, isUnavailableError, STATUS_OF_KIND } from '../eventstore/errors.js';
import { metricsEnabled, observeHttpRequest } from '../observability/metrics.js';
import { activate, markTraceBound, startSpan, tracingEnabled, type SpanHandle } from '../observability/tracing.js';
import { registerOpenApi } from './openapi.js';

/** Headers of the read-your-writes protocol (DESIGN.md §3). */
export const PositionHeader = 'obey-position';
export const MinPositionHeader = 'obey-min-position';

export interface AppOptions {
  readonly log: Logger;
  /** Largest accepted request body, in bytes. */
  readonly bodyLimit?: number;
  /** Proxies trusted to name the client in `X-Forwarded-For` (config `TRUST_PROXY`). */
  readonly trustProxy?: string | undefined;
  /** Serve the OpenAPI document and UI at `/api/docs` for the routes added after this. */
  readonly openapi?: boolean;
}

/**
 * A fastify instance with ObeyForum's conventions: errors as RFC 9457 problem+json with a
 * stable `code`, request ids from `X-Request-Id` (or fresh), correlation ids passed on, request
 * logs carrying `correlationId` (and `traceId`). With tracing on (at build time) each request
 * is a server span, the child of its `traceparent`; with metrics on, its latency is counted per
 * route and status. It never listens by itself, so tests use `inject`.
 */
export function buildApp(opts: AppOptions): FastifyInstance {
  const traced = tracingEnabled();
  const measured = metricsEnabled();
  // The server span of each request, from its first moment (its logger is made before any hook).
  const spans = new WeakMap<object, SpanHandle>();
  const app = Fastify({
    loggerInstance: opts.log as FastifyBaseLogger,
    bodyLimit: opts.bodyLimit ?? 64 * 1024,
    requestIdHeader: 'x-request-id',
    genReqId: () => uuidv4(),
    ...(opts.trustProxy === undefined ? {} : { trustProxy: opts.trustProxy }),
    // Errors fastify answers before routing (a malformed URL, a path parameter too long) are
    // problem+json too.
    frameworkErrors(err, request, reply) {
      const status = (err as FastifyError).statusCode ?? 400;
      void problem(reply, request, status, {
        code: fastifyCode(err as FastifyError),
        kind: kindOfStatus(status),
        message: status === 414 ? 'a path parameter is too long' : 'the URL is malformed',
      });
    },
    childLoggerFactory(logger, bindings, childOptions, raw) {
      const correlationId = correlationIdOfHeader(raw.headers['correlation-id'], String(bindings.reqId));
      if (!traced) return logger.child({ ...bindings, correlationId }, childOptions);
      const given = raw.headers.traceparent;
      const span = startSpan(`${raw.method ?? 'HTTP'}`, {
        kind: 'server',
        parent: typeof given === 'string' ? given : undefined,
        attributes: { 'http.request.method': raw.method ?? '', 'url.path': (raw.url ?? '').split('?')[0] ?? '' },
      });
      spans.set(raw, span);
      const child = logger.child({ ...bindings, correlationId, traceId: span.traceId }, childOptions);
      markTraceBound(child, span.traceId!);
      return child;
    },
  });

  if (traced) {
    // The span is made active for the hooks and then again for the handler: body parsing in
    // between runs in the socket's context, not the request's.
    const enter = (request: FastifyRequest, _reply: FastifyReply, done: () => void) => {
      const span = spans.get(request.raw);
      if (span === undefined) done();
      else activate(span, done);
    };
    app.addHook('onRequest', enter);
    app.addHook('preHandler', enter);
    app.addHook('onRequestAbort', async (request) => {
      const span = spans.get(request.raw);
      span?.fail(new Error('request aborted'));
      span?.end();
    });
  }
  if (traced || measured) {
    app.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url ?? 'unmatched';
      if (measured) observeHttpRequest(request.method, route, reply.statusCode, reply.elapsedTime / 1000);
      const span = spans.get(request.raw);
      if (span === undefined) return;
      span.rename(`${request.method} ${route}`);
      span.setAttribute('http.route', route);
      span.setAttribute('http.response.status_code', reply.statusCode);
      if (reply.statusCode >= 500) span.fail(`HTTP ${reply.statusCode}`);
      span.end();
    });
  }

  // Bodies are checked strictly: a wrong type is an error, not coerced, and unknown properties
  // are refused rather than dropped. Query strings and path parameters are text and are coerced.
  const strict = createAjv({ coerceTypes: false, removeAdditional: false });
  const coercing = createAjv({ coerceTypes: 'array', removeAdditional: false });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict : coercing).compile(schema));
  if (opts.openapi === true) registerOpenApi(app);

  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', request.id);
  });

  // Text that cannot be stored or hashed as it is is refused at the door: a lone UTF-16
  // surrogate (not well-formed Unicode, which canonical JSON refuses) or a NUL character (which
  // Postgres text cannot hold: a command would be accepted and its event never projected).
  app.addHook('preValidation', async (request) => {
    const bad = badText(request.body) ?? badText(request.query) ?? badText(request.params);
    if (bad !== undefined) {
      throw new DomainError('invalid-text', 'invalid', 'text must be well-formed Unicode without NUL characters', {
        issues: [{ path: bad, message: 'a lone surrogate or a NUL character' }],
      });
    }
  });

  app.setNotFoundHandler((request, reply) => {
    void problem(reply, request, 404, {
      code: 'route-not-found',
      kind: 'not-found',
      message: `no route ${request.method} ${request.url}`,
    });
  });

  app.setErrorHandler((err: FastifyError | DomainError | Error, request, reply) => {
    if (err instanceof DomainError) {
      const retryAfter = (err.details as { retryAfterSeconds?: unknown } | undefined)?.retryAfterSeconds;
      if (typeof retryAfter === 'number') void reply.header('retry-after', String(retryAfter));
      return problem(reply, request, STATUS_OF_KIND[err.kind], err.toBody());
    }
    const fe = err as FastifyError;
    if (fe.validation !== undefined) {
      return problem(reply, request, 400, {
        code: 'invalid-request',
        kind: 'invalid',
        message: err.message,
        details: {
          issues: fe.validation.map((v) => ({
            path: v.instancePath === '' ? '/' : v.instancePath,
            message: v.message ?? 'invalid',
          })),
        },
      });
    }
    const status = fe.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      return problem(reply, request, status, { code: fastifyCode(fe), kind: kindOfStatus(status), message: err.message });
    }
    // A store that is down or restarting (Postgres, Redis) is an outage to wait out, not a bug.
    if (isUnavailableError(err)) {
      request.log.warn({ err }, 'request failed: a store is unavailable');
      void reply.header('retry-after', '1');
      return problem(reply, request, 503, {
        code: 'store-unavailable',
        kind: 'unavailable',
        message: 'the service cannot reach its storage right now; try again shortly',
      });
    }
    request.log.error({ err }, 'request failed');
    return problem(reply, request, status >= 500 ? status : 500, {
      code: 'internal',
      kind: 'internal',
      message: 'internal error',
    });
  });

  return app;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * The path of the first string in `value` that is not storable text, if any. Iterative, so a
 * body nested thousands deep cannot exhaust the stack.
 */
export function badText(value: unknown): string | undefined {
  const stack: [unknown, string][] = [[value, '']];
  while (stack.length > 0) {
    const [v, path] = stack.pop()!;
    if (typeof v === 'string') {
      if (v.includes('\u0000') || LONE_SURROGATE.test(v)) return path || '/';
    } else if (Array.isArray(v)) {
      v.forEach((item, i) => stack.push([item, `${path}/${i}`]));
    } else if (typeof v === 'object' && v !== null) {
      for (const [k, item] of Object.entries(v)) stack.push([k, `${path}/${k}`], [item, `${path}/${k}`]);
    }
  }
  return undefined;
}

function createAjv(options: AjvOptions): Ajv {
  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, ...options });
  addFormats.default(ajv);
  return ajv;
}

/** Sends a problem+json answer. */
export function problem(reply: FastifyReply, request: FastifyRequest, status: number, body: ErrorBody): FastifyReply {
  return reply
    .code(status)
    .type('application/problem+json')
    .send({ type: `about:blank`, title: body.message, status, instance: request.url, ...body });
}

/** The correlation id of a request: the client's `Correlation-Id` when it is a UUID, else the request id. */
export function correlationIdOf(request: FastifyRequest): string {
  return correlationIdOfHeader(request.headers['correlation-id'], request.id);
}

function correlationIdOfHeader(given: string | string[] | undefined, requestId: string): string {
  return typeof given === 'string' && isUuid(given) ? given : requestId;
}

/**
 * Answers a command's outcome: 200 (or `createdStatus`) with the position as body and
 * `Obey-Position` header; the domain error as problem+json; or 202 Accepted with the command
 * id and a status URL when the handler did not answer in time.
 */
export function replyWithOutcome(
  reply: FastifyReply,
  request: FastifyRequest,
  outcome: CommandOutcome,
  opts: { statusUrl: (commandId: string) => string; createdStatus?: number; body?: Record<string, unknown> },
): FastifyReply {
  switch (outcome.status) {
    case 'succeeded': {
      if (outcome.position !== null) void reply.header(PositionHeader, String(outcome.position));
      return reply.code(opts.createdStatus ?? 200).send({
        ...opts.body,
        commandId: outcome.commandId,
        id: outcome.aggregateId,
        position: outcome.position,
      });
    }
    case 'rejected':
      return problem(reply, request, STATUS_OF_KIND[outcome.error.kind], outcome.error);
    case 'pending':
      return reply
        .code(202)
        .header('location', opts.statusUrl(outcome.commandId))
        .send({ commandId: outcome.commandId, status: 'pending', statusUrl: opts.statusUrl(outcome.commandId) });
    default:
      return assertNever(outcome);
  }
}

/**
 * The position a query asks its read model to have reached (`Obey-Min-Position`), or
 * undefined; a malformed value is a 400.
 */
export function minPositionOf(request: FastifyRequest): number | undefined {
  const raw = request.headers[MinPositionHeader];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (typeof raw !== 'string' || !Number.isSafeInteger(n) || n < 0) {
    throw new DomainError('invalid-min-position', 'invalid', `${MinPositionHeader} must be a non-negative integer`);
  }
  return n;
}

/**
 * Waits (bounded) until a read model has reached the position the query asks for; answers
 * 503 with `Retry-After` if it does not get there in time.
 */
export async function awaitReadModel(
  request: FastifyRequest,
  reply: FastifyReply,
  waitForPosition: (position: number, timeoutMs: number) => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const position = minPositionOf(request);
  if (position === undefined) return;
  if (!(await waitForPosition(position, timeoutMs))) {
    void reply.header('retry-after', '1');
    throw new DomainError('read-model-behind', 'unavailable', `the read model has not reached position ${position} yet`);
  }
}

function fastifyCode(err: FastifyError): string {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'body-too-large';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'unsupported-media-type';
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return 'malformed-json';
    default:
      return err.code !== undefined
        ? err.code
            .toLowerCase()
            .replace(/^fst_err_/, '')
            .replaceAll('_', '-')
        : 'bad-request';
  }
}

function kindOfStatus(status: number): ErrorKind {
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not-found';
  if (status === 409) return 'conflict';
  if (status === 429) return 'rate-limited';
  return 'invalid';
}
