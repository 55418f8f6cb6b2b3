import type { Kysely } from 'kysely';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import type { UserProfile } from '../../../schemas/auth.js';
import { LruCache } from '../../eventstore/lru.js';
import type { ServiceNames } from '../../eventstore/streams.js';
import { profileOf, type AuthReadDb } from './read-model.js';

/** A user as `AuthGetUserByIdRequest` answers it. */
export interface CachedUser {
  readonly profile: UserProfile;
  readonly email: string;
}

export interface ProfileCache {
  get(userId: string): Promise<CachedUser | null>;
  start(): void;
  stop(): void;
}

/**
 * Users as other services ask for them, kept in memory by each auth instance: a Postgres lookup
 * per request costs about five times a NATS round trip (bench:auth). Every instance listens to
 * the user events as they are published (a core subscription on `auth.events.user.*`) and
 * forgets a user at each of its events; a lookup that an event overtakes is not kept (a
 * generation per user), so a stale profile never stays. Losing the connection, or falling
 * behind, forgets everything; and entries live `ttlMs` at most, whatever happens.
 */
export function createProfileCache(opts: {
  db: Kysely<AuthReadDb>;
  nc: NatsConnection;
  names: ServiceNames;
  log: Logger;
  capacity?: number;
  ttlMs?: number;
}): ProfileCache {
  const ttl = opts.ttlMs ?? 60_000;
  const cache = new LruCache<string, { user: CachedUser; at: number }>(opts.capacity ?? 50_000);
  const generations = new Map<string, number>();
  let epoch = 0;
  let sub: Subscription | undefined;
  let statusLoop: Promise<void> | undefined;
  const prefix = `${opts.names.service}.events.user.`;

  const forgetAll = () => {
    epoch++;
    generations.clear();
    cache.clear();
  };

  return {
    async get(userId) {
      const hit = cache.get(userId);
      if (hit !== undefined && Date.now() - hit.at < ttl) return hit.user;
      const seen = { epoch, generation: generations.get(userId) ?? 0 };
      const row = await opts.db
        .selectFrom('users')
        .select([
          'id',
          'email',
          'nickname',
          'roles',
          'ranks',
          'permissions',
          'banned',
          'banned_until',
          'tokens_valid_after',
          'signed_up_at',
          'revision',
        ])
        .where('id', '=', userId)
        .executeTakeFirst();
      if (row === undefined) return null;
      const user = { profile: profileOf(row), email: row.email };
      if (seen.epoch === epoch && seen.generation === (generations.get(userId) ?? 0)) cache.set(userId, { user, at: Date.now() });
      return user;
    },
    start() {
      sub = opts.nc.subscribe(`${prefix}*`, {
        callback: (err, msg) => {
          if (err !== null) {
            forgetAll();
            return;
          }
          const userId = msg.subject.slice(prefix.length);
          generations.set(userId, (generations.get(userId) ?? 0) + 1);
          cache.delete(userId);
        },
      });
      statusLoop = (async () => {
        for await (const s of opts.nc.status()) {
          // Events published while disconnected, or dropped as a slow consumer, were not seen.
          if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'slowConsumer') {
            opts.log.debug({ status: s.type }, 'profile cache cleared');
            forgetAll();
          }
        }
      })().catch(() => undefined);
    },
    stop() {
      sub?.unsubscribe();
      forgetAll();
      void statusLoop;
    },
  };
}
