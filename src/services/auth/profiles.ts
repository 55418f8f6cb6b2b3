import { DeliverPolicy, type ConsumerMessages } from '@nats-io/jetstream';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { UserProfile } from '../../../schemas/auth.js';
import { LruCache } from '../../eventstore/lru.js';
import { PULL_EXPIRES_MS, type Nats } from '../../eventstore/nats.js';
import type { ServiceNames } from '../../eventstore/streams.js';
import { profileOf, type AuthReadDb } from './read-model.js';

/** A user as `AuthGetUserByIdRequest` answers it. */
export interface CachedUser {
  readonly profile: UserProfile;
  readonly email: string;
}

export interface ProfileCache {
  get(userId: string): Promise<CachedUser | null>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Users as other services ask for them, kept in memory by each auth instance: a Postgres lookup
 * per request costs about five times a NATS round trip (bench:auth).
 *
 * Every instance follows the user events as they are appended (an ordered consumer from "new"
 * on `auth.events.user.*`) and remembers the newest position of each user it saw. A cached
 * profile is used only while it is at least that new; a row read from the read model is kept only
 * when it is (the read model may lag behind the event that just came). Until the consumer runs,
 * and after it stops, nothing is kept; entries also live `ttlMs` at most.
 */
export function createProfileCache(opts: {
  db: Kysely<AuthReadDb>;
  nats: Nats;
  names: ServiceNames;
  log: Logger;
  capacity?: number;
  ttlMs?: number;
}): ProfileCache {
  const ttl = opts.ttlMs ?? 60_000;
  const capacity = opts.capacity ?? 50_000;
  const cache = new LruCache<string, { user: CachedUser; at: number }>(capacity);
  const latest = new LruCache<string, number>(capacity * 2);
  const prefix = `${opts.names.service}.events.user.`;
  let following = false;
  let iter: ConsumerMessages | undefined;
  let loop: Promise<void> | undefined;

  const current = (userId: string, revision: number) => following && revision >= (latest.get(userId) ?? 0);

  return {
    async get(userId) {
      const hit = cache.get(userId);
      if (hit !== undefined && Date.now() - hit.at < ttl && current(userId, hit.user.profile.revision)) return hit.user;
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
      if (current(userId, user.profile.revision)) cache.set(userId, { user, at: Date.now() });
      else cache.delete(userId);
      return user;
    },
    async start() {
      const consumer = await opts.nats.js.consumers.get(opts.names.eventsStream, {
        filter_subjects: `${prefix}*`,
        deliver_policy: DeliverPolicy.New,
      });
      iter = await consumer.consume({ expires: PULL_EXPIRES_MS });
      following = true;
      loop = (async () => {
        for await (const m of iter!) {
          const userId = m.subject.slice(prefix.length);
          latest.set(userId, Math.max(latest.get(userId) ?? 0, m.seq));
          cache.delete(userId);
        }
      })()
        .catch((err: unknown) => opts.log.warn({ err }, 'profile cache stopped following user events'))
        .finally(() => {
          following = false;
          cache.clear();
        });
    },
    async stop() {
      following = false;
      iter?.stop();
      await loop;
      cache.clear();
    },
  };
}
