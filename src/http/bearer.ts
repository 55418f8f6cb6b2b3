import fastifyJwt from '@fastify/jwt';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AccessTokenClaims } from '../../schemas/auth.js';
import { compileValidator } from '../../schemas/message.js';
import { DomainError } from '../eventstore/errors.js';

const claimsValidator = compileValidator(AccessTokenClaims);

/**
 * Registers access-token checking (HS256 with the shared `JWT_SECRET`) on a service's routes.
 * Only HS256 is accepted: a token naming another algorithm (or `none`) is refused.
 */
export async function registerBearer(app: FastifyInstance, secret: string): Promise<void> {
  // fast-jwt keeps the outcome of verifying a token (until it expires, at most 10 s): a client
  // sends the same access token with every request, and verifying it each time cost 6% of a
  // busy instance's main thread (bench:content). Revocation is checked apart, on every request.
  await app.register(fastifyJwt, {
    secret,
    sign: { algorithm: 'HS256' },
    verify: { algorithms: ['HS256'], cache: 10_000, cacheTTL: 10_000 },
  });
}

/** The verified claims of the request's bearer token; a missing, expired or tampered one is a 401. */
export async function bearerClaims(request: FastifyRequest): Promise<AccessTokenClaims> {
  const header = request.headers.authorization;
  if (header === undefined || !/^Bearer\s+\S+$/i.test(header)) {
    throw new DomainError('unauthenticated', 'unauthorized', 'sign in first: a valid bearer token is required');
  }
  let claims: unknown;
  try {
    claims = await request.jwtVerify();
  } catch (err) {
    const expired = (err as { code?: string }).code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED';
    throw new DomainError(
      expired ? 'token-expired' : 'invalid-token',
      'unauthorized',
      expired ? 'the access token has expired; refresh it' : 'the access token is invalid',
    );
  }
  if (!claimsValidator.check(claims)) throw new DomainError('invalid-token', 'unauthorized', 'the access token is invalid');
  return claims;
}
