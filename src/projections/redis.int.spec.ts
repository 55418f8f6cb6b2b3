import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { StoredEvent } from '../eventstore/store.js';
import { listDeadLetters } from '../eventstore/dead-letters.js';
import { createRedisProjection, type RedisProjection } from './redis.js';
import { createProjectionBed, sleep, type ProjectionBed } from './testing/bed.js';
import { ledgerBalancesRedisDefinition, readRedisAccounts } from './testing/ledger.js';
import { connectTestRedis } from './testing/redis.js';

describe('Redis projection', () => {
  let redis: Redis;
  let bed: ProjectionBed;
  let projections: RedisProjection[] = [];
  const projection = (): RedisProjection => {
    const p = createRedisProjection(ledgerBalancesRedisDefinition(`t${randomBytes(5).toString('hex')}-balances`), redis);
    projections.push(p);
    return p;
  };

  beforeAll(() => {
    redis = connectTestRedis();
  });
  afterAll(async () => {
    await redis?.quit();
  });
  beforeEach(async () => {
    bed = await createProjectionBed();
  });
  afterEach(async () => {
    await bed?.cleanup();
    await Promise.all(
      projections.map(async (p) => {
        await p.clear();
        await p.close();
      }),
    );
    projections = [];
  });

  it('applies events to one hash per account, and applying a batch again changes nothing', async () => {
    const { ledger, store } = bed;
    const target = projection();
    await ledger.open('a', 'ann');
    await ledger.open('b', 'bob');
    for (let i = 1; i <= 20; i++) await ledger.credit(i % 3 === 0 ? 'a' : 'b', i);
    await ledger.debit('b', 4);
    const runner = bed.startRunner(target.definition.name, target);

    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readRedisAccounts(redis, target.definition.name)).toEqual(ledger.expected());
    expect(await redis.get(target.checkpointKey)).toBe(String(ledger.lastPosition));

    const events: StoredEvent[] = [];
    for await (const e of store.read('account', 'a')) events.push(e);
    await target.apply(events, events.at(-1)!.position);
    expect(await readRedisAccounts(redis, target.definition.name)).toEqual(ledger.expected());
  });

  it('parks the events whose writes Redis refused and keeps the others', async () => {
    const { ledger } = bed;
    const target = projection();
    // A key of the wrong type: every write of account x fails with WRONGTYPE inside the EXEC.
    await redis.set(`${target.definition.name}:account:x`, 'not a hash');
    await ledger.open('a', 'ann');
    await ledger.open('x', 'xavier');
    await ledger.credit('a', 5);
    await ledger.credit('x', 7);
    await ledger.credit('a', 1);
    const runner = bed.startRunner(target.definition.name, target);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    const accounts = await readRedisAccounts(redis, target.definition.name).catch(() => null);
    expect(accounts === null || accounts.every((r) => r.id !== 'x' || r.balance === 0)).toBe(true);
    expect(await redis.hgetall(`${target.definition.name}:account:a`)).toMatchObject({
      owner: 'ann',
      balance: '6',
      movements: '2',
    });
    await expect
      .poll(
        async () =>
          (await listDeadLetters(bed.nats, bed.service.names))
            .filter((d) => d.error.includes('WRONGTYPE'))
            .map((d) => d.origin.subject),
        {
          timeout: 5_000,
        },
      )
      .toEqual([`${bed.service.names.eventSubject('account', 'x')}`, `${bed.service.names.eventSubject('account', 'x')}`]);
  });

  it('replays from the start when its keys, checkpoint included, are deleted', async () => {
    const { ledger } = bed;
    const target = projection();
    for (let i = 0; i < 5; i++) await ledger.open(`a${i}`, `owner-${i}`);
    for (let i = 0; i < 100; i++) await ledger.credit(`a${i % 5}`, 1 + (i % 4));
    const runner = bed.startRunner(target.definition.name, target, { checkpointCheckMs: 100 });
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    const before = await readRedisAccounts(redis, target.definition.name);
    expect(before).toEqual(ledger.expected());

    await target.clear();
    expect(await redis.exists(target.checkpointKey)).toBe(0);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readRedisAccounts(redis, target.definition.name)).toEqual(before);

    await ledger.credit('a1', 500);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readRedisAccounts(redis, target.definition.name)).toEqual(ledger.expected());
  });

  it('replays from the start when its keys are deleted while events keep arriving', async () => {
    const { ledger } = bed;
    const target = projection();
    for (let i = 0; i < 5; i++) await ledger.open(`a${i}`, `owner-${i}`);
    const runner = bed.startRunner(target.definition.name, target, { checkpointCheckMs: 100 });
    let cleared = false;
    for (let i = 0; i < 400; i++) {
      await ledger.credit(`a${i % 5}`, 1 + (i % 4));
      if (i === 200) {
        await target.clear();
        cleared = true;
      }
      if (i % 10 === 0) await sleep(2);
    }
    expect(cleared).toBe(true);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    // The watch may only notice after the last event: give it its period.
    await sleep(300);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readRedisAccounts(redis, target.definition.name)).toEqual(ledger.expected());
  });

  it('clear() deletes a projection bigger than one SCAN page at once, so the replay applies nothing twice', async () => {
    const { ledger } = bed;
    const target = projection();
    const ACCOUNTS = 2_500;
    await Promise.all(
      Array.from({ length: 10 }, async (_, w) => {
        for (let i = w; i < ACCOUNTS; i += 10) await ledger.open(`a${i}`, 'o');
      }),
    );
    const runner = bed.startRunner(target.definition.name, target, { checkpointCheckMs: 100, batchSize: 50 });
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);

    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        await ledger.credit(`a${(i * 7) % ACCOUNTS}`, 1);
      }
    })();
    await sleep(50);
    await target.clear();
    await sleep(100);
    writing = false;
    await writer;

    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    await sleep(300);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readRedisAccounts(redis, target.definition.name)).toEqual(ledger.expected());
  });
});
