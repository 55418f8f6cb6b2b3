import { Type } from 'typebox';
import { defineMessage, Uuid } from '../../../schemas/message.js';
import { defineCommandHandler } from '../../eventstore/commands.js';
import type { StoredEvent } from '../../eventstore/store.js';
import { alertAggregate, inboxAggregate } from './alert.js';
import { AlertRaised, AlertsRaised, raisedAlertValidator } from './events.js';

/* Alerts' commands from its HTTP API (ALERTS_COMMANDS): the caller is the user. */

export const MarkAlertRead = defineMessage({
  type: 'AlertsMarkAlertReadCommand',
  subject: 'alerts.commands.mark-alert-read',
  schema: Type.Object(
    {
      alertId: Uuid(),
      userId: Uuid(),
      /**
       * The position of the event that raised the alert, as the inbox knows it; the handler reads
       * that event to learn whom the alert is for (an `AlertsAlertsRaised`, or the earlier form's
       * `AlertsAlertRaised`). Without it only the alert's own aggregate can say (the earlier form).
       */
      raisedAt: Type.Optional(Type.Integer({ minimum: 1 })),
    },
    { additionalProperties: false },
  ),
});
export const MarkAllAlertsRead = defineMessage({
  type: 'AlertsMarkAllAlertsReadCommand',
  subject: 'alerts.commands.mark-all-alerts-read',
  schema: Type.Object({ userId: Uuid(), upTo: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
});

/** Who the event says `alertId` was raised for; null when the event did not raise it. */
export function raisedForIn(e: StoredEvent | undefined, alertId: string): string | null {
  if (e === undefined) return null;
  if (e.type === AlertsRaised.type) {
    // Only the alert asked about is checked, not every alert of the event (up to 1,000).
    const alerts = (e.data as { alerts?: unknown } | null)?.alerts;
    const a: unknown = Array.isArray(alerts)
      ? alerts.find((x) => (x as { alertId?: unknown } | null)?.alertId === alertId)
      : undefined;
    return raisedAlertValidator.check(a) ? a.userId : null;
  }
  if (e.type === AlertRaised.type && AlertRaised.validator.check(e.data)) {
    return e.data.alertId === alertId ? e.data.userId : null;
  }
  return null;
}

export interface AlertsCommandDeps {
  /** The event at a position of ALERTS_EVENTS (one direct get). */
  eventAt(position: number): Promise<StoredEvent | undefined>;
}

export const alertsCommandHandlers = (deps: AlertsCommandDeps) => [
  defineCommandHandler({
    command: MarkAlertRead,
    aggregate: alertAggregate,
    aggregateId: (b) => b.alertId,
    toCommand: async (b, ctx) => ({
      type: 'mark-read' as const,
      alertId: b.alertId,
      userId: b.userId,
      // The event, not the cache that pointed at it, says whom the alert is for.
      raisedFor: b.raisedAt === undefined ? null : raisedForIn(await deps.eventAt(b.raisedAt), b.alertId),
      at: ctx.receivedAt,
    }),
  }),
  defineCommandHandler({
    command: MarkAllAlertsRead,
    aggregate: inboxAggregate,
    aggregateId: (b) => b.userId,
    toCommand: (b, ctx) => ({ type: 'read-all' as const, userId: b.userId, upTo: b.upTo, at: ctx.receivedAt }),
  }),
];
