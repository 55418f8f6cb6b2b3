import { DomainError } from '../../eventstore/errors.js';
import { defineAggregate, type Decider, assertNever } from '../../eventstore/decider.js';
import { AlertRaised, AlertRead, AllAlertsRead, type AlertEvent, type InboxEvent } from './events.js';

export const alertErrors = {
  // The same answer whether the alert does not exist or is someone else's: ids tell nothing.
  notFound: (id: string) => new DomainError('alert-not-found', 'not-found', `alert ${id} does not exist`),
};

/**
 * Marking an alert read. Alerts are raised in batches on the intake's aggregate, so the alert's
 * own aggregate holds only its reads; `raisedFor` is who the alert was raised for, as the event
 * that raised it says (looked up by the command's handler), null when there is no such alert.
 */
export type AlertCommand = { type: 'mark-read'; alertId: string; userId: string; raisedFor: string | null; at: Date };

/** An alert's own events: its reads (and its raise, for an alert of the earlier version that raised one per aggregate). */
export type AlertState = { readonly raisedFor: string | null; readonly read: boolean };

export const alertDecider: Decider<AlertCommand, AlertEvent, AlertState> = {
  initialState: { raisedFor: null, read: false },
  decide(command, state) {
    switch (command.type) {
      case 'mark-read': {
        const owner = state.raisedFor ?? command.raisedFor;
        if (owner !== command.userId) throw alertErrors.notFound(command.alertId);
        if (state.read) return null;
        return {
          type: 'AlertsAlertRead',
          data: { alertId: command.alertId, userId: command.userId, at: command.at.toISOString() },
        };
      }
      default:
        return assertNever(command.type);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'AlertsAlertRaised':
        return { ...state, raisedFor: event.data.userId };
      case 'AlertsAlertRead':
        return { raisedFor: event.data.userId, read: true };
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
