import { randomBytes } from 'node:crypto';
import { Type } from 'typebox';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defineMessage } from '../../schemas/message.js';
import { listDeadLetters } from '../eventstore/dead-letters.js';
import { Header } from '../eventstore/headers.js';
import type { Nats } from '../eventstore/nats.js';
import type { StoredEvent } from '../eventstore/store.js';
import { Opened } from '../eventstore/testing/ledger.js';
import { streamMessages, testLog } from '../eventstore/testing/nats.js';
import { createNotificationRelay, SourceSequenceHeader } from './relay.js';
import type { ProjectionRunner } from './runner.js';
import { createProjectionBed, type ProjectionBed } from './testing/bed.js';
import { ledgerEvents } from './testing/ledger.js';

/** Counts what a relay publishes, stored or deduplicated alike. */
function countingPublishes(nats: Nats): { nats: Nats; readonly count: number } {
  let count = 0;
  const js = new Proxy(nats.js, {
    get(target, prop) {
      if (prop === 'publish') {
        return (...args: Parameters<Nats['js']['publish']>) => {
          count++;
          return target.publish(...args);
        };
      }
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return {
    nats: { ...nats, js },
    get count() {
      return count;
    },
  };
}

describe('notification relay', () => {
  let bed: ProjectionBed;
  const relays: ProjectionRunner[] = [];
  beforeEach(async () => {
    bed = await createProjectionBed();
  });
  afterEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.stop()));
    await bed?.cleanup();
  });

  const accountOpened = () =>
    defineMessage({
      type: 'LedgerAccountOpenedNotification',
      subject: bed.service.names.notificationSubject('account-opened'),
      schema: Type.Object({ accountId: Type.String(), owner: Type.String() }, { additionalProperties: false }),
    });

  function startRelay(nats: Nats, toNotification?: (e: StoredEvent) => void) {
    const definition = accountOpened();
    const relay = createNotificationRelay({
      nats,
      names: bed.service.names,
      leases: bed.leases,
      instanceId: `relay-${randomBytes(4).toString('hex')}`,
      log: testLog,
      events: ledgerEvents,
      toNotification(e) {
        toNotification?.(e);
        if (e.type !== Opened.type) return null;
        const { accountId, owner } = e.data as { accountId: string; owner: string };
        return { definition, data: { accountId, owner } };
      },
    });
    relays.push(relay);
    relay.start();
    return relay;
  }

  async function notifications() {
    const { nats, names } = bed.service;
    const out = [];
    for (const m of await streamMessages(nats, names.notificationsStream)) {
      out.push({
        subject: m.subject,
        msgId: m.header.get(Header.MsgId),
        source: Number(m.header.get(SourceSequenceHeader)),
        type: m.header.get(Header.MessageType),
        correlationId: m.header.get(Header.CorrelationId),
        data: m.json<unknown>(),
      });
    }
    return out;
  }

  async function openedEvents(ids: string[]): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    for (const id of ids) for await (const e of bed.store.read('account', id)) if (e.type === Opened.type) out.push(e);
    return out.sort((a, b) => a.position - b.position);
  }

  it('waits out a notifications stream that refuses writes, parking nothing and losing nothing', async () => {
    const { ledger, service } = bed;
    const { nats, names } = service;
    const info = await nats.jsm.streams.info(names.notificationsStream);
    // Full: a stream that answers but refuses every publish (discard new, one message at most).
    await nats.jsm.streams.update(names.notificationsStream, { ...info.config, max_msgs: 1 });
    for (const id of ['a', 'b', 'c']) await ledger.open(id, `owner-${id}`);
    startRelay(nats);
    await expect.poll(async () => (await notifications()).length, { timeout: 5_000 }).toBe(1);
    // Well past the attempts after which poison is parked.
    await new Promise((r) => setTimeout(r, 2_500));
    await nats.jsm.streams.update(names.notificationsStream, { ...info.config, max_msgs: -1 });
    await expect
      .poll(async () => (await notifications()).map((n) => n.data), { timeout: 15_000 })
      .toEqual([
        { accountId: 'a', owner: 'owner-a' },
        { accountId: 'b', owner: 'owner-b' },
        { accountId: 'c', owner: 'owner-c' },
      ]);
    expect(await listDeadLetters(nats, names)).toEqual([]);
  });

  it('publishes one notification per mapped event, identified by the stream and sequence of its source', async () => {
    const { ledger, service } = bed;
    const ids = ['a', 'b', 'c'];
    for (const id of ids) {
      await ledger.open(id, `owner-${id}`);
      await ledger.credit(id, 5);
    }
    const lastOpened = await ledger.open('d', 'owner-d');
    await ledger.credit('d', 1);
    const relay = startRelay(service.nats);

    expect(await relay.waitForPosition(lastOpened, 10_000)).toBe(true);
    const sources = await openedEvents([...ids, 'd']);
    expect(await notifications()).toEqual(
      sources.map((e) => ({
        subject: service.names.notificationSubject('account-opened'),
        msgId: `${service.names.eventsStream}:${e.position}`,
        source: e.position,
        type: 'LedgerAccountOpenedNotification',
        correlationId: e.meta.correlationId,
        data: e.data,
      })),
    );
  });

  it('a restarted relay republishes nothing it had published before', async () => {
    const { ledger, service } = bed;
    const ids = ['a', 'b', 'c', 'd', 'e'];
    let lastOpened = 0;
    for (const id of ids) {
      lastOpened = await ledger.open(id, 'ann');
      await ledger.credit(id, 1);
    }
    const first = startRelay(service.nats);
    expect(await first.waitForPosition(lastOpened, 10_000)).toBe(true);
    await first.stop();

    const counting = countingPublishes(service.nats);
    const second = startRelay(counting.nats);
    const position = await ledger.open('late', 'lou');
    expect(await second.waitForPosition(position, 10_000)).toBe(true);

    expect(counting.count).toBe(1);
    const sources = await openedEvents([...ids, 'late']);
    expect((await notifications()).map((n) => n.source)).toEqual(sources.map((e) => e.position));
  });

  it('stores each notification once when a batch is retried after part of it was published', async () => {
    const { ledger, service } = bed;
    const ids = ['a', 'b', 'c', 'd'];
    for (const id of ids) await ledger.open(id, 'ann');
    let failed = false;
    const counting = countingPublishes(service.nats);
    const relay = startRelay(counting.nats, (e) => {
      // Fails the batch once, after the notifications before 'd' were sent.
      if (!failed && (e.data as { accountId: string }).accountId === 'd') {
        failed = true;
        throw new Error('relay crashed mid-batch');
      }
    });

    expect(await relay.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(failed).toBe(true);
    expect(counting.count).toBeGreaterThan(ids.length);
    expect((await notifications()).map((n) => n.data)).toEqual(ids.map((id) => ({ accountId: id, owner: 'ann' })));
  });
});
