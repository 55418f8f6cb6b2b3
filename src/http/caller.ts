import type { FastifyRequest } from 'fastify';
import { isBanned, tokenAccepted, type AccessTokenClaims, type UserProfile } from '../../schemas/auth.js';
import { DomainError, NoRespondersError, RemoteError, RequestTimeoutError } from '../eventstore/errors.js';
import { bearerClaims } from './bearer.js';

/** Where a service finds what it keeps of a user (its replicas). */
export interface UserSource {
  get(userId: string): Promise<UserProfile | null>;
}

/**
 * The caller of a request in a service other than auth: a valid access token, whose user (from
 * the service's own replicas) is not banned and whose sessions did not end after the token was
 * issued (a ban, a password change or reset).
 */
export async function callerOf(
  request: FastifyRequest,
  users: UserSource,
): Promise<{ claims: AccessTokenClaims; user: UserProfile }> {
  const claims = await bearerClaims(request);
  let user: UserProfile | null;
  try {
    user = await users.get(claims.sub);
  } catch (err) {
    // Auth not answering, or answering that it cannot reach its own storage (503).
    if (
      err instanceof RequestTimeoutError ||
      err instanceof NoRespondersError ||
      (err instanceof RemoteError && err.status === 503)
    ) {
      throw new DomainError('auth-unavailable', 'unavailable', 'your account cannot be checked right now; try again shortly');
    }
    throw err;
  }
  if (user === null) throw new DomainError('token-revoked', 'unauthorized', 'the account of this token does not exist');
  const now = new Date();
  if (isBanned(user, now)) {
    throw new DomainError(
      'user-banned',
      'forbidden',
      user.bannedUntil === null ? 'this account is banned' : `this account is banned until ${user.bannedUntil}`,
      {
        until: user.bannedUntil,
      },
    );
  }
  if (!tokenAccepted(user, claims, now)) {
    throw new DomainError('token-revoked', 'unauthorized', 'this token was issued before your sessions ended; sign in again');
  }
  return { claims, user };
}
