import { nanos } from '@nats-io/nats-core';
import type { KV } from '@nats-io/kv';
import { v4 as uuidv4 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  commandIdFromIdempotencyKey,
  createCommandProcessor,
  createCommandSender,
  openCommandResults,
  type CommandProcessor,
  type CommandSender,
} from './commands.js';
import { listDeadLetters, replayDeadLetter } from './dead-letters.js';
import { defineCommandHandler } from './commands.js';
import { defineMessage, Uuid } from '../../schemas/message.js';
import { Type } from 'typebox';
import { encodeHeaders } from './headers.js';
import { connectNats, type Nats } from './nats.js';
import { createAggregateRepository } from './repository.js';
import { createJetStreamEventStore, type EventStore } from './store.js';
import { ledgerAccount, ledgerCommands } from './testing/ledger.js';
import { freshService, NATS_URL, openKv, testLog, type TestService } from './testing/nats.js';

const trace = () => ({ correlationId: uuidv4() });

describe('command bus', () => {
  let t: TestService;
  let store: EventStore;
  let results: KV;
  let sender: CommandSender;
  let cmds: ReturnType<typeof ledgerCommands>;
  const processors: CommandProcessor[] = [];
  const connections: Nats[] = [];

  let failing = false;
  /** A command whose handler fails (as a bug or an outage would) while `failing` is set. */
  let Flaky: ReturnType<typeof flakyCommand>;
  function flakyCommand() {
    return defineMessage({
      type: 'LedgerFlakyCreditCommand',
      subject: t.names.commandSubject('flaky-credit'),
      schema: Type.Object({ accountId: Uuid() }, { additionalProperties: false }),
    });
  }

  /** A handler instance on a connection of its own, as another process would have. */
  async function startInstance(): Promise<CommandProcessor> {
    const nats = await connectNats({ url: NATS_URL, name: 'handler-instance' });
    connections.push(nats);
    const p = createCommandProcessor({
      nats,
      names: t.names,
      store: createJetStreamEventStore({ nats, names: t.names }),
      results: await openCommandResults(nats, t.names),
      snapshots: await openKv(nats, t.names.snapshotsBucket),
      handlers: [
        ...cmds.handlers,
        defineCommandHandler({
          command: Flaky,
          aggregate: ledgerAccount,
          aggregateId: (b) => b.accountId,
          toCommand: (b) => {
            if (failing) throw new Error('the lookup service is down');
            return { type: 'credit' as const, accountId: b.accountId, amount: 1 };
          },
        }),
      ],
      log: testLog,
      retryDelayMs: { initial: 20, max: 200 },
    });
    await p.start();
    processors.push(p);
    return p;
  }

  /**
   * Stops every handler instance as its process would: the processor, then its connection.
   * Left open, a connection keeps the pulls it had waiting, and the server may hand a new
   * command to one of them, to be redelivered only after the ack wait.
   */
  async function stopInstances(): Promise<void> {
    for (const p of processors.splice(0)) await p.stop();
    for (const c of connections.splice(0)) await c.nc.drain();
  }

  async function eventsOf(accountId: string) {
    const out = [];
    for await (const e of store.read('account', accountId)) out.push(e);
    return out;
  }

  async function openAccount(): Promise<string> {
    const accountId = uuidv4();
    const r = await sender.send(cmds.OpenAccount, { accountId, owner: 'ann' }, { trace: trace() });
    expect(r.status).toBe('succeeded');
    return accountId;
  }

  beforeAll(async () => {
    t = await freshService();
    // A short duplicate window, so that "beyond the window" takes a second, not two minutes.
    const info = await t.nats.jsm.streams.info(t.names.commandsStream);
    await t.nats.jsm.streams.update(t.names.commandsStream, { ...info.config, duplicate_window: nanos(1_000) });
    store = createJetStreamEventStore({ nats: t.nats, names: t.names });
    results = await openCommandResults(t.nats, t.names);
    sender = createCommandSender(t.nats, { timeoutMs: 5_000 });
    cmds = ledgerCommands(t.names);
    Flaky = flakyCommand();
    await startInstance();
    await startInstance();
  });

  afterAll(async () => {
    await stopInstances();
    await t.cleanup();
  });

  it('runs a command and answers with the position of its event', async () => {
    const accountId = uuidv4();
    const correlationId = uuidv4();
    const r = await sender.send(cmds.OpenAccount, { accountId, owner: 'ann' }, { trace: { correlationId } });
    expect(r).toMatchObject({ status: 'succeeded', aggregateId: accountId, event: 'LedgerAccountOpened' });
    const events = await eventsOf(accountId);
    expect(events).toHaveLength(1);
    expect(r.status === 'succeeded' && r.position).toBe(events[0]?.position);
    expect(events[0]?.meta).toMatchObject({ correlationId, causationId: r.commandId });
  });

  it('applies 100 concurrent commands on one aggregate exactly once each, with no lost update', async () => {
    const accountId = await openAccount();
    const outcomes = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        sender.send(cmds.Credit, { accountId, amount: i + 1 }, { trace: trace(), timeoutMs: 30_000 }),
      ),
    );
    expect(outcomes.filter((o) => o.status === 'succeeded')).toHaveLength(100);
    const events = await eventsOf(accountId);
    expect(events).toHaveLength(101);
    const causes = new Set(events.map((e) => e.meta.causationId));
    expect(causes.size).toBe(101);
    const repo = createAggregateRepository({ store, aggregate: ledgerAccount, log: testLog });
    const { state } = await repo.load(accountId);
    expect(state).toEqual({ status: 'open', owner: 'ann', balance: 5050, movements: 100 });
  });

  it('gives a duplicated command (same id) within the duplicate window one effect and the first result', async () => {
    const accountId = await openAccount();
    const commandId = uuidv4();
    const first = await sender.send(cmds.Credit, { accountId, amount: 7 }, { commandId, trace: trace() });
    const second = await sender.send(cmds.Credit, { accountId, amount: 7 }, { commandId, trace: trace() });
    expect(second).toEqual(first);
    expect(await eventsOf(accountId)).toHaveLength(2);
  });

  it('gives a duplicated command beyond the duplicate window one effect and the first result', async () => {
    const accountId = await openAccount();
    const commandId = uuidv4();
    const first = await sender.send(cmds.Credit, { accountId, amount: 7 }, { commandId, trace: trace() });
    await new Promise((r) => setTimeout(r, 1_500));
    const again = await sender.send(cmds.Credit, { accountId, amount: 7 }, { commandId, trace: trace() });
    expect(again).toEqual(first);
    expect(await eventsOf(accountId)).toHaveLength(2);
  });

  it('answers a command sent again meanwhile by another sender (its result goes to the first one) promptly', async () => {
    const accountId = await openAccount();
    const commandId = uuidv4();
    const other = await connectNats({ url: NATS_URL, name: 'second-sender' });
    connections.push(other);
    const second = createCommandSender(other, { timeoutMs: 5_000 });
    const t0 = performance.now();
    const [a, b] = await Promise.all([
      sender.send(cmds.Credit, { accountId, amount: 3 }, { commandId, trace: trace() }),
      second.send(cmds.Credit, { accountId, amount: 3 }, { commandId, trace: trace() }),
    ]);
    expect(a).toMatchObject({ status: 'succeeded', commandId });
    expect(b).toEqual(a);
    // From the results bucket, not after the 5 s timeout.
    expect(performance.now() - t0).toBeLessThan(4_000);
    expect(await eventsOf(accountId)).toHaveLength(2);
  });

  it('marks only the ids it drew itself as new to the handlers, and names its result inbox', async () => {
    const seen: { id: string; drawn: string | undefined; inbox: string | undefined }[] = [];
    const sub = t.nats.nc.subscribe(cmds.OpenAccount.subject!, {
      callback: (_err, m) => {
        seen.push({
          id: m.headers?.get('Nats-Msg-Id') ?? '',
          drawn: m.headers?.get('Obey-Command-Id-Drawn') || undefined,
          inbox: m.headers?.get('Obey-Result-Inbox') || undefined,
        });
      },
    });
    await t.nats.nc.flush();
    const keyed = commandIdFromIdempotencyKey('a-client-key', 'scope');
    const drawn = await sender.send(cmds.OpenAccount, { accountId: uuidv4(), owner: 'bo' }, { trace: trace() });
    await sender.send(cmds.OpenAccount, { accountId: uuidv4(), owner: 'cy' }, { commandId: keyed, trace: trace() });
    sub.unsubscribe();
    expect(seen.find((s) => s.id === drawn.commandId)).toMatchObject({ drawn: 'true', inbox: expect.any(String) });
    expect(seen.find((s) => s.id === keyed)).toMatchObject({ drawn: undefined, inbox: expect.any(String) });
  });

  it('answers a command whose result inbox cannot be a subject token on its own result subject', async () => {
    const commandId = uuidv4();
    const sub = t.nats.nc.subscribe(t.names.commandResultSubject(commandId), { max: 1 });
    await t.nats.js.publish(cmds.OpenAccount.subject!, JSON.stringify({ accountId: uuidv4(), owner: 'di' }), {
      msgID: commandId,
      headers: encodeHeaders(
        { type: cmds.OpenAccount.type, version: 1, correlationId: 'c', causationId: undefined, traceparent: undefined },
        { 'Obey-Result-Inbox': 'not.a*token' },
      ),
    });
    for await (const m of sub) {
      expect(JSON.parse(new TextDecoder().decode(m.data))).toMatchObject({ status: 'succeeded', commandId });
    }
  });

  it('recognises a command whose event was appended but whose result was never stored', async () => {
    const accountId = await openAccount();
    const commandId = uuidv4();
    const first = await sender.send(cmds.Credit, { accountId, amount: 3 }, { commandId, trace: trace() });
    // As if the handler died between the append and storing the result.
    await results.purge(commandId);
    await new Promise((r) => setTimeout(r, 1_500));
    // A fresh instance has no cached state: it must find the command in the aggregate's events.
    await stopInstances();
    await startInstance();
    const again = await sender.send(cmds.Credit, { accountId, amount: 3 }, { commandId, trace: trace() });
    expect(again).toMatchObject({ status: 'succeeded', position: first.status === 'succeeded' ? first.position : -1 });
    expect(await eventsOf(accountId)).toHaveLength(2);
    await startInstance();
  });

  it('recognises a redelivered command applied long ago, beyond the ids an aggregate remembers', async () => {
    const accountId = await openAccount();
    const commandId = uuidv4();
    const sentAt = new Date();
    const first = await sender.send(cmds.Credit, { accountId, amount: 3 }, { commandId, trace: trace() });
    await results.purge(commandId);
    for (let i = 0; i < 70; i++) await sender.send(cmds.Credit, { accountId, amount: 1 }, { trace: trace() });
    await new Promise((r) => setTimeout(r, 1_100));
    // As the stream redelivers it, or an operator replays it: the same id, first sent back then.
    await t.nats.js.publish(cmds.Credit.subject!, JSON.stringify({ accountId, amount: 3 }), {
      msgID: uuidv4(),
      headers: encodeHeaders(
        { type: cmds.Credit.type, version: 1, correlationId: 'c', causationId: undefined, traceparent: undefined },
        { 'Obey-Command-Id': commandId, 'Obey-Command-Since': sentAt.toISOString() },
      ),
    });
    await expect
      .poll(() => sender.result(t.names.service, commandId), { timeout: 10_000 })
      .toMatchObject({ status: 'succeeded', position: first.status === 'succeeded' ? first.position : -1 });
    expect(await eventsOf(accountId)).toHaveLength(72);
  });

  it('refuses an idempotency key reused for another command within the duplicate window', async () => {
    const accountId = await openAccount();
    const commandId = uuidv4();
    await sender.send(cmds.Credit, { accountId, amount: 5 }, { commandId, trace: trace() });
    const r = await sender.send(cmds.Debit, { accountId, amount: 1 }, { commandId, trace: trace() });
    expect(r).toMatchObject({ status: 'rejected', error: { code: 'idempotency-key-reused' } });
    expect(await eventsOf(accountId)).toHaveLength(2);
  });

  it('treats a retry whose JSON keys come in another order as the same command', async () => {
    const accountId = await openAccount();
    const commandId = uuidv4();
    const first = await sender.send(cmds.Credit, { accountId, amount: 4 }, { commandId, trace: trace() });
    const reordered = await sender.send(cmds.Credit, { amount: 4, accountId }, { commandId, trace: trace() });
    expect(reordered).toEqual(first);
    await new Promise((r) => setTimeout(r, 1_100));
    expect(await sender.send(cmds.Credit, { amount: 4, accountId }, { commandId, trace: trace() })).toEqual(first);
    expect(await eventsOf(accountId)).toHaveLength(2);
  });

  it('returns a domain rejection with its code, and the same rejection on a retry', async () => {
    const accountId = await openAccount();
    const commandId = uuidv4();
    const r = await sender.send(cmds.Debit, { accountId, amount: 10 }, { commandId, trace: trace() });
    expect(r).toMatchObject({
      status: 'rejected',
      error: { code: 'insufficient-funds', kind: 'conflict', details: { balance: 0 } },
    });
    await sender.send(cmds.Credit, { accountId, amount: 50 }, { trace: trace() });
    // The retry gets the first answer even though the debit would now pass: no second effect.
    expect(await sender.send(cmds.Debit, { accountId, amount: 10 }, { commandId, trace: trace() })).toEqual(r);
    expect(await eventsOf(accountId)).toHaveLength(2);
  });

  it('refuses an idempotency key reused for a different command', async () => {
    const accountId = await openAccount();
    const commandId = commandIdFromIdempotencyKey('client-key-1', 'user-1');
    expect(commandIdFromIdempotencyKey('client-key-1', 'user-2')).not.toBe(commandId);
    await sender.send(cmds.Credit, { accountId, amount: 5 }, { commandId, trace: trace() });
    await new Promise((r) => setTimeout(r, 1_500));
    const r = await sender.send(cmds.Credit, { accountId, amount: 6 }, { commandId, trace: trace() });
    expect(r).toMatchObject({ status: 'rejected', error: { code: 'idempotency-key-reused', kind: 'conflict' } });
    expect(await eventsOf(accountId)).toHaveLength(2);
  });

  it('parks a malformed command in the dead-letter stream with its reason and answers the sender', async () => {
    const commandId = uuidv4();
    const sub = t.nats.nc.subscribe(t.names.commandResultSubject(commandId), { max: 1 });
    await t.nats.js.publish(cmds.Credit.subject!, JSON.stringify({ accountId: 'not-a-uuid', amount: -1 }), {
      msgID: commandId,
      headers: encodeHeaders({
        type: cmds.Credit.type,
        version: 1,
        correlationId: 'c',
        causationId: undefined,
        traceparent: undefined,
      }),
    });
    for await (const m of sub) {
      expect(JSON.parse(new TextDecoder().decode(m.data))).toMatchObject({
        status: 'rejected',
        error: { code: 'invalid-command', kind: 'invalid' },
      });
    }
    const parked = await listDeadLetters(t.nats, t.names);
    const mine = parked.find((d) => d.origin.subject === cmds.Credit.subject && d.error.includes('/accountId'));
    expect(mine).toMatchObject({ consumer: `${t.names.service}-command-handlers`, origin: { stream: t.names.commandsStream } });
    // The handlers go on.
    await openAccount();
  });

  it('parks a message that is not JSON and goes on', async () => {
    await t.nats.js.publish(cmds.Credit.subject!, 'not json{', {
      msgID: uuidv4(),
      headers: encodeHeaders({
        type: cmds.Credit.type,
        version: 1,
        correlationId: 'c',
        causationId: undefined,
        traceparent: undefined,
      }),
    });
    await expect
      .poll(async () => (await listDeadLetters(t.nats, t.names)).some((d) => d.error.includes('not JSON')), { timeout: 5_000 })
      .toBe(true);
    await openAccount();
  });

  it('parks a command that keeps failing after bounded redeliveries, and replays it on demand', async () => {
    const accountId = await openAccount();
    failing = true;
    const r = await sender.send(Flaky, { accountId }, { trace: trace(), timeoutMs: 10_000 });
    expect(r).toMatchObject({ status: 'rejected', error: { code: 'command-failed', kind: 'internal' } });
    const parked = (await listDeadLetters(t.nats, t.names)).find((d) => d.msgId === r.commandId);
    expect(parked).toMatchObject({ deliveries: 10, messageType: 'LedgerFlakyCreditCommand' });
    // The failure is stored, so a client polling the command's status learns it.
    expect(await sender.result(t.names.service, r.commandId)).toMatchObject({
      status: 'rejected',
      error: { code: 'command-failed' },
    });
    expect(parked?.error).toContain('the lookup service is down');
    expect(await eventsOf(accountId)).toHaveLength(1);

    failing = false;
    await replayDeadLetter(t.nats, t.names, parked!.sequence);
    await expect
      .poll(() => sender.result(t.names.service, r.commandId), { timeout: 10_000 })
      .toMatchObject({ status: 'succeeded' });
    expect(await eventsOf(accountId)).toHaveLength(2);
    expect((await listDeadLetters(t.nats, t.names)).some((d) => d.msgId === r.commandId)).toBe(false);
  });

  it('puts back a command consumer whose settings were changed, at the next start', async () => {
    await stopInstances();
    const consumer = `${t.names.service}-command-handlers`;
    const before = (await t.nats.jsm.consumers.info(t.names.commandsStream, consumer)).config;
    await t.nats.jsm.consumers.update(t.names.commandsStream, consumer, {
      description: 'changed by hand',
      ack_wait: nanos(5_000),
      max_ack_pending: 7,
    });
    await startInstance();
    expect((await t.nats.jsm.consumers.info(t.names.commandsStream, consumer)).config).toMatchObject({
      description: before.description,
      ack_wait: before.ack_wait,
      max_ack_pending: before.max_ack_pending,
    });
    // Two instances again, as the later tests expect.
    await startInstance();
  });

  it('recreates a deleted command consumer and goes on handling commands', async () => {
    // Both instances past their start-up (which ensures the consumer) before it is deleted.
    await openAccount();
    await new Promise((r) => setTimeout(r, 300));
    // nats-server 2.9 may fail a delete while the consumer's directory is being written
    // ("unlinkat … directory not empty"); the operator, like this test, tries again.
    const consumer = `${t.names.service}-command-handlers`;
    const deleted = async () => {
      try {
        return await t.nats.jsm.consumers.delete(t.names.commandsStream, consumer);
      } catch {
        // Gone after all, or still there: then it is tried again.
        return t.nats.jsm.consumers.info(t.names.commandsStream, consumer).then(
          () => false,
          () => true,
        );
      }
    };
    await expect.poll(deleted, { timeout: 10_000 }).toBe(true);
    const accountId = uuidv4();
    const r = await sender.send(cmds.OpenAccount, { accountId, owner: 'cy' }, { trace: trace(), timeoutMs: 200 });
    // Answered at once if a handler noticed first, else as soon as one has recreated it.
    await expect
      .poll(async () => (r.status === 'pending' ? sender.result(t.names.service, r.commandId) : r), { timeout: 30_000 })
      .toMatchObject({ status: 'succeeded', aggregateId: accountId });
    expect(await eventsOf(accountId)).toHaveLength(1);
  });

  it('answers pending when no handler answers in time, and the command is handled once one runs', async () => {
    await stopInstances();
    const accountId = uuidv4();
    const r = await sender.send(cmds.OpenAccount, { accountId, owner: 'bo' }, { trace: trace(), timeoutMs: 200 });
    expect(r).toEqual({ status: 'pending', commandId: expect.any(String) });
    expect(await sender.result(t.names.service, r.commandId)).toBeUndefined();
    await startInstance();
    await expect
      .poll(() => sender.result(t.names.service, r.commandId), { timeout: 10_000 })
      .toMatchObject({ status: 'succeeded', aggregateId: accountId });
    expect(await eventsOf(accountId)).toHaveLength(1);
  });
});
