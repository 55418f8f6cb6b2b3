import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { parseTraceParent, W3CTraceContextPropagator } from '@opentelemetry/core';
import type { SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-node';

export interface TracingOptions {
  /** `service.name` of the process's spans; the service each span belongs to is its `obey.service`. */
  readonly serviceName: string;
  readonly serviceVersion?: string;
  /**
   * `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base URL; spans are sent in batches to
   * `<endpoint>/v1/traces` (OTLP over HTTP). Without it and without `exporter`, tracing is off.
   */
  readonly otlpEndpoint?: string | undefined;
  /** An exporter handed every span as it ends (tests: an in-memory exporter). */
  readonly exporter?: SpanExporter | undefined;
}

export interface Tracing {
  readonly enabled: boolean;
  /** Exports what is still buffered, then turns tracing off for the process. */
  shutdown(): Promise<void>;
}

/** Where a span stands in its trace, and what the code it wraps can tell it. */
export interface SpanHandle {
  /**
   * The span's context as a W3C `traceparent`, for the headers of what is published inside it.
   * With tracing off: the parent given, so headers pass on what they received as before.
   */
  readonly traceparent: string | undefined;
  /** Undefined with tracing off. */
  readonly traceId: string | undefined;
  setAttribute(key: string, value: string | number | boolean): void;
  rename(name: string): void;
  /** Marks the span failed, with the error as an exception event. */
  fail(err: unknown): void;
  end(): void;
}

export type SpanKindName = 'server' | 'client' | 'producer' | 'consumer' | 'internal';

export interface SpanOptions {
  readonly kind: SpanKindName;
  /**
   * A message's `traceparent`. A consumer or server span is the child of the message it handles
   * (a new trace when it has none). A producer, client or internal span is the child of the
   * active span when there is one (a command sent while handling an HTTP request), else of this.
   */
  readonly parent?: string | undefined;
  readonly attributes?: Attributes;
}

const KINDS: Record<SpanKindName, SpanKind> = {
  server: SpanKind.SERVER,
  client: SpanKind.CLIENT,
  producer: SpanKind.PRODUCER,
  consumer: SpanKind.CONSUMER,
  internal: SpanKind.INTERNAL,
};

// Set while tracing is on: every helper below checks it first, so that tracing off costs a
// comparison on the hot paths.
let tracer: Tracer | undefined;

/**
 * Turns tracing on for the process when an exporter is configured (OTLP, or one given), and
 * returns a disabled `Tracing` otherwise. The provider is registered globally (W3C trace
 * context, AsyncLocalStorage context), so a process has one: a second call replaces the first.
 */
export async function createTracing(opts: TracingOptions): Promise<Tracing> {
  const otlp = opts.otlpEndpoint !== undefined && opts.otlpEndpoint !== '';
  if (opts.exporter === undefined && !otlp) return { enabled: false, shutdown: async () => undefined };
  // The SDK is loaded only when tracing is on: the platform's helpers need the API alone.
  const { BatchSpanProcessor, NodeTracerProvider, SimpleSpanProcessor } = await import('@opentelemetry/sdk-trace-node');
  const { resourceFromAttributes } = await import('@opentelemetry/resources');
  const processors: SpanProcessor[] = [];
  if (opts.exporter !== undefined) processors.push(new SimpleSpanProcessor(opts.exporter));
  if (otlp) {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: tracesUrl(opts.otlpEndpoint!) })));
  }
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      'service.name': opts.serviceName,
      ...(opts.serviceVersion === undefined ? {} : { 'service.version': opts.serviceVersion }),
    }),
    spanProcessors: processors,
  });
  provider.register({ propagator: new W3CTraceContextPropagator() });
  const mine = provider.getTracer('obeyforum', opts.serviceVersion);
  tracer = mine;
  return {
    enabled: true,
    async shutdown() {
      if (tracer === mine) tracer = undefined;
      await provider.shutdown();
      trace.disable();
      context.disable();
      propagation.disable();
    },
  };
}

/** OTLP/HTTP's rule: the generic endpoint is a base, traces go to its `/v1/traces`. */
function tracesUrl(endpoint: string): string {
  return `${endpoint.replace(/\/+$/, '')}/v1/traces`;
}

/** Whether spans are being recorded (false: the helpers pass traceparents through unchanged). */
export function tracingEnabled(): boolean {
  return tracer !== undefined;
}

/** Starts a span (not made active: see {@link inSpan}, {@link activate}); end it yourself. */
export function startSpan(name: string, opts: SpanOptions): SpanHandle {
  if (tracer === undefined) return passThrough(opts.parent);
  const parentContext =
    opts.kind === 'consumer' || opts.kind === 'server'
      ? contextOf(opts.parent)
      : trace.getSpan(context.active()) !== undefined
        ? context.active()
        : contextOf(opts.parent);
  const span = tracer.startSpan(name, { kind: KINDS[opts.kind], attributes: opts.attributes }, parentContext);
  return new RecordingSpan(span);
}

