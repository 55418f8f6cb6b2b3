import { randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { authErrors } from './errors.js';
import { constantTimeEqual, sha256 } from './tokens.js';

/**
 * Sessions in auth's Redis. A refresh token is `<session>.<generation>.<secret>`; the session
 * keeps its current generation and the SHA-256 of the current secret (never the secret).
 * Refreshing rotates it: the generation goes up and a new secret is drawn. A token of an older
 * generation is a stolen or replayed one, so presenting it ends the session.
 */
export interface Session {
  readonly sessionId: string;
  readonly userId: string;
  readonly createdAt: Date;
}

export interface Sessions {
  /** A new session, begun no earlier than `notBefore` (the user's tokens-valid-after, from another clock). */
  create(userId: string, notBefore?: Date): Promise<{ session: Session; refreshToken: string }>;
  /** Rotates a refresh token; throws invalid-refresh-token or refresh-token-reused. */
  rotate(refreshToken: string): Promise<{ session: Session; refreshToken: string }>;
  get(sessionId: string): Promise<Session | null>;
  end(sessionId: string): Promise<void>;
  /** Ends every session of a user (a ban, a password change or reset). */
  endAll(userId: string): Promise<void>;
}

/** Secrets of earlier generations kept (as hashes) to recognise a replayed refresh token. */
const USED_KEPT = 32;
// KEYS: session, its used secrets. ARGV: generation, current hash, next hash, ttl ms.
const ROTATE = `
local g = redis.call('HGET', KEYS[1], 'generation')
if not g then return 0 end
if g ~= ARGV[1] or redis.call('HGET', KEYS[1], 'secretHash') ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[1], 'generation', tostring(tonumber(g) + 1), 'secretHash', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, ${USED_KEPT - 1})
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1`;

const sessionKey = (id: string) => `auth:session:${id}`;
const usedKey = (id: string) => `auth:session:${id}:used`;
const userKey = (userId: string) => `auth:user-sessions:${userId}`;

export function createSessions(redis: Redis, opts: { ttlMs: number }): Sessions {
  const ttl = opts.ttlMs;

  async function end(sessionId: string): Promise<void> {
    const userId = await redis.hget(sessionKey(sessionId), 'userId');
    const tx = redis.multi().del(sessionKey(sessionId), usedKey(sessionId));
    if (userId !== null) tx.srem(userKey(userId), sessionId);
    await tx.exec();
  }

  return {
    async create(userId, notBefore) {
      const sessionId = randomUUID();
      const secret = randomBytes(32).toString('base64url');
      const createdAt = new Date(Math.max(Date.now(), notBefore?.getTime() ?? 0));
      await redis
        .multi()
        .hset(sessionKey(sessionId), {
          userId,
          generation: '1',
          secretHash: sha256(secret).toString('hex'),
          createdAt: createdAt.toISOString(),
        })
        .pexpire(sessionKey(sessionId), ttl)
        .sadd(userKey(userId), sessionId)
        .pexpire(userKey(userId), ttl)
        .exec();
      return { session: { sessionId, userId, createdAt }, refreshToken: `${sessionId}.1.${secret}` };
    },

    async rotate(refreshToken) {
      const parts = refreshToken.split('.');
      const generation = Number(parts[1]);
      if (parts.length !== 3 || !Number.isSafeInteger(generation) || generation < 1) throw authErrors.invalidRefreshToken();
      const [sessionId, , secret] = parts as [string, string, string];
      const key = sessionKey(sessionId);
      const s = await redis.hgetall(key);
      if (s.userId === undefined) throw authErrors.invalidRefreshToken();
      const current = Number(s.generation);
      const presented = sha256(secret).toString('hex');
      if (generation < current) {
        // A replay only if the secret is one this session really gave: a guess at an old
        // generation, knowing only the session id, must not end someone's session.
        const used = await redis.lrange(usedKey(sessionId), 0, -1);
        if (!used.some((h) => constantTimeEqual(h, presented))) throw authErrors.invalidRefreshToken();
        await end(sessionId);
        throw authErrors.refreshTokenReused();
      }
      if (generation !== current || !constantTimeEqual(presented, s.secretHash ?? '')) {
        throw authErrors.invalidRefreshToken();
      }
      // Compare-and-set in one script (atomic on a shared connection, unlike WATCH): of two
      // refreshes racing with one token, one rotates and the other is a reuse, as if it came later.
      const next = randomBytes(32).toString('base64url');
      const swapped = await redis.eval(
        ROTATE,
        2,
        key,
        usedKey(sessionId),
        String(current),
        s.secretHash ?? '',
        sha256(next).toString('hex'),
        String(ttl),
      );
      if (swapped !== 1) {
        await end(sessionId);
        throw authErrors.refreshTokenReused();
      }
      await redis.pexpire(userKey(s.userId), ttl);
      return {
        session: { sessionId, userId: s.userId, createdAt: new Date(s.createdAt ?? 0) },
        refreshToken: `${sessionId}.${current + 1}.${next}`,
      };
    },

    async get(sessionId) {
      const s = await redis.hgetall(sessionKey(sessionId));
      if (s.userId === undefined) return null;
      return { sessionId, userId: s.userId, createdAt: new Date(s.createdAt ?? 0) };
    },

    end,

    async endAll(userId) {
      const ids = await redis.smembers(userKey(userId));
      const tx = redis.multi().del(userKey(userId));
      for (const id of ids) tx.del(sessionKey(id), usedKey(id));
      await tx.exec();
    },
  };
}
