import { v4 as uuidv4 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KV } from '@nats-io/kv';
import { encodeHeaders } from './headers.js';
import { createAggregateRepository } from './repository.js';
import { createJetStreamEventStore, type EventStore } from './store.js';
import { ledgerAccount, type LedgerCommand } from './testing/ledger.js';
import { freshService, openKv, testLog, type TestService } from './testing/nats.js';

describe('aggregate repository', () => {
  let t: TestService;
  let store: EventStore;
  let snapshots: KV;
  const ctx = () => ({ commandId: uuidv4(), trace: { correlationId: 'c' } });

  /** The store, counting the events each read returns. */
  function countingStore() {
    let read = 0;
    const counted: EventStore = {
      ...store,
      async *read(aggregate, id, after) {
        for await (const e of store.read(aggregate, id, after)) {
          read++;
          yield e;
        }
      },
    };
    return { store: counted, reads: () => read };
  }

  beforeAll(async () => {
    t = await freshService();
    store = createJetStreamEventStore({ nats: t.nats, names: t.names });
    snapshots = await openKv(t.nats, t.names.snapshotsBucket);
  });
  afterAll(() => t.cleanup());

  it('does not replay a long history per command once a snapshot exists', async () => {
    const id = uuidv4();
    const repo = createAggregateRepository({ store, aggregate: ledgerAccount, snapshots, log: testLog });
    await repo.execute(id, { type: 'open', accountId: id, owner: 'ann' }, ctx());
    // 20,000 credits, published straight (no expectation) to build a long history quickly.
    const subject = t.names.eventSubject('account', id);
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < 20_000; i++) {
      pending.push(
        t.nats.js.publish(subject, JSON.stringify({ accountId: id, amount: 1 }), {
          headers: encodeHeaders({
            type: 'LedgerAccountCredited',
            version: 1,
            correlationId: 'fill',
            causationId: uuidv4(),
            traceparent: undefined,
          }),
        }),
      );
      if (pending.length >= 1_000) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);

    // A cold instance replays everything once and snapshots what it found.
    const first = countingStore();
    const cold = createAggregateRepository({ store: first.store, aggregate: ledgerAccount, snapshots, log: testLog });
    await cold.execute(id, { type: 'credit', accountId: id, amount: 1 }, ctx());
    expect(first.reads()).toBe(20_001);
    await expect.poll(async () => (await snapshots.get(`account.${id}`))?.operation, { timeout: 5_000 }).toBe('PUT');

    // The next cold instance starts from the snapshot.
    const second = countingStore();
    const warm = createAggregateRepository({ store: second.store, aggregate: ledgerAccount, snapshots, log: testLog });
    await warm.execute(id, { type: 'credit', accountId: id, amount: 1 }, ctx());
    expect(second.reads()).toBeLessThanOrEqual(1);
    const { state } = await warm.load(id);
    expect(state).toEqual({ status: 'open', owner: 'ann', balance: 20_002, movements: 20_002 });
  });

  it('serves a hot aggregate from its cache without reading the stream', async () => {
    const id = uuidv4();
    const counting = countingStore();
    const repo = createAggregateRepository({ store: counting.store, aggregate: ledgerAccount, log: testLog });
    await repo.execute(id, { type: 'open', accountId: id, owner: 'ann' }, ctx());
    const after = counting.reads();
    for (let i = 0; i < 20; i++) await repo.execute(id, { type: 'credit', accountId: id, amount: 1 }, ctx());
    expect(counting.reads()).toBe(after);
  });

  it('when following appends, loads a cached state without asking the store, and hears what another instance appends', async () => {
    const id = uuidv4();
    let asked = 0;
    const counted: EventStore = {
      ...store,
      async lastRevision(aggregate, aid) {
        asked++;
        return store.lastRevision(aggregate, aid);
      },
      read(aggregate, aid, after) {
        asked++;
        return store.read(aggregate, aid, after);
      },
    };
    const other = createAggregateRepository({ store, aggregate: ledgerAccount, log: testLog });
    const repo = createAggregateRepository({ store: counted, aggregate: ledgerAccount, log: testLog, follow: t.nats });
    try {
      await other.execute(id, { type: 'open', accountId: id, owner: 'ann' }, ctx());
      await repo.load(id);
      // Following starts with the first load; what was read before it is read once more.
      await new Promise((r) => setTimeout(r, 300));
      await repo.load(id);
      const before = asked;
      for (let i = 0; i < 5; i++) expect((await repo.load(id)).state).toMatchObject({ balance: 0 });
      expect(asked).toBe(before);

      // Another instance moves it on: heard, so the next loads read the store and see it.
      await other.execute(id, { type: 'credit', accountId: id, amount: 7 }, ctx());
      let state: unknown;
      for (let i = 0; i < 100; i++) {
        state = (await repo.load(id)).state;
        if ((state as { balance: number }).balance === 7) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(state).toMatchObject({ balance: 7 });
      // And once current again, it is trusted again.
      const after = asked;
      await repo.load(id);
      expect(asked).toBe(after);
    } finally {
      await repo.close();
    }
  });

  it('re-checks a rejection made on a cached state that another instance has moved on', async () => {
    const id = uuidv4();
    const a = createAggregateRepository({ store, aggregate: ledgerAccount, log: testLog });
    const b = createAggregateRepository({ store, aggregate: ledgerAccount, log: testLog });
    await a.execute(id, { type: 'open', accountId: id, owner: 'ann' }, ctx());
    await b.execute(id, { type: 'credit', accountId: id, amount: 10 }, ctx());
    // a's cache says balance 0; the debit must be decided on the current balance of 10.
    const r = await a.execute(id, { type: 'debit', accountId: id, amount: 5 } satisfies LedgerCommand, ctx());
    expect(r).toMatchObject({ event: 'LedgerAccountDebited', duplicate: false });
    expect((await b.load(id)).state).toMatchObject({ balance: 5 });
  });

  it('re-checks a no-op decided on a stale cached state', async () => {
    const id = uuidv4();
    const a = createAggregateRepository({ store, aggregate: ledgerAccount, log: testLog });
    const b = createAggregateRepository({ store, aggregate: ledgerAccount, log: testLog });
    await a.execute(id, { type: 'open', accountId: id, owner: 'ann' }, ctx());
    await a.load(id);
    await b.execute(id, { type: 'credit', accountId: id, amount: 1 }, ctx());
    const r = await a.execute(id, { type: 'open', accountId: id, owner: 'ann' }, ctx());
    expect(r).toMatchObject({ event: null, position: null });
    expect(r.revision).toBe(await store.lastRevision('account', id));
  });

  it('refuses to append an event its aggregate does not declare valid', async () => {
    const id = uuidv4();
    const repo = createAggregateRepository({ store, aggregate: ledgerAccount, log: testLog });
    await repo.execute(id, { type: 'open', accountId: id, owner: 'ann' }, ctx());
    await expect(repo.execute(id, { type: 'credit', accountId: id, amount: 0.5 }, ctx())).rejects.toThrow(
      /invalid LedgerAccountCredited/,
    );
    expect(await store.lastRevision('account', id)).toBeGreaterThan(0);
    expect((await repo.load(id)).state).toMatchObject({ balance: 0 });
  });
});
