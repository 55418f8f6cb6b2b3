import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import type { MessageDefinition } from '../../schemas/message.js';
import type { Leases } from '../eventstore/leases.js';
import type { Nats } from '../eventstore/nats.js';
import type { StoredEvent } from '../eventstore/store.js';
import type { ServiceNames } from '../eventstore/streams.js';
import { createRedisProjection, type RedisProjection } from './redis.js';
import { createProjectionRunner, type ProjectionRunner } from './runner.js';

/** One replica: its id, the revision it is at (grows with every change) and its value. */
export interface Replica<T> {
  readonly id: string;
  readonly revision: number;
  readonly value: T;
}

export interface ReplicaCacheOptions<T> {
  readonly nats: Nats;
  /** The service that keeps the cache (its dead-letter stream gets what it cannot apply). */
  readonly names: ServiceNames;
  readonly leases: Leases;
  readonly instanceId: string;
  readonly log: Logger;
  readonly redis: Redis;
  /** Key prefix and consumer name, e.g. `content-users`. */
  readonly name: string;
  readonly description: string;
  /** The notifications stream the replicas follow (another service's). */
  readonly stream: string;
  readonly events: readonly MessageDefinition<TSchema>[];
  fromNotification(event: StoredEvent): Replica<T> | null;
  /** Asks the owner for a replica not seen yet (null when it does not exist). */
  fetch(id: string): Promise<Replica<T> | null>;
}

export interface ReplicaCache<T> {
  /** Follows the notifications; start it with the service. */
  readonly runner: ProjectionRunner;
  readonly projection: RedisProjection;
  /** The replica, fetched from its owner on first sight; null when the owner knows no such id. */
  get(id: string): Promise<T | null>;
  /** Many replicas at once (for pages); those that cannot be had now are left out. */
  getMany(ids: readonly string[]): Promise<Map<string, T>>;
}

// Keeps the newer of two replicas: notifications and fetches may arrive in any order.
const PUT_IF_NEWER = `
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and tonumber(decoded.revision) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1`;

/**
 * Replicas of another service's entities in this service's Redis (e.g. users in content): a
 * Redis projection of the owner's notifications, so they rebuild from the stream and refill
 * themselves when Redis is emptied; and a replica not seen yet is fetched from its owner on
 * first sight. Each replica keeps the newest revision it has seen.
 */
export function createReplicaCache<T>(opts: ReplicaCacheOptions<T>): ReplicaCache<T> {
  const { redis, name, log } = opts;
  const key = (id: string) => `${name}:${id}`;
  const encode = (r: Replica<T>) => JSON.stringify({ revision: r.revision, value: r.value });
  const projection = createRedisProjection(
    {
      name,
      events: opts.events,
      apply(tx, events) {
        for (const e of events) {
          const r = opts.fromNotification(e);
          if (r !== null) tx.eval(PUT_IF_NEWER, 1, key(r.id), String(r.revision), encode(r));
        }
      },
    },
    redis,
  );
  const runner = createProjectionRunner({
    nats: opts.nats,
    names: opts.names,
    leases: opts.leases,
    instanceId: opts.instanceId,
    log,
    target: projection,
    source: { name, description: opts.description, stream: opts.stream, events: opts.events },
  });

  async function fetchAndKeep(id: string): Promise<T | null> {
    const r = await opts.fetch(id);
    if (r === null) return null;
    await redis.eval(PUT_IF_NEWER, 1, key(id), String(r.revision), encode(r));
    return r.value;
  }

  function decode(raw: string | null): T | undefined {
    if (raw === null) return undefined;
    try {
      return (JSON.parse(raw) as { value: T }).value;
    } catch {
      return undefined;
    }
  }

  return {
    runner,
    projection,
    async get(id) {
      return decode(await redis.get(key(id))) ?? fetchAndKeep(id);
    },
    async getMany(ids) {
      const unique = [...new Set(ids)];
      const out = new Map<string, T>();
      if (unique.length === 0) return out;
      const raws = await redis.mget(unique.map(key));
      const missing: string[] = [];
      unique.forEach((id, i) => {
        const v = decode(raws[i] ?? null);
        if (v === undefined) missing.push(id);
        else out.set(id, v);
      });
      await Promise.all(
        missing.map(async (id) => {
          try {
            const v = await fetchAndKeep(id);
            if (v !== null) out.set(id, v);
          } catch (err) {
            log.warn({ err, id, cache: name }, 'replica could not be fetched; shown without it');
          }
        }),
      );
      return out;
    },
  };
}
