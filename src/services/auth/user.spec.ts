import { describe, it } from 'vitest';
import type { Permission, Role } from '../../../schemas/auth.js';
import { PERMISSIONS } from '../../../schemas/auth.js';
import { deciderSpec } from '../../eventstore/testing/decider-spec.js';
import type { UserEvent, UserFacts } from './events.js';
import { RESET_TTL_MS, userDecider, VERIFICATION_TTL_MS, type UserCommand } from './user.js';

const spec = deciderSpec(userDecider);

const USER = '5f0c2b8e-3d3a-4c1e-9b7a-1e2d3c4b5a61';
const ADMIN = '8a1d4e2f-6b7c-4d8e-9f01-2a3b4c5d6e72';
const EMAIL = 'ann@example.org';
const HASH = 'argon2id$first-password-hash';
const NEW_HASH = 'argon2id$second-password-hash';
const NONCE = 'verify-nonce-aaaaaaaa';
const RESET_NONCE = 'reset-nonce-bbbbbbbbbb';

const HOUR = 3_600_000;
const T0 = new Date('2025-03-01T10:00:00.000Z');
const after = (ms: number) => new Date(T0.getTime() + ms);
const isoAfter = (ms: number) => after(ms).toISOString();

/** The user's facts right after an ordinary sign-up at T0, with some changed. */
const facts = (changes: Partial<UserFacts> = {}): UserFacts => ({
  nickname: 'ann',
  roles: ['member'],
  grantedPermissions: [],
  revokedPermissions: [],
  banned: false,
  bannedUntil: null,
  tokensValidAfter: T0.toISOString(),
  signedUpAt: T0.toISOString(),
  ...changes,
});

const signedUp = (changes: Partial<UserFacts> = {}): UserEvent => ({
  type: 'AuthUserSignedUp',
  data: {
    userId: USER,
    email: EMAIL,
    passwordHash: HASH,
    verification: { nonce: NONCE, expiresAt: isoAfter(VERIFICATION_TTL_MS) },
    signedUpAt: T0.toISOString(),
    user: facts(changes),
  },
});
const signedUpAsAdmin = signedUp({ roles: ['member', 'admin'] });

const emailVerified = (at: number): UserEvent => ({
  type: 'AuthUserEmailVerified',
  data: { userId: USER, verifiedAt: isoAfter(at) },
});
const verificationRenewed = (nonce: string, at: number): UserEvent => ({
  type: 'AuthUserVerificationRenewed',
  data: {
    userId: USER,
    email: EMAIL,
    nickname: 'ann',
    verification: { nonce, expiresAt: isoAfter(at + VERIFICATION_TTL_MS) },
    at: isoAfter(at),
  },
});
const resetRequested = (nonce: string, at: number): UserEvent => ({
  type: 'AuthUserPasswordResetRequested',
  data: {
    userId: USER,
    email: EMAIL,
    nickname: 'ann',
    reset: { nonce, expiresAt: isoAfter(at + RESET_TTL_MS) },
    at: isoAfter(at),
  },
});
const passwordReset = (at: number): UserEvent => ({
  type: 'AuthUserPasswordReset',
  data: { userId: USER, passwordHash: NEW_HASH, at: isoAfter(at), user: facts({ tokensValidAfter: isoAfter(at) }) },
});
const passwordChanged = (at: number): UserEvent => ({
  type: 'AuthUserPasswordChanged',
  data: { userId: USER, email: EMAIL, passwordHash: NEW_HASH, at: isoAfter(at), user: facts({ tokensValidAfter: isoAfter(at) }) },
});
const nicknameChanged = (from: string, to: string, at: number): UserEvent => ({
  type: 'AuthUserNicknameChanged',
  data: { userId: USER, previousNickname: from, at: isoAfter(at), user: facts({ nickname: to }) },
});
/** A ban at `at` (ms after T0) lasting `until` ms after T0, or without end. */
const banned = (at: number, until: number | null): UserEvent => {
  const end = until === null ? null : isoAfter(until);
  return {
    type: 'AuthUserBanned',
    data: {
      userId: USER,
      reason: 'spam',
      until: end,
      by: ADMIN,
      at: isoAfter(at),
      user: facts({ banned: true, bannedUntil: end, tokensValidAfter: isoAfter(at) }),
    },
  };
};
/** Lifts a ban that was imposed at `bannedAt`. */
const unbanned = (bannedAt: number, at: number, by: string | null = ADMIN): UserEvent => ({
  type: 'AuthUserUnbanned',
  data: { userId: USER, by, at: isoAfter(at), user: facts({ tokensValidAfter: isoAfter(bannedAt) }) },
});
const roleChanged = (type: 'AuthUserRoleGranted' | 'AuthUserRoleRevoked', role: Role, roles: Role[], at: number): UserEvent => ({
  type,
  data: { userId: USER, role, by: ADMIN, at: isoAfter(at), user: facts({ roles }) },
});
const permissionChanged = (
  type: 'AuthUserPermissionGranted' | 'AuthUserPermissionRevoked',
  permission: Permission,
  changes: Partial<UserFacts>,
  at: number,
): UserEvent => ({
  type,
  data: { userId: USER, permission, by: ADMIN, at: isoAfter(at), user: facts(changes) },
});

