import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import { v4 as uuidv4 } from 'uuid';
import { AuthUserBannedNotification } from '../../../schemas/auth.js';
import {
  ContentPostRepliedNotification,
  ContentThreadLockedNotification,
  ContentThreadRepliedNotification,
} from '../../../schemas/content.js';
import type { MessageDefinition } from '../../../schemas/message.js';
import { ConcurrencyError, InvalidMessageError } from '../../eventstore/errors.js';
import { nameUuid, namespaceOf } from '../../eventstore/ids.js';
import type { Leases } from '../../eventstore/leases.js';
import type { Nats } from '../../eventstore/nats.js';
import type { RecentAppends } from '../../eventstore/recent-appends.js';
import type { EventStore, StoredEvent } from '../../eventstore/store.js';
import type { ServiceNames } from '../../eventstore/streams.js';
import { createProjectionRunner, type ProjectionRunner } from '../../projections/runner.js';
import {
  alertBytesBound,
  IMPORTANT,
  IMPORTANT_ALERTS_HEADER,
  AlertsRaised,
  MAX_ALERTS_PER_EVENT,
  MAX_EVENT_BYTES,
  raisedAlertValidator,
  type RaisedAlert,
  type AlertContent,
} from './events.js';

const NAMESPACE = namespaceOf('3f6b2a7c-8d1e-4b5a-9c0f-2e4d6a8b1c3e');

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
  return nameUuid(`${userId}:${e.meta.causationId ?? `${stream}:${e.position}`}`, NAMESPACE);
}

/** The aggregate whose events are the alerts raised by one notifications consumer (its id: the consumer's name). */
export const INTAKE_AGGREGATE = 'intake';

/** Where an intake stands: the revision of its aggregate, and the last notification it covers. */
export interface IntakePosition {
  readonly revision: number;
  readonly upTo: number;
  /** The `upTo` of the intake's last event (below `upTo` after batches without alerts, which append nothing). */
  readonly stored: number;
  /** True while the intake runs from the earlier version's checkpoint (it has no event yet). */
  readonly legacy: boolean;
}

/**
 * A run of batches without alerts (another service's notifications the intake passes over)
 * appends a checkpoint-only event once it covers this many positions, so that a restart does not
 * read them all again.
 */
export const CHECKPOINT_EVERY = 1_000;

/**
 * An intake's position, from the last event of its aggregate (one direct get). `legacy` is the
 * checkpoint an earlier version kept in KV, used until the intake's first event.
 */
export async function intakePosition(store: EventStore, name: string, legacy?: () => Promise<number>): Promise<IntakePosition> {
  const last = await store.last(INTAKE_AGGREGATE, name);
  if (last === undefined) {
    const upTo = legacy === undefined ? 0 : await legacy();
    return { revision: 0, upTo, stored: upTo, legacy: upTo > 0 };
  }
  if (last.type !== AlertsRaised.type || !AlertsRaised.validator.check(last.data)) {
    // Only this code appends there: anything else is a stream edited by hand, not to be guessed at.
    throw new Error(`${last.subject} ends with an event that is not a valid ${AlertsRaised.type} (position ${last.position})`);
  }
  return { revision: last.position, upTo: last.data.upTo, stored: last.data.upTo, legacy: false };
}

