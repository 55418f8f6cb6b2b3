import { randomBytes } from 'node:crypto';
import { Type } from 'typebox';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defineMessage } from '../../schemas/message.js';
import { listDeadLetters } from '../eventstore/dead-letters.js';
import { encodeHeaders, Header } from '../eventstore/headers.js';
import type { Nats } from '../eventstore/nats.js';
import type { StoredEvent } from '../eventstore/store.js';
import { Opened } from '../eventstore/testing/ledger.js';
import { streamMessages, testLog } from '../eventstore/testing/nats.js';
import {
  createNotificationRelay,
  SourceCountHeader,
  SourceIndexHeader,
  SourceSequenceHeader,
  type Notification,
} from './relay.js';
import type { ProjectionRunner } from './runner.js';
import { createProjectionBed, type ProjectionBed } from './testing/bed.js';
import { ledgerEvents } from './testing/ledger.js';

/**
 * Records what a relay publishes, stored or deduplicated alike, by message id; `fail` makes a
 * publish throw before it reaches the server.
 */
function countingPublishes(nats: Nats, fail: (msgId: string) => boolean = () => false) {
  const msgIds: string[] = [];
  const js = new Proxy(nats.js, {
    get(target, prop) {
      if (prop === 'publish') {
        return (...args: Parameters<Nats['js']['publish']>) => {
          const msgId = args[2]?.msgID ?? '';
          msgIds.push(msgId);
          if (fail(msgId)) return Promise.reject(new Error('connection lost mid-event'));
          return target.publish(...args);
        };
      }
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { nats: { ...nats, js }, msgIds: msgIds as readonly string[] };
}

describe('notification relay: several notifications per event', () => {
  let bed: ProjectionBed;
  const relays: ProjectionRunner[] = [];
  beforeEach(async () => {
    bed = await createProjectionBed();
  });
  afterEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.stop()));
    await bed?.cleanup();
  });

  const opened = () =>
    defineMessage({
      type: 'LedgerAccountOpenedNotification',
      subject: bed.service.names.notificationSubject('account-opened'),
      schema: Type.Object({ accountId: Type.String(), owner: Type.String() }, { additionalProperties: false }),
    });
  const welcomed = () =>
    defineMessage({
      type: 'LedgerAccountWelcomedNotification',
      subject: bed.service.names.notificationSubject('account-welcomed'),
      schema: Type.Object({ accountId: Type.String(), greeting: Type.String() }, { additionalProperties: false }),
    });

  /**
   * What an opened account gives, by the prefix of its id: `two-` two notifications (opened,
   * then welcomed), `one-` a single one, `arr-` a single one in an array; others nothing.
   */
  function notificationsOf(e: StoredEvent): Notification | Notification[] | null {
    if (e.type !== Opened.type) return null;
    const { accountId, owner } = e.data as { accountId: string; owner: string };
    const first: Notification = { definition: opened(), data: { accountId, owner } };
    if (accountId.startsWith('two-')) {
      return [first, { definition: welcomed(), data: { accountId, greeting: `welcome, ${owner}` } }];
    }
    if (accountId.startsWith('one-')) return first;
    if (accountId.startsWith('arr-')) return [first];
    return null;
  }

  function startRelay(nats: Nats) {
    const relay = createNotificationRelay({
      nats,
      names: bed.service.names,
      leases: bed.leases,
      instanceId: `relay-${randomBytes(4).toString('hex')}`,
      log: testLog,
      events: ledgerEvents,
      toNotification: notificationsOf,
    });
    relays.push(relay);
    relay.start();
    return relay;
  }

  /** Every message of the notifications stream, in order, with the headers the relay sets. */
  async function notifications() {
    const { nats, names } = bed.service;
    const out = [];
    for (const m of await streamMessages(nats, names.notificationsStream)) {
      const optional = (name: string) => (m.header.has(name) ? m.header.get(name) : undefined);
      out.push({
        subject: m.subject,
        msgId: m.header.get(Header.MsgId),
        type: m.header.get(Header.MessageType),
        causationId: m.header.get(Header.CausationId),
        correlationId: m.header.get(Header.CorrelationId),
        source: m.header.get(SourceSequenceHeader),
        index: optional(SourceIndexHeader),
        count: optional(SourceCountHeader),
        data: m.json<unknown>(),
      });
    }
    return out;
  }

  async function openedEvent(id: string): Promise<StoredEvent> {
    for await (const e of bed.store.read('account', id)) if (e.type === Opened.type) return e;
    throw new Error(`account ${id} was not opened`);
  }

  /** The two notifications of an opened `two-` account, as the relay stores them. */
  function pairOf(e: StoredEvent) {
    const { accountId, owner } = e.data as { accountId: string; owner: string };
    const stream = bed.service.names.eventsStream;
    const common = { correlationId: e.meta.correlationId, source: String(e.position), count: '2' };
    return [
      {
        subject: bed.service.names.notificationSubject('account-opened'),
        msgId: `${stream}:${e.position}`,
        type: 'LedgerAccountOpenedNotification',
        causationId: `${stream}:${e.position}`,
        ...common,
        index: '0',
        data: { accountId, owner },
      },
      {
        subject: bed.service.names.notificationSubject('account-welcomed'),
        msgId: `${stream}:${e.position}:1`,
        type: 'LedgerAccountWelcomedNotification',
        causationId: `${stream}:${e.position}:1`,
        ...common,
        index: '1',
        data: { accountId, greeting: `welcome, ${owner}` },
      },
    ];
  }

  it('publishes both notifications of an event, in order, each with its index, the count and its own id', async () => {
    const { ledger, service } = bed;
    await ledger.open('two-a', 'ann');
    await ledger.credit('two-a', 5);
    const last = await ledger.open('two-b', 'bob');
    const relay = startRelay(service.nats);

    expect(await relay.waitForPosition(last, 10_000)).toBe(true);
    const [a, b] = [await openedEvent('two-a'), await openedEvent('two-b')];
    expect(await notifications()).toEqual([...pairOf(a), ...pairOf(b)]);
    expect(await listDeadLetters(service.nats, service.names)).toEqual([]);
  });

  it('after a crash between the two notifications of an event, a restarted relay publishes only the missing one', async () => {
    const { ledger, service } = bed;
    const { names } = service;
    const firstPosition = await ledger.open('two-a', 'ann');
    const first = startRelay(service.nats);
    expect(await first.waitForPosition(firstPosition, 10_000)).toBe(true);
    await first.stop();

    // What a relay that crashed right after the first notification of two-b left behind.
    await ledger.open('two-b', 'bob');
    const b = await openedEvent('two-b');
    const msgID = `${names.eventsStream}:${b.position}`;
    await service.nats.js.publish(
      names.notificationSubject('account-opened'),
      JSON.stringify({ accountId: 'two-b', owner: 'bob' }),
      {
        msgID,
        expect: { streamName: names.notificationsStream },
        headers: encodeHeaders(
          {
            type: 'LedgerAccountOpenedNotification',
            version: 1,
            correlationId: b.meta.correlationId,
            causationId: msgID,
            traceparent: undefined,
          },
          { [SourceSequenceHeader]: String(b.position), [SourceIndexHeader]: '0', [SourceCountHeader]: '2' },
        ),
      },
    );
    const last = await ledger.open('two-c', 'cid');

    const counting = countingPublishes(service.nats);
    const second = startRelay(counting.nats);
    expect(await second.waitForPosition(last, 10_000)).toBe(true);

    const c = await openedEvent('two-c');
    expect(counting.msgIds).toEqual([
      `${names.eventsStream}:${b.position}:1`,
      `${names.eventsStream}:${c.position}`,
      `${names.eventsStream}:${c.position}:1`,
    ]);
    const a = await openedEvent('two-a');
    expect(await notifications()).toEqual([...pairOf(a), ...pairOf(b), ...pairOf(c)]);
  });

  it('stores each notification of an event once when the second publish fails and the event is relayed again', async () => {
    const { ledger, service } = bed;
    const stream = service.names.eventsStream;
    const last = await ledger.open('two-a', 'ann');
    let failed = false;
    const counting = countingPublishes(service.nats, (msgId) => {
      if (failed || msgId !== `${stream}:${last}:1`) return false;
      failed = true;
      return true;
    });
    const relay = startRelay(counting.nats);

    expect(await relay.waitForPosition(last, 10_000)).toBe(true);
    expect(failed).toBe(true);
    expect(counting.msgIds.slice(0, 2)).toEqual([`${stream}:${last}`, `${stream}:${last}:1`]);
    expect(counting.msgIds.at(-1)).toBe(`${stream}:${last}:1`);
    expect(await notifications()).toEqual(pairOf(await openedEvent('two-a')));
    expect(await listDeadLetters(service.nats, service.names)).toEqual([]);
  });

  it('keeps the plain id and no index headers for an event that gives a single notification', async () => {
    const { ledger, service } = bed;
    const stream = service.names.eventsStream;
    await ledger.open('one-a', 'ann');
    await ledger.open('none-b', 'bob');
    await ledger.open('arr-c', 'cid');
    const last = await ledger.open('two-d', 'dan');
    const relay = startRelay(service.nats);

    expect(await relay.waitForPosition(last, 10_000)).toBe(true);
    const single = (e: StoredEvent) => ({
      subject: service.names.notificationSubject('account-opened'),
      msgId: `${stream}:${e.position}`,
      type: 'LedgerAccountOpenedNotification',
      causationId: `${stream}:${e.position}`,
      correlationId: e.meta.correlationId,
      source: String(e.position),
      index: undefined,
      count: undefined,
      data: e.data,
    });
    const [a, c, d] = [await openedEvent('one-a'), await openedEvent('arr-c'), await openedEvent('two-d')];
    expect(await notifications()).toEqual([single(a), single(c), ...pairOf(d)]);
  });
});