const signUp = (admin = false): UserCommand => ({
  type: 'sign-up',
  userId: USER,
  email: EMAIL,
  nickname: 'ann',
  passwordHash: HASH,
  admin,
  nonce: NONCE,
  at: T0,
});

const ALL_PERMISSIONS = [...PERMISSIONS];

describe('user decider: sign-up', () => {
  it('signs a member up with a verification valid for 48 h and tokens valid from the sign-up', () => {
    spec.given([]).when(signUp()).then(signedUp());
  });

  it('gives an admin email the member and admin roles', () => {
    spec
      .given([])
      .when(signUp(true))
      .then({
        type: 'AuthUserSignedUp',
        data: {
          userId: USER,
          email: EMAIL,
          passwordHash: HASH,
          verification: { nonce: NONCE, expiresAt: '2025-03-03T10:00:00.000Z' },
          signedUpAt: '2025-03-01T10:00:00.000Z',
          user: {
            nickname: 'ann',
            roles: ['member', 'admin'],
            grantedPermissions: [],
            revokedPermissions: [],
            banned: false,
            bannedUntil: null,
            tokensValidAfter: '2025-03-01T10:00:00.000Z',
            signedUpAt: '2025-03-01T10:00:00.000Z',
          },
        },
      });
  });

  it('refuses to sign up a user that exists already', () => {
    spec.given([signedUp()]).when(signUp()).thenFails('user-already-exists');
  });
});

describe('user decider: a user that does not exist', () => {
  const commands: UserCommand[] = [
    { type: 'renew-verification', nonce: NONCE, at: T0 },
    { type: 'change-nickname', nickname: 'bea', at: T0 },
    { type: 'change-password', passwordHash: NEW_HASH, at: T0 },
    { type: 'request-password-reset', nonce: RESET_NONCE, at: T0 },
    { type: 'ban', reason: 'spam', until: null, by: ADMIN, byPermissions: ALL_PERMISSIONS, at: T0 },
    { type: 'unban', by: ADMIN, at: T0 },
    { type: 'expire-ban', until: T0.toISOString(), at: T0 },
    { type: 'grant-role', role: 'moderator', by: ADMIN, at: T0 },
    { type: 'revoke-role', role: 'member', by: ADMIN, at: T0 },
    { type: 'grant-permission', permission: 'auth.users.read', by: ADMIN, at: T0 },
    { type: 'revoke-permission', permission: 'content.post.create', by: ADMIN, at: T0 },
  ];
  it.each(commands.map((c) => [c.type, c] as const))('refuses %s with user-not-found', (_type, command) => {
    spec.given([]).when(command).thenFails('user-not-found');
  });

  it('treats a verification link for it as an invalid token', () => {
    spec.given([]).when({ type: 'verify-email', nonce: NONCE, at: T0 }).thenFails('invalid-token');
  });

  it('treats a password reset link for it as an invalid token', () => {
    spec
      .given([])
      .when({ type: 'reset-password', nonce: RESET_NONCE, passwordHash: NEW_HASH, at: T0 })
      .thenFails('invalid-token');
  });
});

