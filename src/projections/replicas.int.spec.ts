import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { Type } from 'typebox';
import { v4 as uuidv4 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineMessage } from '../../schemas/message.js';
import { encodeHeaders, encodeJson } from '../eventstore/headers.js';
import { createLeases } from '../eventstore/leases.js';
import { freshService, testLog, type TestService } from '../eventstore/testing/nats.js';
import { createReplicaCache, type ReplicaCache } from './replicas.js';
import { connectTestRedis } from './testing/redis.js';

/*
 * The memory each instance keeps of the replicas it uses: what it may serve without Redis, and
 * what it must never serve (an older revision than one it heard of, anything while it is not
 * hearing the notifications).
 */

interface Person {
  readonly id: string;
  readonly name: string;
  readonly revision: number;
}

describe('replica cache memory', () => {
  let t: TestService;
  let redis: Redis;
  let cache: ReplicaCache<Person>;
  let name: string;
  /** What the owner answers when asked, and how often it was asked. */
  const owner = new Map<string, Person>();
  let asked = 0;
  let PersonChanged: ReturnType<typeof personChanged>;
  const personChanged = (service: string) =>
    defineMessage({
      type: 'TestPersonChangedNotification',
      subject: `${service}.notifications.person-changed`,
      schema: Type.Object({ person: Type.Object({ id: Type.String(), name: Type.String(), revision: Type.Integer() }) }),
    });

  async function publish(p: Person): Promise<void> {
    await t.nats.js.publish(PersonChanged.subject!, encodeJson({ person: p }), {
      headers: encodeHeaders({
        type: PersonChanged.type,
        version: PersonChanged.version,
        correlationId: uuidv4(),
        causationId: undefined,
        traceparent: undefined,
      }),
    });
  }
  const stored = async (id: string) => JSON.parse((await redis.get(`${name}:${id}`)) ?? 'null');
  const until = async (check: () => Promise<boolean>) => {
    for (let i = 0; i < 100 && !(await check()); i++) await new Promise((r) => setTimeout(r, 20));
  };

  beforeAll(async () => {
    t = await freshService('rep');
    PersonChanged = personChanged(t.names.service);
    redis = connectTestRedis();
    name = `t${randomBytes(4).toString('hex')}-people`;
    cache = createReplicaCache<Person>({
      nats: t.nats,
      names: t.names,
      leases: await createLeases(t.nats, `${t.names.service.toUpperCase()}_LEASES`, testLog),
      instanceId: 'one',
      log: testLog,
      redis,
      name,
      description: 'people, for a test',
      stream: t.names.notificationsStream,
      events: [PersonChanged],
      fromNotification: (e) => {
        const person = (e.data as { person: Person }).person;
        return { id: person.id, revision: person.revision, value: person };
      },
      async fetch(id) {
        asked++;
        const p = owner.get(id);
        return p === undefined ? null : { id, revision: p.revision, value: p };
      },
    });
    await cache.startMemo();
  });
  afterAll(async () => {
    await cache?.stopMemo();
    await cache?.projection.close();
    await redis?.quit();
    await t?.nats.jsm.streams.delete(`KV_${t.names.service.toUpperCase()}_LEASES`).catch(() => false);
    await t?.cleanup();
  });

  it('asks the owner on first sight, keeps the answer in Redis and then answers from memory', async () => {
    const id = uuidv4();
    owner.set(id, { id, name: 'ada', revision: 1 });
    const before = asked;
    expect(await cache.get(id)).toEqual({ id, name: 'ada', revision: 1 });
    expect(asked).toBe(before + 1);
    expect(await stored(id)).toEqual({ revision: 1, value: { id, name: 'ada', revision: 1 } });
    // Gone from Redis (flushed): served from memory, the owner not asked again.
    await redis.del(`${name}:${id}`);
    expect(await cache.get(id)).toEqual({ id, name: 'ada', revision: 1 });
    expect(asked).toBe(before + 1);
    expect(await cache.get(uuidv4())).toBeNull();
  });

  it('serves what a notification said at once, and never an older revision read from Redis afterwards', async () => {
    const id = uuidv4();
    owner.set(id, { id, name: 'bob', revision: 1 });
    expect((await cache.get(id))?.name).toBe('bob');
    await publish({ id, name: 'robert', revision: 2 });
    await until(async () => (await cache.get(id))?.name === 'robert');
    expect((await cache.get(id))?.name).toBe('robert');
    // Redis still holds revision 1 (no runner applies the notifications here): memory does not
    // go back to it, even when the entry is read through getMany.
    expect((await stored(id)).revision).toBe(1);
    expect((await cache.getMany([id])).get(id)?.name).toBe('robert');
  });

  it('does not keep a replica read from Redis that is older than a notification it heard', async () => {
    const id = uuidv4();
    await publish({ id, name: 'cy', revision: 5 });
    await new Promise((r) => setTimeout(r, 200));
    // The Redis copy lags (revision 4): it is served once, as Redis is all there is to read...
    await redis.set(`${name}:${id}`, JSON.stringify({ revision: 4, value: { id, name: 'cy-old', revision: 4 } }));
    // ...but memory answers with revision 5, which it heard, not with what Redis says.
    expect((await cache.get(id))?.revision).toBe(5);
  });

  it('forgets everything when it stops hearing the notifications', async () => {
    const id = uuidv4();
    owner.set(id, { id, name: 'dee', revision: 1 });
    await cache.get(id);
    await cache.stopMemo();
    await redis.del(`${name}:${id}`);
    const before = asked;
    owner.set(id, { id, name: 'dee-2', revision: 2 });
    // Not from memory: from the owner again.
    expect((await cache.get(id))?.name).toBe('dee-2');
    expect(asked).toBe(before + 1);
    await cache.startMemo();
  });
});
