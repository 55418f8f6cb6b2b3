import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Nats } from '../eventstore/nats.js';
import type { ProjectionStatus } from '../projections/runner.js';

export interface MetricsOptions {
  /** Node's own metrics (CPU, memory, event loop lag, GC, handles). Default true. */
  readonly defaultMetrics?: boolean;
  /** Bound on reading one consumer's or projection's state at a scrape. Default 2 s. */
  readonly scrapeTimeoutMs?: number;
}

export interface Metrics {
  readonly registry: Registry;
  /** The Content-Type of {@link Metrics.scrape}'s text. */
  readonly contentType: string;
  /**
   * Reads the state of the process's consumers and projections (all at once, each bounded by
   * the scrape timeout; concurrent scrapes share one reading), then renders every metric in
   * Prometheus' text format.
   */
  scrape(): Promise<string>;
  /** Stops counting: the platform's helpers go quiet again. */
  close(): void;
}

/** What a command's handling ended in, as the command metrics count it. */
export type CommandOutcomeLabel = 'succeeded' | 'rejected' | 'duplicate' | 'invalid' | 'retried' | 'parked';

interface Instruments {
  readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  readonly commandDuration: Histogram<'service' | 'command' | 'outcome'>;
  readonly conflicts: Counter<'service' | 'aggregate' | 'command'>;
  readonly deadLetters: Counter<'service' | 'consumer'>;
  readonly knownEvents: Counter<'projection'>;
  readonly emailsSent: Counter;
  readonly emailsFailed: Counter<'reason'>;
  readonly emailRetries: Counter;
  readonly consumerPending: Gauge<'stream' | 'consumer'>;
  readonly consumerAckPending: Gauge<'stream' | 'consumer'>;
  readonly consumerRedelivered: Gauge<'stream' | 'consumer'>;
  readonly projectionLag: Gauge<'projection' | 'stream'>;
  readonly projectionCheckpoint: Gauge<'projection' | 'stream'>;
  readonly projectionLeader: Gauge<'projection' | 'stream'>;
}

interface WatchedConsumer {
  readonly nats: Nats;
  readonly stream: string;
  readonly consumer: string;
  watchers: number;
}

/** What a projection runner shows of itself to the metrics. */
export interface WatchedProjection {
  readonly name: string;
  readonly stream: string;
  status(): Promise<ProjectionStatus>;
}

const LATENCY_BUCKETS = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

// The process's metrics, once created: the helpers below do nothing before (tests and tools
// that run the platform without metrics pay one comparison).
let active: Instruments | undefined;
// What the process runs, whether or not metrics exist yet: they may be created after.
const consumers = new Map<string, WatchedConsumer>();
const projections = new Set<WatchedProjection>();
// The type of each command being handled, so that a conflict deep in an append is counted
// against its command.
const commandTypes = new Map<string, string>();

/**
 * Creates the process's Prometheus metrics (a registry of its own) and makes the platform
 * count into them: HTTP latency, command latency and conflicts, consumers' pending and
 * redelivered messages, projection lag, dead letters, emails. One per process: a second call
 * takes over from the first.
 */
