import { AckPolicy, DeliverPolicy, JetStreamApiError, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import type { MessageDefinition } from '../../schemas/message.js';
import { parkMessage } from '../eventstore/dead-letters.js';
import { InvalidMessageError } from '../eventstore/errors.js';
import { Header } from '../eventstore/headers.js';
import type { Lease, Leases } from '../eventstore/leases.js';
import { PULL_EXPIRES_MS, type Nats } from '../eventstore/nats.js';
import { toStoredEvent, type StoredEvent } from '../eventstore/store.js';
import type { ServiceNames } from '../eventstore/streams.js';
import { countKnownEvent, watchConsumer, watchProjection } from '../observability/metrics.js';
import { messageAttributes, startSpan, tracingEnabled, type SpanHandle } from '../observability/tracing.js';

/**
 * Where a projection writes. `apply` must store the events' effects and the checkpoint
 * `upTo` atomically, skipping events at or below the stored checkpoint: that is what makes a
 * redelivered event change nothing.
 */
export interface ProjectionTarget {
  /**
   * Runs once each time this instance wins the lease, before the checkpoint is read: the place
   * to create tables, or to rebuild a read model whose shape changed, with no other instance
   * writing meanwhile.
   */
  prepare?(): Promise<void>;
  /** The position of the last event applied (0 when none, or when the store lost its data). */
  checkpoint(): Promise<number>;
  /**
   * `committed` is the checkpoint the runner last saw stored (given when it watches the
   * checkpoint). A store whose checkpoint is below it has lost data since (a flush): it must
   * write nothing, as applying the batch over the loss would move the checkpoint past it and
   * hide it; the runner notices and replays.
   */
  apply(events: readonly StoredEvent[], upTo: number, committed?: number): Promise<void>;
  /** Whether the store answers at all: failures while it is down are an outage, not poison. */
  healthy(): Promise<boolean>;
  /**
   * Whether the runner should watch the checkpoint and replay when it falls back (a Redis
   * flushed, a schema dropped). Default true.
   */
  readonly watchCheckpoint?: boolean;
  /**
   * Only InvalidMessageError is poison (default false: any error that persists while the
   * store is healthy). For targets whose failures are the infrastructure's, like a publisher.
   */
  readonly parkOnlyInvalid?: boolean;
}

/** The JetStream side of a projection: which stream it follows and its durable consumer. */
export interface ProjectionSource {
  /** The durable consumer's name; also the lease key and the dead-letter subject token. */
  readonly name: string;
  readonly description: string;
  readonly stream: string;
  /** One filter subject (nats-server 2.9 knows no more); all of the stream when absent. */
  readonly filterSubject?: string | undefined;
  /** The message types this projection handles; others are passed over. */
  readonly events: readonly MessageDefinition<TSchema>[];
  /**
   * Messages passed over without decoding them, told by their headers (cheaper than reading a
   * large body to find nothing in it).
   */
  passOver?(m: JsMsg): boolean;
  /**
   * The body of a message this process appended itself moments ago and checked before appending
   * (e.g. the alerts intake's events, projected by the inbox of the same process): taken as it
   * is instead of parsing and checking it again. Undefined for any other message, which is
   * decoded as usual. Its headers are always decoded from the message.
   */
  known?(m: JsMsg): unknown;
}

/**
 * A store without transactions (Redis) applied a batch and its checkpoint but some of the
 * batch's writes failed: those events are parked, never applied again.
 */
export class PartiallyAppliedError extends Error {
  override readonly name = 'PartiallyAppliedError';
  constructor(
    readonly failed: readonly StoredEvent[],
    options: ErrorOptions,
  ) {
    super(`${failed.length} events were not fully applied`, options);
  }
}

export interface ProjectionStatus {
  readonly name: string;
  readonly leader: boolean;
  readonly checkpoint: number;
  /** Messages not yet delivered plus delivered but not acknowledged (null when unknown). */
  readonly lag: number | null;
}

export interface ProjectionRunner {
  readonly name: string;
  /** True while this instance holds the projection's lease (it may not have caught up yet). */
  readonly leading: boolean;
  start(): void;
  stop(): Promise<void>;
  status(): Promise<ProjectionStatus>;
  /** Waits (bounded) until the read model has applied `position`; false on timeout. */
  waitForPosition(position: number, timeoutMs: number): Promise<boolean>;
}

export interface ProjectionRunnerOptions {
  readonly nats: Nats;
  /** The service that owns the projection: its dead-letter stream receives parked messages. */
  readonly names: ServiceNames;
  readonly leases: Leases;
  readonly instanceId: string;
  readonly source: ProjectionSource;
  readonly target: ProjectionTarget;
  readonly log: Logger;
  readonly batchSize?: number;
  /**
   * Bounds the bytes of messages buffered (and so of one batch, at most half of it) instead of
   * their number: for a stream of large events, whose `batchSize * 2` would take too much memory.
   * It must exceed the largest message (headers and subject included): JetStream delivers no
   * message larger than a pull's `max_bytes`, and the consumer would wait on it for ever.
   */
  readonly maxBufferBytes?: number;
  /**
   * Ends a batch once its messages reach this many bytes (default: half of `maxBufferBytes`, or
   * no bound). For a store that must not be held long: a Redis projection's batch is one MULTI,
   * which Redis runs whole while its other clients wait.
   */
  readonly maxBatchBytes?: number;
  /** Attempts of one failing event, while its store is healthy, before it is parked. */
  readonly maxAttempts?: number;
  readonly retryDelayMs?: { readonly initial: number; readonly max: number };
  /** How often the runner checks that its store still has its checkpoint (e.g. Redis flushed). */
  readonly checkpointCheckMs?: number;
}

/**
 * Runs a projection: one instance at a time (a lease), a durable pull consumer positioned at
 * the target's checkpoint each time the lease is won, micro-batches applied in order, poison
 * messages retried with backoff and then parked, a deleted consumer recreated.
 */
export function createProjectionRunner(opts: ProjectionRunnerOptions): ProjectionRunner {
  const { nats, names, source, target } = opts;
  const log = opts.log.child({ projection: source.name, stream: source.stream });
  const batchSize = opts.batchSize ?? 500;
  const maxAttempts = opts.maxAttempts ?? 5;
  const delays = opts.retryDelayMs ?? { initial: 100, max: 5_000 };
  const checkEvery = opts.checkpointCheckMs ?? 2_000;
  const catalog = new Map(source.events.map((d) => [d.type, d]));
  let stopped = false;
  let lease: Lease | undefined;
  let running: Promise<void> | undefined;
  let current: ConsumerMessages | undefined;
  let committed = 0;
  const waiters = new Set<() => void>();
  // Queries waiting for a position: one poll of the checkpoint serves them all.
  const positionWaiters = new Map<(reached: boolean) => void, number>();
  let polling = false;
  // With tracing on, the spans of the batch being applied, by sequence.
  let batchSpans: Map<number, SpanHandle> | undefined;

  // Only a runner that watches the checkpoint replays what a target refuses after a loss.
  const guard = () => (target.watchCheckpoint === false ? undefined : committed);

  const notify = () => {
    for (const w of waiters) w();
  };

  /**
   * Reads the checkpoint for every waiting query until none waits: woken early by local
   * commits, and polling because the leader may be another instance.
   */
  async function pollPositions(): Promise<void> {
    if (polling) return;
    polling = true;
    try {
      while (positionWaiters.size > 0 && !stopped) {
        // Bounded: a hung store must not leave every later query waiting on this one read.
        const cp = await withTimeout(target.checkpoint(), 1_000).catch(() => -1);
        for (const [settle, position] of positionWaiters) if (cp >= position) settle(true);
        if (positionWaiters.size === 0) break;
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(t);
            waiters.delete(done);
            resolve();
          };
          const t = setTimeout(done, 20);
          waiters.add(done);
        });
      }
      if (stopped) for (const settle of positionWaiters.keys()) settle(false);
    } finally {
      polling = false;
    }
  }

  async function resetConsumer(checkpoint: number): Promise<void> {
    await nats.jsm.consumers.delete(source.stream, source.name).catch((err: unknown) => {
      if (!(err instanceof JetStreamApiError && err.code === 10014)) throw err;
    });
    await nats.jsm.consumers.add(source.stream, {
      durable_name: source.name,
      description: source.description,
      ...(source.filterSubject === undefined ? {} : { filter_subject: source.filterSubject }),
      ...(checkpoint === 0
        ? { deliver_policy: DeliverPolicy.All }
        : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: checkpoint + 1 }),
      ack_policy: AckPolicy.All,
      ack_wait: nanos(60_000),
      max_ack_pending: batchSize * 4,
    });
  }

  async function park(m: JsMsg, error: string): Promise<void> {
    const correlationId = m.headers?.get(Header.CorrelationId) || undefined;
    // Bounded as the dead letter's header is: an event may give a reason per part of it.
    log.error({ seq: m.seq, subject: m.subject, correlationId, error: error.slice(0, 4_000) }, 'message parked');
    batchSpans?.get(m.seq)?.fail(error);
    await retryForever(() => parkMessage(nats, names, { consumer: source.name, msg: m, error }), 'park');
  }

  /** Retries an infrastructure step until it works or the runner stops. */
  async function retryForever<T>(step: () => Promise<T>, what: string): Promise<T> {
    for (let delay = delays.initial; ; delay = Math.min(delays.max, delay * 2)) {
      try {
        return await step();
      } catch (err) {
        if (stopped) throw err;
        log.warn({ err, step: what }, 'projection step failed, retrying');
        await sleep(delay);
      }
    }
  }

  /** Applies one event (or none, to move the checkpoint) until it works, or parks it. */
  async function applyOne(m: JsMsg | undefined, event: StoredEvent | undefined, upTo: number, keepAlive: () => void) {
    let attempts = 0;
    for (let delay = delays.initial; ; delay = Math.min(delays.max, delay * 2)) {
      try {
        await target.apply(event === undefined ? [] : [event], upTo, guard());
        return;
      } catch (err) {
        if (stopped) throw err;
        keepAlive();
        if (err instanceof PartiallyAppliedError) {
          // The checkpoint moved with the writes that worked: park the event, do not retry it.
          if (m !== undefined) await park(m, errorText(err.cause));
          return;
        }
        // While the store is down nothing is poison: wait for it. An invalid result is poison.
        if (err instanceof InvalidMessageError) attempts++;
        else if (target.parkOnlyInvalid !== true && (await target.healthy().catch(() => false))) attempts++;
        if ((attempts >= maxAttempts || err instanceof InvalidMessageError) && m !== undefined) {
          await park(m, errorText(err));
          await retryForever(() => target.apply([], upTo, guard()), 'skip parked');
          return;
        }
        log.warn({ err, seq: upTo, attempts }, 'apply failed, retrying');
        await sleep(delay);
      }
    }
  }

  /**
   * With tracing on, each event is applied in a consumer span of its own, the child of the
   * span that appended (or published) it; the event handed to the target carries that span's
   * `traceparent`, so what the target publishes or appends for it continues the trace.
   */
  function traced(events: { m: JsMsg; e: StoredEvent }[]): { m: JsMsg; e: StoredEvent }[] {
    batchSpans = new Map();
    return events.map(({ m, e }) => {
      const span = startSpan(`apply ${source.name}`, {
        kind: 'consumer',
        parent: e.meta.traceparent,
        attributes: {
          ...messageAttributes({
            service: names.service,
            destination: e.subject,
            correlationId: e.meta.correlationId,
            consumer: source.name,
            type: e.type,
          }),
          'obey.position': e.position,
        },
      });
      batchSpans!.set(m.seq, span);
      return { m, e: { ...e, meta: { ...e.meta, traceparent: span.traceparent } } };
    });
  }

  function logApplied(events: readonly { e: StoredEvent }[]): void {
    if (!log.isLevelEnabled('debug')) return;
    for (const { e } of events) {
      const traceId = batchSpans?.get(e.position)?.traceId;
      log.debug(
        { seq: e.position, type: e.type, correlationId: e.meta.correlationId, ...(traceId === undefined ? {} : { traceId }) },
        'event applied',
      );
    }
  }

  async function processBatch(msgs: JsMsg[]): Promise<void> {
    try {
      await applyBatch(msgs);
    } finally {
      if (batchSpans !== undefined) for (const span of batchSpans.values()) span.end();
      batchSpans = undefined;
    }
  }

  async function applyBatch(msgs: JsMsg[]): Promise<void> {
    const keepAlive = () => {
      for (const m of msgs) m.working();
    };
    let events: { m: JsMsg; e: StoredEvent }[] = [];
    for (const m of msgs) {
      try {
        if (source.passOver?.(m) === true) continue;
        const known = source.known?.(m);
        let e = toStoredEvent(m, known === undefined);
        const def = catalog.get(e.type);
        if (def === undefined) continue;
        // A version this code does not know is refused, never read as if it were the known one.
        if (e.version !== def.version) {
          throw new InvalidMessageError(`${e.type} version ${e.version}; this projection knows version ${def.version}`);
        }
        if (known !== undefined) {
          e = { ...e, data: known };
          countKnownEvent(source.name);
        } else if (!def.validator.check(e.data)) throw new InvalidMessageError(`invalid ${e.type}`, def.validator.issues(e.data));
        events.push({ m, e });
      } catch (err) {
        if (!(err instanceof InvalidMessageError)) throw err;
        await park(m, err.message);
      }
    }
    if (tracingEnabled()) events = traced(events);
    const last = msgs[msgs.length - 1];
    if (last === undefined) return;
    const upTo = last.seq;
    try {
      await target.apply(
        events.map((x) => x.e),
        upTo,
        guard(),
      );
    } catch (err) {
      if (stopped) throw err;
      if (err instanceof PartiallyAppliedError) {
        for (const failed of err.failed) {
          const m = events.find((x) => x.e.position === failed.position)?.m;
          if (m !== undefined) await park(m, errorText(err.cause));
        }
        last.ack();
        committed = upTo;
        notify();
        logApplied(events);
        return;
      }
      log.warn({ err, from: msgs[0]?.seq, upTo }, 'batch failed, applying its events one by one');
      for (const { m, e } of events) await applyOne(m, e, e.position, keepAlive);
      await applyOne(undefined, undefined, upTo, keepAlive);
    }
    last.ack();
    committed = upTo;
    notify();
    logApplied(events);
  }

  async function consumeWhileLeader(): Promise<void> {
    if (target.prepare !== undefined) await retryForever(() => target.prepare!(), 'prepare');
    const checkpoint = await retryForever(() => target.checkpoint(), 'read checkpoint');
    committed = checkpoint;
    await resetConsumer(checkpoint);
    log.info({ checkpoint }, 'projection consuming');
    const consumer = await nats.js.consumers.get(source.stream, source.name);
    const iter = await consumer.consume(
      opts.maxBufferBytes === undefined
        ? { max_messages: batchSize * 2, expires: PULL_EXPIRES_MS }
        : { max_bytes: opts.maxBufferBytes, expires: PULL_EXPIRES_MS },
    );
    const batchBytes = opts.maxBatchBytes ?? (opts.maxBufferBytes === undefined ? Infinity : opts.maxBufferBytes / 2);
    current = iter;
    // stop() (or a lost lease) may have come while the consumer was being set up, when there
    // was nothing to stop yet; the loop below would then wait for a message that never comes.
    if (stopped || lease?.held === false) iter.stop();
    void (async () => {
      for await (const s of iter.status()) {
        if (s.type === 'consumer_deleted' || s.type === 'consumer_not_found') {
          log.warn({ status: s.type }, 'consumer gone, recreating it');
          iter.stop();
        }
      }
    })();
    const watchdog = setInterval(() => {
      if (target.watchCheckpoint === false) return;
      // Read before the checkpoint: a batch committed meanwhile must not look like a loss.
      const before = committed;
      target
        .checkpoint()
        .then((cp) => {
          if (cp < before) {
            // `committed` stays: batches still buffered must see the loss and write nothing.
            log.warn({ checkpoint: cp, committed }, 'read model lost its data, replaying');
            iter.stop();
          }
        })
        .catch(() => undefined);
    }, checkEvery);
    try {
      let batch: JsMsg[] = [];
      let bytes = 0;
      // The consumer is new (resetConsumer), so its deliveries are numbered from 1, and this
      // instance is its only client: a number skipped is a delivery that never arrived (sent by
      // a NATS server that died while leading the consumer), which acknowledging a later message
      // would acknowledge too (AckPolicy.All); a number going back is a server that restarted
      // behind what it had delivered. Either way, consumption starts again from the checkpoint.
      let delivered = 0;
      let outOfSequence = false;
      for await (const m of iter) {
        if (!outOfSequence && m.info.deliverySequence !== delivered + 1) {
          log.warn(
            { expected: delivered + 1, got: m.info.deliverySequence, seq: m.seq },
            'deliveries out of sequence, consuming again from the checkpoint',
          );
          outOfSequence = true;
        }
        delivered = m.info.deliverySequence;
        // Once stopped, the iterator is drained rather than left: nats.js finishes stopping it
        // (and its status notifications) only as it is read.
        if (stopped || outOfSequence || lease?.held === false) {
          iter.stop();
          continue;
        }
        batch.push(m);
        bytes += m.data.length;
        if (batch.length >= batchSize || bytes >= batchBytes || buffered(iter) === 0) {
          const b = batch;
          batch = [];
          bytes = 0;
          await processBatch(b);
        }
      }
    } finally {
      clearInterval(watchdog);
      iter.stop();
      current = undefined;
    }
  }

  async function run(): Promise<void> {
    lease = opts.leases.lease(`projection.${source.name}`, opts.instanceId);
    lease.onLost(() => current?.stop());
    while (!stopped) {
      if (!lease.held && !(await lease.acquired())) return;
      if (!lease.held) {
        // Lost before we started: wait for the next acquisition.
        await sleep(delays.initial);
        continue;
      }
      try {
        await consumeWhileLeader();
      } catch (err) {
        if (!stopped) {
          // Another service's stream not created yet (its service starting at the same time) is
          // a wait, not a failure.
          if (err instanceof JetStreamApiError && err.code === 10059) {
            log.warn({ stream: source.stream }, 'source stream does not exist yet; waiting for its service to create it');
          } else {
            log.error({ err }, 'projection consumer failed, restarting');
          }
          await sleep(delays.max);
        }
      }
    }
  }

  async function status(): Promise<ProjectionStatus> {
    const checkpoint = await target.checkpoint();
    let lag: number | null = null;
    try {
      const ci = await nats.jsm.consumers.info(source.stream, source.name);
      lag = ci.num_pending + ci.num_ack_pending;
    } catch {
      lag = null;
    }
    return { name: source.name, leader: lease?.held ?? false, checkpoint, lag };
  }

  let unwatch: (() => void)[] = [];
  return {
    name: source.name,
    get leading() {
      return lease?.held ?? false;
    },
    start() {
      if (running !== undefined) return;
      unwatch = [
        watchProjection({ name: source.name, stream: source.stream, status }),
        watchConsumer(nats, source.stream, source.name),
      ];
      running = run();
    },
    async stop() {
      stopped = true;
      current?.stop();
      await lease?.release();
      await running?.catch(() => undefined);
      for (const u of unwatch) u();
      notify();
    },
    status,
    async waitForPosition(position, timeoutMs) {
      return new Promise<boolean>((resolve) => {
        const settle = (reached: boolean) => {
          clearTimeout(timer);
          positionWaiters.delete(settle);
          resolve(reached);
        };
        const timer = setTimeout(() => settle(false), timeoutMs);
        positionWaiters.set(settle, position);
        void pollPositions();
      });
    },
  };
}

/**
 * Messages the consumer has received and the loop has not taken yet. Not `getPending()`: in
 * nats.js 3.4 that also counts the pull requests it queues in the same buffer, so it can stay
 * above 0 once every message is taken, and a partial batch would wait for the next event.
 */
function buffered(iter: ConsumerMessages): number {
  return iter.getReceived() - iter.getProcessed();
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
