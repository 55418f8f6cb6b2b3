import { MailingSendEmailCommand } from '../../../schemas/mailing.js';
import type { StoredEvent } from '../../eventstore/store.js';
import type { RelayedCommand } from '../../projections/command-relay.js';
import { IMPORTANT, type AlertEvent, type IntakeEvent, type RaisedAlert } from './events.js';

/** What the alerts' email relay needs of a user: where to write, and how to greet. */
export type Addressee = { readonly email: string; readonly nickname: string } | null;

export interface EmailDeps {
  readonly publicUrl: string;
  addressee(userId: string): Promise<Addressee>;
}

/**
 * The emails an event's important alerts give (a ban, a locked thread). The address is asked of
 * auth (`AuthGetUserByIdRequest` with `includeEmail`) when the email is sent, so alerts never
 * keeps an email address: not in its replicas, not in its events. Each command's id derives
 * from its alert's id, so an alert raised again (its notification delivered again, in a later
 * batch) sends a command the mailing service already knows, and no second email.
 */
export async function emailsOf(stored: StoredEvent, deps: EmailDeps): Promise<RelayedCommand[]> {
  const event = { type: stored.type, data: stored.data } as AlertEvent | IntakeEvent;
  let alerts: readonly RaisedAlert[];
  if (event.type === 'AlertsAlertsRaised') alerts = event.data.alerts;
  else if (event.type === 'AlertsAlertRaised') alerts = [event.data];
  else return [];
  const important = alerts.filter((a) => IMPORTANT.has(a.content.kind));
  const emails = await Promise.all(
    important.map(async (a) => {
      const email = await emailOf(a, deps);
      // The earlier version's one-alert events keep the ids their commands had (from the event).
      if (email === null || event.type !== 'AlertsAlertsRaised') return email;
      // An event of one alert is in that alert's conversation already (the intake appends it so),
      // and the email continues the event's trace; an event of several gives each email the
      // trace of its own alert's notification.
      const own = alerts.length > 1 && a.trace !== undefined ? { trace: a.trace } : {};
      return { ...email, key: `alert-email:${a.alertId}`, ...own };
    }),
  );
  return emails.filter((e) => e !== null);
}

async function emailOf(alert: RaisedAlert, deps: EmailDeps): Promise<RelayedCommand | null> {
  const c = alert.content;
  if (c.kind !== 'banned' && c.kind !== 'thread-locked') return null;
  const to = await deps.addressee(alert.userId);
  if (to === null) return null;
  const recipient = { address: to.email, name: to.nickname };
  if (c.kind === 'banned') {
    return {
      definition: MailingSendEmailCommand,
      data: {
        template: 'user-banned',
        to: recipient,
        data: { nickname: to.nickname, reason: c.reason || 'no reason given', until: c.until },
      },
    };
  }
  return {
    definition: MailingSendEmailCommand,
    data: {
      template: 'thread-locked',
      to: recipient,
      data: {
        nickname: to.nickname,
        threadId: c.threadId,
        threadTitle: c.threadTitle,
        reason: c.reason,
        lockedBy: c.actor.nickname,
        link: `${deps.publicUrl.replace(/\/$/, '')}/threads/${c.threadId}`,
      },
    },
  };
}
