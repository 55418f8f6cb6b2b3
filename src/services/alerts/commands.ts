import { Type } from 'typebox';
import { defineMessage, Uuid } from '../../../schemas/message.js';
import { defineCommandHandler } from '../../eventstore/commands.js';
import { alertAggregate, inboxAggregate } from './alert.js';

/* Alerts' commands from its HTTP API (ALERTS_COMMANDS): the caller is the user. */

export const MarkAlertRead = defineMessage({
  type: 'AlertsMarkAlertReadCommand',
  subject: 'alerts.commands.mark-alert-read',
  schema: Type.Object({ alertId: Uuid(), userId: Uuid() }, { additionalProperties: false }),
});
export const MarkAllAlertsRead = defineMessage({
  type: 'AlertsMarkAllAlertsReadCommand',
  subject: 'alerts.commands.mark-all-alerts-read',
  schema: Type.Object({ userId: Uuid(), upTo: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
});

export const alertsCommandHandlers = [
  defineCommandHandler({
    command: MarkAlertRead,
    aggregate: alertAggregate,
    aggregateId: (b) => b.alertId,
    toCommand: (b, ctx) => ({ type: 'mark-read' as const, alertId: b.alertId, userId: b.userId, at: ctx.receivedAt }),
  }),
  defineCommandHandler({
    command: MarkAllAlertsRead,
    aggregate: inboxAggregate,
    aggregateId: (b) => b.userId,
    toCommand: (b, ctx) => ({ type: 'read-all' as const, userId: b.userId, upTo: b.upTo, at: ctx.receivedAt }),
  }),
];
