import { AckPolicy, DeliverPolicy, JetStreamApiError, type ConsumerConfig, type JsMsg, type StoredMsg } from '@nats-io/jetstream';
import { errors as natsErrors, nanos, type MsgHdrs } from '@nats-io/nats-core';
import { v4 as uuidv4 } from 'uuid';
import { ConcurrencyError } from './errors.js';
import { decodeHeaders, decodeJson, encodeHeaders, encodeJson, type MessageMeta, type TraceContext } from './headers.js';
import type { Nats } from './nats.js';
import type { ServiceNames } from './streams.js';
import { countConflict } from '../observability/metrics.js';
import { inSpan, messageAttributes, tracingEnabled } from '../observability/tracing.js';

/** An event as read back from a service's events stream. */
export interface StoredEvent<Data = unknown> {
  readonly type: string;
  readonly version: number;
  readonly data: Data;
  readonly meta: MessageMeta;
  readonly subject: string;
  /** The stream sequence: the event's position, shared by every event of the service. */
  readonly position: number;
  readonly time: Date;
}

export interface AppendInput {
  readonly aggregate: string;
  readonly id: string;
  readonly event: { readonly type: string; readonly version: number; readonly data: unknown };
  /** The revision the decision was made on: the aggregate's last position, 0 for a new one. */
  readonly expectedRevision: number;
  readonly trace: TraceContext;
  /** Headers of the event's own, besides the platform's: what a reader may look at before the body. */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * The event's `Nats-Msg-Id`, fresh when not given: a caller that must recognise its event when
   * a consumer reads it back (see `createRecentAppends`) chooses it before the append, as the
   * message may be delivered before the append returns. It must be new for each event.
   */
  readonly msgId?: string;
}

export interface AppendResult {
  readonly position: number;
  /** True when the server had already stored this very event (a retried publish). */
  readonly duplicate: boolean;
}

export interface EventStore {
  readonly names: ServiceNames;
  /**
   * Appends one event to an aggregate's subject if the aggregate is still at
   * `expectedRevision`; throws {@link ConcurrencyError} otherwise. Each event carries a fresh
   * `Nats-Msg-Id`, so a publish retried after a lost acknowledgement is stored once.
   */
  append(input: AppendInput): Promise<AppendResult>;
  /** The aggregate's events after position `after` (0: all), oldest first. */
  read(aggregate: string, id: string, after?: number): AsyncIterable<StoredEvent>;
  /** The position of the aggregate's last event, 0 when it has none. */
  lastRevision(aggregate: string, id: string): Promise<number>;
  /** The aggregate's last event (one direct get); undefined when it has none. */
  last(aggregate: string, id: string): Promise<StoredEvent | undefined>;
  /** The event at a position of the service's events stream (one direct get); undefined when there is none. */
  at(position: number): Promise<StoredEvent | undefined>;
  /**
   * The aggregate's event caused by `causationId` (a command id) among those stored since
   * `since`, reading headers only; undefined when there is none.
   */
  findCausedBy(aggregate: string, id: string, causationId: string, since: Date): Promise<StoredEvent | undefined>;
}

export interface EventStoreOptions {
  readonly nats: Nats;
  readonly names: ServiceNames;
  /** Publish acknowledgement timeout per attempt. */
  readonly timeoutMs?: number;
  /** Attempts of one append when acknowledgements time out (same `Nats-Msg-Id` each time). */
  readonly publishAttempts?: number;
}

const READ_CHUNK = 1_000;