/**
 * Turns one notifications stream into alerts: a durable consumer (one instance at a time, a
 * lease) whose batches become `AlertsAlertsRaised` events on the intake's own aggregate
 * (`alerts.events.intake.<name>`), each carrying up to {@link MAX_ALERTS_PER_EVENT} alerts (and
 * {@link MAX_EVENT_BYTES}) and the position of the last notification it covers. That position is
 * the intake's checkpoint, so an event's alerts and the checkpoint that covers them are one
 * append: each event is raised once or not at all. (A batch too large for one event becomes
 * several, each covering only the notifications of its own alerts; after a crash between two,
 * the rest is raised on the next start.) Each append expects
 * the aggregate's last revision, so an instance that lost its lease without knowing cannot
 * append behind the one that took over: its append is refused, it reads where the intake stands
 * and goes on after that.
 *
 * One append per batch (or per bounded part of it) instead of one per alert is what makes the
 * intake cheap: an acknowledged append costs several times a delivery, and the inbox projection
 * and the email relay then read one event per batch too.
 *
 * An alert's id derives from the notification's own id (its `Causation-Id`, shared by a
 * republished copy) and its recipient: a notification delivered twice within a batch raises one
 * alert, and one delivered again later (a relay republishing after a crash) is raised again with
 * the same id, which the inbox and the email relay take as the same alert (see docs/alerts.md).
 * Invalid notifications are parked; anything else (auth unreachable for a first-sight lookup,
 * NATS down) is an outage, retried.
 */
