import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import type { MessageDefinition } from '../../schemas/message.js';
import { encodeHeaders } from '../eventstore/headers.js';
import type { Leases } from '../eventstore/leases.js';
import type { Nats } from '../eventstore/nats.js';
import type { StoredEvent } from '../eventstore/store.js';
import type { ServiceNames } from '../eventstore/streams.js';
import { InvalidMessageError } from '../eventstore/errors.js';
import { createProjectionRunner, type ProjectionRunner, type ProjectionTarget } from './runner.js';
import { inSpan, messageAttributes } from '../observability/tracing.js';

/** The header naming the events-stream position a notification was derived from. */
export const SourceSequenceHeader = 'Obey-Source-Sequence';
/** When an event gives several notifications: which one this is (from 0), and how many there are. */
export const SourceIndexHeader = 'Obey-Source-Index';
export const SourceCountHeader = 'Obey-Source-Count';

/** A notification to publish for an event. */
export interface Notification {
  readonly definition: MessageDefinition<TSchema>;
  readonly data: unknown;
}

export interface RelayOptions {
  readonly nats: Nats;
  readonly names: ServiceNames;
  readonly leases: Leases;
  readonly instanceId: string;
  readonly log: Logger;
  /** The events the relay reads; others pass by. */
  readonly events: readonly MessageDefinition<TSchema>[];
  /** The public notification(s) an event gives, or null: domain events stay private. */
  toNotification(event: StoredEvent): Notification | readonly Notification[] | null;
}

/**
 * Publishes a service's public notifications from its own events stream: the events stream is
 * the outbox, so a crash between an append and its notification loses nothing. Each
 * notification's `Nats-Msg-Id` is `<stream>:<sequence>` of its source event, so republishing
 * after a crash stores it once; and the relay restarts after the source of the last
 * notification it published, so nothing is published twice even past the duplicate window.
 */
export function createNotificationRelay(opts: RelayOptions): ProjectionRunner {
  const { nats, names } = opts;
  // Set when the last notification stored is not its event's last one (a crash between the
  // notifications of one event): that event is relayed again from the next one.
  let resume: { position: number; index: number } | undefined;
  const target: ProjectionTarget = {
    watchCheckpoint: false,
    // A publish that fails (a full stream, a timeout, an outage) is retried until it passes:
    // a parked notification could never be replayed. Only an invalid one is parked.
    parkOnlyInvalid: true,
    async checkpoint() {
      const info = await nats.jsm.streams.info(names.notificationsStream);
      if (info.state.messages === 0) return 0;
      const last = await nats.jsm.streams.getMessage(names.notificationsStream, { seq: info.state.last_seq });
      const source = Number(last?.header.get(SourceSequenceHeader) || Number.NaN);
      // Starting from 0 would publish the whole history again: better to stop and say why.
      if (!Number.isSafeInteger(source)) {
        throw new Error(`the last message of ${names.notificationsStream} has no ${SourceSequenceHeader} header`);
      }
      const index = Number(last?.header.get(SourceIndexHeader) || 0);
      const count = Number(last?.header.get(SourceCountHeader) || 1);
      if (index < count - 1) {
        resume = { position: source, index };
        return source - 1;
      }
      resume = undefined;
      return source;
    },
    async apply(events) {
      // One at a time: were one publish to fail and a later one to pass, the retry would
      // store them out of order, and the checkpoint (the last one's source) would skip it.
      for (const e of events) {
        const given = opts.toNotification(e);
        const all: readonly Notification[] = given === null ? [] : Array.isArray(given) ? given : [given as Notification];
        for (const n of all) {
          const def = n.definition;
          if (def.subject === undefined) throw new Error(`${def.type} has no subject`);
          if (!def.validator.check(n.data)) {
            throw new InvalidMessageError(`relay made an invalid ${def.type} from ${e.type}`, def.validator.issues(n.data));
          }
        }
        for (const [index, n] of all.entries()) {
          if (resume !== undefined && resume.position === e.position && index <= resume.index) continue;
          await publish(e, n, index, all.length);
        }
        if (resume?.position === e.position) resume = undefined;
      }
    },
    async healthy() {
      // A publish that fails while the stream does not answer is an outage, never poison.
      try {
        await nats.jsm.streams.info(names.notificationsStream);
        return true;
      } catch {
        return false;
      }
    },
  };

  async function publish(e: StoredEvent, n: Notification, index: number, count: number): Promise<void> {
    const def = n.definition;
    if (def.subject === undefined) throw new Error(`${def.type} has no subject`);
    // The first (usually only) notification of an event keeps the plain id.
    const msgID = index === 0 ? `${names.eventsStream}:${e.position}` : `${names.eventsStream}:${e.position}:${index}`;
    const subject = def.subject;
    await inSpan(
      `send ${subject}`,
      {
        kind: 'producer',
        parent: e.meta.traceparent,
        attributes: messageAttributes({
          service: names.service,
          destination: subject,
          messageId: msgID,
          correlationId: e.meta.correlationId,
          type: def.type,
        }),
      },
      (span) => publishNotification(subject, e, n, msgID, index, count, span.traceparent),
    );
  }

  async function publishNotification(
    subject: string,
    e: StoredEvent,
    n: Notification,
    msgID: string,
    index: number,
    count: number,
    traceparent: string | undefined,
  ): Promise<void> {
    const def = n.definition;
    await nats.js.publish(subject, JSON.stringify(n.data), {
      msgID,
      expect: { streamName: names.notificationsStream },
      headers: encodeHeaders(
        {
          type: def.type,
          version: def.version,
          correlationId: e.meta.correlationId,
          causationId: msgID,
          traceparent,
        },
        count === 1
          ? { [SourceSequenceHeader]: String(e.position) }
          : {
              [SourceSequenceHeader]: String(e.position),
              [SourceIndexHeader]: String(index),
              [SourceCountHeader]: String(count),
            },
      ),
    });
  }

  return createProjectionRunner({
    nats,
    names,
    leases: opts.leases,
    instanceId: opts.instanceId,
    log: opts.log,
    target,
    source: {
      name: `${names.service}-notification-relay`,
      description: `${names.service}: relays public notifications from ${names.eventsStream} to ${names.notificationsStream}.`,
      stream: names.eventsStream,
      events: opts.events,
    },
  });
}
