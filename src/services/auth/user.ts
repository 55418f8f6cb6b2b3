import type { Permission, Role } from '../../../schemas/auth.js';
import { defineAggregate, type Decider, assertNever } from '../../eventstore/decider.js';
import { authErrors } from './errors.js';
import { USER_EVENTS, type UserEvent, type UserFacts } from './events.js';
import { effectivePermissions, permissionsOfRoles } from './roles.js';
import { constantTimeEqual } from './tokens.js';

/** How long an emailed link stays valid. */
export const VERIFICATION_TTL_MS = 48 * 3_600_000;
export const RESET_TTL_MS = 2 * 3_600_000;
/** How far the ban sweep's clock may run ahead of the one that times commands. */
const CLOCK_TOLERANCE_MS = 60_000;

/**
 * What the user aggregate decides on. Times, ids, nonces and hashes come in the command (the
 * handler draws and computes them); the decider stays pure.
 */
export type UserCommand =
  | {
      type: 'sign-up';
      userId: string;
      email: string;
      nickname: string;
      passwordHash: string;
      /** The email is in OBEY_ADMIN_EMAILS. */
      admin: boolean;
      nonce: string;
      at: Date;
    }
  | { type: 'verify-email'; nonce: string; at: Date }
  | { type: 'renew-verification'; nonce: string; at: Date }
  | { type: 'change-nickname'; nickname: string; at: Date }
  | { type: 'change-password'; passwordHash: string; at: Date }
  | { type: 'request-password-reset'; nonce: string; at: Date }
  | { type: 'reset-password'; nonce: string; passwordHash: string; at: Date }
  | { type: 'ban'; reason: string; until: Date | null; by: string; byPermissions: readonly Permission[]; at: Date }
  | { type: 'unban'; by: string; at: Date }
  | { type: 'expire-ban'; until: string; at: Date }
  | { type: 'grant-role' | 'revoke-role'; role: Role; by: string; at: Date }
  | { type: 'grant-permission' | 'revoke-permission'; permission: Permission; by: string; at: Date };

interface Pending {
  readonly nonce: string;
  readonly expiresAt: string;
}

export interface Registered {
  readonly status: 'registered';
  readonly userId: string;
  readonly email: string;
  readonly passwordHash: string;
  readonly verified: boolean;
  readonly verification: Pending | null;
  readonly reset: Pending | null;
  readonly facts: UserFacts;
}

export type UserState = { readonly status: 'none' } | Registered;

