import { v4 as uuidv4 } from 'uuid';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SendEmail } from '../../../schemas/mailing.js';
import { replayDeadLetter } from '../../eventstore/dead-letters.js';
import { encodeHeaders, Header } from '../../eventstore/headers.js';
import { startSmtpServer, type TestSmtpServer } from '../../testing/smtp.js';
import {
  emailTo,
  eventually,
  sleep,
  startMailingBed,
  startScriptedSmtpServer,
  uniqueAddress,
  type MailingBed,
} from './testing/bed.js';

describe('mailing: delivery', () => {
  let bed: MailingBed;
  let smtp: TestSmtpServer;

  beforeAll(async () => {
    bed = await startMailingBed();
    smtp = await startSmtpServer();
  });

  afterEach(async () => {
    await bed.stopInstances();
    // Each test counts its own dead letters.
    await bed.nats.jsm.streams.purge(bed.names.deadLettersStream);
    smtp.behave('accept');
    await smtp.open();
  });

  afterAll(async () => {
    await smtp.close();
    await bed.cleanup();
  });

  const mailsTo = (address: string) => smtp.mails.filter((m) => m.to.includes(address));

  it('delivers every template to its recipient with its subject, text and HTML bodies', async () => {
    await bed.startInstance({ smtpUrl: smtp.url });
    const cases: { email: SendEmail; subject: string; text: string[]; html: string[] }[] = [
      {
        email: {
          template: 'verify-email',
          to: { address: uniqueAddress('verify'), name: 'Ada Lovelace' },
          data: { nickname: 'ada', link: 'https://forum.test/verify?token=t1&u=ada', expiresAt: '2030-01-02T03:04:05Z' },
        },
        subject: 'Confirm your email address for ObeyForum',
        text: ['Hello ada,', 'https://forum.test/verify?token=t1&u=ada', '2 January 2030 at 03:04 UTC'],
        html: ['href="https://forum.test/verify?token=t1&amp;u=ada"', 'Confirm my email address'],
      },
      {
        email: {
          template: 'password-changed',
          to: { address: uniqueAddress('changed') },
          data: { nickname: 'bob', changedAt: '2030-05-06T07:08:00Z' },
        },
        subject: 'Your ObeyForum password was changed',
        text: ['Hello bob,', 'changed on 6 May 2030 at 07:08 UTC'],
        html: ['Hello bob,'],
      },
      {
        email: {
          template: 'password-reset',
          to: { address: uniqueAddress('reset') },
          data: { nickname: 'cy', link: 'https://forum.test/reset?token=t2', expiresAt: '2030-01-02T03:04:05Z' },
        },
        subject: 'Reset your ObeyForum password',
        text: ['Hello cy,', 'https://forum.test/reset?token=t2'],
        html: ['href="https://forum.test/reset?token=t2"', 'Choose a new password'],
      },
      {
        email: {
          template: 'user-banned',
          to: { address: uniqueAddress('banned') },
          data: { nickname: 'dee', reason: 'Spam <b>links</b>', until: '2030-12-31T23:00:00Z' },
        },
        subject: 'You have been banned from ObeyForum',
        text: ['Hello dee,', '> Spam <b>links</b>', '31 December 2030 at 23:00 UTC'],
        html: ['Spam &lt;b&gt;links&lt;/b&gt;'],
      },
      {
        email: {
          template: 'thread-locked',
          to: { address: uniqueAddress('locked') },
          data: {
            nickname: 'eve',
            threadId: '7d1c7e7e-4c59-4f7e-9d57-0b3c2a2f6a10',
            threadTitle: 'Tom & Jerry',
            reason: 'off topic',
            lockedBy: 'mod',
            link: 'https://forum.test/threads/7d1c7e7e-4c59-4f7e-9d57-0b3c2a2f6a10',
          },
        },
        subject: 'Your thread "Tom & Jerry" was locked',
        text: ['Hello eve,', 'mod locked your thread "Tom & Jerry"', '> off topic'],
        html: ['Tom &amp; Jerry', 'href="https://forum.test/threads/7d1c7e7e-4c59-4f7e-9d57-0b3c2a2f6a10"'],
      },
    ];
    const ids = await Promise.all(cases.map((c) => bed.send(c.email)));
    for (const [i, c] of cases.entries()) {
      const mail = await smtp.waitForMail((m) => m.to.includes(c.email.to.address));
      expect(mail.to).toEqual([c.email.to.address]);
      expect(mail.from).toBe('no-reply@obeyforum.test');
      expect(mail.subject).toBe(c.subject);
      for (const t of c.text) expect(mail.text).toContain(t);
      for (const h of c.html) expect(mail.html).toContain(h);
      expect(mail.messageId).toBe(`<${ids[i]}@obeyforum.test>`);
      expect(mail.headers.get('auto-submitted')).toBe('auto-generated');
    }
    const named = await smtp.waitForMail((m) => m.to.includes(cases[0]!.email.to.address));
    expect(JSON.stringify(named.headers.get('to'))).toContain('Ada Lovelace');
    expect(JSON.stringify(named.headers.get('from'))).toContain('ObeyForum');
    await eventually(() => bed.drained(), 5_000, 'consumer drained');
  });

  it('retries while the SMTP server is down and delivers every email exactly once when it is back', async () => {
    const instance = await bed.startInstance({ smtpUrl: smtp.url });
    const before = uniqueAddress('before');
    await bed.send(emailTo(before));
    await smtp.waitForMail((m) => m.to.includes(before));

    // The pool's idle connection is closed after 200 ms; then the server is gone.
    await smtp.close();
    const addresses = Array.from({ length: 12 }, () => uniqueAddress('outage'));
    for (const a of addresses) await bed.send(emailTo(a));
    await eventually(() => instance.outcomes.filter((o) => o.outcome === 'retrying').length >= 24, 10_000, 'retries');
    expect(instance.service.status().smtp.reachable).toBe(false);
    expect(addresses.flatMap(mailsTo)).toHaveLength(0);
    expect(await bed.deadLetters()).toHaveLength(0);

    await smtp.open();
    for (const a of addresses) await smtp.waitForMail((m) => m.to.includes(a), 10_000);
    await eventually(() => bed.drained(), 5_000, 'consumer drained');
    await sleep(300);
    for (const a of addresses) expect(mailsTo(a)).toHaveLength(1);
    expect(mailsTo(before)).toHaveLength(1);
    expect(await bed.deadLetters()).toHaveLength(0);
    expect(instance.service.status().smtp.reachable).toBe(true);
  });

  it('retries an email the server answers with 4xx, and delivers it once it accepts', async () => {
    const instance = await bed.startInstance({ smtpUrl: smtp.url });
    smtp.behave({ code: 451, message: 'Requested action aborted: try again later' });
    const address = uniqueAddress('greylisted');
    const commandId = await bed.send(emailTo(address));
    await eventually(() => instance.outcomes.filter((o) => o.commandId === commandId && o.outcome === 'retrying').length >= 3);
    expect(instance.outcomes.find((o) => o.outcome === 'retrying')?.detail).toContain('451');
    expect(mailsTo(address)).toHaveLength(0);

    smtp.behave('accept');
    await smtp.waitForMail((m) => m.to.includes(address));
    await eventually(() => bed.drained(), 5_000, 'consumer drained');
    await sleep(300);
    expect(mailsTo(address)).toHaveLength(1);
    expect(await bed.deadLetters()).toHaveLength(0);
  });

  it('parks an email the server refuses for good with its answer, goes on, and sends it when an operator replays it', async () => {
    const instance = await bed.startInstance({ smtpUrl: smtp.url });
    smtp.behave({ code: 550, message: 'mailbox unavailable' });
    const refused = uniqueAddress('refused');
    const commandId = await bed.send(emailTo(refused));
    await eventually(() => instance.outcomes.some((o) => o.commandId === commandId && o.outcome === 'parked'));
    const letter = (await bed.deadLetters()).find((l) => l.msgId === commandId);
    expect(letter?.error).toMatch(/^smtp-refused: 550 .*mailbox unavailable/);
    expect(letter?.origin.stream).toBe('MAILING_COMMANDS');
    expect(letter?.messageType).toBe('MailingSendEmailCommand');

    smtp.behave('accept');
    const next = uniqueAddress('next');
    await bed.send(emailTo(next));
    await smtp.waitForMail((m) => m.to.includes(next));
    expect(mailsTo(refused)).toHaveLength(0);

    // The mailbox was repaired: the operator sends it back (`obey replay-dead-letter mailing <seq>`).
    await replayDeadLetter(bed.nats, bed.names, letter!.sequence);
    const mail = await smtp.waitForMail((m) => m.to.includes(refused));
    expect(mail.messageId).toBe(`<${commandId}@obeyforum.test>`);
    await eventually(() => bed.drained(), 5_000, 'consumer drained');
    await sleep(300);
    expect(mailsTo(refused)).toHaveLength(1);
    expect(await bed.deadLetters()).toHaveLength(0);
  });

  it('parks malformed commands at once with their reason and delivers the next one', async () => {
    const instance = await bed.startInstance({ smtpUrl: smtp.url });
    const subject = 'mailing.commands.send-email';
    const headers = (type = 'MailingSendEmailCommand', version = 1) =>
      encodeHeaders({ type, version, correlationId: uuidv4(), causationId: undefined, traceparent: undefined });
    const good = emailTo(uniqueAddress('good'));
    const enc = (v: unknown) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));
    const bad: { id: string; data: Uint8Array; headers: ReturnType<typeof headers> | undefined; reason: RegExp }[] = [
      { id: uuidv4(), data: enc('{not json'), headers: headers(), reason: /^invalid-command: body is not JSON/ },
      { id: uuidv4(), data: enc(good), headers: undefined, reason: /^invalid-command: missing Message-Type/ },
      { id: uuidv4(), data: enc(good), headers: headers('MailingSendEmailCommand', 2), reason: /^invalid-command: .*version 2/ },
      {
        id: uuidv4(),
        data: enc(good),
        headers: headers('SomethingElse'),
        reason: /^invalid-command: Message-Type SomethingElse/,
      },
      {
        id: uuidv4(),
        data: enc({ ...good, template: 'welcome' }),
        headers: headers(),
        reason: /^invalid-command: invalid MailingSendEmailCommand/,
      },
      {
        id: uuidv4(),
        data: enc({ ...good, to: { address: 'not an address' } }),
        headers: headers(),
        reason: /^invalid-command: invalid MailingSendEmailCommand: .*\/to\/address must match format "email"/,
      },
      {
        id: uuidv4(),
        data: enc({
          template: 'password-reset',
          to: { address: uniqueAddress('js') },
          data: { nickname: 'x', link: 'javascript:alert(1)', expiresAt: '2030-01-01T00:00:00Z' },
        }),
        headers: headers(),
        reason: /^invalid-command: data\.link must be an http\(s\) URL/,
      },
      {
        id: 'not-a-uuid',
        data: enc(good),
        headers: headers(),
        reason: /^invalid-command: Nats-Msg-Id .* must be the command id/,
      },
    ];
    for (const b of bad)
      await bed.nats.js.publish(subject, b.data, { msgID: b.id, ...(b.headers === undefined ? {} : { headers: b.headers }) });
    await bed.send(good);
    await smtp.waitForMail((m) => m.to.includes(good.to.address));

    await eventually(async () => (await bed.deadLetters()).length === bad.length, 5_000, 'all parked');
    const letters = await bed.deadLetters();
    for (const b of bad) {
      const letter = letters.find((l) => l.msgId === b.id);
      expect(letter?.error, b.id).toMatch(b.reason);
      expect(letter?.consumer).toBe('mailing-email-senders');
    }
    expect(instance.outcomes.filter((o) => o.outcome === 'parked').every((o) => o.reason === 'invalid-command')).toBe(true);
    expect(smtp.mails.filter((m) => m.subject === '' || m.to.includes('not an address'))).toHaveLength(0);
    await eventually(() => bed.drained(), 5_000, 'consumer drained');
  });

  it('reads a replayed command by its Obey-Command-Id', async () => {
    await bed.startInstance({ smtpUrl: smtp.url });
    const address = uniqueAddress('replayed');
    const commandId = uuidv4();
    await bed.send(emailTo(address), { commandId: `replay-${uuidv4()}`, headers: { [Header.CommandId]: commandId } });
    const mail = await smtp.waitForMail((m) => m.to.includes(address));
    expect(mail.messageId).toBe(`<${commandId}@obeyforum.test>`);
  });

  it('finishes the email in flight when stopped', async () => {
    const slow = await startScriptedSmtpServer((_mail, reply) => {
      setTimeout(() => reply(), 800);
    });
    try {
      const instance = await bed.startInstance({ smtpUrl: slow.url });
      const address = uniqueAddress('stopping');
      const commandId = await bed.send(emailTo(address));
      await eventually(() => slow.mails.some((m) => m.to.includes(address)), 5_000, 'email at the server');
      await instance.service.stop();
      expect(instance.outcomes.find((o) => o.commandId === commandId)?.outcome).toBe('sent');
      // Acknowledged, not left to the ack wait (2 s).
      await eventually(() => bed.drained(), 1_500, 'acknowledged');
    } finally {
      await slow.close();
    }
  });

  it('keeps a command waiting for a worker beyond the ack wait without its being redelivered', async () => {
    const slow = await startScriptedSmtpServer((_mail, reply) => {
      setTimeout(() => reply(), 700);
    });
    try {
      // One email at a time, an ack wait shorter than one email: the command pulled ahead waits
      // longer than the ack wait for the worker.
      const instance = await bed.startInstance({ smtpUrl: slow.url, concurrency: 1, ackWaitMs: 600 });
      const addresses = [uniqueAddress('queued'), uniqueAddress('queued'), uniqueAddress('queued')];
      const ids = await Promise.all(addresses.map((a) => bed.send(emailTo(a))));
      await eventually(() => instance.outcomes.length >= 3, 8_000, 'three outcomes');
      await sleep(700);
      expect(instance.outcomes.map((o) => [o.commandId, o.outcome]).sort()).toEqual(ids.map((id) => [id, 'sent']).sort());
      for (const a of addresses) expect(slow.mails.filter((m) => m.to.includes(a))).toHaveLength(1);
      expect(await bed.drained()).toBe(true);
    } finally {
      await slow.close();
    }
  });

  it('answers ready only while it runs', async () => {
    const instance = await bed.startInstance({ smtpUrl: smtp.url });
    expect(await instance.service.ready()).toBe(true);
    await instance.service.stop();
    expect(await instance.service.ready()).toBe(false);
  });
});
