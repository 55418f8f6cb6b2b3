import { Type, type Static } from 'typebox';
import { defineMessage, Timestamp, Uuid, strictObject } from '../../../schemas/message.js';

/*
 * The events of alerts (ALERTS_EVENTS): an `alert` aggregate per alert (its id derives from the
 * notification it came from, so a notification delivered twice raises one alert), and an `inbox`
 * per user for "mark all as read".
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

export const AlertRaised = defineMessage({
  type: 'AlertsAlertRaised',
  schema: object({ alertId: Uuid(), userId: Uuid(), content: AlertContent, at: Timestamp() }),
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

export const ALERTS_EVENTS = [AlertRaised, AlertRead, AllAlertsRead] as const;