export function createJetStreamEventStore(opts: EventStoreOptions): EventStore {
  const { nats, names } = opts;
  const stream = names.eventsStream;
  const timeout = opts.timeoutMs ?? 5_000;
  const attempts = opts.publishAttempts ?? 3;

  function append(input: AppendInput): Promise<AppendResult> {
    if (!tracingEnabled()) return publish(input, input.trace.traceparent);
    const subject = names.eventSubject(input.aggregate, input.id);
    return inSpan(
      `append ${input.aggregate}`,
      {
        kind: 'producer',
        parent: input.trace.traceparent,
        attributes: messageAttributes({
          service: names.service,
          destination: subject,
          correlationId: input.trace.correlationId,
          type: input.event.type,
        }),
      },
      // The event carries the append's own context: whatever handles it continues from there.
      (span) => publish(input, span.traceparent),
    );
  }

  async function publish(input: AppendInput, traceparent: string | undefined): Promise<AppendResult> {
    const subject = names.eventSubject(input.aggregate, input.id);
    const msgID = input.msgId ?? uuidv4();
    const data = encodeJson(input.event.data);
    for (let attempt = 1; ; attempt++) {
      const headers = encodeHeaders(
        {
          type: input.event.type,
          version: input.event.version,
          correlationId: input.trace.correlationId,
          causationId: input.trace.causationId,
          traceparent,
        },
        input.headers,
      );
      try {
        const ack = await nats.js.publish(subject, data, {
          msgID,
          headers,
          timeout,
          expect: { lastSubjectSequence: input.expectedRevision, streamName: stream },
        });
        return { position: ack.seq, duplicate: ack.duplicate };
      } catch (err) {
        if (err instanceof JetStreamApiError && err.code === 10071) {
          countConflict(names.service, input.aggregate, input.trace.causationId);
          throw new ConcurrencyError(subject, input.expectedRevision, { cause: err });
        }
        if (err instanceof natsErrors.TimeoutError && attempt < attempts) continue;
        throw new Error(`append to ${subject} failed`, { cause: err });
      }
    }
  }

  async function lastRevision(aggregate: string, id: string): Promise<number> {
    const subject = names.eventSubject(aggregate, id);
    const msg = await nats.jsm.direct.getMessage(stream, { last_by_subj: subject });
    return msg === null ? 0 : msg.seq;
  }

  async function last(aggregate: string, id: string): Promise<StoredEvent | undefined> {
    const msg = await nats.jsm.direct.getMessage(stream, { last_by_subj: names.eventSubject(aggregate, id) });
    return msg === null ? undefined : fromStoredMsg(msg);
  }

  async function at(position: number): Promise<StoredEvent | undefined> {
    const msg = await nats.jsm.direct.getMessage(stream, { seq: position });
    return msg === null ? undefined : fromStoredMsg(msg);
  }

  async function* read(aggregate: string, id: string, after = 0): AsyncIterable<StoredEvent> {
    // Most reads find nothing new (a new aggregate, a catch-up that is current): one direct
    // get answers that, without creating a consumer.
    if ((await lastRevision(aggregate, id)) <= after) return;
    yield* readWith(
      names.eventSubject(aggregate, id),
      after === 0
        ? { deliver_policy: DeliverPolicy.All }
        : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 },
    );
  }

  /**
   * Reads a subject through a short-lived consumer: its num_pending says how many messages
   * there are, so the read ends without waiting for a timeout.
   */
  async function* readWith(subject: string, start: Partial<ConsumerConfig>, headersOnly = false): AsyncIterable<StoredEvent> {
    const ci = await nats.jsm.consumers.add(stream, {
      ...start,
      filter_subject: subject,
      ack_policy: AckPolicy.None,
      mem_storage: true,
      num_replicas: 1,
      inactive_threshold: nanos(30_000),
      headers_only: headersOnly,
    });
    try {
      let remaining = ci.num_pending;
      const consumer = await nats.js.consumers.get(stream, ci.name);
      while (remaining > 0) {
        const batch = await consumer.fetch({ max_messages: Math.min(remaining, READ_CHUNK), expires: timeout });
        let got = 0;
        for await (const m of batch) {
          got++;
          remaining--;
          yield toStoredEvent(m, !headersOnly);
        }
        if (got === 0) throw new Error(`reading ${subject} stalled with ${remaining} events left`);
      }
    } finally {
      nats.jsm.consumers.delete(stream, ci.name).catch(() => {
        // The inactive threshold removes it anyway.
      });
    }
  }

  async function findCausedBy(aggregate: string, id: string, causationId: string, since: Date): Promise<StoredEvent | undefined> {
    // Clocks differ between the publisher and the server: look a little further back.
    const from = new Date(since.getTime() - 5_000).toISOString();
    for await (const e of readWith(
      names.eventSubject(aggregate, id),
      { deliver_policy: DeliverPolicy.StartTime, opt_start_time: from },
      true,
    )) {
      if (e.meta.causationId === causationId) return e;
    }
    return undefined;
  }

  return { names, append, read, lastRevision, last, at, findCausedBy };
}

/** Decodes a message read with a direct get from an events stream. */
function fromStoredMsg(m: StoredMsg): StoredEvent {
  return decodeEvent(m.header, m.data, m.subject, m.seq, m.time);
}

/** Decodes a JetStream message of an events stream (its body as null when `withData` is false). */
export function toStoredEvent(m: JsMsg, withData = true): StoredEvent {
  return decodeEvent(m.headers, withData ? m.data : undefined, m.subject, m.seq, m.time);
}

/** An event from a message's parts, however it was read (its body as null when `data` is undefined). */
function decodeEvent(
  headers: MsgHdrs | undefined,
  data: Uint8Array | undefined,
  subject: string,
  position: number,
  time: Date,
): StoredEvent {
  const meta = decodeHeaders(headers);
  return {
    type: meta.type,
    version: meta.version,
    data: data === undefined ? null : decodeJson(data),
    meta,
    subject,
    position,
    time,
  };
}
