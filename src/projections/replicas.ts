import type { Msg, Status, Subscription } from '@nats-io/nats-core';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import type { MessageDefinition } from '../../schemas/message.js';
import type { Leases } from '../eventstore/leases.js';
import type { Nats } from '../eventstore/nats.js';
import { LruCache } from '../eventstore/lru.js';
import { decodeHeaders, decodeJson } from '../eventstore/headers.js';
import type { StoredEvent } from '../eventstore/store.js';
import type { ServiceNames } from '../eventstore/streams.js';
import { createRedisProjection, queuedScript, type RedisProjection } from './redis.js';
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
  /** Replicas each instance keeps in memory besides Redis (default 10,000; 0: none). */
  readonly memoCapacity?: number;
  /** How long a replica is used from memory at most (default 60 s). */
  readonly memoTtlMs?: number;
}

export interface ReplicaCache<T> {
  /** Follows the notifications; start it with the service. */
  readonly runner: ProjectionRunner;
  readonly projection: RedisProjection;
  /** The replica, fetched from its owner on first sight; null when the owner knows no such id. */
  get(id: string): Promise<T | null>;
  /** Many replicas at once (for pages); those that cannot be had now are left out. */
  getMany(ids: readonly string[]): Promise<Map<string, T>>;
  /** Starts this instance's memory of replicas (it follows the notifications from now on). */
  startMemo(): Promise<void>;
  stopMemo(): Promise<void>;
}

/** How long a replica read from Redis is used from memory (see `remember`). */
const REDIS_READ_TTL_MS = 5_000;

// Keeps the newer of two replicas: notifications and fetches may arrive in any order.
const PUT_IF_NEWER = `
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and tonumber(decoded.revision) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1`;
const putIfNewer = queuedScript(PUT_IF_NEWER);

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
          if (r !== null) putIfNewer(tx, [key(r.id)], [String(r.revision), encode(r)]);
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

  /*
   * Each instance also keeps the replicas it used lately in memory, so that a request needs no
   * Redis read for its caller (bench:content). Every instance hears the notifications itself (a
   * plain subscription to their subjects; the stream is not needed to hear what is published
   * from now on) and keeps the newest revision of each id it heard of. A replica read from Redis
   * or fetched from its owner is remembered only when it is at least that new: Redis may lag
   * behind the notification that just came. A notification's own replica replaces an older one
   * in memory. Nothing is remembered before the subscription runs, nor while the connection is
   * down (what was published meanwhile went unheard: memory is emptied). An entry is used for
   * `memoTtlMs` at most, and one read from Redis for 5 s at most (Redis may lag behind a
   * notification this instance did not hear).
   */
  const memoCapacity = opts.memoCapacity ?? 10_000;
  const memoTtl = opts.memoTtlMs ?? 60_000;
  const memo = new LruCache<string, { replica: Replica<T>; until: number }>(Math.max(1, memoCapacity));
  const newest = new LruCache<string, number>(Math.max(1, memoCapacity * 2));
  const definitions = new Map(opts.events.map((d) => [d.type, d]));
  let following = false;
  let subscriptions: Subscription[] = [];
  let statuses: (AsyncIterable<Status> & { stop?: () => void }) | undefined;

  /**
   * `fromRedis`: Redis may be behind a notification this instance never heard (published while
   * it was starting or disconnected, before the projection applied it), so such a value is
   * used from memory for `REDIS_READ_TTL_MS` only; what the owner or a notification said, for
   * `memoTtl`.
   */
  function remember(r: Replica<T>, fromRedis = false): void {
    if (!following) return;
    if (r.revision < (newest.get(r.id) ?? 0)) return;
    const held = memo.get(r.id);
    const ttl = fromRedis ? Math.min(memoTtl, REDIS_READ_TTL_MS) : memoTtl;
    if (held === undefined || held.replica.revision <= r.revision) memo.set(r.id, { replica: r, until: Date.now() + ttl });
  }
  function recall(id: string): T | undefined {
    const held = memo.get(id);
    if (held === undefined) return undefined;
    if (!following || Date.now() >= held.until || held.replica.revision < (newest.get(id) ?? 0)) {
      memo.delete(id);
      return undefined;
    }
    return held.replica.value;
  }
  function heard(m: Msg): void {
    let e: StoredEvent;
    try {
      const meta = decodeHeaders(m.headers);
      // A live notification's position in its stream is not known here; no replica needs it.
      e = {
        type: meta.type,
        version: meta.version,
        data: decodeJson(m.data),
        meta,
        subject: m.subject,
        position: 0,
        time: new Date(),
      };
    } catch {
      return;
    }
    const def = definitions.get(e.type);
    // What the runner would refuse (and park) is not remembered either.
    if (def === undefined || e.version !== def.version || !def.validator.check(e.data)) return;
    const r = opts.fromNotification(e);
    if (r === null) return;
    newest.set(r.id, Math.max(newest.get(r.id) ?? 0, r.revision));
    remember(r);
  }

  async function fetchAndKeep(id: string): Promise<T | null> {
    const r = await opts.fetch(id);
    if (r === null) return null;
    await redis.eval(PUT_IF_NEWER, 1, key(id), String(r.revision), encode(r));
    remember(r);
    return r.value;
  }

  function decode(id: string, raw: string | null): T | undefined {
    if (raw === null) return undefined;
    try {
      const { revision, value } = JSON.parse(raw) as { revision: number; value: T };
      if (typeof revision === 'number') remember({ id, revision, value }, true);
      return value;
    } catch {
      return undefined;
    }
  }

  return {
    runner,
    projection,
    async get(id) {
      return recall(id) ?? decode(id, await redis.get(key(id))) ?? fetchAndKeep(id);
    },
    async getMany(ids) {
      const unique = [...new Set(ids)];
      const out = new Map<string, T>();
      if (unique.length === 0) return out;
      const unknown: string[] = [];
      for (const id of unique) {
        const v = recall(id);
        if (v === undefined) unknown.push(id);
        else out.set(id, v);
      }
      if (unknown.length === 0) return out;
      const raws = await redis.mget(unknown.map(key));
      const missing: string[] = [];
      unknown.forEach((id, i) => {
        const v = decode(id, raws[i] ?? null);
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
    async startMemo() {
      if (memoCapacity === 0 || subscriptions.length > 0) return;
      const { nc } = opts.nats;
      subscriptions = opts.events
        .map((d) => d.subject)
        .filter((subject): subject is string => subject !== undefined)
        .map((subject) =>
          nc.subscribe(subject, {
            callback: (err, m) => {
              if (err === null) heard(m);
            },
          }),
        );
      await nc.flush();
      following = !nc.isClosed();
      statuses = nc.status();
      void (async () => {
        for await (const st of statuses!) {
          if (st.type === 'disconnect') {
            following = false;
            memo.clear();
          } else if (st.type === 'reconnect') {
            following = subscriptions.length > 0;
          }
        }
      })().catch(() => undefined);
    },
    async stopMemo() {
      following = false;
      for (const sub of subscriptions.splice(0)) sub.unsubscribe();
      statuses?.stop?.();
      statuses = undefined;
      memo.clear();
    },
  };
}