describe('user decider: verify-email', () => {
  it('verifies the email with the right nonce', () => {
    spec
      .given([signedUp()])
      .when({ type: 'verify-email', nonce: NONCE, at: after(HOUR) })
      .then({ type: 'AuthUserEmailVerified', data: { userId: USER, verifiedAt: isoAfter(HOUR) } });
  });

  it('still accepts the nonce a millisecond before it expires', () => {
    spec
      .given([signedUp()])
      .when({ type: 'verify-email', nonce: NONCE, at: after(VERIFICATION_TTL_MS - 1) })
      .then({ type: 'AuthUserEmailVerified', data: { userId: USER, verifiedAt: isoAfter(VERIFICATION_TTL_MS - 1) } });
  });

  it('refuses a wrong nonce', () => {
    spec
      .given([signedUp()])
      .when({ type: 'verify-email', nonce: 'verify-nonce-aaaaaaab', at: after(HOUR) })
      .thenFails('invalid-token');
  });

  it('refuses the right nonce once 48 h have passed', () => {
    spec
      .given([signedUp()])
      .when({ type: 'verify-email', nonce: NONCE, at: after(48 * HOUR) })
      .thenFails('invalid-token');
  });

  it('refuses to verify an email twice', () => {
    spec
      .given([signedUp(), emailVerified(HOUR)])
      .when({ type: 'verify-email', nonce: NONCE, at: after(2 * HOUR) })
      .thenFails('email-already-verified');
  });

  it('refuses the first nonce after a renewal and accepts the new one', () => {
    const renewed = [signedUp(), verificationRenewed('verify-nonce-cccccccc', HOUR)];
    spec
      .given(renewed)
      .when({ type: 'verify-email', nonce: NONCE, at: after(2 * HOUR) })
      .thenFails('invalid-token');
    spec
      .given(renewed)
      .when({ type: 'verify-email', nonce: 'verify-nonce-cccccccc', at: after(2 * HOUR) })
      .then({ type: 'AuthUserEmailVerified', data: { userId: USER, verifiedAt: isoAfter(2 * HOUR) } });
  });

  it('counts a renewed nonce’s 48 h from the renewal', () => {
    const renewed = [signedUp(), verificationRenewed('verify-nonce-cccccccc', 47 * HOUR)];
    spec
      .given(renewed)
      .when({ type: 'verify-email', nonce: 'verify-nonce-cccccccc', at: after(94 * HOUR) })
      .then({ type: 'AuthUserEmailVerified', data: { userId: USER, verifiedAt: isoAfter(94 * HOUR) } });
    spec
      .given(renewed)
      .when({ type: 'verify-email', nonce: 'verify-nonce-cccccccc', at: after(95 * HOUR) })
      .thenFails('invalid-token');
  });

  it('takes a password reset as proof of the address', () => {
    spec
      .given([signedUp(), resetRequested(RESET_NONCE, HOUR), passwordReset(2 * HOUR)])
      .when({ type: 'verify-email', nonce: NONCE, at: after(3 * HOUR) })
      .thenFails('email-already-verified');
  });
});

describe('user decider: renew-verification', () => {
  it('issues a new nonce valid for 48 h from now', () => {
    spec
      .given([signedUp()])
      .when({ type: 'renew-verification', nonce: 'verify-nonce-cccccccc', at: after(50 * HOUR) })
      .then({
        type: 'AuthUserVerificationRenewed',
        data: {
          userId: USER,
          email: EMAIL,
          nickname: 'ann',
          verification: { nonce: 'verify-nonce-cccccccc', expiresAt: isoAfter(98 * HOUR) },
          at: isoAfter(50 * HOUR),
        },
      });
  });

  it('mails the current nickname', () => {
    spec
      .given([signedUp(), nicknameChanged('ann', 'bea', HOUR)])
      .when({ type: 'renew-verification', nonce: 'verify-nonce-cccccccc', at: after(2 * HOUR) })
      .then({
        type: 'AuthUserVerificationRenewed',
        data: {
          userId: USER,
          email: EMAIL,
          nickname: 'bea',
          verification: { nonce: 'verify-nonce-cccccccc', expiresAt: isoAfter(50 * HOUR) },
          at: isoAfter(2 * HOUR),
        },
      });
  });

  it('refuses to renew the verification of a verified email', () => {
    spec
      .given([signedUp(), emailVerified(HOUR)])
      .when({ type: 'renew-verification', nonce: 'verify-nonce-cccccccc', at: after(2 * HOUR) })
      .thenFails('email-already-verified');
  });
});

