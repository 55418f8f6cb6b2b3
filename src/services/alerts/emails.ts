import { MailingSendEmailCommand } from '../../../schemas/mailing.js';
import type { StoredEvent } from '../../eventstore/store.js';
import type { RelayedCommand } from '../../projections/command-relay.js';
import { IMPORTANT, type AlertEvent } from './events.js';

/** What the alerts' email relay needs of a user: where to write, and how to greet. */
export type Addressee = { readonly email: string; readonly nickname: string } | null;

/**
 * The email an important alert gives (a ban, a locked thread). The address is asked of auth
 * (`AuthGetUserByIdRequest` with `includeEmail`) when the email is sent, so alerts never keeps
 * an email address: not in its replicas, not in its events.
 */
export async function emailsOf(
  stored: StoredEvent,
  deps: { publicUrl: string; addressee(userId: string): Promise<Addressee> },
): Promise<RelayedCommand[]> {
  const event = { type: stored.type, data: stored.data } as AlertEvent;
  if (event.type !== 'AlertsAlertRaised' || !IMPORTANT.has(event.data.content.kind)) return [];
  const to = await deps.addressee(event.data.userId);
  if (to === null) return [];
  const c = event.data.content;
  const recipient = { address: to.email, name: to.nickname };
  if (c.kind === 'banned') {
    return [
      {
        definition: MailingSendEmailCommand,
        data: {
          template: 'user-banned',
          to: recipient,
          data: { nickname: to.nickname, reason: c.reason || 'no reason given', until: c.until },
        },
      },
    ];
  }
  if (c.kind === 'thread-locked') {
    return [
      {
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
      },
    ];
  }
  return [];
}
