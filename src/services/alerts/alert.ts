import { DomainError } from '../../eventstore/errors.js';
import { defineAggregate, type Decider, assertNever } from '../../eventstore/decider.js';
import { AlertRaised, AlertRead, AllAlertsRead, type AlertContent, type AlertEvent, type InboxEvent } from './events.js';

export const alertErrors = {
  // The same answer whether the alert does not exist or is someone else's: ids tell nothing.
  notFound: (id: string) => new DomainError('alert-not-found', 'not-found', `alert ${id} does not exist`),
};

export type AlertCommand =
  | { type: 'raise'; alertId: string; userId: string; content: AlertContent; at: Date }
  | { type: 'mark-read'; alertId: string; userId: string; at: Date };

export type AlertState =
  { readonly status: 'none' } | { readonly status: 'raised'; readonly userId: string; readonly read: boolean };

export const alertDecider: Decider<AlertCommand, AlertEvent, AlertState> = {
  initialState: { status: 'none' },
  decide(command, state) {
    const at = command.at.toISOString();
    switch (command.type) {
      case 'raise':
        // Raised once, however often its notification comes.
        if (state.status === 'raised') return null;
        return {
          type: 'AlertsAlertRaised',
          data: { alertId: command.alertId, userId: command.userId, content: command.content, at },
        };
      case 'mark-read':
        if (state.status !== 'raised' || state.userId !== command.userId) throw alertErrors.notFound(command.alertId);
        if (state.read) return null;
        return { type: 'AlertsAlertRead', data: { alertId: command.alertId, userId: command.userId, at } };
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'AlertsAlertRaised':
        return { status: 'raised', userId: event.data.userId, read: false };
      case 'AlertsAlertRead':
        return state.status === 'raised' ? { ...state, read: true } : state;
      default:
        return assertNever(event);
    }
  },
};

export const alertAggregate = defineAggregate({ name: 'alert', decider: alertDecider, events: [AlertRaised, AlertRead] });

export type InboxCommand = { type: 'read-all'; userId: string; upTo: number; at: Date };

/**
 * A user's inbox: only "mark all as read", which covers the alerts the user had when asking (up
 * to the newest one's position), not those raised later from a backlog.
 */
export const inboxDecider: Decider<InboxCommand, InboxEvent, { readonly readUpTo: number }> = {
  initialState: { readUpTo: 0 },
  decide(command, state) {
    if (command.upTo <= state.readUpTo) return null;
    return { type: 'AlertsAllAlertsRead', data: { userId: command.userId, upTo: command.upTo, at: command.at.toISOString() } };
  },
  evolve(_state, event) {
    return { readUpTo: event.data.upTo };
  },
};

export const inboxAggregate = defineAggregate({
  name: 'inbox',
  decider: inboxDecider,
  events: [AllAlertsRead],
  snapshotEvery: 100,
});
