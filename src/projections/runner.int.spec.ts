import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JsMsg } from '@nats-io/jetstream';
import { listDeadLetters } from '../eventstore/dead-letters.js';
import { encodeHeaders, encodeJson, Header } from '../eventstore/headers.js';
import { createRecentAppends } from '../eventstore/recent-appends.js';
import { Opened } from '../eventstore/testing/ledger.js';
import { createPostgresProjection, type PostgresProjection, type PostgresProjectionDefinition } from './postgres.js';
import type { ProjectionTarget } from './runner.js';
import { createProjectionBed, sleep, type ProjectionBed } from './testing/bed.js';
import { ledgerBalancesDefinition, ledgerSource, readAccounts, type LedgerDb } from './testing/ledger.js';
import { freshDatabase, type TestDatabase } from './testing/postgres.js';

describe('projection runner', () => {
  let pg: TestDatabase;
  let bed: ProjectionBed;
  let schemas = 0;
  const projection = async (
    wrap: (d: PostgresProjectionDefinition<LedgerDb>) => PostgresProjectionDefinition<LedgerDb> = (d) => d,
  ): Promise<PostgresProjection<LedgerDb>> => {
    const p = createPostgresProjection(wrap(ledgerBalancesDefinition(`balances_${++schemas}`)), pg.db);
    await p.setup();
    return p;
  };

  beforeAll(async () => {
    pg = await freshDatabase();
  });
  afterAll(() => pg?.drop());
  beforeEach(async () => {
    bed = await createProjectionBed();
  });
  afterEach(() => bed?.cleanup());

  it('applies the tail of a burst larger than its batch size without waiting for more events', async () => {
    const { ledger } = bed;
    const target = await projection();
    for (let i = 0; i < 10; i++) await ledger.open(`a${i}`, 'ann');
    for (let i = 0; i < 340; i++) await ledger.credit(`a${i % 10}`, 1 + (i % 5));
    const runner = bed.startRunner(target.definition.name, target, { batchSize: 100 });

    expect(await runner.waitForPosition(ledger.lastPosition, 5_000)).toBe(true);
    expect(await readAccounts(pg.db, target.definition.name)).toEqual(ledger.expected());
  });

  it('ends a batch once its messages reach maxBatchBytes', async () => {
    const { ledger } = bed;
    const inner = await projection();
    const bytes = (e: { data: unknown }) => Buffer.byteLength(JSON.stringify(e.data));
    const batches: number[][] = [];
    const target: ProjectionTarget = {
      checkpoint: () => inner.checkpoint(),
      healthy: () => inner.healthy(),
      async apply(events, upTo) {
        batches.push(events.map(bytes));
        await inner.apply(events, upTo);
      },
    };
    await ledger.open('a', 'ann');
    for (let i = 1; i <= 60; i++) await ledger.credit('a', i);
    // All 61 are waiting when the runner starts: without the bound, one or two batches.
    const runner = bed.startRunner(inner.definition.name, target, { maxBatchBytes: 200 });

    expect(await runner.waitForPosition(ledger.lastPosition, 5_000)).toBe(true);
    expect(await readAccounts(pg.db, inner.definition.name)).toEqual(ledger.expected());
    expect(batches.flat()).toHaveLength(61);
    for (const b of batches)
      expect(
        b.slice(0, -1).reduce((x, y) => x + y, 0),
        JSON.stringify(b),
      ).toBeLessThan(200);
  });

  it('takes the bodies this process appended as it reads them back, and decodes every other message', async () => {
    const { ledger, service, store } = bed;
    const inner = await projection();
    const seen = new Map<number, unknown>();
    const target: ProjectionTarget = {
      checkpoint: () => inner.checkpoint(),
      healthy: () => inner.healthy(),
      async apply(events, upTo) {
        for (const e of events) seen.set(e.position, e.data);
        await inner.apply(events, upTo);
      },
    };
    const recent = createRecentAppends({ maxBytes: 1_000_000 });
    let taken = 0;
    const known = (m: JsMsg) => {
      const data = recent.take(m);
      if (data !== undefined) taken++;
      return data;
    };
    // Written by another writer: decoded.
    const first = await ledger.open('other', 'olga');
    const runner = bed.startRunner(inner.definition.name, target, {
      source: { ...ledgerSource(service.names, inner.definition.name), known },
    });
    expect(await runner.waitForPosition(first, 5_000)).toBe(true);
    // Caught up, the consumer is handed each event as soon as it is stored, which may be before
    // the append returns: the body must be kept before.
    const bodies = new Map<number, unknown>();
    for (let i = 0; i < 20; i++) {
      const data = { accountId: `a${i}`, owner: 'ann' };
      const msgId = recent.remember(data, 100)!;
      const { position } = await store.append({
        aggregate: 'account',
        id: `a${i}`,
        event: { type: Opened.type, version: 1, data },
        expectedRevision: 0,
        trace: { correlationId: `c${i}` },
        msgId,
      });
      bodies.set(position, data);
      await sleep(5);
    }
    expect(await runner.waitForPosition(Math.max(...bodies.keys()), 5_000)).toBe(true);
    expect(taken).toBe(20);
    expect(recent.size).toBe(0);
    for (const [position, data] of bodies) expect(seen.get(position)).toBe(data);
    expect(seen.get(first)).toEqual({ accountId: 'other', owner: 'olga' });
    expect((await readAccounts(pg.db, inner.definition.name)).map((a) => a.id).sort()).toEqual(
      ['other', ...Array.from({ length: 20 }, (_, i) => `a${i}`)].sort(),
    );
  });

  it('still refuses a body it knows when the message is of a version it does not know', async () => {
    const { service, store } = bed;
    const inner = await projection();
    const recent = createRecentAppends({ maxBytes: 1_000_000 });
    const runner = bed.startRunner(inner.definition.name, inner, {
      source: { ...ledgerSource(service.names, inner.definition.name), known: (m) => recent.take(m) },
    });
    const data = { accountId: 'v2', owner: 'vic' };
    const { position } = await store.append({
      aggregate: 'account',
      id: 'v2',
      event: { type: Opened.type, version: 2, data },
      expectedRevision: 0,
      trace: { correlationId: 'c-v2' },
      msgId: recent.remember(data, 100)!,
    });
    expect(await runner.waitForPosition(position, 5_000)).toBe(true);
    expect(await readAccounts(pg.db, inner.definition.name)).toEqual([]);
    const parked = await listDeadLetters(service.nats, service.names);
    expect(parked).toHaveLength(1);
    expect(parked[0]?.error).toMatch(/LedgerAccountOpened version 2; this projection knows version 1/);
  });

  it('parks messages that fail their schema or are not JSON in the dead-letter stream, with error and origin, and goes on', async () => {
    const { ledger, service } = bed;
    const { names, nats } = service;
    const target = await projection();
    const name = target.definition.name;
    const runner = bed.startRunner(name, target);
    await ledger.open('a', 'ann');
    await ledger.credit('a', 5);

    const headers = () =>
      encodeHeaders({
        type: 'LedgerAccountCredited',
        version: 1,
        correlationId: 'poison',
        causationId: undefined,
        traceparent: undefined,
      });
    const badSchema = encodeJson({ accountId: 'p1', amount: -5 });
    const notJson = new TextEncoder().encode('{"accountId": "p2", amount');
    const schemaAck = await nats.js.publish(names.eventSubject('account', 'p1'), badSchema, { headers: headers() });
    const jsonAck = await nats.js.publish(names.eventSubject('account', 'p2'), notJson, { headers: headers() });
    // No Message-Type at all: not an event anybody can read.
    const bareAck = await nats.js.publish(names.eventSubject('account', 'p3'), encodeJson({ accountId: 'p3', amount: 1 }));

    await ledger.credit('a', 7);
    await ledger.open('b', 'bob');
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readAccounts(pg.db, name)).toEqual(ledger.expected());

    const parked = await listDeadLetters(nats, names);
    expect(parked.map((d) => d.origin)).toEqual([
      { stream: names.eventsStream, subject: names.eventSubject('account', 'p1'), sequence: schemaAck.seq },
      { stream: names.eventsStream, subject: names.eventSubject('account', 'p2'), sequence: jsonAck.seq },
      { stream: names.eventsStream, subject: names.eventSubject('account', 'p3'), sequence: bareAck.seq },
    ]);
    const [schemaDl, jsonDl, bareDl] = parked;
    expect(schemaDl).toMatchObject({ consumer: name, messageType: 'LedgerAccountCredited' });
    expect(schemaDl!.error).toMatch(/invalid LedgerAccountCredited.*\/amount/);
    expect(schemaDl!.data).toEqual(badSchema);
    expect(jsonDl!.error).toMatch(/not JSON/);
    expect(jsonDl!.data).toEqual(notJson);
    expect(bareDl!.error).toMatch(new RegExp(Header.MessageType));
    const info = await nats.jsm.streams.info(names.deadLettersStream);
    expect(info.state.messages).toBe(3);
  });

  it('retries an event whose handler keeps failing, then parks it and applies the others', async () => {
    const { ledger, service } = bed;
    let attemptsAlone = 0;
    const target = await projection((d) => ({
      ...d,
      async apply(trx, events) {
        const cursed = events.some((e) => (e.data as { amount?: number }).amount === 13);
        if (cursed) {
          if (events.length === 1) attemptsAlone++;
          throw new Error('thirteen is cursed');
        }
        await d.apply(trx, events);
      },
    }));
    const name = target.definition.name;
    await ledger.open('a', 'ann');
    await ledger.open('b', 'bob');
    await ledger.credit('a', 5);
    const cursedAt = await ledger.credit('a', 13);
    await ledger.credit('b', 7);
    await ledger.credit('a', 2);
    const runner = bed.startRunner(name, target, { maxAttempts: 3, retryDelayMs: { initial: 10, max: 20 } });

    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(attemptsAlone).toBe(3);
    expect(await readAccounts(pg.db, name)).toEqual([
      { id: 'a', owner: 'ann', balance: 7, movements: 2 },
      { id: 'b', owner: 'bob', balance: 7, movements: 1 },
    ]);
    const parked = await listDeadLetters(service.nats, service.names);
    expect(parked).toHaveLength(1);
    expect(parked[0]).toMatchObject({ consumer: name, origin: { sequence: cursedAt, stream: service.names.eventsStream } });
    expect(parked[0]!.error).toMatch(/thirteen is cursed/);

    // Later events still flow.
    await ledger.credit('b', 1);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect((await readAccounts(pg.db, name))[1]).toEqual({ id: 'b', owner: 'bob', balance: 8, movements: 2 });
  });

  it('waits out an outage of its store rather than parking the events it could not apply', async () => {
    const { ledger, service } = bed;
    const inner = await projection();
    let down = true;
    let failedApplies = 0;
    const target: ProjectionTarget = {
      checkpoint: () => inner.checkpoint(),
      healthy: async () => !down && (await inner.healthy()),
      async apply(events, upTo) {
        if (down) {
          failedApplies++;
          throw new Error('connection refused');
        }
        await inner.apply(events, upTo);
      },
    };
    await ledger.open('a', 'ann');
    await ledger.credit('a', 3);
    const runner = bed.startRunner(inner.definition.name, target, { maxAttempts: 2, retryDelayMs: { initial: 10, max: 20 } });
    await expect.poll(() => failedApplies, { timeout: 10_000 }).toBeGreaterThan(6);
    down = false;

    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readAccounts(pg.db, inner.definition.name)).toEqual(ledger.expected());
    expect(await listDeadLetters(service.nats, service.names)).toEqual([]);
  });

  it('notices its durable consumer was deleted, recreates it and catches up', async () => {
    const { ledger, service } = bed;
    const target = await projection();
    const name = target.definition.name;
    await ledger.open('a', 'ann');
    await ledger.credit('a', 1);
    const runner = bed.startRunner(name, target);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);

    await service.nats.jsm.consumers.delete(service.names.eventsStream, name);
    for (let i = 2; i <= 10; i++) await ledger.credit('a', i);
    await ledger.open('b', 'bob');

    expect(await runner.waitForPosition(ledger.lastPosition, 15_000)).toBe(true);
    expect(await readAccounts(pg.db, name)).toEqual(ledger.expected());
    const ci = await service.nats.jsm.consumers.info(service.names.eventsStream, name);
    expect(ci.config.durable_name).toBe(name);
  });

  it('lets one of two runners of a projection lead, and the other take over when it stops, applying nothing twice', async () => {
    const { ledger } = bed;
    const inner = await projection();
    const name = inner.definition.name;
    const applied = { first: 0, second: 0 };
    const counting = (who: keyof typeof applied): ProjectionTarget => ({
      checkpoint: () => inner.checkpoint(),
      healthy: () => inner.healthy(),
      async apply(events, upTo) {
        const before = await inner.checkpoint();
        await inner.apply(events, upTo);
        applied[who] += events.filter((e) => e.position > before).length;
      },
    });
    await ledger.open('a', 'ann');
    const first = bed.startRunner(name, counting('first'));
    expect(await first.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    const second = bed.startRunner(name, counting('second'));

    for (let i = 1; i <= 20; i++) await ledger.credit('a', i);
    expect(await second.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    // The second has had time to try for the lease.
    await sleep(700);
    expect([(await first.status()).leader, (await second.status()).leader]).toEqual([true, false]);
    expect(applied).toEqual({ first: 21, second: 0 });

    await first.stop();
    for (let i = 1; i <= 10; i++) await ledger.debit('a', i);
    expect(await second.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect((await second.status()).leader).toBe(true);
    expect(applied).toEqual({ first: 21, second: 10 });
    expect(await readAccounts(pg.db, name)).toEqual([{ id: 'a', owner: 'ann', balance: 210 - 55, movements: 30 }]);
  });
});
