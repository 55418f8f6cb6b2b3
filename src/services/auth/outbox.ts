import { AuthUserBannedNotification, AuthUserChangedNotification, AuthUserSignedUpNotification } from '../../../schemas/auth.js';
import { MailingSendEmailCommand } from '../../../schemas/mailing.js';
import type { StoredEvent } from '../../eventstore/store.js';
import type { RelayedCommand } from '../../projections/command-relay.js';
import type { Notification } from '../../projections/relay.js';
import type { UserEvent } from './events.js';
import { profileFromEvent } from './read-model.js';
import { tokenFor } from './tokens.js';

/*
 * What auth's events give to the world, read from AUTH_EVENTS (the outbox) by relays: public
 * notifications, and emails through mailing.
 */

const CHANGES: Partial<Record<UserEvent['type'], string>> = {
  AuthUserNicknameChanged: 'nickname',
  AuthUserPasswordChanged: 'password',
  AuthUserPasswordReset: 'password',
  AuthUserUnbanned: 'unbanned',
  AuthUserRoleGranted: 'roles',
  AuthUserRoleRevoked: 'roles',
  AuthUserPermissionGranted: 'permissions',
  AuthUserPermissionRevoked: 'permissions',
};

export function notificationOf(stored: StoredEvent): Notification | null {
  const event = { type: stored.type, data: stored.data } as UserEvent;
  switch (event.type) {
    case 'AuthUserSignedUp':
      return {
        definition: AuthUserSignedUpNotification,
        data: { user: profileFromEvent(event.data.userId, event.data.user, stored.position), signedUpAt: event.data.signedUpAt },
      };
    case 'AuthUserBanned':
      return {
        definition: AuthUserBannedNotification,
        data: {
          user: profileFromEvent(event.data.userId, event.data.user, stored.position),
          reason: event.data.reason,
          until: event.data.until,
          bannedAt: event.data.at,
          bannedBy: event.data.by,
        },
      };
    case 'AuthUserNicknameChanged':
    case 'AuthUserPasswordChanged':
    case 'AuthUserPasswordReset':
    case 'AuthUserUnbanned':
    case 'AuthUserRoleGranted':
    case 'AuthUserRoleRevoked':
    case 'AuthUserPermissionGranted':
    case 'AuthUserPermissionRevoked':
      return {
        definition: AuthUserChangedNotification,
        data: {
          user: profileFromEvent(event.data.userId, event.data.user, stored.position),
          change: CHANGES[event.type] ?? 'user',
          changedAt: event.data.at,
        },
      };
    default:
      // Verification and reset requests change nothing other services keep.
      return null;
  }
}

/** Where emailed links point: the frontend's pages, which call the API with the token. */
export interface EmailLinks {
  readonly publicUrl: string;
  readonly tokenKey: Buffer;
}

export function emailsOf(stored: StoredEvent, links: EmailLinks): RelayedCommand[] {
  const event = { type: stored.type, data: stored.data } as UserEvent;
  const link = (page: string, token: string) =>
    `${links.publicUrl.replace(/\/$/, '')}/${page}?token=${encodeURIComponent(token)}`;
  const send = (data: unknown): RelayedCommand[] => [{ definition: MailingSendEmailCommand, data }];
  switch (event.type) {
    case 'AuthUserSignedUp':
    case 'AuthUserVerificationRenewed': {
      const d = event.data;
      const nickname = event.type === 'AuthUserSignedUp' ? event.data.user.nickname : event.data.nickname;
      return send({
        template: 'verify-email',
        to: { address: d.email, name: nickname },
        data: {
          nickname,
          link: link('verify-email', tokenFor(links.tokenKey, 'verify-email', d.userId, d.verification.nonce)),
          expiresAt: d.verification.expiresAt,
        },
      });
    }
    case 'AuthUserPasswordResetRequested': {
      const d = event.data;
      return send({
        template: 'password-reset',
        to: { address: d.email, name: d.nickname },
        data: {
          nickname: d.nickname,
          link: link('reset-password', tokenFor(links.tokenKey, 'reset-password', d.userId, d.reset.nonce)),
          expiresAt: d.reset.expiresAt,
        },
      });
    }
    case 'AuthUserPasswordChanged': {
      const d = event.data;
      return send({
        template: 'password-changed',
        to: { address: d.email, name: d.user.nickname },
        data: { nickname: d.user.nickname, changedAt: d.at },
      });
    }
    default:
      return [];
  }
}
