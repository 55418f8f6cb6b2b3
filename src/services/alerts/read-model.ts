import type { Redis } from 'ioredis';
import type { AlertContent, AlertEvent, InboxEvent } from './events.js';
import { ALERTS_EVENTS } from './events.js';
import type { RedisProjectionDefinition } from '../../projections/redis.js';

/**
 * Alerts in alerts' Redis, a projection of ALERTS_EVENTS (so a flushed Redis comes back from the
 * stream, read states included). Keys, under `alerts-inbox:`:
 * - `alert:<id>`: a hash (user, content as JSON, raised time, position, read flag);
 * - `list:<user>` and `unread:<user>`: sorted sets of alert ids by position (newest last);
 * - `read-before:<user>`: the time of the user's last "mark all as read".
 * The writes of one event are one script, so they apply whole, in order, inside the batch's
 * MULTI. (The scripts touch keys they compute: a single Redis, not a cluster.)
 */
export const PREFIX = 'alerts-inbox';
const alertKey = (id: string) => `${PREFIX}:alert:${id}`;
const listKey = (userId: string) => `${PREFIX}:list:${userId}`;
const unreadKey = (userId: string) => `${PREFIX}:unread:${userId}`;
const readBeforeKey = (userId: string) => `${PREFIX}:read-before:${userId}`;

// KEYS: alert, list, unread, read-before. ARGV: id, user, content, raisedAt ms, position.
const RAISE = `
local before = tonumber(redis.call('GET', KEYS[4]) or '-1')
local read = tonumber(ARGV[4]) <= before and '1' or '0'
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'userId', ARGV[2], 'content', ARGV[3], 'raisedAt', ARGV[4], 'position', ARGV[5], 'read', read)
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
if read == '0' then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1]) end
return 1`;

// KEYS: unread, read-before. ARGV: before ms, alert key prefix.
const READ_ALL = `
local before = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[2]) or '-1')
if before > current then redis.call('SET', KEYS[2], ARGV[1]) end
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. id
  local raised = tonumber(redis.call('HGET', key, 'raisedAt') or '0')
  if raised <= before then
    redis.call('HSET', key, 'read', '1')
    redis.call('ZREM', KEYS[1], id)
  end
end
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
            4,
            alertKey(d.alertId),
            listKey(d.userId),
            unreadKey(d.userId),
            readBeforeKey(d.userId),
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
          tx.eval(
            READ_ALL,
            2,
            unreadKey(event.data.userId),
            readBeforeKey(event.data.userId),
            String(Date.parse(event.data.before)),
            `${PREFIX}:alert:`,
          );
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
  };
}