/**
 * Runs `fn` inside a new span, active for its duration (what `fn` starts or logs belongs to it);
 * the span ends when `fn` settles, failed if it throws. With tracing off, `fn` just runs.
 */
export function inSpan<T>(name: string, opts: SpanOptions, fn: (span: SpanHandle) => Promise<T>): Promise<T> {
  if (tracer === undefined) return fn(passThrough(opts.parent));
  const span = startSpan(name, opts);
  return activate(span, async () => {
    try {
      return await fn(span);
    } catch (err) {
      span.fail(err);
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Runs `fn` with `span` as the active span (for code that cannot be wrapped, like hook chains). */
export function activate<T>(span: SpanHandle, fn: () => T): T {
  if (!(span instanceof RecordingSpan)) return fn();
  return context.with(trace.setSpan(context.active(), span.span), fn);
}

/** The active span's `traceparent`, or `fallback` when none is active (or tracing is off). */
export function currentTraceparent(fallback?: string): string | undefined {
  if (tracer === undefined) return fallback;
  const span = trace.getActiveSpan();
  return span === undefined ? fallback : traceparentOf(span);
}

/** The active span's trace id, undefined when none is active. */
export function currentTraceId(): string | undefined {
  if (tracer === undefined) return undefined;
  return trace.getActiveSpan()?.spanContext().traceId;
}

const BOUND_TRACE = Symbol('obeyforum.boundTraceId');

/**
 * Marks a (pino) logger as carrying `traceId` in its bindings, so that {@link traceLogFields}
 * does not write it a second time. Child loggers inherit the mark (pino children are created
 * with `Object.create(parent)`).
 */
export function markTraceBound(logger: object, traceId: string): void {
  (logger as Record<symbol, string>)[BOUND_TRACE] = traceId;
}

/**
 * A pino `mixin`: the active span's trace id on every log line written inside a span, unless
 * the logger already carries it.
 */
export function traceLogFields(_merge: object, _level: number, logger: object): object {
  if (tracer === undefined) return {};
  const span = trace.getActiveSpan();
  if (span === undefined) return {};
  const { traceId } = span.spanContext();
  return (logger as Record<symbol, string | undefined>)[BOUND_TRACE] === traceId ? {} : { traceId };
}

function contextOf(traceparent: string | undefined): Context {
  if (traceparent === undefined) return ROOT_CONTEXT;
  const parent = parseTraceParent(traceparent);
  return parent === null ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, { ...parent, isRemote: true });
}

function traceparentOf(span: Span): string {
  const { traceId, spanId, traceFlags } = span.spanContext();
  return `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

class RecordingSpan implements SpanHandle {
  readonly traceparent: string;
  readonly traceId: string;
  constructor(readonly span: Span) {
    this.traceparent = traceparentOf(span);
    this.traceId = span.spanContext().traceId;
  }
  setAttribute(key: string, value: string | number | boolean): void {
    this.span.setAttribute(key, value);
  }
  rename(name: string): void {
    this.span.updateName(name);
  }
  fail(err: unknown): void {
    if (err instanceof Error) this.span.recordException(err);
    this.span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
  }
  end(): void {
    this.span.end();
  }
}

const NO_PARENT: SpanHandle = Object.freeze({
  traceparent: undefined,
  traceId: undefined,
  setAttribute: () => undefined,
  rename: () => undefined,
  fail: () => undefined,
  end: () => undefined,
});

function passThrough(parent: string | undefined): SpanHandle {
  return parent === undefined ? NO_PARENT : { ...NO_PARENT, traceparent: parent };
}

/** The attributes of a span about a NATS message (OpenTelemetry's messaging conventions). */
export function messageAttributes(m: {
  /** The ObeyForum service the span belongs to, when known. */
  readonly service?: string | undefined;
  /** The subject published to or consumed from. */
  readonly destination: string;
  readonly messageId?: string | undefined;
  readonly correlationId?: string | undefined;
  /** The durable consumer, for consumer spans. */
  readonly consumer?: string | undefined;
  readonly type?: string | undefined;
}): Attributes {
  const a: Attributes = { 'messaging.system': 'nats', 'messaging.destination.name': m.destination };
  if (m.service !== undefined) a['obey.service'] = m.service;
  if (m.messageId !== undefined) a['messaging.message.id'] = m.messageId;
  if (m.correlationId !== undefined) a['messaging.message.conversation_id'] = m.correlationId;
  if (m.consumer !== undefined) a['messaging.consumer.group.name'] = m.consumer;
  if (m.type !== undefined) a['obey.message.type'] = m.type;
  return a;
}
