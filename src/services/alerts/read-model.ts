import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { UserProfile } from '../../../schemas/auth.js';
import { ALERTS_EVENTS, MAX_ALERTS_PER_EVENT, type AlertEvent, type InboxEvent, type IntakeEvent } from './events.js';
import { queuedScript, type RedisProjectionDefinition } from '../../projections/redis.js';

/**
 * Alerts in alerts' Redis, a projection of ALERTS_EVENTS (so a flushed Redis comes back from the
 * stream, read states included). Keys, under `alerts-inbox:`:
 * - `alert:<id>`: a hash (user, content as JSON, raised time, position of the event that raised
 *   it, read flag);
 * - `list:<user>` and `unread:<user>`: sorted sets of alert ids, newest last. An alert's score is
 *   its event's position plus its index in that event over 1024 (an event holds at most
 *   {@link MAX_ALERTS_PER_EVENT}): positions order events, indexes the alerts of one event. The
 *   score is the page cursor. Alerts raised one per event by the earlier version score their
 *   position, so they sort among the others.
 * The writes of one event are one script, so they apply whole, in order, inside the batch's
 * MULTI. (The scripts touch keys they compute: a single Redis, not a cluster.)
 */
export const PREFIX = 'alerts-inbox';
const alertKey = (id: string) => `${PREFIX}:alert:${id}`;
const listKey = (userId: string) => `${PREFIX}:list:${userId}`;
const unreadKey = (userId: string) => `${PREFIX}:unread:${userId}`;

/**
 * How alerts' own Redis should run (compose.yaml, the tests' and benches' servers): sorted sets of
 * more than 32 entries as skip lists. Redis keeps a sorted set of up to 128 entries (its default)
 * as one packed list, where each ZADD scans the list and parses every score on the way: at 100
 * alerts a user, 12–14 µs a ZADD against 4.6–5.8 µs as a skip list, and the inbox does two per
 * alert. The skip list costs memory: a set of 100 alerts takes 14.5 KB instead of 5.2 KB, beside
 * 115 KB for those alerts' hashes (460-byte contents), so +15% for such a user (docs/alerts.md).
 * Nothing depends on it for correctness.
 */
export const ALERTS_REDIS_SETTINGS: readonly string[] = ['--zset-max-listpack-entries', '32'];

/** The fraction of a score that orders the alerts of one event. */
const INDEX_STEP = 1 / 1024;
if (MAX_ALERTS_PER_EVENT >= 1024) throw new Error('MAX_ALERTS_PER_EVENT must stay below 1024: scores would overlap');

/** The sort key (and cursor) of the `index`th alert of the event at `position`. */
export const scoreOf = (position: number, index: number) => position + index * INDEX_STEP;

// ARGV: key prefix (`alerts-inbox:`), the event's position, then per alert: id, user, content,
// raised time (ms), score. An alert that exists already (raised again from a notification
// delivered again) is left as it is, read state included.
const RAISE = `
local p = ARGV[1]
local n = 0
for i = 3, #ARGV, 5 do
  local id, user = ARGV[i], ARGV[i + 1]
  local key = p .. 'alert:' .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'id', id, 'userId', user, 'content', ARGV[i + 2], 'raisedAt', ARGV[i + 3], 'position', ARGV[2], 'read', '0')
    redis.call('ZADD', p .. 'list:' .. user, ARGV[i + 4], id)
    redis.call('ZADD', p .. 'unread:' .. user, ARGV[i + 4], id)
    n = n + 1
  end
end
return n`;

// KEYS: unread. ARGV: the first score above what is read (exclusive, `(<score>`), alert key prefix.
const READ_ALL = `
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do
  redis.call('HSET', ARGV[2] .. id, 'read', '1')
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return 1`;

const raise = queuedScript(RAISE);
const readAll = queuedScript(READ_ALL);

