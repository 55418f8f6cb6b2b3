import type { ChainableCommander, Redis } from 'ioredis';
import type { TSchema } from 'typebox';
import type { MessageDefinition } from '../../schemas/message.js';
import type { StoredEvent } from '../eventstore/store.js';
import type { ProjectionTarget } from './runner.js';

/**
 * A read model or cache in Redis. Its keys start with `<name>:`; `<name>:checkpoint` holds the
 * position of the last event applied, and every batch is written in one MULTI/EXEC guarded by
 * a WATCH on that key, so a redelivered event changes nothing.
 */
export interface RedisProjectionDefinition {
  readonly name: string;
  readonly events: readonly MessageDefinition<TSchema>[];
  /**
   * Queues the batch's writes on `tx` (a MULTI). Reads it needs are made with `redis` before
   * queueing; they see the state as of the last applied batch.
   */
  apply(tx: ChainableCommander, events: readonly StoredEvent[], redis: Redis): Promise<void> | void;
}

export interface RedisProjection extends ProjectionTarget {
  readonly definition: RedisProjectionDefinition;
  readonly checkpointKey: string;
  /** Deletes every key of the projection: the runner then replays it from the start. */
  clear(): Promise<void>;
}

export function createRedisProjection(definition: RedisProjectionDefinition, redis: Redis): RedisProjection {
  const checkpointKey = `${definition.name}:checkpoint`;
  return {
    definition,
    checkpointKey,
    async checkpoint() {
      return Number((await redis.get(checkpointKey)) ?? 0);
    },
    async apply(events, upTo) {
      // A dedicated connection: WATCH is per connection, and the shared one serves queries.
      const conn = redis.duplicate();
      try {
        for (;;) {
          await conn.watch(checkpointKey);
          const checkpoint = Number((await conn.get(checkpointKey)) ?? 0);
          if (upTo <= checkpoint) {
            await conn.unwatch();
            return;
          }
          const tx = conn.multi();
          const fresh = events.filter((e) => e.position > checkpoint);
          if (fresh.length > 0) await definition.apply(tx, fresh, conn);
          tx.set(checkpointKey, String(upTo));
          const result = await tx.exec();
          if (result === null) continue; // the checkpoint moved under us: read it again
          const failed = result.find(([err]) => err !== null);
          if (failed !== undefined) throw failed[0] as Error;
          return;
        }
      } finally {
        conn.disconnect();
      }
    },
    async healthy() {
      try {
        return (await redis.ping()) === 'PONG';
      } catch {
        return false;
      }
    },
    async clear() {
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${definition.name}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await redis.unlink(...keys);
      } while (cursor !== '0');
    },
  };
}