export function createAlertIntake(opts: {
  nats: Nats;
  names: ServiceNames;
  store: EventStore;
  leases: Leases;
  instanceId: string;
  log: Logger;
  name: string;
  stream: string;
  events: readonly MessageDefinition<TSchema>[];
  /** Where the service's earlier version kept the intake's checkpoint (`intake.<name>`), read until its first event. */
  checkpoints: KV;
  /** Called with each recipient before its alerts are raised (first sight: the replica is fetched). */
  recipient(userId: string): Promise<unknown>;
  /** Where the events appended are kept for the inbox of the same process (not decoded again). */
  appended?: RecentAppends;
}): ProjectionRunner {
  const { store, name } = opts;
  const legacyKey = `intake.${name}`;
  const legacy = async () => {
    const e = await opts.checkpoints.get(legacyKey);
    return e === null || e.operation !== 'PUT' ? 0 : Number(e.string()) || 0;
  };
  // Where this instance's last append left the intake; read again after a refusal or a failure.
  let position: IntakePosition | undefined;
  const read = async () => (position = await intakePosition(store, name, legacy));

  /**
   * Appends the alerts of `events` (newest last) and moves the intake to `upTo`; answers where it
   * stands then. A notification whose alert would be invalid (auth's bans fit, so only a
   * notification no service sent) fails the batch before anything is appended: the runner then
   * applies it one notification at a time and parks that one before the checkpoint passes it.
   */
  async function raise(events: readonly StoredEvent[], upTo: number, from: IntakePosition): Promise<IntakePosition> {
    const seen = new Set<string>();
    let raised: { alert: RaisedAlert; position: number }[] = [];
    const recipients = new Map<string, Promise<unknown>>();
    for (const e of events) {
      const a = alertOf(e);
      if (a === null) continue;
      const alertId = alertIdOf(e, opts.stream, a.userId);
      if (seen.has(alertId)) continue;
      seen.add(alertId);
      const alert: RaisedAlert = { alertId, userId: a.userId, content: a.content, at: e.time.toISOString() };
      // An important alert keeps its notification's conversation, which its email continues (the
      // others are only shown: their event's own trace is enough, and most alerts are those).
      if (IMPORTANT.has(a.content.kind)) {
        alert.trace =
          e.meta.traceparent === undefined
            ? { correlationId: e.meta.correlationId }
            : { correlationId: e.meta.correlationId, traceparent: e.meta.traceparent };
      }
      if (!raisedAlertValidator.check(alert)) {
        throw new InvalidMessageError(`${e.type} at ${e.position} gives an invalid alert`, raisedAlertValidator.issues(alert));
      }
      raised.push({ alert, position: e.position });
      // A recipient's replica is looked up once per batch, however many alerts it has.
      if (!recipients.has(a.userId)) recipients.set(a.userId, opts.recipient(a.userId));
    }
    await Promise.all(recipients.values());
    if (from.legacy) {
      // The earlier version raised each alert on its own aggregate, and may have raised some of
      // these before it stored its checkpoint: those are not raised again (their emails, sent
      // under the earlier ids, would go out twice).
      const known = await Promise.all(raised.map((r) => store.lastRevision('alert', r.alert.alertId)));
      raised = raised.filter((_, k) => known[k] === 0);
    }
    let at = from;
    if (raised.length === 0) {
      // A batch without alerts (passed over, or parked) appends nothing unless the intake has
      // gone CHECKPOINT_EVERY positions without an event: the next event's `upTo` covers it,
      // and until then a restart reads it again, which raises nothing again.
      if (upTo - from.stored < CHECKPOINT_EVERY) {
        at = { ...from, upTo };
        position = at;
        return at;
      }
    }
    // Events of at most MAX_ALERTS_PER_EVENT alerts and MAX_EVENT_BYTES, each covering the
    // notifications up to its last alert's (the last one: the whole batch).
    let i = 0;
    do {
      let end = i;
      let bound = 0;
      for (; end < raised.length && end - i < MAX_ALERTS_PER_EVENT; end++) {
        const next = alertBytesBound(raised[end]!.alert);
        if (bound + next > MAX_EVENT_BYTES && end > i) break;
        bound += next;
      }
      const chunk = raised.slice(i, end);
      const chunkUpTo = end >= raised.length ? upTo : raised[end - 1]!.position;
      // One important alert: the event is in its conversation; otherwise in one of its own (each
      // important alert keeps its own trace).
      const only = chunk.length === 1 ? chunk[0]!.alert.trace : undefined;
      // Every alert was checked above, and a chunk keeps within the event's bounds: the event is valid.
      const data = { upTo: chunkUpTo, alerts: chunk.map((r) => r.alert) };
      // Kept before the append: the inbox of this process may be handed the event before the
      // append returns.
      const msgId = opts.appended?.remember(data, bound);
      let revision: number;
      try {
        ({ position: revision } = await store.append({
          aggregate: INTAKE_AGGREGATE,
          id: name,
          event: { type: AlertsRaised.type, version: AlertsRaised.version, data },
          expectedRevision: at.revision,
          headers: { [IMPORTANT_ALERTS_HEADER]: String(chunk.filter((r) => IMPORTANT.has(r.alert.content.kind)).length) },
          trace: {
            correlationId: only?.correlationId ?? uuidv4(),
            causationId: `${opts.stream}:${chunkUpTo}`,
            traceparent: only?.traceparent,
          },
          ...(msgId === undefined ? {} : { msgId }),
        }));
      } catch (err) {
        if (msgId !== undefined) opts.appended?.forget(msgId);
        throw err;
      }
      at = { revision, upTo: chunkUpTo, stored: chunkUpTo, legacy: false };
      position = at;
      i = end;
    } while (i < raised.length);
    return at;
  }

  return createProjectionRunner({
    nats: opts.nats,
    names: opts.names,
    leases: opts.leases,
    instanceId: opts.instanceId,
    log: opts.log,
    source: {
      name,
      description: `alerts: raises alerts from ${opts.stream}.`,
      stream: opts.stream,
      events: opts.events,
    },
    target: {
      watchCheckpoint: false,
      parkOnlyInvalid: true,
      async prepare() {
        // The lease was (re)gained: another instance may have appended meanwhile.
        position = undefined;
      },
      async checkpoint() {
        // Not kept: this is also read for metrics while batches are applied.
        return (await intakePosition(store, name, legacy)).upTo;
      },
      async apply(events, upTo) {
        let at = position ?? (await read());
        for (;;) {
          // Covered already: by this instance before a redelivery, or by another one.
          if (upTo <= at.upTo) return;
          try {
            await raise(
              events.filter((e) => e.position > at.upTo),
              upTo,
              at,
            );
            return;
          } catch (err) {
            position = undefined;
            if (!(err instanceof ConcurrencyError)) throw err;
            // Another instance appended: go on after what it covers.
            at = await read();
          }
        }
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