export const inboxProjection: RedisProjectionDefinition = {
  name: PREFIX,
  events: ALERTS_EVENTS,
  apply(tx, events) {
    for (const stored of events) {
      const event = { type: stored.type, data: stored.data } as AlertEvent | InboxEvent | IntakeEvent;
      switch (event.type) {
        case 'AlertsAlertsRaised': {
          const args = [`${PREFIX}:`, String(stored.position)];
          for (const [i, a] of event.data.alerts.entries()) {
            args.push(
              a.alertId,
              a.userId,
              JSON.stringify(a.content),
              String(Date.parse(a.at)),
              String(scoreOf(stored.position, i)),
            );
          }
          if (event.data.alerts.length > 0) raise(tx, [], args);
          break;
        }
        case 'AlertsAlertRaised': {
          const d = event.data;
          const position = String(stored.position);
          raise(
            tx,
            [],
            [`${PREFIX}:`, position, d.alertId, d.userId, JSON.stringify(d.content), String(Date.parse(d.at)), position],
          );
          break;
        }
        case 'AlertsAlertRead':
          tx.hset(alertKey(event.data.alertId), 'read', '1');
          tx.zrem(unreadKey(event.data.userId), event.data.alertId);
          break;
        case 'AlertsAllAlertsRead':
          // Every alert of the events up to `upTo`, whatever its index.
          readAll(tx, [unreadKey(event.data.userId)], [`(${event.data.upTo + 1}`, `${PREFIX}:alert:`]);
          break;
        default:
          break;
      }
    }
  },
};

// A page of a user's alerts in one round trip. KEYS: the sorted set (all or unread). ARGV: the
// highest score (`+inf` or `(<cursor>`), how many entries to read (the page's size plus one,
// which tells whether there is a next page), the prefix of alert keys, the prefix of the users'
// replica keys, the user's id. Answers three things. For each entry of the page: id, user,
// content, raised time and read flag of its hash, its score, whether the content is a JSON
// object (so it can be passed on as it is), the actor's id and nickname as stored, and the
// actor's replica (nil when there is none). Then the score of the entry after the page, if
// there is one. Then the user's own replica (the caller's check). Reads only.
const PAGE = `
local entries = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local size = math.min(#entries / 2, tonumber(ARGV[2]) - 1)
local rows = {}
for i = 1, size do
  local id = entries[2 * i - 1]
  local h = redis.call('HMGET', ARGV[3] .. id, 'id', 'userId', 'content', 'raisedAt', 'read')
  local parsed, actorId, stored, replica = 0, false, false, false
  if h[3] then
    local ok, c = pcall(cjson.decode, h[3])
    if ok and type(c) == 'table' then
      parsed = 1
      if type(c.actor) == 'table' and type(c.actor.userId) == 'string' then
        actorId = c.actor.userId
        stored = type(c.actor.nickname) == 'string' and c.actor.nickname or false
        replica = redis.call('GET', ARGV[4] .. actorId)
      end
    end
  end
  rows[i] = { h[1], h[2], h[3], h[4], h[5], entries[2 * i], parsed, actorId, stored, replica }
end
local after = false
if #entries / 2 > size then after = entries[2 * size + 2] end
return { rows, after, redis.call('GET', ARGV[4] .. ARGV[5]) }`;

/** One page of a user's alerts, its JSON written from the stored contents. */
export interface AlertPage {
  /** The cursor of the next page, null on the last. */
  readonly next: number | null;
  /**
   * The page's JSON (`{ items, nextCursor }`), with each actor's nickname from `nicknames`
   * (those of the page's replicas, and those the caller adds for actors without a replica), or
   * as stored when there is none.
   */
  json(nicknames?: ReadonlyMap<string, string>): string;
  /** Actors of the page with no replica in Redis. */
  readonly missingActors: readonly string[];
  /** The user's own replica, read in the same round trip; undefined when there is none. */
  readonly user: UserProfile | undefined;
}

type PageRow = [
  id: string | null,
  userId: string | null,
  content: string | null,
  raisedAt: string | null,
  read: string | null,
  position: string,
  parsed: number,
  actorId: string | null,
  storedNickname: string | null,
  replica: string | null,
];

