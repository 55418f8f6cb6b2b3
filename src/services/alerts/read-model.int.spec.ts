import { randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectTestRedis } from '../../projections/testing/redis.js';
import { createAlertQueries, PREFIX } from './read-model.js';

describe("a page of alerts: the actors' nicknames from their replicas", () => {
  let redis: Redis;
  const keys: string[] = [];
  const replicaPrefix = `t${randomBytes(5).toString('hex')}-users`;
  const user = randomUUID();
  const [ann, bob, cat] = [randomUUID(), randomUUID(), randomUUID()];

  /** An alert as the inbox projection stores it, replied to by `actor` (stored with `nickname`). */
  async function alert(score: number, actor: string, nickname: string): Promise<string> {
    const id = randomUUID();
    const content = {
      kind: 'thread-replied',
      threadId: randomUUID(),
      threadTitle: 'T',
      postId: randomUUID(),
      actor: { userId: actor, nickname },
      excerpt: 'x',
    };
    const key = `${PREFIX}:alert:${id}`;
    keys.push(key);
    await redis.hset(
      key,
      'id',
      id,
      'userId',
      user,
      'content',
      JSON.stringify(content),
      'raisedAt',
      String(Date.now()),
      'position',
      String(score),
      'read',
      '0',
    );
    await redis.zadd(`${PREFIX}:list:${user}`, score, id);
    return id;
  }
  const replica = async (id: string, raw: string) => {
    keys.push(`${replicaPrefix}:${id}`);
    await redis.set(`${replicaPrefix}:${id}`, raw);
  };

  beforeAll(async () => {
    redis = connectTestRedis();
    keys.push(`${PREFIX}:list:${user}`);
    await alert(1, ann, 'ann-then');
    await alert(2, bob, 'bob-then');
    await alert(3, cat, 'cat-then');
    await alert(4, ann, 'ann-then');
    await replica(ann, JSON.stringify({ revision: 3, value: { userId: ann, nickname: 'ann-now' } }));
    await replica(cat, 'not json');
    await replica(user, JSON.stringify({ revision: 1, value: { userId: user, nickname: 'me' } }));
  });
  afterAll(async () => {
    await redis.del(...keys);
    redis.disconnect();
  });

  it("shows a replica's nickname, the stored one without a readable replica, and says which actors have none", async () => {
    const queries = createAlertQueries(redis, { replicaPrefix });
    const page = await queries.page(user, { unread: false, limit: 20 });
    expect(page.user?.nickname).toBe('me');
    expect([...page.missingActors].sort()).toEqual([bob, cat].sort());
    const nicknames = (json: string) =>
      (JSON.parse(json) as { items: { content: { actor: { nickname: string } } }[] }).items.map((i) => i.content.actor.nickname);
    // Newest first.
    expect(nicknames(page.json())).toEqual(['ann-now', 'cat-then', 'bob-then', 'ann-now']);
    // Nicknames the caller fetched for the actors without a replica.
    expect(nicknames(page.json(new Map([[bob, 'bob-fetched']])))).toEqual(['ann-now', 'cat-then', 'bob-fetched', 'ann-now']);
  });
});
