import {
  errors as natsErrors,
  headers as natsHeaders,
  nuid,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from '@nats-io/nats-core';
import type { Logger } from 'pino';
import type { Static, TSchema } from 'typebox';
import { compileValidator, type MessageDefinition } from '../../schemas/message.js';
import { ErrorBody, type ErrorKind } from '../../schemas/platform.js';
import {
  DomainError,
  InvalidMessageError,
  isUnavailableError,
  NoRespondersError,
  RemoteError,
  RequestTimeoutError,
  STATUS_OF_KIND,
} from './errors.js';
import { decodeHeaders, decodeJson, encodeHeaders, encodeJson, Header, type MessageMeta, type TraceContext } from './headers.js';
import { currentTraceparent, inSpan, messageAttributes } from '../observability/tracing.js';

/** Headers of an error reply, as the NATS service protocol (ADR-32) defines them. */
export const ServiceErrorHeader = {
  Description: 'Nats-Service-Error',
  Code: 'Nats-Service-Error-Code',
} as const;

const DEFAULT_TIMEOUT_MS = 5_000;
// ADR-32: names are limited to these characters; versions are SemVer (the semver.org regex).
const SERVICE_NAME = /^[A-Za-z0-9_-]+$/;
const SEMVER =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;

const errorBodyValidator = compileValidator(ErrorBody);

/** What a request handler gets besides the body. */
export interface RequestContext {
  readonly meta: MessageMeta;
  /** Carries `svc`, `endpoint` and `correlationId`. */
  readonly log: Logger;
}

/** One request type a service answers: its request and response messages, and the handler. */
export interface EndpointDefinition<Req extends TSchema, Res extends TSchema> {
  /** Its `subject` (`<svc>.requests.<kebab-name>`) is where the endpoint listens. */
  readonly request: MessageDefinition<Req>;
  readonly response: MessageDefinition<Res>;
  /** Throws a DomainError to refuse; anything else it throws is answered as a 500. */
  handler(body: Static<Req>, ctx: RequestContext): Promise<Static<Res>>;
}

/** The request endpoints of one service instance, discoverable with `nats micro ls|info|stats`. */
export interface RequestService {
  readonly name: string;
  /** This instance's id in the NATS service protocol (`$SRV.<VERB>.<name>.<id>`). */
  readonly id: string;
  /** Subscribes the endpoint in queue group `<name>`; resolves once the server has it. */
  addEndpoint<Req extends TSchema, Res extends TSchema>(def: EndpointDefinition<Req, Res>): Promise<void>;
  /** Drains every subscription and waits for the requests being handled to be answered. */
  stop(): Promise<void>;
}

export interface ServiceEndpointsOptions {
  readonly nc: NatsConnection;
  /** The service name: queue group, subject prefix and name in the service protocol. */
  readonly name: string;
  /** SemVer. */
  readonly version: string;
  readonly description: string;
  readonly log: Logger;
}

interface EndpointStats {
  numRequests: number;
  numErrors: number;
  lastError: string;
  processingNs: number;
}

interface Endpoint {
  readonly name: string;
  readonly subject: string;
  readonly metadata: Record<string, string>;
  readonly stats: EndpointStats;
  readonly sub: Subscription;
}

/** A reply to send: its body and headers. */
interface Reply {
  readonly data: Uint8Array;
  readonly headers: MsgHdrs;
  /** For stats; set on error replies. */
  readonly error?: string;
}

/**
 * Starts a service's request endpoints on core NATS (DESIGN.md §2) together with the NATS
 * service protocol (ADR-32): the instance answers `$SRV.PING|INFO|STATS`, `…<name>` and
 * `…<name>.<id>`, so operators find it with `nats micro ls`. Many instances may run: each
 * request goes to one of them (queue group `<name>`), discovery requests reach all.
 */
export async function createServiceEndpoints(opts: ServiceEndpointsOptions): Promise<RequestService> {
  const { nc, name, version, description } = opts;
  if (!SERVICE_NAME.test(name)) throw new Error(`invalid service name "${name}"`);
  if (!SEMVER.test(version)) throw new Error(`service ${name}: version "${version}" is not SemVer`);
  const id = nuid.next();
  const started = new Date().toISOString();
  const log = opts.log.child({ svc: name, serviceId: id });
  const endpoints: Endpoint[] = [];
  const controlSubs: Subscription[] = [];
  const inFlight = new Set<Promise<void>>();
  let stopped = false;

  const identity = () => ({ name, id, version, metadata: {} as Record<string, string> });
  const control = {
    PING: () => ({ type: 'io.nats.micro.v1.ping_response', ...identity() }),
    INFO: () => ({
      type: 'io.nats.micro.v1.info_response',
      ...identity(),
      description,
      endpoints: endpoints.map((e) => ({
        name: e.name,
        subject: e.subject,
        queue_group: name,
        metadata: e.metadata,
      })),
    }),
    STATS: () => ({
      type: 'io.nats.micro.v1.stats_response',
      ...identity(),
      started,
      endpoints: endpoints.map((e) => ({
        name: e.name,
        subject: e.subject,
        queue_group: name,
        num_requests: e.stats.numRequests,
        num_errors: e.stats.numErrors,
        last_error: e.stats.lastError,
        processing_time: e.stats.processingNs,
        average_processing_time: e.stats.numRequests === 0 ? 0 : Math.trunc(e.stats.processingNs / e.stats.numRequests),
      })),
    }),
  } as const;

  for (const [verb, respond] of Object.entries(control)) {
    for (const subject of [`$SRV.${verb}`, `$SRV.${verb}.${name}`, `$SRV.${verb}.${name}.${id}`]) {
      controlSubs.push(
        nc.subscribe(subject, {
          callback: (err, msg) => {
            if (err) {
              log.error({ err, subject }, 'service discovery subscription failed');
              return;
            }
            msg.respond(encodeJson(respond()));
          },
        }),
      );
    }
  }
  await nc.flush();

  function addEndpoint<Req extends TSchema, Res extends TSchema>(def: EndpointDefinition<Req, Res>): Promise<void> {
    if (stopped) throw new Error(`service ${name} is stopped`);
    const subject = def.request.subject;
    const prefix = `${name}.requests.`;
    const endpointName = subject?.startsWith(prefix) ? subject.slice(prefix.length) : '';
    if (subject === undefined || !SERVICE_NAME.test(endpointName)) {
      throw new Error(`${def.request.type}: a request of ${name} needs a subject ${prefix}<kebab-name>, not ${subject}`);
    }
    if (endpoints.some((e) => e.subject === subject)) {
      throw new Error(`service ${name}: endpoint ${subject} added twice`);
    }
    const stats: EndpointStats = { numRequests: 0, numErrors: 0, lastError: '', processingNs: 0 };
    const endpointLog = log.child({ endpoint: endpointName });
    const sub = nc.subscribe(subject, {
      queue: name,
      callback: (err, msg) => {
        if (err) {
          endpointLog.error({ err, subject }, 'request subscription failed');
          return;
        }
        const handling = serve(name, def, msg, stats, endpointLog);
        inFlight.add(handling);
        void handling.finally(() => inFlight.delete(handling));
      },
    });
    endpoints.push({
      name: endpointName,
      subject,
      metadata: {
        request_type: def.request.type,
        request_version: String(def.request.version),
        response_type: def.response.type,
        response_version: String(def.response.version),
      },
      stats,
      sub,
    });
    return nc.flush();
  }

  async function stop(): Promise<void> {
    if (stopped) return;
    stopped = true;
    if (!nc.isClosed()) {
      await Promise.allSettled([...endpoints.map((e) => e.sub), ...controlSubs].map((s) => s.drain()));
    }
    await Promise.allSettled([...inFlight]);
  }

  return { name, id, addEndpoint, stop };
}

async function serve<Req extends TSchema, Res extends TSchema>(
  service: string,
  def: EndpointDefinition<Req, Res>,
  msg: Msg,
  stats: EndpointStats,
  endpointLog: Logger,
): Promise<void> {
  const start = process.hrtime.bigint();
  let reply: Reply;
  try {
    reply = await inSpan(
      `serve ${msg.subject}`,
      {
        kind: 'server',
        parent: msg.headers?.get(Header.TraceParent) || undefined,
        attributes: messageAttributes({
          service,
          destination: msg.subject,
          correlationId: msg.headers?.get(Header.CorrelationId) || undefined,
        }),
      },
      async (span) => {
        const r = await answer(def, msg, endpointLog);
        if (r.error !== undefined) span.setAttribute('obey.error', r.error);
        return r;
      },
    );
  } catch (err) {
    // answer() turns every failure into a reply; reaching here is a bug in this module.
    endpointLog.error({ err }, 'request not answered');
    reply = internalReply(undefined);
  }
  stats.numRequests++;
  stats.processingNs += Number(process.hrtime.bigint() - start);
  if (reply.error !== undefined) {
    stats.numErrors++;
    stats.lastError = reply.error;
  }
  if (msg.reply === undefined || msg.reply === '') {
    endpointLog.warn({ subject: msg.subject }, 'request without reply subject');
    return;
  }
  try {
    msg.respond(reply.data, { headers: reply.headers });
  } catch (err) {
    endpointLog.warn({ err }, 'reply not sent');
  }
}

async function answer<Req extends TSchema, Res extends TSchema>(
  def: EndpointDefinition<Req, Res>,
  msg: Msg,
  endpointLog: Logger,
): Promise<Reply> {
  let meta: MessageMeta;
  let body: Static<Req>;
  try {
    meta = decodeHeaders(msg.headers);
    if (meta.type !== def.request.type || meta.version !== def.request.version) {
      throw new InvalidMessageError(`expected ${def.request.type} v${def.request.version}, got ${meta.type} v${meta.version}`);
    }
    const data = decodeJson(msg.data);
    const issues = def.request.validator.issues(data);
    if (issues.length > 0) throw new InvalidMessageError(`invalid ${def.request.type}`, issues);
    body = data as Static<Req>;
  } catch (err) {
    if (!(err instanceof InvalidMessageError)) throw err;
    const correlationId = msg.headers?.get(Header.CorrelationId) || undefined;
    endpointLog.info({ err, correlationId }, 'invalid request refused');
    return errorReply(400, invalidMessageBody(err), correlationId);
  }

  const log = endpointLog.child({ correlationId: meta.correlationId });
  let result: Static<Res>;
  try {
    result = await def.handler(body, { meta, log });
  } catch (err) {
    if (err instanceof DomainError) return errorReply(STATUS_OF_KIND[err.kind], err.toBody(), meta.correlationId);
    if (isUnavailableError(err)) {
      // The asker may try again (or answer its own client 503): an outage, not a bug.
      log.warn({ err, request: def.request.type }, 'request handler failed: a store is unavailable');
      return errorReply(
        503,
        { code: 'store-unavailable', kind: 'unavailable', message: 'the service cannot reach its storage right now' },
        meta.correlationId,
      );
    }
    log.error({ err, request: def.request.type }, 'request handler failed');
    return internalReply(meta.correlationId);
  }

  const issues = def.response.validator.issues(result);
  if (issues.length > 0) {
    log.error({ issues, response: def.response.type }, 'request handler answered an invalid response');
    return internalReply(meta.correlationId);
  }
  return {
    data: encodeJson(result),
    headers: encodeHeaders({
      type: def.response.type,
      version: def.response.version,
      correlationId: meta.correlationId,
      causationId: undefined,
      traceparent: currentTraceparent(meta.traceparent),
    }),
  };
}

function invalidMessageBody(err: InvalidMessageError): ErrorBody {
  return {
    code: 'invalid-message',
    kind: 'invalid',
    message: err.message,
    details: { issues: err.issues },
  };
}

function internalReply(correlationId: string | undefined): Reply {
  return errorReply(500, { code: 'internal', kind: 'internal', message: 'internal error' }, correlationId);
}

function errorReply(status: number, body: ErrorBody, correlationId: string | undefined): Reply {
  const h = natsHeaders();
  h.set(ServiceErrorHeader.Code, String(status));
  h.set(ServiceErrorHeader.Description, body.message);
  if (correlationId !== undefined) h.set(Header.CorrelationId, correlationId);
  return { data: encodeJson(body), headers: h, error: `${status} ${body.code}: ${body.message}` };
}

/** A request/response pair, as `request` needs it. */
export interface RequestDefinition<Req extends TSchema, Res extends TSchema> {
  readonly request: MessageDefinition<Req>;
  readonly response: MessageDefinition<Res>;
}

export interface RequestOptions {
  /** How long to wait for the answer; 5 s when absent. */
  readonly timeoutMs?: number;
  readonly trace: TraceContext;
}

/**
 * Sends a request to whichever instance of the service answers first (core NATS, no
 * persistence) and returns its validated response.
 *
 * @throws RequestTimeoutError when no answer comes in time
 * @throws NoRespondersError when no instance listens
 * @throws RemoteError when the service answers with an error (status and ErrorBody)
 * @throws InvalidMessageError when the answer does not match the response definition
 */
export async function request<Req extends TSchema, Res extends TSchema>(
  nc: NatsConnection,
  def: RequestDefinition<Req, Res>,
  body: Static<Req>,
  opts: RequestOptions,
): Promise<Static<Res>> {
  const subject = def.request.subject;
  if (subject === undefined) throw new Error(`${def.request.type} has no subject`);
  return inSpan(
    `request ${subject}`,
    {
      kind: 'client',
      parent: opts.trace.traceparent,
      attributes: messageAttributes({ destination: subject, correlationId: opts.trace.correlationId, type: def.request.type }),
    },
    (span) => exchange(nc, subject, def, body, opts, span.traceparent),
  );
}

async function exchange<Req extends TSchema, Res extends TSchema>(
  nc: NatsConnection,
  subject: string,
  def: RequestDefinition<Req, Res>,
  body: Static<Req>,
  opts: RequestOptions,
  traceparent: string | undefined,
): Promise<Static<Res>> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const headers = encodeHeaders({
    type: def.request.type,
    version: def.request.version,
    correlationId: opts.trace.correlationId,
    causationId: opts.trace.causationId,
    traceparent,
  });

  let msg: Msg;
  try {
    msg = await nc.request(subject, encodeJson(body), { timeout: timeoutMs, headers });
  } catch (err) {
    if (err instanceof natsErrors.TimeoutError) throw new RequestTimeoutError(subject, timeoutMs, { cause: err });
    if (err instanceof natsErrors.NoRespondersError || (err instanceof natsErrors.RequestError && err.isNoResponders())) {
      throw new NoRespondersError(subject, { cause: err });
    }
    throw err;
  }

  const code = msg.headers?.get(ServiceErrorHeader.Code) ?? '';
  if (code !== '') throw new RemoteError(subject, Number.parseInt(code, 10) || 500, remoteErrorBody(msg));

  const meta = decodeHeaders(msg.headers);
  if (meta.type !== def.response.type || meta.version !== def.response.version) {
    throw new InvalidMessageError(
      `${subject}: expected ${def.response.type} v${def.response.version}, got ${meta.type} v${meta.version}`,
    );
  }
  const data = decodeJson(msg.data);
  const issues = def.response.validator.issues(data);
  if (issues.length > 0) throw new InvalidMessageError(`${subject}: invalid ${def.response.type}`, issues);
  return data as Static<Res>;
}

/** The ErrorBody of an error reply; a foreign responder's reply gets one built from its headers. */
function remoteErrorBody(msg: Msg): ErrorBody {
  try {
    const data = decodeJson(msg.data);
    if (errorBodyValidator.check(data)) return data;
  } catch {
    // not JSON: fall through
  }
  const status = Number.parseInt(msg.headers?.get(ServiceErrorHeader.Code) ?? '', 10);
  const kind = (Object.keys(STATUS_OF_KIND) as ErrorKind[]).find((k) => STATUS_OF_KIND[k] === status);
  return {
    code: 'remote-error',
    kind: kind ?? 'internal',
    message: msg.headers?.get(ServiceErrorHeader.Description) || `service error ${status}`,
  };
}