describe('user decider: change-nickname', () => {
  it('changes the nickname and keeps the sessions', () => {
    spec
      .given([signedUp()])
      .when({ type: 'change-nickname', nickname: 'bea', at: after(HOUR) })
      .then(nicknameChanged('ann', 'bea', HOUR));
  });

  it('treats the same nickname as a no-op', () => {
    spec
      .given([signedUp()])
      .when({ type: 'change-nickname', nickname: 'ann', at: after(HOUR) })
      .then(null);
  });

  it('changes a nickname in case only', () => {
    spec
      .given([signedUp()])
      .when({ type: 'change-nickname', nickname: 'Ann', at: after(HOUR) })
      .then(nicknameChanged('ann', 'Ann', HOUR));
  });

  it('compares with the nickname after earlier changes', () => {
    spec
      .given([signedUp(), nicknameChanged('ann', 'bea', HOUR)])
      .when({ type: 'change-nickname', nickname: 'bea', at: after(2 * HOUR) })
      .then(null);
    spec
      .given([signedUp(), nicknameChanged('ann', 'bea', HOUR)])
      .when({ type: 'change-nickname', nickname: 'ann', at: after(2 * HOUR) })
      .then({
        type: 'AuthUserNicknameChanged',
        data: { userId: USER, previousNickname: 'bea', at: isoAfter(2 * HOUR), user: facts({ nickname: 'ann' }) },
      });
  });
});

describe('user decider: change-password', () => {
  it('changes the hash and ends the sessions issued before now', () => {
    spec
      .given([signedUp()])
      .when({ type: 'change-password', passwordHash: NEW_HASH, at: after(HOUR) })
      .then(passwordChanged(HOUR));
  });

  it('keeps the other facts as they are', () => {
    spec
      .given([signedUp(), roleChanged('AuthUserRoleGranted', 'moderator', ['member', 'moderator'], HOUR)])
      .when({ type: 'change-password', passwordHash: NEW_HASH, at: after(2 * HOUR) })
      .then({
        type: 'AuthUserPasswordChanged',
        data: {
          userId: USER,
          email: EMAIL,
          passwordHash: NEW_HASH,
          at: isoAfter(2 * HOUR),
          user: facts({ roles: ['member', 'moderator'], tokensValidAfter: isoAfter(2 * HOUR) }),
        },
      });
  });

  it('voids a pending password reset', () => {
    spec
      .given([signedUp(), resetRequested(RESET_NONCE, HOUR), passwordChanged(2 * HOUR)])
      .when({ type: 'reset-password', nonce: RESET_NONCE, passwordHash: NEW_HASH, at: after(2 * HOUR + 1) })
      .thenFails('invalid-token');
  });
});

describe('user decider: request-password-reset', () => {
  it('issues a reset nonce valid for 2 h', () => {
    spec
      .given([signedUp()])
      .when({ type: 'request-password-reset', nonce: RESET_NONCE, at: after(HOUR) })
      .then({
        type: 'AuthUserPasswordResetRequested',
        data: {
          userId: USER,
          email: EMAIL,
          nickname: 'ann',
          reset: { nonce: RESET_NONCE, expiresAt: isoAfter(3 * HOUR) },
          at: isoAfter(HOUR),
        },
      });
  });

  it('replaces an earlier request: only the newest nonce works', () => {
    const twice = [signedUp(), resetRequested(RESET_NONCE, HOUR), resetRequested('reset-nonce-dddddddddd', 2 * HOUR)];
    spec
      .given(twice)
      .when({ type: 'reset-password', nonce: RESET_NONCE, passwordHash: NEW_HASH, at: after(2 * HOUR + 1) })
      .thenFails('invalid-token');
    spec
      .given(twice)
      .when({ type: 'reset-password', nonce: 'reset-nonce-dddddddddd', passwordHash: NEW_HASH, at: after(3 * HOUR) })
      .then(passwordReset(3 * HOUR));
  });
});

