import { createHash } from 'node:crypto';
import { Redis, type ChainableCommander } from 'ioredis';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import type { MessageDefinition } from '../../schemas/message.js';
import type { StoredEvent } from '../eventstore/store.js';
import { createKeyedLock } from '../eventstore/keyed-lock.js';
import { PartiallyAppliedError, type ProjectionTarget } from './runner.js';

/** Longest pause between two attempts to reconnect to a Redis that went away. */
const REDIS_RECONNECT_MAX_MS = 1_000;

/**
 * A service's Redis connection. While Redis is down a command waits for at most three attempts
 * to reconnect (three seconds at most) and then fails, so that a request is answered 503 soon
 * rather than held (ioredis's defaults hold it for 20 s, and reconnect only every 5 s); the
 * connection is back within a second of Redis. The outage is logged once, and its end.
 */
export function connectRedis(url: string, opts: { log: Logger }): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: 2,
    retryStrategy: (attempt) => Math.min(REDIS_RECONNECT_MAX_MS, 100 * 2 ** (attempt - 1)),
  });
  let down = false;
  redis.on('error', (err) => {
    if (down) return;
    down = true;
    opts.log.warn({ err }, 'Redis connection lost, reconnecting');
  });
  redis.on('ready', () => {
    if (!down) return;
    down = false;
    opts.log.info('Redis connection back');
  });
  return redis;
}

/**
 * A read model or cache in Redis. Its keys start with `<name>:`; `<name>:checkpoint` holds the
 * position of the last event applied, and every batch is written in one MULTI/EXEC guarded by
 * a WATCH on that key, so a redelivered event changes nothing.
 */
export interface RedisProjectionDefinition {
  readonly name: string;
  readonly events: readonly MessageDefinition<TSchema>[];
  /**
   * Queues an event's writes on `tx` (a MULTI; called once per event of a batch, in order).
   * Reads it needs are made with `redis` before queueing; they see the state as of the last
   * applied batch, not the writes queued for earlier events of this one.
   */
  apply(tx: ChainableCommander, events: readonly StoredEvent[], redis: Redis): Promise<void> | void;
}

export interface RedisProjection extends ProjectionTarget {
  readonly definition: RedisProjectionDefinition;
  readonly checkpointKey: string;
  /** Deletes every key of the projection: the runner then replays it from the start. */
  clear(): Promise<void>;
  /** Closes the projection's own connection (the shared one stays the caller's). */
  close(): Promise<void>;
}

export function createRedisProjection(definition: RedisProjectionDefinition, redis: Redis): RedisProjection {
  const checkpointKey = `${definition.name}:checkpoint`;
  // Writes go through a connection of their own, one at a time: WATCH is per connection, and
  // the shared connection serves queries meanwhile.
  let own: Redis | undefined;
  const writer = () => {
    if (own === undefined) {
      own = redis.duplicate();
      // Failures surface through the commands; without a listener ioredis reports them as unhandled.
      own.on('error', () => undefined);
    }
    return own;
  };
  const lock = createKeyedLock();
  return {
    definition,
    checkpointKey,
    async checkpoint() {
      return Number((await redis.get(checkpointKey)) ?? 0);
    },
    apply(events, upTo, committed = 0) {
      return lock.run('write', async () => {
        const conn = writer();
        try {
          for (;;) {
            await conn.watch(checkpointKey);
            const checkpoint = Number((await conn.get(checkpointKey)) ?? 0);
            // Below what the runner committed: the keys were deleted meanwhile (see ProjectionTarget).
            if (upTo <= checkpoint || checkpoint < committed) {
              await conn.unwatch();
              return;
            }
            const tx = conn.multi();
            // Which commands each event queued: EXEC does not roll back, so a failed command
            // must be traced to its event.
            const ranges: { event: StoredEvent; from: number; to: number }[] = [];
            // tx.length counts the MULTI itself, which EXEC's replies do not.
            const base = tx.length;
            for (const event of events) {
              if (event.position <= checkpoint) continue;
              const from = tx.length - base;
              await definition.apply(tx, [event], conn);
              ranges.push({ event, from, to: tx.length - base });
            }
            tx.set(checkpointKey, String(upTo));
            const result = await tx.exec();
            if (result === null) continue; // the checkpoint moved under us: read it again
            const errors = result.flatMap(([err], i) => (err === null ? [] : [{ err, i }]));
            if (errors.length > 0) {
              const failed = ranges.filter((r) => errors.some((e) => e.i >= r.from && e.i < r.to)).map((r) => r.event);
              throw new PartiallyAppliedError(failed, { cause: errors[0]?.err });
            }
            return;
          }
        } catch (err) {
          await conn.unwatch().catch(() => undefined);
          throw err;
        }
      });
    },
    async healthy() {
      // A write, not a PING: a Redis that answers but refuses writes (OOM, READONLY after a
      // failover) is down for a projection, and what fails meanwhile is not poison.
      try {
        return (await redis.set(`${definition.name}:health`, String(Date.now()))) === 'OK';
      } catch {
        return false;
      }
    },
    clear() {
      // All keys in one transaction, watched on the checkpoint every batch writes: deleted
      // piecemeal, keys a batch wrote meanwhile could survive and be applied again by the replay.
      return lock.run('write', async () => {
        const conn = writer();
        try {
          for (;;) {
            await conn.watch(checkpointKey);
            const keys: string[] = [];
            let cursor = '0';
            do {
              const [next, found] = await conn.scan(cursor, 'MATCH', `${definition.name}:*`, 'COUNT', 1000);
              cursor = next;
              keys.push(...found);
            } while (cursor !== '0');
            const tx = conn.multi().del(checkpointKey);
            for (let i = 0; i < keys.length; i += 1000) tx.unlink(...keys.slice(i, i + 1000));
            if ((await tx.exec()) !== null) return;
          }
        } catch (err) {
          await conn.unwatch().catch(() => undefined);
          throw err;
        }
      });
    },
    async close() {
      own?.disconnect();
      own = undefined;
    },
  };
}

/**
 * A Lua script for projections to queue on their MULTI: its text (EVAL) the first time in that
 * transaction, which loads it into Redis's script cache, and its SHA1 (EVALSHA) after that, so a
 * batch of 500 events ships and hashes the text once rather than 500 times. EXEC runs a
 * transaction's commands in order with nothing in between, so those EVALSHAs always find the
 * script, whatever the cache held before (a restarted Redis, a SCRIPT FLUSH): no NOSCRIPT can
 * happen, and the batch stays one MULTI guarded by the checkpoint.
 */
export function queuedScript(lua: string): (tx: ChainableCommander, keys: readonly string[], args: readonly string[]) => void {
  const sha = createHash('sha1').update(lua).digest('hex');
  const loaded = new WeakSet<ChainableCommander>();
  return (tx, keys, args) => {
    if (loaded.has(tx)) {
      tx.evalsha(sha, keys.length, ...keys, ...args);
    } else {
      loaded.add(tx);
      tx.eval(lua, keys.length, ...keys, ...args);
    }
  };
}
