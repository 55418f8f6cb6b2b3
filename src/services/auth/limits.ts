import type { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { DomainError } from '../../eventstore/errors.js';
import { authErrors } from './errors.js';

/** Attempts allowed per window, per IP address and per account. */
export interface Limit {
  readonly perIp: number;
  readonly perAccount: number;
  readonly windowSeconds: number;
}

export interface AuthLimits {
  readonly signUp: Limit;
  readonly signIn: Limit;
  readonly recovery: Limit;
  readonly verificationResend: Limit;
}

export const DEFAULT_LIMITS: AuthLimits = {
  signUp: { perIp: 20, perAccount: 5, windowSeconds: 60 * 60 },
  signIn: { perIp: 50, perAccount: 10, windowSeconds: 15 * 60 },
  recovery: { perIp: 10, perAccount: 3, windowSeconds: 60 * 60 },
  verificationResend: { perIp: 10, perAccount: 3, windowSeconds: 60 * 60 },
};

export interface Limiter {
  /** Counts an attempt; throws `rate-limited` (429, with the seconds to wait) when over either limit. */
  consume(ip: string, account: string): Promise<void>;
  /** Forgets an account's attempts (after a successful sign-in). */
  forgive(account: string): Promise<void>;
}

export function createLimiter(redis: Redis, name: string, limit: Limit): Limiter {
  const byIp = new RateLimiterRedis({
    storeClient: redis,
    keyPrefix: `auth:limit:${name}:ip`,
    points: limit.perIp,
    duration: limit.windowSeconds,
  });
  const byAccount = new RateLimiterRedis({
    storeClient: redis,
    keyPrefix: `auth:limit:${name}:account`,
    points: limit.perAccount,
    duration: limit.windowSeconds,
  });
  return {
    async consume(ip, account) {
      try {
        await Promise.all([byIp.consume(ip), byAccount.consume(account)]);
      } catch (err) {
        if (err instanceof RateLimiterRes) throw authErrors.rateLimited(Math.max(1, Math.ceil(err.msBeforeNext / 1000)));
        // Without its counters auth cannot tell an attack from a user: it refuses rather than guess.
        throw new DomainError('rate-limit-unavailable', 'unavailable', 'try again in a moment');
      }
    },
    async forgive(account) {
      await byAccount.delete(account).catch(() => false);
    },
  };
}