describe('user decider: reset-password', () => {
  const requested = [signedUp(), resetRequested(RESET_NONCE, HOUR)];

  it('sets the new hash with the right nonce and ends the sessions', () => {
    spec
      .given(requested)
      .when({ type: 'reset-password', nonce: RESET_NONCE, passwordHash: NEW_HASH, at: after(2 * HOUR) })
      .then({
        type: 'AuthUserPasswordReset',
        data: {
          userId: USER,
          passwordHash: NEW_HASH,
          at: isoAfter(2 * HOUR),
          user: facts({ tokensValidAfter: isoAfter(2 * HOUR) }),
        },
      });
  });

  it('refuses a wrong nonce', () => {
    spec
      .given(requested)
      .when({ type: 'reset-password', nonce: 'reset-nonce-bbbbbbbbbc', passwordHash: NEW_HASH, at: after(2 * HOUR) })
      .thenFails('invalid-token');
  });

  it('still accepts the nonce a millisecond before 2 h have passed', () => {
    spec
      .given(requested)
      .when({ type: 'reset-password', nonce: RESET_NONCE, passwordHash: NEW_HASH, at: after(3 * HOUR - 1) })
      .then(passwordReset(3 * HOUR - 1));
  });

  it('refuses the nonce once 2 h have passed', () => {
    spec
      .given(requested)
      .when({ type: 'reset-password', nonce: RESET_NONCE, passwordHash: NEW_HASH, at: after(3 * HOUR) })
      .thenFails('invalid-token');
  });

  it('refuses a nonce used already', () => {
    spec
      .given([...requested, passwordReset(2 * HOUR)])
      .when({ type: 'reset-password', nonce: RESET_NONCE, passwordHash: 'argon2id$third-password-hash', at: after(2 * HOUR + 1) })
      .thenFails('invalid-token');
  });

  it('refuses when no reset was requested, even with the verification nonce', () => {
    spec
      .given([signedUp()])
      .when({ type: 'reset-password', nonce: NONCE, passwordHash: NEW_HASH, at: after(HOUR) })
      .thenFails('invalid-token');
  });
});

describe('user decider: ban', () => {
  it('bans until a time, ending every session', () => {
    spec
      .given([signedUp()])
      .when({ type: 'ban', reason: 'spam', until: after(25 * HOUR), by: ADMIN, byPermissions: ALL_PERMISSIONS, at: after(HOUR) })
      .then({
        type: 'AuthUserBanned',
        data: {
          userId: USER,
          reason: 'spam',
          until: isoAfter(25 * HOUR),
          by: ADMIN,
          at: isoAfter(HOUR),
          user: facts({ banned: true, bannedUntil: isoAfter(25 * HOUR), tokensValidAfter: isoAfter(HOUR) }),
        },
      });
  });

  it('bans without end', () => {
    spec
      .given([signedUp()])
      .when({ type: 'ban', reason: 'spam', until: null, by: ADMIN, byPermissions: ALL_PERMISSIONS, at: after(HOUR) })
      .then(banned(HOUR, null));
  });

  it('refuses a self-ban', () => {
    spec
      .given([signedUpAsAdmin])
      .when({ type: 'ban', reason: 'spam', until: null, by: USER, byPermissions: ALL_PERMISSIONS, at: after(HOUR) })
      .thenFails('cannot-target-self');
  });

  it('refuses a ban that ends in the past', () => {
    spec
      .given([signedUp()])
      .when({ type: 'ban', reason: 'spam', until: after(HOUR - 1), by: ADMIN, byPermissions: ALL_PERMISSIONS, at: after(HOUR) })
      .thenFails('ban-end-in-past');
  });

  it('refuses a ban that ends as it starts', () => {
    spec
      .given([signedUp()])
      .when({ type: 'ban', reason: 'spam', until: after(HOUR), by: ADMIN, byPermissions: ALL_PERMISSIONS, at: after(HOUR) })
      .thenFails('ban-end-in-past');
  });

  it('renews a ban on a banned user', () => {
    spec
      .given([signedUp(), banned(HOUR, 25 * HOUR)])
      .when({ type: 'ban', reason: 'spam', until: null, by: ADMIN, byPermissions: ALL_PERMISSIONS, at: after(2 * HOUR) })
      .then(banned(2 * HOUR, null));
  });
});