export function createMetrics(opts: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  const timeoutMs = opts.scrapeTimeoutMs ?? 2_000;
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const instruments: Instruments = {
    httpDuration: new Histogram({
      name: 'obey_http_request_duration_seconds',
      help: 'HTTP requests by method, route (the pattern; `unmatched` for none) and status code',
      labelNames: ['method', 'route', 'status_code'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    commandDuration: new Histogram({
      name: 'obey_command_duration_seconds',
      help: 'Command handling (one delivery: decide, append, store the result) by service, command type and outcome',
      labelNames: ['service', 'command', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    conflicts: new Counter({
      name: 'obey_command_conflicts_total',
      help: 'Appends refused because the aggregate moved on (ConcurrencyError; the command is decided again), by command type',
      labelNames: ['service', 'aggregate', 'command'],
      registers,
    }),
    deadLetters: new Counter({
      name: 'obey_dead_letters_total',
      help: 'Messages parked in a dead-letter stream, by owning service and consumer',
      labelNames: ['service', 'consumer'],
      registers,
    }),
    knownEvents: new Counter({
      name: 'obey_projection_known_events_total',
      help: 'Events a projection took as this process appended them, instead of decoding and checking them again',
      labelNames: ['projection'],
      registers,
    }),
    emailsSent: new Counter({ name: 'obey_emails_sent_total', help: 'Emails the SMTP server accepted', registers }),
    emailsFailed: new Counter({
      name: 'obey_emails_failed_total',
      help: 'Email commands given up on (parked), by reason',
      labelNames: ['reason'],
      registers,
    }),
    emailRetries: new Counter({
      name: 'obey_email_retries_total',
      help: 'Email attempts that will be retried (SMTP unreachable, 4xx, another copy being sent)',
      registers,
    }),
    consumerPending: new Gauge({
      name: 'obey_consumer_pending_messages',
      help: "Messages not yet delivered to a consumer this process runs (JetStream's num_pending)",
      labelNames: ['stream', 'consumer'],
      registers,
    }),
    consumerAckPending: new Gauge({
      name: 'obey_consumer_ack_pending_messages',
      help: 'Messages delivered to a consumer this process runs and not yet acknowledged',
      labelNames: ['stream', 'consumer'],
      registers,
    }),
    consumerRedelivered: new Gauge({
      name: 'obey_consumer_redelivered_messages',
      help: 'Messages delivered more than once and not yet acknowledged, per consumer this process runs',
      labelNames: ['stream', 'consumer'],
      registers,
    }),
    projectionLag: new Gauge({
      name: 'obey_projection_lag_messages',
      help: 'Events of its stream a projection (read model, relay, intake) has not applied yet',
      labelNames: ['projection', 'stream'],
      registers,
    }),
    projectionCheckpoint: new Gauge({
      name: 'obey_projection_checkpoint',
      help: 'The stream position of the last event a projection applied',
      labelNames: ['projection', 'stream'],
      registers,
    }),
    projectionLeader: new Gauge({
      name: 'obey_projection_leader',
      help: '1 when this process holds the projection lease (applies the events), 0 when it stands by',
      labelNames: ['projection', 'stream'],
      registers,
    }),
  };
  active = instruments;

  let reading: Promise<void> | undefined;
  const readState = () => {
    reading ??= refresh(instruments, timeoutMs).finally(() => {
      reading = undefined;
    });
    return reading;
  };

  return {
    registry,
    contentType: registry.contentType,
    async scrape() {
      await readState();
      return registry.metrics();
    },
    close() {
      if (active === instruments) active = undefined;
    },
  };
}

async function refresh(m: Instruments, timeoutMs: number): Promise<void> {
  const consumerStates = [...consumers.values()].map(async (c) => {
    try {
      const ci = await withTimeout(c.nats.jsm.consumers.info(c.stream, c.consumer), timeoutMs);
      return { c, ci };
    } catch {
      return { c, ci: undefined };
    }
  });
  // Several instances of a projection in one process (tests): the leader speaks for it.
  const byName = new Map<string, WatchedProjection[]>();
  for (const p of projections) byName.set(p.name, [...(byName.get(p.name) ?? []), p]);
  const projectionStates = [...byName.values()].map(async (ps) => {
    const states = await Promise.all(ps.map((p) => withTimeout(p.status(), timeoutMs).catch(() => undefined)));
    const known = states.filter((s): s is ProjectionStatus => s !== undefined);
    return { p: ps[0]!, s: known.find((s) => s.leader) ?? known[0] };
  });
  const [cs, ps] = await Promise.all([Promise.all(consumerStates), Promise.all(projectionStates)]);
  // Series of consumers that went away or did not answer are dropped rather than left stale.
  for (const g of [m.consumerPending, m.consumerAckPending, m.consumerRedelivered]) g.reset();
  for (const { c, ci } of cs) {
    if (ci === undefined) continue;
    const labels = { stream: c.stream, consumer: c.consumer };
    m.consumerPending.set(labels, ci.num_pending);
    m.consumerAckPending.set(labels, ci.num_ack_pending);
    m.consumerRedelivered.set(labels, ci.num_redelivered);
  }
  for (const g of [m.projectionLag, m.projectionCheckpoint, m.projectionLeader]) g.reset();
  for (const { p, s } of ps) {
    if (s === undefined) continue;
    const labels = { projection: p.name, stream: p.stream };
    if (s.lag !== null) m.projectionLag.set(labels, s.lag);
    m.projectionCheckpoint.set(labels, s.checkpoint);
    m.projectionLeader.set(labels, s.leader ? 1 : 0);
  }
}

/** Whether metrics are being counted. */
export function metricsEnabled(): boolean {
  return active !== undefined;
}

/** One HTTP request answered; `route` is the route's pattern, never the raw URL. */
export function observeHttpRequest(method: string, route: string, statusCode: number, seconds: number): void {
  active?.httpDuration.observe({ method, route, status_code: String(statusCode) }, seconds);
}

/** The handling of one delivery of a command. */
export interface CommandTrack {
  /** The command's type, once known (conflicts meanwhile are counted against it). */
  named(type: string): void;
  done(outcome: CommandOutcomeLabel): void;
}

const UNTRACKED: CommandTrack = { named: () => undefined, done: () => undefined };

/** Starts timing the handling of a command. */
export function trackCommand(service: string, commandId: string): CommandTrack {
  const m = active;
  if (m === undefined) return UNTRACKED;
  const started = performance.now();
  let command = 'unknown';
  return {
    named(type) {
      command = type;
      commandTypes.set(commandId, type);
    },
    done(outcome) {
      commandTypes.delete(commandId);
      m.commandDuration.observe({ service, command, outcome }, (performance.now() - started) / 1000);
    },
  };
}

/** An append refused by the expectation on the aggregate's revision. */
export function countConflict(service: string, aggregate: string, commandId: string | undefined): void {
  active?.conflicts.inc({
    service,
    aggregate,
    command: (commandId === undefined ? undefined : commandTypes.get(commandId)) ?? 'none',
  });
}

/** A message parked in `service`'s dead-letter stream by `consumer`. */
export function countDeadLetter(service: string, consumer: string): void {
  active?.deadLetters.inc({ service, consumer });
}

/** An event `projection` took from this process's memory (`ProjectionSource.known`). */
export function countKnownEvent(projection: string): void {
  active?.knownEvents.inc({ projection });
}

/** Counts an email's outcome; fits the mailing service's `onOutcome` hook. */
export function observeEmailOutcome(o: { readonly outcome: string; readonly reason?: string | undefined }): void {
  const m = active;
  if (m === undefined) return;
  if (o.outcome === 'sent') m.emailsSent.inc();
  else if (o.outcome === 'parked') m.emailsFailed.inc({ reason: o.reason ?? 'unknown' });
  else if (o.outcome === 'retrying') m.emailRetries.inc();
}

/**
 * Reports a durable consumer this process runs (its pending, unacknowledged and redelivered
 * messages are read at each scrape) until the returned function is called.
 */
export function watchConsumer(nats: Nats, stream: string, consumer: string): () => void {
  const key = `${stream}\u0000${consumer}`;
  const entry = consumers.get(key) ?? { nats, stream, consumer, watchers: 0 };
  entry.watchers++;
  consumers.set(key, entry);
  let watching = true;
  return () => {
    if (!watching) return;
    watching = false;
    if (--entry.watchers === 0 && consumers.get(key) === entry) consumers.delete(key);
  };
}

/** Reports a projection's lag, checkpoint and leadership (its `status()` at each scrape) until the returned function is called. */
export function watchProjection(projection: WatchedProjection): () => void {
  projections.add(projection);
  return () => {
    projections.delete(projection);
  };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
