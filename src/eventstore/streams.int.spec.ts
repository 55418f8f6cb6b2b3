import { AckPolicy, type JetStreamManager } from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureDurableConsumer } from './streams.js';
import { freshService, type TestService } from './testing/nats.js';

/** The manager with its consumer updates counted. */
function countingUpdates(jsm: JetStreamManager): { jsm: JetStreamManager; readonly updates: number } {
  let updates = 0;
  const consumers = new Proxy(jsm.consumers, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (prop === 'update') {
        return (...args: Parameters<JetStreamManager['consumers']['update']>) => {
          updates++;
          return target.update(...args);
        };
      }
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return {
    jsm: new Proxy(jsm, { get: (target, prop) => (prop === 'consumers' ? consumers : Reflect.get(target, prop, target)) }),
    get updates() {
      return updates;
    },
  };
}

describe('ensureDurableConsumer', () => {
  let t: TestService;
  beforeAll(async () => {
    t = await freshService();
  });
  afterAll(() => t?.cleanup());

  const config = (description: string, ackWaitMs: number, maxAckPending: number) => ({
    durable_name: 'workers',
    description,
    filter_subject: `${t.names.service}.commands.>`,
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(ackWaitMs),
    max_ack_pending: maxAckPending,
  });

  it('creates a missing consumer, writes nothing when it is as asked, and brings changed settings back', async () => {
    const counting = countingUpdates(t.nats.jsm);
    await ensureDurableConsumer(counting.jsm, t.names.commandsStream, config('workers', 30_000, 1_000));
    await ensureDurableConsumer(counting.jsm, t.names.commandsStream, config('workers', 30_000, 1_000));
    expect(counting.updates).toBe(0);

    await ensureDurableConsumer(counting.jsm, t.names.commandsStream, config('workers, described anew', 10_000, 64));
    expect(counting.updates).toBe(1);
    expect((await t.nats.jsm.consumers.info(t.names.commandsStream, 'workers')).config).toMatchObject({
      description: 'workers, described anew',
      ack_wait: nanos(10_000),
      max_ack_pending: 64,
      ack_policy: AckPolicy.Explicit,
    });
    await ensureDurableConsumer(counting.jsm, t.names.commandsStream, config('workers, described anew', 10_000, 64));
    expect(counting.updates).toBe(1);
  });
});
