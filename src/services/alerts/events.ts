import { Type, type Static } from 'typebox';
import { compileValidator, defineMessage, Timestamp, Uuid, strictObject } from '../../../schemas/message.js';

/*
 * The events of alerts (ALERTS_EVENTS):
 * - an `intake` aggregate per notifications consumer (`alerts-from-content`, `alerts-from-auth`):
 *   `AlertsAlertsRaised`, the alerts raised from a batch of notifications, with the position of
 *   the last notification the batch covers (the intake's checkpoint). Each alert's id derives
 *   from the notification it came from and its recipient.
 * - an `alert` aggregate per alert, for marking it read (`AlertsAlertRead`). Alerts raised by an
 *   earlier version of the service are each an `AlertsAlertRaised` there; they are still read.
 * - an `inbox` per user for "mark all as read".
 */

const object = strictObject;
const Actor = object({ userId: Uuid(), nickname: Type.String({ minLength: 1, maxLength: 64 }) });
const Title = Type.String({ minLength: 1, maxLength: 200 });
const Excerpt = Type.String({ maxLength: 300 });

export const AlertContent = Type.Union([
  object({
    kind: Type.Literal('thread-replied'),
    threadId: Uuid(),
    threadTitle: Title,
    postId: Uuid(),
    actor: Actor,
    excerpt: Excerpt,
  }),
  object({
    kind: Type.Literal('post-replied'),
    threadId: Uuid(),
    threadTitle: Title,
    postId: Uuid(),
    replyToPostId: Uuid(),
    actor: Actor,
    excerpt: Excerpt,
  }),
  object({
    kind: Type.Literal('thread-locked'),
    threadId: Uuid(),
    threadTitle: Title,
    actor: Actor,
    reason: Type.String({ maxLength: 500 }),
  }),
  object({
    kind: Type.Literal('banned'),
    reason: Type.String({ maxLength: 500 }),
    until: Type.Union([Timestamp(), Type.Null()]),
  }),
]);
export type AlertContent = Static<typeof AlertContent>;

/** Alerts that also go out by email. */
export const IMPORTANT: ReadonlySet<AlertContent['kind']> = new Set(['banned', 'thread-locked']);

/** One alert raised (the service's earlier form; now `AlertsAlertsRaised`). */
export const AlertRaised = defineMessage({
  type: 'AlertsAlertRaised',
  schema: object({ alertId: Uuid(), userId: Uuid(), content: AlertContent, at: Timestamp() }),
});
/** The most alerts one `AlertsAlertsRaised` holds (a batch gives several events beyond it, or beyond {@link MAX_EVENT_BYTES}). */
export const MAX_ALERTS_PER_EVENT = 1_000;
/** A bound on one `AlertsAlertsRaised`'s body, well under NATS's max_payload (1 MB, nats.conf). */
export const MAX_EVENT_BYTES = 512 * 1024;

/**
 * More than the bytes an alert takes in an event's JSON: every character of its texts (and of
 * its trace, with 10 for the trace's field names) counted as 6 bytes (a JSON `\uXXXX` escape;
 * UTF-8 takes at most 3 per UTF-16 unit), plus its ids, times, field names and punctuation (at
 * most about 420 bytes; 500 are counted).
 */
export function alertBytesBound(a: {
  content: AlertContent;
  trace?: { correlationId: string; traceparent?: string | undefined } | undefined;
}): number {
  const c = a.content;
  let chars = 0;
  if (a.trace !== undefined) chars += 10 + a.trace.correlationId.length + (a.trace.traceparent?.length ?? 0);
  if ('threadTitle' in c) chars += c.threadTitle.length;
  if ('excerpt' in c) chars += c.excerpt.length;
  if ('reason' in c) chars += c.reason.length;
  if ('actor' in c) chars += c.actor.nickname.length;
  return 500 + 6 * chars;
}

/**
 * The conversation an important alert belongs to: its notification's correlation id and, when
 * tracing is on, the trace context its raise continues; the email it gives continues it too.
 */
const AlertTrace = object({
  correlationId: Type.String({ minLength: 1 }),
  traceparent: Type.Optional(Type.String()),
});

/** An alert as raised: for whom, what, when, and in which conversation. */
export const RaisedAlert = object({
  alertId: Uuid(),
  userId: Uuid(),
  content: AlertContent,
  at: Timestamp(),
  trace: Type.Optional(AlertTrace),
});
export type RaisedAlert = Static<typeof RaisedAlert>;
/** Checks one alert (the intake before it appends; mark-read on the alert it looks for). */
export const raisedAlertValidator = compileValidator(RaisedAlert);

/**
 * On an `AlertsAlertsRaised`: how many of its alerts are important (mailed). The email relay
 * passes over an event that says 0 without reading its body, as most events are only replies.
 */
export const IMPORTANT_ALERTS_HEADER = 'Obey-Important-Alerts';

export const AlertsRaised = defineMessage({
  type: 'AlertsAlertsRaised',
  schema: object({
    /** The position (in the notifications stream) of the last notification this event covers. */
    upTo: Type.Integer({ minimum: 1 }),
    /** Newest last. */
    alerts: Type.Array(RaisedAlert, { maxItems: MAX_ALERTS_PER_EVENT }),
  }),
});

export const AlertRead = defineMessage({
  type: 'AlertsAlertRead',
  schema: object({ alertId: Uuid(), userId: Uuid(), at: Timestamp() }),
});
export const AllAlertsRead = defineMessage({
  type: 'AlertsAllAlertsRead',
  schema: object({
    userId: Uuid(),
    /** The position of the newest alert the user had when they asked: that one and the older ones are read. */
    upTo: Type.Integer({ minimum: 0 }),
    at: Timestamp(),
  }),
});

export type AlertEvent =
  | { type: 'AlertsAlertRaised'; data: Static<typeof AlertRaised.schema> }
  | { type: 'AlertsAlertRead'; data: Static<typeof AlertRead.schema> };
export type InboxEvent = { type: 'AlertsAllAlertsRead'; data: Static<typeof AllAlertsRead.schema> };
export type IntakeEvent = { type: 'AlertsAlertsRaised'; data: Static<typeof AlertsRaised.schema> };

export const ALERTS_EVENTS = [AlertsRaised, AlertRaised, AlertRead, AllAlertsRead] as const;
