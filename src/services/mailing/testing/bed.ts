import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { v4 as uuidv4 } from 'uuid';
import { MailingSendEmailCommand, type SendEmail } from '../../../../schemas/mailing.js';
import { listDeadLetters, type DeadLetter } from '../../../eventstore/dead-letters.js';
import { encodeHeaders, encodeJson } from '../../../eventstore/headers.js';
import { connectNats, type Nats } from '../../../eventstore/nats.js';
import { ensureStreams, serviceNames, serviceStreamConfigs, type ServiceNames } from '../../../eventstore/streams.js';
import { testLog } from '../../../eventstore/testing/nats.js';
import { freePort, startNatsServer, type TestServer } from '../../../testing/servers.js';
import type { ReceivedMail } from '../../../testing/smtp.js';
import {
  createMailingService,
  MAILING_CONSUMER,
  type MailingOutcome,
  type MailingService,
  type MailingServiceOptions,
} from '../index.js';

export const MAIL_FROM = 'ObeyForum <no-reply@obeyforum.test>';

/** Short waits, so that retries and redeliveries happen within a test's seconds. */
export const FAST = {
  ackWaitMs: 2_000,
  sendTimeoutMs: 2_000,
  retryDelayMs: { initial: 100, max: 800 },
  smtp: { idleTimeoutMs: 200, connectTimeoutMs: 1_000, probeIntervalMs: 200 },
} as const;

export interface Instance {
  readonly service: MailingService;
  readonly outcomes: MailingOutcome[];
  readonly nats: Nats;
}

/**
 * A nats-server of the test file's own (so the real `mailing.*` names are the file's alone),
 * the mailing streams, and mailing instances each on a connection of its own.
 */
export interface MailingBed {
  readonly server: TestServer;
  readonly nats: Nats;
  readonly names: ServiceNames;
  startInstance(opts: { smtpUrl: string } & Partial<Omit<MailingServiceOptions, 'runtime'>>): Promise<Instance>;
  /** Stops the instances as a process would: the service, then its connection. */
  stopInstances(): Promise<void>;
  /** Publishes a command as a producer would: `Nats-Msg-Id` = command id. */
  send(email: SendEmail, opts?: { commandId?: string; headers?: Record<string, string> }): Promise<string>;
  deadLetters(): Promise<DeadLetter[]>;
  /** Commands neither acknowledged nor waiting: the consumer is done with everything. */
  drained(): Promise<boolean>;
  cleanup(): Promise<void>;
}

export async function startMailingBed(): Promise<MailingBed> {
  const server = await startNatsServer();
  const nats = await connectNats({ url: server.url, name: 'mailing-test' });
  const names = serviceNames('mailing');
  await ensureStreams(nats.jsm, serviceStreamConfigs(names));
  const instances: Instance[] = [];
  let n = 0;
  return {
    server,
    nats,
    names,
    async startInstance(opts) {
      const own = await connectNats({ url: server.url, name: 'mailing-instance' });
      const outcomes: MailingOutcome[] = [];
      const service = createMailingService({
        ...FAST,
        mailFrom: MAIL_FROM,
        concurrency: 4,
        ...opts,
        runtime: { nats: own, names, instanceId: `mailing-test-${++n}`, log: testLog.child({ svc: 'mailing' }) },
        onOutcome: (o) => {
          outcomes.push(o);
          opts.onOutcome?.(o);
        },
      });
      await service.start();
      const instance = { service, outcomes, nats: own };
      instances.push(instance);
      return instance;
    },
    async stopInstances() {
      for (const i of instances.splice(0)) {
        await i.service.stop();
        await i.nats.nc.drain();
      }
    },
    async send(email, opts = {}) {
      const commandId = opts.commandId ?? uuidv4();
      await nats.js.publish(MailingSendEmailCommand.subject!, encodeJson(email), {
        msgID: commandId,
        headers: encodeHeaders(
          {
            type: MailingSendEmailCommand.type,
            version: MailingSendEmailCommand.version,
            correlationId: uuidv4(),
            causationId: undefined,
            traceparent: undefined,
          },
          opts.headers ?? {},
        ),
      });
      return commandId;
    },
    deadLetters: () => listDeadLetters(nats, names, 1_000),
    async drained() {
      const info = await nats.jsm.consumers.info(names.commandsStream, MAILING_CONSUMER);
      return info.num_pending === 0 && info.num_ack_pending === 0;
    },
    async cleanup() {
      for (const i of instances.splice(0)) {
        await i.service.stop();
        await i.nats.nc.drain();
      }
      await nats.nc.drain();
      await server.stop();
    },
  };
}

/** An email of the given template to a fresh address, so each test finds its own mails. */
export function emailTo(address: string, template: SendEmail['template'] = 'password-changed'): SendEmail {
  const nickname = address.split('@')[0] ?? 'someone';
  switch (template) {
    case 'verify-email':
      return {
        template,
        to: { address },
        data: { nickname, link: `https://forum.test/verify?u=${nickname}`, expiresAt: '2030-01-02T03:04:05Z' },
      };
    case 'password-changed':
      return { template, to: { address }, data: { nickname, changedAt: '2030-01-02T03:04:05Z' } };
    case 'password-reset':
      return {
        template,
        to: { address },
        data: { nickname, link: `https://forum.test/reset?u=${nickname}`, expiresAt: '2030-01-02T03:04:05Z' },
      };
    case 'user-banned':
      return { template, to: { address }, data: { nickname, reason: 'spam', until: null } };
    case 'thread-locked':
      return {
        template,
        to: { address },
        data: {
          nickname,
          threadId: '7d1c7e7e-4c59-4f7e-9d57-0b3c2a2f6a10',
          threadTitle: 'A thread',
          reason: 'done',
          lockedBy: 'mod',
          link: 'https://forum.test/threads/7d1c7e7e-4c59-4f7e-9d57-0b3c2a2f6a10',
        },
      };
  }
}

export function uniqueAddress(prefix = 'user'): string {
  return `${prefix}-${uuidv4().slice(0, 8)}@example.org`;
}

/** Polls until `check` holds, failing after `timeoutMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * An SMTP server whose answer to each message the test writes: `answer` gets the parsed mail
 * and decides when (and whether) to reply, for failures the plain test server cannot play (no
 * answer at all, a crash of the sender before the answer).
 */
export interface ScriptedSmtpServer {
  readonly url: string;
  readonly mails: ReceivedMail[];
  close(): Promise<void>;
}

export async function startScriptedSmtpServer(
  answer: (mail: ReceivedMail, reply: (err?: Error) => void) => void,
): Promise<ScriptedSmtpServer> {
  const port = await freePort();
  const mails: ReceivedMail[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    closeTimeout: 200,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        void simpleParser(Buffer.concat(chunks)).then((parsed) => {
          const mail: ReceivedMail = {
            from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
            to: session.envelope.rcptTo.map((r) => r.address),
            subject: parsed.subject ?? '',
            text: parsed.text ?? '',
            html: typeof parsed.html === 'string' ? parsed.html : '',
            messageId: parsed.messageId,
            headers: parsed.headers,
          };
          mails.push(mail);
          answer(mail, (err) => callback(err ?? null));
        });
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    url: `smtp://127.0.0.1:${port}`,
    mails,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