describe('user decider: unban', () => {
  it('lifts a ban, keeping the sessions ended by it ended', () => {
    spec
      .given([signedUp(), banned(HOUR, null)])
      .when({ type: 'unban', by: ADMIN, at: after(2 * HOUR) })
      .then({
        type: 'AuthUserUnbanned',
        data: {
          userId: USER,
          by: ADMIN,
          at: isoAfter(2 * HOUR),
          user: facts({ banned: false, bannedUntil: null, tokensValidAfter: isoAfter(HOUR) }),
        },
      });
  });

  it('refuses to unban a user that is not banned', () => {
    spec
      .given([signedUp()])
      .when({ type: 'unban', by: ADMIN, at: after(HOUR) })
      .thenFails('user-not-banned');
  });

  it('refuses to unban twice', () => {
    spec
      .given([signedUp(), banned(HOUR, null), unbanned(HOUR, 2 * HOUR)])
      .when({ type: 'unban', by: ADMIN, at: after(3 * HOUR) })
      .thenFails('user-not-banned');
  });
});

describe('user decider: who may ban whom', () => {
  it('refuses a ban by someone who lacks a permission the user holds (a moderator banning an admin)', () => {
    const moderatorPermissions = PERMISSIONS.filter(
      (p) => !['content.category.manage', 'auth.users.email', 'auth.roles.manage', 'auth.permissions.manage'].includes(p),
    );
    spec
      .given([signedUpAsAdmin])
      .when({ type: 'ban', reason: 'coup', until: null, by: ADMIN, byPermissions: moderatorPermissions, at: after(HOUR) })
      .thenFails('outranked');
  });
});

describe('user decider: expire-ban', () => {
  it('does nothing for a user that is not banned', () => {
    spec
      .given([signedUp()])
      .when({ type: 'expire-ban', until: after(25 * HOUR).toISOString(), at: after(HOUR) })
      .then(null);
  });

  it('does nothing for a ban without end', () => {
    spec
      .given([signedUp(), banned(HOUR, null)])
      .when({ type: 'expire-ban', until: after(25 * HOUR).toISOString(), at: after(1000 * HOUR) })
      .then(null);
  });

  it('does nothing more than a minute before the ban ends', () => {
    spec
      .given([signedUp(), banned(HOUR, 25 * HOUR)])
      .when({ type: 'expire-ban', until: after(25 * HOUR).toISOString(), at: after(25 * HOUR - 60_001) })
      .then(null);
  });

  it('lifts a ban whose end the sweep saw come, though this command was timed a moment before it', () => {
    spec
      .given([signedUp(), banned(HOUR, 25 * HOUR)])
      .when({ type: 'expire-ban', until: after(25 * HOUR).toISOString(), at: after(25 * HOUR - 1) })
      .then(unbanned(HOUR, 25 * HOUR - 1, null));
  });

  it('does nothing for a ban whose end is not the one the sweep saw', () => {
    spec
      .given([signedUp(), banned(HOUR, 25 * HOUR)])
      .when({ type: 'expire-ban', until: after(24 * HOUR).toISOString(), at: after(25 * HOUR) })
      .then(null);
  });

  it('lifts a ban whose end has come, by nobody', () => {
    spec
      .given([signedUp(), banned(HOUR, 25 * HOUR)])
      .when({ type: 'expire-ban', until: after(25 * HOUR).toISOString(), at: after(25 * HOUR) })
      .then(unbanned(HOUR, 25 * HOUR, null));
  });

  it('lifts a ban whose end is long past', () => {
    spec
      .given([signedUp(), banned(HOUR, 25 * HOUR)])
      .when({ type: 'expire-ban', until: after(25 * HOUR).toISOString(), at: after(100 * HOUR) })
      .then(unbanned(HOUR, 100 * HOUR, null));
  });

  it('leaves a ban renewed without end as it is', () => {
    spec
      .given([signedUp(), banned(HOUR, 25 * HOUR), banned(2 * HOUR, null)])
      .when({ type: 'expire-ban', until: after(25 * HOUR).toISOString(), at: after(25 * HOUR) })
      .then(null);
  });

  it('leaves a ban extended meanwhile as it is', () => {
    spec
      .given([signedUp(), banned(HOUR, 25 * HOUR), banned(2 * HOUR, 50 * HOUR)])
      .when({ type: 'expire-ban', until: after(25 * HOUR).toISOString(), at: after(25 * HOUR) })
      .then(null);
  });

  it('does nothing for a ban lifted meanwhile', () => {
    spec
      .given([signedUp(), banned(HOUR, 25 * HOUR), unbanned(HOUR, 2 * HOUR)])
      .when({ type: 'expire-ban', until: after(25 * HOUR).toISOString(), at: after(25 * HOUR) })
      .then(null);
  });
});

