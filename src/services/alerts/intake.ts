import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import { v5 as uuidv5 } from 'uuid';
import { AuthUserBannedNotification } from '../../../schemas/auth.js';
import {
  ContentPostRepliedNotification,
  ContentThreadLockedNotification,
  ContentThreadRepliedNotification,
} from '../../../schemas/content.js';
import type { MessageDefinition } from '../../../schemas/message.js';
import type { Leases } from '../../eventstore/leases.js';
import type { Nats } from '../../eventstore/nats.js';
import type { AggregateRepository } from '../../eventstore/repository.js';
import type { StoredEvent } from '../../eventstore/store.js';
import type { ServiceNames } from '../../eventstore/streams.js';
import { createProjectionRunner, type ProjectionRunner } from '../../projections/runner.js';
import type { AlertCommand, AlertState } from './alert.js';
import type { AlertContent } from './events.js';

const NAMESPACE = '3f6b2a7c-8d1e-4b5a-9c0f-2e4d6a8b1c3e';

/** The alert a notification gives: for whom, and what it says; null when it concerns nobody. */
export function alertOf(e: StoredEvent): { userId: string; content: AlertContent } | null {
  const d = e.data as Record<string, any>;
  switch (e.type) {
    case ContentThreadRepliedNotification.type:
      return {
        userId: d.threadAuthorId,
        content: {
          kind: 'thread-replied',
          threadId: d.threadId,
          threadTitle: d.threadTitle,
          postId: d.postId,
          actor: d.author,
          excerpt: d.excerpt,
        },
      };
    case ContentPostRepliedNotification.type:
      return {
        userId: d.replyToAuthorId,
        content: {
          kind: 'post-replied',
          threadId: d.threadId,
          threadTitle: d.threadTitle,
          postId: d.postId,
          replyToPostId: d.replyToPostId,
          actor: d.author,
          excerpt: d.excerpt,
        },
      };
    case ContentThreadLockedNotification.type:
      return {
        userId: d.threadAuthorId,
        content: { kind: 'thread-locked', threadId: d.threadId, threadTitle: d.threadTitle, actor: d.lockedBy, reason: d.reason },
      };
    case AuthUserBannedNotification.type:
      return { userId: d.user.userId, content: { kind: 'banned', reason: d.reason, until: d.until } };
    default:
      return null;
  }
}

/**
 * The alert's id: from the notification's own id (its `Causation-Id` is the `Nats-Msg-Id` the
 * relay gave it, which a republished copy shares) and its recipient. A notification delivered
 * twice thus raises one alert.
 */
export function alertIdOf(e: StoredEvent, stream: string, userId: string): string {
  return uuidv5(`${userId}:${e.meta.causationId ?? `${stream}:${e.position}`}`, NAMESPACE);
}

/**
 * Turns one notifications stream into alerts: a durable consumer (one instance at a time) whose
 * batches raise their alerts on the `alert` aggregate, then store the checkpoint (KV). Raising is
 * idempotent (the alert's id comes from the notification), so a batch applied again after a
 * crash raises nothing twice. Invalid notifications are parked; anything else (auth unreachable
 * for a first-sight lookup, NATS down) is an outage, retried.
 *
 * A raise is the first event of its alert, so it is appended directly with expected revision 0
 * rather than through the repository (no read of the aggregate's last revision, no lock, no cache
 * entry for an aggregate touched once): the stream refuses the append if the alert has any event
 * already, and that refusal (a ConcurrencyError) means the alert was raised before, which is what
 * the decider would have answered (`raise` on a raised alert changes nothing). Marking read still
 * goes through the decider (the command processor).
 */
export function createAlertIntake(opts: {
  nats: Nats;
  names: ServiceNames;
  leases: Leases;
  instanceId: string;
  log: Logger;
  name: string;
  stream: string;
  events: readonly MessageDefinition<TSchema>[];
  checkpoints: KV;
  alerts: AggregateRepository<AlertCommand, AlertState>;
  /** Called with each recipient before its alert is raised (first sight: the replica is fetched). */
  recipient(userId: string): Promise<unknown>;
}): ProjectionRunner {
  const key = `intake.${opts.name}`;

  /**
   * Raises the alert on its aggregate. An alert this instance has not seen is decided on as new,
   * so raising costs one append (the repository's shortcut); one that exists refuses it and the
   * decider makes it a no-op.
   */
  async function raise(alertId: string, userId: string, content: AlertContent, e: StoredEvent): Promise<void> {
    await opts.alerts.execute(
      alertId,
      { type: 'raise', alertId, userId, content, at: e.time },
      {
        commandId: uuidv5(`raise:${alertId}`, NAMESPACE),
        trace: { correlationId: e.meta.correlationId, traceparent: e.meta.traceparent },
      },
    );
  }

  return createProjectionRunner({
    nats: opts.nats,
    names: opts.names,
    leases: opts.leases,
    instanceId: opts.instanceId,
    log: opts.log,
    source: {
      name: opts.name,
      description: `alerts: raises alerts from ${opts.stream}.`,
      stream: opts.stream,
      events: opts.events,
    },
    target: {
      watchCheckpoint: false,
      parkOnlyInvalid: true,
      async checkpoint() {
        const e = await opts.checkpoints.get(key);
        return e === null || e.operation !== 'PUT' ? 0 : Number(e.string()) || 0;
      },
      async apply(events, upTo) {
        // A recipient's replica is looked up once per batch, however many of its alerts it has.
        const recipients = new Map<string, Promise<unknown>>();
        const recipient = (userId: string) => {
          let p = recipients.get(userId);
          if (p === undefined) {
            p = opts.recipient(userId);
            recipients.set(userId, p);
          }
          return p;
        };
        // Alerts are aggregates of their own: a batch raises them side by side.
        await Promise.all(
          events.map(async (e) => {
            const a = alertOf(e);
            if (a === null) return;
            await recipient(a.userId);
            await raise(alertIdOf(e, opts.stream, a.userId), a.userId, a.content, e);
          }),
        );
        await opts.checkpoints.put(key, String(upTo));
      },
      async healthy() {
        try {
          await opts.checkpoints.status();
          return true;
        } catch {
          return false;
        }
      },
    },
  });
}
