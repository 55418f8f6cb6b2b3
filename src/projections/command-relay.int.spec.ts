import { Type } from 'typebox';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defineMessage } from '../../schemas/message.js';
import { openBucket } from '../eventstore/buckets.js';
import { listDeadLetters } from '../eventstore/dead-letters.js';
import { Header } from '../eventstore/headers.js';
import { Opened } from '../eventstore/testing/ledger.js';
import { streamMessages, testLog } from '../eventstore/testing/nats.js';
import { createCommandRelay } from './command-relay.js';
import type { ProjectionRunner } from './runner.js';
import { createProjectionBed, type ProjectionBed } from './testing/bed.js';
import { ledgerEvents } from './testing/ledger.js';

describe('command relay', () => {
  let bed: ProjectionBed;
  let relay: ProjectionRunner | undefined;
  beforeEach(async () => {
    bed = await createProjectionBed();
  });
  afterEach(async () => {
    await relay?.stop();
    relay = undefined;
    await bed.cleanup();
    await bed.nats.jsm.streams.delete(`KV_${bed.service.names.service.toUpperCase()}_CHECKPOINTS`).catch(() => false);
  });

  /** The commands stored in the bed's commands stream (the relay's target here), in order. */
  async function sentCommands() {
    const { nats, names } = bed.service;
    return (await streamMessages(nats, names.commandsStream)).map((m) => ({
      msgId: m.header.get(Header.MsgId),
      data: m.json<{ accountId: string; note: string }>(),
    }));
  }

  it('sends the valid commands of an event and parks the event naming the invalid ones, then goes on', async () => {
    const { nats, names } = bed.service;
    const Greet = defineMessage({
      type: 'LedgerGreetOwnerCommand',
      subject: names.commandSubject('greet-owner'),
      schema: Type.Object({ accountId: Type.String(), note: Type.String({ minLength: 1 }) }, { additionalProperties: false }),
    });
    await bed.ledger.open('a', 'ann');
    // An owner of no characters makes the event's second command invalid.
    await bed.ledger.open('b', '');
    const last = await bed.ledger.open('c', 'cy');
    relay = createCommandRelay({
      nats,
      names,
      leases: bed.leases,
      instanceId: 'relay-1',
      log: testLog,
      name: 'greetings',
      description: 'test: greetings to new owners',
      checkpoints: await openBucket(nats, `${names.service.toUpperCase()}_CHECKPOINTS`, { description: 'test' }),
      events: ledgerEvents,
      toCommands(e) {
        if (e.type !== Opened.type) return [];
        const { accountId, owner } = e.data as { accountId: string; owner: string };
        return ['welcome', owner, 'bye'].map((note) => ({ definition: Greet, data: { accountId, note } }));
      },
    });
    relay.start();
    expect(await relay.waitForPosition(last, 15_000)).toBe(true);

    const sent = await sentCommands();
    expect(sent.map((c) => `${c.data.accountId}:${c.data.note}`)).toEqual([
      'a:welcome',
      'a:ann',
      'a:bye',
      'b:welcome',
      'b:bye',
      'c:welcome',
      'c:cy',
      'c:bye',
    ]);
    expect(new Set(sent.map((c) => c.msgId)).size).toBe(sent.length);
    const parked = await listDeadLetters(nats, names);
    expect(parked).toHaveLength(1);
    expect(parked[0]).toMatchObject({ consumer: 'greetings', messageType: Opened.type });
    expect(parked[0]?.error).toMatch(/1 invalid command\(s\) of 3 from LedgerAccountOpened, and sent the other 2/);
    expect(parked[0]?.error).toMatch(/command 1 \(LedgerGreetOwnerCommand\)\/note/);
  });
});