describe('user decider: grant-role and revoke-role', () => {
  it('grants a role', () => {
    spec
      .given([signedUp()])
      .when({ type: 'grant-role', role: 'moderator', by: ADMIN, at: after(HOUR) })
      .then(roleChanged('AuthUserRoleGranted', 'moderator', ['member', 'moderator'], HOUR));
  });

  it('treats granting a role held already as a no-op', () => {
    spec
      .given([signedUp(), roleChanged('AuthUserRoleGranted', 'moderator', ['member', 'moderator'], HOUR)])
      .when({ type: 'grant-role', role: 'moderator', by: ADMIN, at: after(2 * HOUR) })
      .then(null);
  });

  it('revokes a role', () => {
    spec
      .given([signedUp(), roleChanged('AuthUserRoleGranted', 'moderator', ['member', 'moderator'], HOUR)])
      .when({ type: 'revoke-role', role: 'moderator', by: ADMIN, at: after(2 * HOUR) })
      .then(roleChanged('AuthUserRoleRevoked', 'moderator', ['member'], 2 * HOUR));
  });

  it('treats revoking a role not held as a no-op', () => {
    spec
      .given([signedUp()])
      .when({ type: 'revoke-role', role: 'moderator', by: ADMIN, at: after(HOUR) })
      .then(null);
  });

  it('refuses an admin revoking their own admin role', () => {
    spec
      .given([signedUpAsAdmin])
      .when({ type: 'revoke-role', role: 'admin', by: USER, at: after(HOUR) })
      .thenFails('cannot-target-self');
  });

  it('lets another admin revoke the admin role', () => {
    spec
      .given([signedUpAsAdmin])
      .when({ type: 'revoke-role', role: 'admin', by: ADMIN, at: after(HOUR) })
      .then(roleChanged('AuthUserRoleRevoked', 'admin', ['member'], HOUR));
  });

  it('lets an admin give up another of their roles', () => {
    spec
      .given([signedUpAsAdmin])
      .when({ type: 'revoke-role', role: 'member', by: USER, at: after(HOUR) })
      .then({
        type: 'AuthUserRoleRevoked',
        data: { userId: USER, role: 'member', by: USER, at: isoAfter(HOUR), user: facts({ roles: ['admin'] }) },
      });
  });
});

