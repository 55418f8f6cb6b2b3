import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConcurrencyError } from './errors.js';
import { createJetStreamEventStore, type EventStore } from './store.js';
import { freshService, type TestService } from './testing/nats.js';

const trace = { correlationId: 'c-1' };
const opened = (id: string) => ({ type: 'LedgerAccountOpened', version: 1, data: { accountId: id, owner: 'ann' } });

describe('JetStream event store', () => {
  let t: TestService;
  let store: EventStore;
  beforeAll(async () => {
    t = await freshService();
    store = createJetStreamEventStore({ nats: t.nats, names: t.names });
  });
  afterAll(() => t.cleanup());

  it('appends to a new aggregate at revision 0 and reads it back with its headers', async () => {
    const r = await store.append({
      aggregate: 'account',
      id: 'a1',
      event: opened('a1'),
      expectedRevision: 0,
      trace: {
        correlationId: 'corr',
        causationId: 'cmd-1',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      },
    });
    expect(r.position).toBeGreaterThan(0);
    expect(await store.lastRevision('account', 'a1')).toBe(r.position);
    const events = [];
    for await (const e of store.read('account', 'a1')) events.push(e);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      type: 'LedgerAccountOpened',
      version: 1,
      data: { accountId: 'a1', owner: 'ann' },
      position: r.position,
      subject: `${t.names.service}.events.account.a1`,
      meta: {
        correlationId: 'corr',
        causationId: 'cmd-1',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      },
    });
  });

  it('refuses an append on a stale revision with a ConcurrencyError and stores nothing', async () => {
    const first = await store.append({ aggregate: 'account', id: 'a2', event: opened('a2'), expectedRevision: 0, trace });
    await expect(
      store.append({ aggregate: 'account', id: 'a2', event: opened('a2'), expectedRevision: 0, trace }),
    ).rejects.toBeInstanceOf(ConcurrencyError);
    await expect(
      store.append({ aggregate: 'account', id: 'a2', event: opened('a2'), expectedRevision: first.position + 1000, trace }),
    ).rejects.toBeInstanceOf(ConcurrencyError);
    expect(await store.lastRevision('account', 'a2')).toBe(first.position);
  });

  it('reads only the events after a given position', async () => {
    let rev = 0;
    const positions: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await store.append({ aggregate: 'account', id: 'a3', event: opened('a3'), expectedRevision: rev, trace });
      rev = r.position;
      positions.push(r.position);
    }
    const after: number[] = [];
    for await (const e of store.read('account', 'a3', positions[1])) after.push(e.position);
    expect(after).toEqual(positions.slice(2));
  });

  it('reads nothing for an aggregate without events', async () => {
    const events = [];
    for await (const e of store.read('account', 'nobody')) events.push(e);
    expect(events).toEqual([]);
    expect(await store.lastRevision('account', 'nobody')).toBe(0);
  });
});
