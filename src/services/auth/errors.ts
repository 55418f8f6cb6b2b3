import { DomainError } from '../../eventstore/errors.js';

/** Every error auth reports, with its stable code and kind (the HTTP status follows from the kind). */
export const authErrors = {
  userNotFound: (id: string) => new DomainError('user-not-found', 'not-found', `user ${id} does not exist`),
  userExists: () => new DomainError('user-already-exists', 'conflict', 'this account exists already'),
  emailTaken: () => new DomainError('email-taken', 'conflict', 'an account with this email exists already'),
  nicknameTaken: (nickname: string) =>
    new DomainError('nickname-taken', 'conflict', `the nickname "${nickname}" is taken`, { nickname }),
  invalidCredentials: () => new DomainError('invalid-credentials', 'unauthorized', 'wrong email or password'),
  wrongPassword: () => new DomainError('wrong-password', 'forbidden', 'the current password is wrong'),
  emailNotVerified: () =>
    new DomainError('email-not-verified', 'forbidden', 'verify your email address first: follow the link we sent'),
  alreadyVerified: () => new DomainError('email-already-verified', 'conflict', 'this email address is verified already'),
  invalidToken: (what: string) =>
    new DomainError('invalid-token', 'invalid', `this ${what} link is invalid, used or expired; ask for a new one`),
  banned: (until: string | null, reason: string) =>
    new DomainError(
      'user-banned',
      'forbidden',
      until === null ? 'this account is banned' : `this account is banned until ${until}`,
      {
        until,
        reason,
      },
    ),
  notBanned: () => new DomainError('user-not-banned', 'conflict', 'this user is not banned'),
  cannotTargetSelf: (what: string) => new DomainError('cannot-target-self', 'forbidden', `you cannot ${what} yourself`),
  invalidTime: (field: string) => new DomainError('invalid-time', 'invalid', `${field} is not a time this server can keep`),
  outranked: () =>
    new DomainError(
      'outranked',
      'forbidden',
      'this user holds permissions you do not: only someone who holds them all may ban them',
    ),
  banEndInPast: () => new DomainError('ban-end-in-past', 'invalid', 'a ban must end in the future'),
  unauthenticated: () => new DomainError('unauthenticated', 'unauthorized', 'sign in first: a valid bearer token is required'),
  tokenRevoked: () =>
    new DomainError('token-revoked', 'unauthorized', 'this token was issued before your sessions ended; sign in again'),
  invalidRefreshToken: () => new DomainError('invalid-refresh-token', 'unauthorized', 'the refresh token is invalid or expired'),
  refreshTokenReused: () =>
    new DomainError('refresh-token-reused', 'unauthorized', 'this refresh token was used already; the session is ended'),
  forbidden: (permission: string) =>
    new DomainError('permission-required', 'forbidden', `this needs the permission ${permission}`, { permission }),
  rateLimited: (retryAfterSeconds: number) =>
    new DomainError('rate-limited', 'rate-limited', `too many attempts; try again in ${retryAfterSeconds} s`, {
      retryAfterSeconds,
    }),
};