/** Reads of a user's alerts: newest first, `limit` at a time before a cursor (a score). */
export function createAlertQueries(redis: Redis, opts: { readonly replicaPrefix: string }) {
  const pageSha = createHash('sha1').update(PAGE).digest('hex');
  const replicaPrefix = `${opts.replicaPrefix}:`;
  // EVALSHA, and the script's text only when Redis does not know it (a restart, SCRIPT FLUSH).
  // A read-only script: running it again changes nothing.
  type PageReply = [rows: PageRow[], after: string | null, user: string | null];
  const runPage = async (args: readonly (string | number)[]): Promise<PageReply> => {
    try {
      return (await redis.evalsha(pageSha, 1, ...args)) as PageReply;
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return (await redis.eval(PAGE, 1, ...args)) as PageReply;
    }
  };
  return {
    /**
     * A page of the user's alerts in one round trip, the actors' current nicknames included
     * (from the replicas), and the user's own replica. Only alerts whose hash names this user
     * are listed.
     */
    async page(userId: string, o: { unread: boolean; limit: number; before?: number | undefined }): Promise<AlertPage> {
      const key = o.unread ? unreadKey(userId) : listKey(userId);
      const max = o.before === undefined ? '+inf' : `(${o.before}`;
      const [rows, after, user] = await runPage([key, max, o.limit + 1, `${PREFIX}:alert:`, replicaPrefix, userId]);
      const items: {
        id: string;
        read: boolean;
        raisedAt: string;
        content: string;
        actor: string | null;
        stored: string | null;
      }[] = [];
      const replicas = new Map<string, string>();
      const missing = new Set<string>();
      for (const [id, owner, content, raisedAt, read, , parsed, actorId, stored, replica] of rows) {
        // A hash gone (a flush being replayed) or someone else's: not listed.
        if (id === null || owner !== userId) continue;
        // Content that is not a JSON object is parsed here, which fails as it always did.
        const text = parsed === 1 && content !== null ? content : JSON.stringify(JSON.parse(content ?? '{}') as unknown);
        items.push({
          id,
          read: read === '1',
          raisedAt: new Date(Number(raisedAt)).toISOString(),
          content: text,
          actor: actorId,
          stored,
        });
        if (actorId === null || replicas.has(actorId)) continue;
        const nickname = replica === null ? undefined : replicaOf(replica)?.nickname;
        if (nickname === undefined) missing.add(actorId);
        else replicas.set(actorId, nickname);
      }
      const last = rows.at(-1);
      const next = after !== null && last !== undefined ? Number(last[5]) : null;
      return {
        next,
        missingActors: [...missing],
        user: user === null ? undefined : replicaOf(user),
        json(added) {
          const out: string[] = [];
          for (const a of items) {
            let content = a.content;
            if (a.actor !== null) {
              const nickname = replicas.get(a.actor) ?? added?.get(a.actor);
              // The stored JSON as it is, unless the actor has been renamed since.
              if (nickname !== undefined && nickname !== a.stored) {
                const c = JSON.parse(content) as { actor: { nickname: string } };
                c.actor = { ...c.actor, nickname };
                content = JSON.stringify(c);
              }
            }
            out.push(`{"id":${JSON.stringify(a.id)},"read":${a.read},"raisedAt":"${a.raisedAt}","content":${content}}`);
          }
          return `{"items":[${out.join(',')}],"nextCursor":${next === null ? 'null' : `"${next}"`}}`;
        },
      };
    },
    unreadCount: (userId: string) => redis.zcard(unreadKey(userId)),
    /** The position of the event that raised the user's newest alert, 0 when none. */
    async newest(userId: string): Promise<number> {
      const top = await redis.zrevrange(listKey(userId), 0, 0, 'WITHSCORES');
      return top.length === 2 ? Math.floor(Number(top[1])) : 0;
    },
    /** Who an alert was raised for, and the position of the event that raised it; undefined when Redis has no such alert. */
    async raised(alertId: string): Promise<{ userId: string; position: number } | undefined> {
      const [userId, position] = await redis.hmget(alertKey(alertId), 'userId', 'position');
      return userId == null || position == null ? undefined : { userId, position: Number(position) };
    },
  };
}

/** The user in a replica (`{ revision, value }`, as `createReplicaCache` keeps it); undefined when unreadable. */
function replicaOf(raw: string): UserProfile | undefined {
  try {
    const value = (JSON.parse(raw) as { value?: UserProfile }).value;
    return typeof value === 'object' && value !== null && typeof value.nickname === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}