export const userDecider: Decider<UserCommand, UserEvent, UserState> = {
  initialState: { status: 'none' },

  decide(command, state) {
    if (command.type === 'sign-up') {
      if (state.status === 'registered') throw authErrors.userExists();
      const at = command.at.toISOString();
      return {
        type: 'AuthUserSignedUp',
        data: {
          userId: command.userId,
          email: command.email,
          passwordHash: command.passwordHash,
          verification: { nonce: command.nonce, expiresAt: iso(command.at, VERIFICATION_TTL_MS) },
          signedUpAt: at,
          user: {
            nickname: command.nickname,
            roles: command.admin ? ['member', 'admin'] : ['member'],
            grantedPermissions: [],
            revokedPermissions: [],
            banned: false,
            bannedUntil: null,
            tokensValidAfter: at,
            signedUpAt: at,
          },
        },
      };
    }
    if (state.status !== 'registered') {
      // A link for a user that does not exist is as invalid as a forged one.
      if (command.type === 'verify-email') throw authErrors.invalidToken('verification');
      if (command.type === 'reset-password') throw authErrors.invalidToken('password reset');
      throw authErrors.userNotFound('this');
    }
    const { userId, facts } = state;
    const at = command.at.toISOString();
    switch (command.type) {
      case 'verify-email':
        if (state.verified) throw authErrors.alreadyVerified();
        if (!usable(state.verification, command.nonce, command.at)) throw authErrors.invalidToken('verification');
        return { type: 'AuthUserEmailVerified', data: { userId, verifiedAt: at } };
      case 'renew-verification':
        if (state.verified) throw authErrors.alreadyVerified();
        return {
          type: 'AuthUserVerificationRenewed',
          data: {
            userId,
            email: state.email,
            nickname: facts.nickname,
            verification: { nonce: command.nonce, expiresAt: iso(command.at, VERIFICATION_TTL_MS) },
            at,
          },
        };
      case 'change-nickname':
        if (command.nickname === facts.nickname) return null;
        return {
          type: 'AuthUserNicknameChanged',
          data: { userId, previousNickname: facts.nickname, at, user: { ...facts, nickname: command.nickname } },
        };
      case 'change-password':
        return {
          type: 'AuthUserPasswordChanged',
          data: { userId, email: state.email, passwordHash: command.passwordHash, at, user: { ...facts, tokensValidAfter: at } },
        };
      case 'request-password-reset':
        return {
          type: 'AuthUserPasswordResetRequested',
          data: {
            userId,
            email: state.email,
            nickname: facts.nickname,
            reset: { nonce: command.nonce, expiresAt: iso(command.at, RESET_TTL_MS) },
            at,
          },
        };
      case 'reset-password':
        if (!usable(state.reset, command.nonce, command.at)) throw authErrors.invalidToken('password reset');
        return {
          type: 'AuthUserPasswordReset',
          data: { userId, passwordHash: command.passwordHash, at, user: { ...facts, tokensValidAfter: at } },
        };
      case 'ban': {
        if (command.by === userId) throw authErrors.cannotTargetSelf('ban');
        // A moderator may not ban an admin: the banned user's permissions must all be the banner's.
        const held = effectivePermissions(facts.roles, facts.grantedPermissions, facts.revokedPermissions);
        if (held.some((p) => !command.byPermissions.includes(p))) throw authErrors.outranked();
        if (command.until !== null && command.until.getTime() <= command.at.getTime()) throw authErrors.banEndInPast();
        const until = command.until === null ? null : command.until.toISOString();
        return {
          type: 'AuthUserBanned',
          data: {
            userId,
            reason: command.reason,
            until,
            by: command.by,
            at,
            // A ban ends every session, like a password change.
            user: { ...facts, banned: true, bannedUntil: until, tokensValidAfter: at },
          },
        };
      }
      case 'unban':
        if (!facts.banned) throw authErrors.notBanned();
        return { type: 'AuthUserUnbanned', data: { userId, by: command.by, at, user: unbanned(facts) } };
      case 'expire-ban':
        // Sent by the ban expiry sweep for the ban it found due (by its own clock, which may run
        // a little ahead of the one that timed this command); a ban lifted or renewed meanwhile
        // stays as it is.
        if (!facts.banned || facts.bannedUntil === null || facts.bannedUntil !== command.until) return null;
        if (Date.parse(command.until) - command.at.getTime() > CLOCK_TOLERANCE_MS) return null;
        return { type: 'AuthUserUnbanned', data: { userId, by: null, at, user: unbanned(facts) } };
      case 'grant-role':
        if (facts.roles.includes(command.role)) return null;
        return {
          type: 'AuthUserRoleGranted',
          data: { userId, role: command.role, by: command.by, at, user: { ...facts, roles: [...facts.roles, command.role] } },
        };
      case 'revoke-role':
        if (!facts.roles.includes(command.role)) return null;
        if (command.role === 'admin' && command.by === userId) throw authErrors.cannotTargetSelf('revoke the admin role of');
        return {
          type: 'AuthUserRoleRevoked',
          data: {
            userId,
            role: command.role,
            by: command.by,
            at,
            user: { ...facts, roles: facts.roles.filter((r) => r !== command.role) },
          },
        };
      case 'grant-permission': {
        const p = command.permission;
        const next = {
          ...facts,
          // Granted explicitly, it stays when a role that gives it is revoked.
          grantedPermissions: facts.grantedPermissions.includes(p) ? facts.grantedPermissions : [...facts.grantedPermissions, p],
          revokedPermissions: facts.revokedPermissions.filter((x) => x !== p),
        };
        if (sameFacts(next, facts)) return null;
        return { type: 'AuthUserPermissionGranted', data: { userId, permission: p, by: command.by, at, user: next } };
      }
      case 'revoke-permission': {
        const p = command.permission;
        const fromRoles = permissionsOfRoles(facts.roles).has(p);
        const next = {
          ...facts,
          grantedPermissions: facts.grantedPermissions.filter((x) => x !== p),
          revokedPermissions:
            fromRoles && !facts.revokedPermissions.includes(p) ? [...facts.revokedPermissions, p] : facts.revokedPermissions,
        };
        if (sameFacts(next, facts)) return null;
        return { type: 'AuthUserPermissionRevoked', data: { userId, permission: p, by: command.by, at, user: next } };
      }
      default:
        return assertNever(command);
    }
  },

  evolve(state, event) {
    if (event.type === 'AuthUserSignedUp') {
      const d = event.data;
      return {
        status: 'registered',
        userId: d.userId,
        email: d.email,
        passwordHash: d.passwordHash,
        verified: false,
        verification: d.verification,
        reset: null,
        facts: d.user,
      };
    }
    if (state.status !== 'registered') return state;
    switch (event.type) {
      case 'AuthUserEmailVerified':
        return { ...state, verified: true, verification: null };
      case 'AuthUserVerificationRenewed':
        return { ...state, verification: event.data.verification };
      case 'AuthUserPasswordResetRequested':
        return { ...state, reset: event.data.reset };
      case 'AuthUserPasswordChanged':
        return { ...state, passwordHash: event.data.passwordHash, reset: null, facts: event.data.user };
      case 'AuthUserPasswordReset':
        // Following the emailed link proves the address as well as verifying it would.
        return {
          ...state,
          passwordHash: event.data.passwordHash,
          reset: null,
          verified: true,
          verification: null,
          facts: event.data.user,
        };
      case 'AuthUserNicknameChanged':
      case 'AuthUserBanned':
      case 'AuthUserUnbanned':
      case 'AuthUserRoleGranted':
      case 'AuthUserRoleRevoked':
      case 'AuthUserPermissionGranted':
      case 'AuthUserPermissionRevoked':
        return { ...state, facts: event.data.user };
      default:
        return assertNever(event);
    }
  },
};

export const userAggregate = defineAggregate({
  name: 'user',
  decider: userDecider,
  events: USER_EVENTS,
  snapshotEvery: 50,
  snapshotVersion: 1,
});

function usable(pending: Pending | null, nonce: string, at: Date): boolean {
  if (pending === null) return false;
  // Both sides are compared in full whatever the outcome: no timing tells a near miss.
  const same = constantTimeEqual(pending.nonce, nonce);
  return same && Date.parse(pending.expiresAt) > at.getTime();
}

function unbanned(facts: UserFacts): UserFacts {
  return { ...facts, banned: false, bannedUntil: null };
}

function sameFacts(a: UserFacts, b: UserFacts): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function iso(at: Date, plusMs: number): string {
  return new Date(at.getTime() + plusMs).toISOString();
}
