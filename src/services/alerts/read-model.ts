import type { Redis } from 'ioredis';
import type { AlertContent, AlertEvent, InboxEvent } from './events.js';
import { ALERTS_EVENTS } from './events.js';
import type { RedisProjectionDefinition } from '../../projections/redis.js';

/**
 * Alerts in alerts' Redis, a projection of ALERTS_EVENTS (so a flushed Redis comes back from the
 * stream, read states included). Keys, under `alerts-inbox:`:
 * - `alert:<id>`: a hash (user, content as JSON, raised time, position, read flag);
 * - `list:<user>` and `unread:<user>`: sorted sets of alert ids by position (newest last);
 * The writes of one event are one script, so they apply whole, in order, inside the batch's
 * MULTI. (The scripts touch keys they compute: a single Redis, not a cluster.)
 */
export const PREFIX = 'alerts-inbox';
const alertKey = (id: string) => `${PREFIX}:alert:${id}`;
const listKey = (userId: string) => `${PREFIX}:list:${userId}`;
const unreadKey = (userId: string) => `${PREFIX}:unread:${userId}`;

// KEYS: alert, list, unread. ARGV: id, user, content, raisedAt ms, position.
const RAISE = `
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'userId', ARGV[2], 'content', ARGV[3], 'raisedAt', ARGV[4], 'position', ARGV[5], 'read', '0')
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
return 1`;

// KEYS: unread. ARGV: up to (position), alert key prefix.
const READ_ALL = `
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  redis.call('HSET', ARGV[2] .. id, 'read', '1')
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return 1`;

export const inboxProjection: RedisProjectionDefinition = {
  name: PREFIX,
  events: ALERTS_EVENTS,
  apply(tx, events) {
    for (const stored of events) {
      const event = { type: stored.type, data: stored.data } as AlertEvent | InboxEvent;
      switch (event.type) {
        case 'AlertsAlertRaised': {
          const d = event.data;
          tx.eval(
            RAISE,
            3,
            alertKey(d.alertId),
            listKey(d.userId),
            unreadKey(d.userId),
            d.alertId,
            d.userId,
            JSON.stringify(d.content),
            String(Date.parse(d.at)),
            String(stored.position),
          );
          break;
        }
        case 'AlertsAlertRead':
          tx.hset(alertKey(event.data.alertId), 'read', '1');
          tx.zrem(unreadKey(event.data.userId), event.data.alertId);
          break;
        case 'AlertsAllAlertsRead':
          tx.eval(READ_ALL, 1, unreadKey(event.data.userId), String(event.data.upTo), `${PREFIX}:alert:`);
          break;
        default:
          break;
      }
    }
  },
};

export interface AlertView {
  readonly id: string;
  readonly read: boolean;
  readonly raisedAt: string;
  readonly content: AlertContent;
}

/** Reads of a user's alerts: newest first, `limit` at a time before a cursor (a position). */
export function createAlertQueries(redis: Redis) {
  return {
    async list(userId: string, opts: { unread: boolean; limit: number; before?: number | undefined }) {
      const key = opts.unread ? unreadKey(userId) : listKey(userId);
      const max = opts.before === undefined ? '+inf' : `(${opts.before}`;
      const ids = await redis.zrevrangebyscore(key, max, '-inf', 'WITHSCORES', 'LIMIT', 0, opts.limit + 1);
      const entries: { id: string; position: number }[] = [];
      for (let i = 0; i < ids.length; i += 2) entries.push({ id: ids[i]!, position: Number(ids[i + 1]) });
      const page = entries.slice(0, opts.limit);
      const pipeline = redis.pipeline();
      for (const e of page) pipeline.hgetall(alertKey(e.id));
      const rows = (await pipeline.exec()) ?? [];
      const items: AlertView[] = [];
      for (const [err, row] of rows) {
        const h = row as Record<string, string> | null;
        if (err !== null || h === null || h.id === undefined || h.userId !== userId) continue;
        items.push({
          id: h.id,
          read: h.read === '1',
          raisedAt: new Date(Number(h.raisedAt)).toISOString(),
          content: JSON.parse(h.content ?? '{}') as AlertContent,
        });
      }
      const last = page.at(-1);
      return { items, next: entries.length > opts.limit && last !== undefined ? last.position : null };
    },
    unreadCount: (userId: string) => redis.zcard(unreadKey(userId)),
    /** The position of the user's newest alert, 0 when none. */
    async newest(userId: string): Promise<number> {
      const top = await redis.zrevrange(listKey(userId), 0, 0, 'WITHSCORES');
      return top.length === 2 ? Number(top[1]) : 0;
    },
  };
}
