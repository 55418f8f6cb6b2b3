import { Type, type Static } from 'typebox';
import { defineMessage, Timestamp, Uuid } from './message.js';

/**
 * Every permission a user can hold. Roles are named sets of them (auth decides which); other
 * services check permissions, never roles, so a role can change without touching them.
 */
export const PERMISSIONS = [
  'content.thread.create',
  'content.post.create',
  'content.post.moderate',
  'content.thread.moderate',
  'content.thread.lock',
  'content.thread.pin',
  'content.category.manage',
  'auth.users.read',
  'auth.users.email',
  'auth.users.ban',
  'auth.roles.manage',
  'auth.permissions.manage',
] as const;
export type Permission = (typeof PERMISSIONS)[number];
export const PermissionSchema = Type.Enum(PERMISSIONS);

export const ROLES = ['member', 'moderator', 'admin'] as const;
export type Role = (typeof ROLES)[number];
export const RoleSchema = Type.Enum(ROLES);

export const Nickname = Type.String({
  minLength: 3,
  maxLength: 32,
  pattern: '^[\\p{L}\\p{N}][\\p{L}\\p{N}_.-]*$',
  description: 'Letters, digits, "_", "." and "-", starting with a letter or digit; unique regardless of case',
});

/**
 * What other services keep of a user (their replicas): everything they need to show the user
 * and to decide what the user may do. `revision` grows with every change, so a replica keeps
 * the newest it has seen whatever order updates arrive in.
 */
export const UserProfile = Type.Object(
  {
    userId: Uuid(),
    nickname: Nickname,
    roles: Type.Array(RoleSchema),
    /** Display titles that follow from the roles, highest first. */
    ranks: Type.Array(Type.String()),
    /** Effective permissions: those of the roles plus granted ones, minus revoked ones. */
    permissions: Type.Array(PermissionSchema),
    banned: Type.Boolean(),
    /** When a timed ban lifts itself; null for a ban without end or no ban. */
    bannedUntil: Type.Union([Timestamp(), Type.Null()]),
    /** Access tokens issued before this time are refused by every service. */
    tokensValidAfter: Timestamp(),
    /** When the account was made; young accounts may be held to stricter limits. */
    signedUpAt: Timestamp(),
    revision: Type.Integer({ minimum: 1 }),
  },
  { additionalProperties: false },
);
export type UserProfile = Static<typeof UserProfile>;

export const AuthUserSignedUpNotification = defineMessage({
  type: 'AuthUserSignedUpNotification',
  subject: 'auth.notifications.user-signed-up',
  schema: Type.Object({ user: UserProfile, signedUpAt: Timestamp() }, { additionalProperties: false }),
});

export const AuthUserChangedNotification = defineMessage({
  type: 'AuthUserChangedNotification',
  subject: 'auth.notifications.user-changed',
  schema: Type.Object(
    {
      user: UserProfile,
      /** What changed, e.g. `nickname`, `roles`, `permissions`, `unbanned`, `password`. */
      change: Type.String(),
      changedAt: Timestamp(),
    },
    { additionalProperties: false },
  ),
});

export const AuthUserBannedNotification = defineMessage({
  type: 'AuthUserBannedNotification',
  subject: 'auth.notifications.user-banned',
  schema: Type.Object(
    {
      user: UserProfile,
      reason: Type.String(),
      until: Type.Union([Timestamp(), Type.Null()]),
      bannedAt: Timestamp(),
      bannedBy: Uuid(),
    },
    { additionalProperties: false },
  ),
});

export const AuthGetUserByIdRequest = defineMessage({
  type: 'AuthGetUserByIdRequest',
  subject: 'auth.requests.get-user-by-id',
  schema: Type.Object(
    {
      userId: Uuid(),
      /** Only for a caller that must address an email to the user (alerts). */
      includeEmail: Type.Optional(Type.Boolean()),
    },
    { additionalProperties: false },
  ),
});

export const AuthGetUserByIdResponse = defineMessage({
  type: 'AuthGetUserByIdResponse',
  schema: Type.Object(
    { user: UserProfile, email: Type.Optional(Type.String({ format: 'email' })) },
    { additionalProperties: false },
  ),
});

/**
 * The claims of an access token (HS256, signed by auth with `JWT_SECRET`). `iat_ms` is the
 * issue time in milliseconds: `iat` counts whole seconds, too coarse to compare with a
 * `tokensValidAfter` set a moment before a new sign-in.
 */
export const AccessTokenClaims = Type.Object({
  sub: Uuid(),
  sid: Type.String({ minLength: 1 }),
  iat: Type.Integer(),
  iat_ms: Type.Integer(),
  exp: Type.Integer(),
});
export type AccessTokenClaims = Static<typeof AccessTokenClaims>;

/**
 * Whether a replica's user may act with a token: not banned (a timed ban past its end counts as
 * lifted, even before auth says so), and the token issued after the user's sessions were last
 * ended (a ban, a password change or reset).
 */
export function tokenAccepted(
  user: Pick<UserProfile, 'banned' | 'bannedUntil' | 'tokensValidAfter'>,
  claims: Pick<AccessTokenClaims, 'iat_ms'>,
  now: Date,
): boolean {
  if (claims.iat_ms < Date.parse(user.tokensValidAfter)) return false;
  return !isBanned(user, now);
}

export function isBanned(user: Pick<UserProfile, 'banned' | 'bannedUntil'>, now: Date): boolean {
  return user.banned && (user.bannedUntil === null || Date.parse(user.bannedUntil) > now.getTime());
}
