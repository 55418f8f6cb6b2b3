import { Type, type Static } from 'typebox';
import { defineMessage, Timestamp, Uuid, strictObject } from '../../../schemas/message.js';
import { Nickname, PermissionSchema, RoleSchema } from '../../../schemas/auth.js';

/*
 * The events of auth's aggregates, private to auth (AUTH_EVENTS). Events that change what other
 * services keep of a user carry `user`, those facts as they are after the event, so the read
 * model and the notifications follow from one event without replaying the user.
 */

const object = strictObject;

/** A single-use token's server-side half: tokens are HMACs of it, never stored themselves. */
const PendingToken = object({ nonce: Type.String({ minLength: 16, maxLength: 64 }), expiresAt: Timestamp() });

export const UserFacts = object({
  nickname: Nickname,
  roles: Type.Array(RoleSchema),
  grantedPermissions: Type.Array(PermissionSchema),
  revokedPermissions: Type.Array(PermissionSchema),
  banned: Type.Boolean(),
  bannedUntil: Type.Union([Timestamp(), Type.Null()]),
  tokensValidAfter: Timestamp(),
  signedUpAt: Timestamp(),
});
export type UserFacts = Static<typeof UserFacts>;

const Email = Type.String({ format: 'email', maxLength: 254 });
const PasswordHash = Type.String({ minLength: 20, maxLength: 512 });

export const UserSignedUp = defineMessage({
  type: 'AuthUserSignedUp',
  schema: object({
    userId: Uuid(),
    email: Email,
    passwordHash: PasswordHash,
    verification: PendingToken,
    signedUpAt: Timestamp(),
    user: UserFacts,
  }),
});
export const EmailVerified = defineMessage({
  type: 'AuthUserEmailVerified',
  schema: object({ userId: Uuid(), verifiedAt: Timestamp() }),
});
export const VerificationRenewed = defineMessage({
  type: 'AuthUserVerificationRenewed',
  schema: object({ userId: Uuid(), email: Email, nickname: Nickname, verification: PendingToken, at: Timestamp() }),
});
export const NicknameChanged = defineMessage({
  type: 'AuthUserNicknameChanged',
  schema: object({ userId: Uuid(), previousNickname: Nickname, at: Timestamp(), user: UserFacts }),
});
export const PasswordChanged = defineMessage({
  type: 'AuthUserPasswordChanged',
  schema: object({ userId: Uuid(), email: Email, passwordHash: PasswordHash, at: Timestamp(), user: UserFacts }),
});
export const PasswordResetRequested = defineMessage({
  type: 'AuthUserPasswordResetRequested',
  schema: object({ userId: Uuid(), email: Email, nickname: Nickname, reset: PendingToken, at: Timestamp() }),
});
export const PasswordReset = defineMessage({
  type: 'AuthUserPasswordReset',
  schema: object({ userId: Uuid(), passwordHash: PasswordHash, at: Timestamp(), user: UserFacts }),
});
export const UserBanned = defineMessage({
  type: 'AuthUserBanned',
  schema: object({
    userId: Uuid(),
    reason: Type.String({ minLength: 1, maxLength: 500 }),
    until: Type.Union([Timestamp(), Type.Null()]),
    by: Uuid(),
    at: Timestamp(),
    user: UserFacts,
  }),
});
export const UserUnbanned = defineMessage({
  type: 'AuthUserUnbanned',
  schema: object({
    userId: Uuid(),
    /** Null when the ban ran out. */
    by: Type.Union([Uuid(), Type.Null()]),
    at: Timestamp(),
    user: UserFacts,
  }),
});
const roleChange = (type: string) =>
  defineMessage({ type, schema: object({ userId: Uuid(), role: RoleSchema, by: Uuid(), at: Timestamp(), user: UserFacts }) });
export const RoleGranted = roleChange('AuthUserRoleGranted');
export const RoleRevoked = roleChange('AuthUserRoleRevoked');
const permissionChange = (type: string) =>
  defineMessage({
    type,
    schema: object({ userId: Uuid(), permission: PermissionSchema, by: Uuid(), at: Timestamp(), user: UserFacts }),
  });
export const PermissionGranted = permissionChange('AuthUserPermissionGranted');
export const PermissionRevoked = permissionChange('AuthUserPermissionRevoked');

export const USER_EVENTS = [
  UserSignedUp,
  EmailVerified,
  VerificationRenewed,
  NicknameChanged,
  PasswordChanged,
  PasswordResetRequested,
  PasswordReset,
  UserBanned,
  UserUnbanned,
  RoleGranted,
  RoleRevoked,
  PermissionGranted,
  PermissionRevoked,
] as const;

export type UserEvent =
  | { type: 'AuthUserSignedUp'; data: Static<typeof UserSignedUp.schema> }
  | { type: 'AuthUserEmailVerified'; data: Static<typeof EmailVerified.schema> }
  | { type: 'AuthUserVerificationRenewed'; data: Static<typeof VerificationRenewed.schema> }
  | { type: 'AuthUserNicknameChanged'; data: Static<typeof NicknameChanged.schema> }
  | { type: 'AuthUserPasswordChanged'; data: Static<typeof PasswordChanged.schema> }
  | { type: 'AuthUserPasswordResetRequested'; data: Static<typeof PasswordResetRequested.schema> }
  | { type: 'AuthUserPasswordReset'; data: Static<typeof PasswordReset.schema> }
  | { type: 'AuthUserBanned'; data: Static<typeof UserBanned.schema> }
  | { type: 'AuthUserUnbanned'; data: Static<typeof UserUnbanned.schema> }
  | { type: 'AuthUserRoleGranted' | 'AuthUserRoleRevoked'; data: Static<typeof RoleGranted.schema> }
  | { type: 'AuthUserPermissionGranted' | 'AuthUserPermissionRevoked'; data: Static<typeof PermissionGranted.schema> };

/** Claims of a unique email or nickname (aggregates `email-claim` and `nickname-claim`). */
export const ClaimTaken = defineMessage({
  type: 'AuthClaimTaken',
  schema: object({ userId: Uuid(), at: Timestamp() }),
});
export const ClaimReleased = defineMessage({
  type: 'AuthClaimReleased',
  schema: object({ userId: Uuid(), at: Timestamp() }),
});
export type ClaimEvent =
  | { type: 'AuthClaimTaken'; data: Static<typeof ClaimTaken.schema> }
  | { type: 'AuthClaimReleased'; data: Static<typeof ClaimReleased.schema> };