describe('user decider: grant-permission and revoke-permission', () => {
  it('grants a permission the roles do not give', () => {
    spec
      .given([signedUp()])
      .when({ type: 'grant-permission', permission: 'auth.users.read', by: ADMIN, at: after(HOUR) })
      .then(permissionChanged('AuthUserPermissionGranted', 'auth.users.read', { grantedPermissions: ['auth.users.read'] }, HOUR));
  });

  it('treats granting a permission granted already as a no-op', () => {
    spec
      .given([
        signedUp(),
        permissionChanged('AuthUserPermissionGranted', 'auth.users.read', { grantedPermissions: ['auth.users.read'] }, HOUR),
      ])
      .when({ type: 'grant-permission', permission: 'auth.users.read', by: ADMIN, at: after(2 * HOUR) })
      .then(null);
  });

  it('records an explicit grant of a permission the roles give too', () => {
    spec
      .given([signedUp()])
      .when({ type: 'grant-permission', permission: 'content.post.create', by: ADMIN, at: after(HOUR) })
      .then(
        permissionChanged(
          'AuthUserPermissionGranted',
          'content.post.create',
          { grantedPermissions: ['content.post.create'] },
          HOUR,
        ),
      );
  });

  it('revokes a permission the roles give by listing it as revoked', () => {
    spec
      .given([signedUp()])
      .when({ type: 'revoke-permission', permission: 'content.post.create', by: ADMIN, at: after(HOUR) })
      .then(
        permissionChanged(
          'AuthUserPermissionRevoked',
          'content.post.create',
          { revokedPermissions: ['content.post.create'] },
          HOUR,
        ),
      );
  });

  it('revokes a granted permission by removing the grant', () => {
    spec
      .given([
        signedUp(),
        permissionChanged('AuthUserPermissionGranted', 'auth.users.read', { grantedPermissions: ['auth.users.read'] }, HOUR),
      ])
      .when({ type: 'revoke-permission', permission: 'auth.users.read', by: ADMIN, at: after(2 * HOUR) })
      .then(permissionChanged('AuthUserPermissionRevoked', 'auth.users.read', {}, 2 * HOUR));
  });

  it('treats revoking a permission revoked already as a no-op', () => {
    spec
      .given([
        signedUp(),
        permissionChanged(
          'AuthUserPermissionRevoked',
          'content.post.create',
          { revokedPermissions: ['content.post.create'] },
          HOUR,
        ),
      ])
      .when({ type: 'revoke-permission', permission: 'content.post.create', by: ADMIN, at: after(2 * HOUR) })
      .then(null);
  });

  it('treats revoking a permission never held as a no-op', () => {
    spec
      .given([signedUp()])
      .when({ type: 'revoke-permission', permission: 'auth.users.ban', by: ADMIN, at: after(HOUR) })
      .then(null);
  });

  it('grants back a revoked role permission by removing it from the revoked ones', () => {
    spec
      .given([
        signedUp(),
        permissionChanged(
          'AuthUserPermissionRevoked',
          'content.post.create',
          { revokedPermissions: ['content.post.create'] },
          HOUR,
        ),
      ])
      .when({ type: 'grant-permission', permission: 'content.post.create', by: ADMIN, at: after(2 * HOUR) })
      .then(
        permissionChanged(
          'AuthUserPermissionGranted',
          'content.post.create',
          { grantedPermissions: ['content.post.create'], revokedPermissions: [] },
          2 * HOUR,
        ),
      );
  });

  it('keeps an explicit grant when the role that also gives it is revoked', () => {
    const moderator = roleChanged('AuthUserRoleGranted', 'moderator', ['member', 'moderator'], HOUR);
    const grant: UserEvent = {
      type: 'AuthUserPermissionGranted',
      data: {
        userId: USER,
        permission: 'auth.users.read',
        by: ADMIN,
        at: isoAfter(2 * HOUR),
        user: facts({ roles: ['member', 'moderator'], grantedPermissions: ['auth.users.read'] }),
      },
    };
    spec
      .given([signedUp(), moderator, grant])
      .when({ type: 'revoke-role', role: 'moderator', by: ADMIN, at: after(3 * HOUR) })
      .then({
        type: 'AuthUserRoleRevoked',
        data: {
          userId: USER,
          role: 'moderator',
          by: ADMIN,
          at: isoAfter(3 * HOUR),
          user: facts({ roles: ['member'], grantedPermissions: ['auth.users.read'] }),
        },
      });
    spec
      .given([signedUp(), moderator, grant])
      .when({ type: 'grant-permission', permission: 'auth.users.read', by: ADMIN, at: after(3 * HOUR) })
      .then(null);
  });

  it('revokes a permission both granted and given by a role by dropping the grant and listing it as revoked', () => {
    spec
      .given([
        signedUp(),
        permissionChanged(
          'AuthUserPermissionGranted',
          'content.post.create',
          { grantedPermissions: ['content.post.create'] },
          HOUR,
        ),
      ])
      .when({ type: 'revoke-permission', permission: 'content.post.create', by: ADMIN, at: after(2 * HOUR) })
      .then(
        permissionChanged(
          'AuthUserPermissionRevoked',
          'content.post.create',
          { grantedPermissions: [], revokedPermissions: ['content.post.create'] },
          2 * HOUR,
        ),
      );
  });

  it('judges role permissions by the roles held now', () => {
    spec
      .given([signedUp(), roleChanged('AuthUserRoleGranted', 'moderator', ['member', 'moderator'], HOUR)])
      .when({ type: 'revoke-permission', permission: 'auth.users.read', by: ADMIN, at: after(2 * HOUR) })
      .then({
        type: 'AuthUserPermissionRevoked',
        data: {
          userId: USER,
          permission: 'auth.users.read',
          by: ADMIN,
          at: isoAfter(2 * HOUR),
          user: facts({ roles: ['member', 'moderator'], revokedPermissions: ['auth.users.read'] }),
        },
      });
  });
});
