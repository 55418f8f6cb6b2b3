import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { nanos } from '@nats-io/nats-core';
import { v4 as uuidv4 } from 'uuid';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { replayDeadLetter } from '../../eventstore/dead-letters.js';
import { encodeHeaders, encodeJson, Header } from '../../eventstore/headers.js';
import { startSmtpServer, type TestSmtpServer } from '../../testing/smtp.js';
import { openDeliveryRecords, type DeliveryRecords } from './records.js';
import {
  emailTo,
  eventually,
  sleep,
  startMailingBed,
  startScriptedSmtpServer,
  uniqueAddress,
  type MailingBed,
  type ScriptedSmtpServer,
} from './testing/bed.js';

const CHILD = fileURLToPath(new URL('./testing/instance.ts', import.meta.url));

describe('mailing: exactly once', () => {
  let bed: MailingBed;
  let smtp: TestSmtpServer;
  let records: DeliveryRecords;
  const children: ChildProcess[] = [];
  const scripted: ScriptedSmtpServer[] = [];

  beforeAll(async () => {
    bed = await startMailingBed();
    smtp = await startSmtpServer();
    records = await openDeliveryRecords(bed.nats, bed.names);
    // A short duplicate window, so that "beyond the window" takes a second, not two minutes.
    const info = await bed.nats.jsm.streams.info(bed.names.commandsStream);
    await bed.nats.jsm.streams.update(bed.names.commandsStream, { ...info.config, duplicate_window: nanos(500) });
  });

  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await bed.stopInstances();
    // Each test counts its own dead letters.
    await bed.nats.jsm.streams.purge(bed.names.deadLettersStream);
    for (const s of scripted.splice(0)) await s.close();
  });

  afterAll(async () => {
    await smtp.close();
    await bed.cleanup();
  });

  const mailsTo = (address: string) => smtp.mails.filter((m) => m.to.includes(address));

  /** A mailing instance in a child process, which a test can SIGKILL mid-email. */
  async function startChild(smtpUrl: string, env: Record<string, string> = {}): Promise<ChildProcess> {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
      env: { ...process.env, NATS_URL: bed.server.url, SMTP_URL: smtpUrl, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('child instance not ready within 15 s')), 15_000);
      child.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code, signal) => reject(new Error(`child instance exited (${code ?? signal}) before it was ready`)));
    });
    return child;
  }

  const exited = (child: ChildProcess) =>
    child.exitCode !== null || child.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((r) => child.once('exit', () => r()));

  it('sends a command published again beyond the duplicate window only once', async () => {
    const instance = await bed.startInstance({ smtpUrl: smtp.url });
    const address = uniqueAddress('twice');
    const commandId = uuidv4();
    await bed.send(emailTo(address), { commandId });
    await smtp.waitForMail((m) => m.to.includes(address));
    await eventually(() => bed.drained(), 5_000, 'first copy acknowledged');
    await sleep(700);

    const ack = await bed.nats.js.publish('mailing.commands.send-email', encodeJson(emailTo(address)), {
      msgID: commandId,
      headers: encodeHeaders({
        type: 'MailingSendEmailCommand',
        version: 1,
        correlationId: uuidv4(),
        causationId: undefined,
        traceparent: undefined,
      }),
    });
    // Stored: the stream did not recognise it as a duplicate any more.
    expect(ack.duplicate).toBe(false);
    await eventually(() => instance.outcomes.some((o) => o.commandId === commandId && o.outcome === 'already-sent'));
    await eventually(() => bed.drained(), 5_000, 'second copy acknowledged');
    expect(mailsTo(address)).toHaveLength(1);
    expect((await records.get(commandId))?.record).toMatchObject({ status: 'sent', messageId: `<${commandId}@obeyforum.test>` });
  });

  it('does not send again an email already sent when a stale dead letter of it is replayed', async () => {
    const instance = await bed.startInstance({ smtpUrl: smtp.url });
    const address = uniqueAddress('replay-sent');
    const commandId = await bed.send(emailTo(address));
    await smtp.waitForMail((m) => m.to.includes(address));
    // What `obey replay-dead-letter` publishes: a fresh Nats-Msg-Id and the command id in Obey-Command-Id.
    await bed.send(emailTo(address), { commandId: `replay:${uuidv4()}`, headers: { [Header.CommandId]: commandId } });
    await eventually(() => instance.outcomes.some((o) => o.commandId === commandId && o.outcome === 'already-sent'));
    await sleep(200);
    expect(mailsTo(address)).toHaveLength(1);
  });

  it('parks a command reusing a command id for another email', async () => {
    const instance = await bed.startInstance({ smtpUrl: smtp.url });
    const address = uniqueAddress('reused');
    const commandId = await bed.send(emailTo(address));
    await smtp.waitForMail((m) => m.to.includes(address));
    await eventually(() => bed.drained(), 5_000, 'first acknowledged');
    await sleep(700);
    const other = uniqueAddress('other');
    await bed.send(emailTo(other), { commandId });
    await eventually(() => instance.outcomes.some((o) => o.commandId === commandId && o.reason === 'command-id-reused'));
    expect(mailsTo(other)).toHaveLength(0);
    const letter = (await bed.deadLetters()).find((l) => l.msgId === commandId);
    expect(letter?.error).toMatch(/^command-id-reused:/);
  });

  it('holds back a second copy of a command while the first is being sent, then acknowledges it unsent', async () => {
    const server = await startScriptedSmtpServer((_mail, reply) => {
      setTimeout(() => reply(), 1_200);
    });
    scripted.push(server);
    const instance = await bed.startInstance({ smtpUrl: server.url });
    const address = uniqueAddress('concurrent');
    const commandId = await bed.send(emailTo(address));
    await eventually(() => server.mails.some((m) => m.to.includes(address)), 5_000, 'first copy at the server');
    await sleep(600);
    await bed.send(emailTo(address), { commandId });
    await eventually(() => instance.outcomes.some((o) => o.commandId === commandId && o.outcome === 'already-sent'), 10_000);
    const mine = instance.outcomes.filter((o) => o.commandId === commandId);
    expect(mine.map((o) => o.outcome)).toContain('sent');
    expect(mine.find((o) => o.outcome === 'retrying')?.detail).toBe('another copy is being sent');
    await eventually(() => bed.drained(), 5_000, 'both copies acknowledged');
    expect(server.mails.filter((m) => m.to.includes(address))).toHaveLength(1);
  });

  it('shares the work between two instances, each email sent once', async () => {
    const a = await bed.startInstance({ smtpUrl: smtp.url, concurrency: 2 });
    const b = await bed.startInstance({ smtpUrl: smtp.url, concurrency: 2 });
    const addresses = Array.from({ length: 40 }, () => uniqueAddress('shared'));
    await Promise.all(addresses.map((address) => bed.send(emailTo(address))));
    for (const address of addresses) await smtp.waitForMail((m) => m.to.includes(address), 15_000);
    await eventually(() => bed.drained(), 5_000, 'consumer drained');
    await sleep(300);
    for (const address of addresses) expect(mailsTo(address)).toHaveLength(1);
    const sentBy = (i: typeof a) => i.outcomes.filter((o) => o.outcome === 'sent').length;
    expect(sentBy(a) + sentBy(b)).toBe(40);
    expect(sentBy(a)).toBeGreaterThan(0);
    expect(sentBy(b)).toBeGreaterThan(0);
  });

  it('parks an email whose transaction ended with no answer after the message as delivery-uncertain, and never resends it by itself', async () => {
    let hang = true;
    const server = await startScriptedSmtpServer((_mail, reply) => {
      // The first message is taken and never answered, as a server or link dying at the worst moment.
      if (hang) hang = false;
      else reply();
    });
    scripted.push(server);
    const instance = await bed.startInstance({ smtpUrl: server.url });
    const address = uniqueAddress('uncertain');
    const commandId = await bed.send(emailTo(address));
    await eventually(() => instance.outcomes.some((o) => o.commandId === commandId && o.outcome === 'parked'), 10_000);
    const letter = (await bed.deadLetters()).find((l) => l.msgId === commandId);
    expect(letter?.error).toMatch(/^delivery-uncertain: the SMTP transaction ended without an answer/);
    expect((await records.get(commandId))?.record.status).toBe('uncertain');
    await eventually(() => bed.drained(), 5_000, 'acknowledged');
    await sleep(1_000);
    expect(server.mails.filter((m) => m.to.includes(address))).toHaveLength(1);

    // The operator looked for Message-ID <commandId@…> in the relay's log, did not find it, and
    // replays it: that decision, and only that, sends it again, once.
    await replayDeadLetter(bed.nats, bed.names, letter!.sequence);
    await eventually(() => server.mails.filter((m) => m.to.includes(address)).length === 2, 10_000, 'replayed email');
    await eventually(() => bed.drained(), 5_000, 'replay acknowledged');
    await sleep(300);
    expect(server.mails.filter((m) => m.to.includes(address))).toHaveLength(2);
    expect((await records.get(commandId))?.record.status).toBe('sent');
    expect(
      (await bed.deadLetters()).filter((l) => l.msgId === commandId || l.headers.get(Header.CommandId) === commandId),
    ).toHaveLength(0);
  });

  it('does not send twice an email whose instance was killed after the server took it, before the answer', async () => {
    let child: ChildProcess | undefined;
    const server = await startScriptedSmtpServer((_mail, reply) => {
      // The message is in the server's hands; the sender dies before it hears back.
      if (child !== undefined && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        return;
      }
      reply();
    });
    scripted.push(server);
    child = await startChild(server.url);
    const address = uniqueAddress('killed');
    const commandId = await bed.send(emailTo(address));
    await exited(child);
    expect(server.mails.filter((m) => m.to.includes(address))).toHaveLength(1);
    expect((await records.get(commandId))?.record).toMatchObject({ status: 'sending', instanceId: 'mailing-child' });

    // The command comes back after the ack wait, to an instance that cannot know what happened.
    const survivor = await bed.startInstance({ smtpUrl: server.url });
    await eventually(() => survivor.outcomes.some((o) => o.commandId === commandId), 10_000, 'redelivery');
    expect(survivor.outcomes.find((o) => o.commandId === commandId)).toMatchObject({
      outcome: 'parked',
      reason: 'delivery-uncertain',
    });
    await eventually(() => bed.drained(), 5_000, 'acknowledged');
    await sleep(500);
    expect(server.mails.filter((m) => m.to.includes(address))).toHaveLength(1);
    expect((await records.get(commandId))?.record.status).toBe('uncertain');
    const letter = (await bed.deadLetters()).find((l) => l.msgId === commandId);
    expect(letter?.error).toMatch(/^delivery-uncertain: an attempt by mailing-child/);
  });

  it('does not send twice an email whose instance was killed after recording it sent, before the ack', async () => {
    const child = await startChild(smtp.url, { CRASH_AFTER: 'sent' });
    const address = uniqueAddress('crash-before-ack');
    const commandId = await bed.send(emailTo(address));
    await exited(child);
    expect(child.signalCode).toBe('SIGKILL');
    expect(mailsTo(address)).toHaveLength(1);
    expect((await records.get(commandId))?.record.status).toBe('sent');

    const survivor = await bed.startInstance({ smtpUrl: smtp.url });
    await eventually(() => survivor.outcomes.some((o) => o.commandId === commandId), 10_000, 'redelivery');
    expect(survivor.outcomes.find((o) => o.commandId === commandId)?.outcome).toBe('already-sent');
    await eventually(() => bed.drained(), 5_000, 'acknowledged');
    await sleep(300);
    expect(mailsTo(address)).toHaveLength(1);
  });
});
