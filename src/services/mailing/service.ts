import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { AckPolicy, type Consumer, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';
import addressparser from 'nodemailer/lib/addressparser';
import MailComposer from 'nodemailer/lib/mail-composer';
import type { Logger } from 'pino';
import { validate as isUuid } from 'uuid';
import { MailingSendEmailCommand, type SendEmail } from '../../../schemas/mailing.js';
import { parkMessage } from '../../eventstore/dead-letters.js';
import { InvalidMessageError } from '../../eventstore/errors.js';
import { decodeHeaders, decodeJson, Header } from '../../eventstore/headers.js';
import { watchConsumer } from '../../observability/metrics.js';
import { currentTraceId, inSpan, messageAttributes } from '../../observability/tracing.js';
import type { ServiceRuntime } from '../../eventstore/service-runtime.js';
import { ensureDurableConsumer } from '../../eventstore/streams.js';
import { DELIVERY_RECORD_TTL_MS, openDeliveryRecords, type DeliveryRecord, type DeliveryRecords } from './records.js';
import { createSmtpPool, type SendOutcome, type SmtpPool } from './smtp-pool.js';
import { renderEmail, type RenderedEmail } from './templates.js';

/** Why a command was parked in the dead-letter stream: the first word of its error. */
export type ParkReason =
  /** Headers, JSON, schema, version or data that can never make an email. */
  | 'invalid-command'
  /** The SMTP server refused it for good (5xx); the error carries its answer. */
  | 'smtp-refused'
  /** It may have been delivered (an attempt ended with no answer): an operator decides. */
  | 'delivery-uncertain'
  /** Its command id was used before for a different email. */
  | 'command-id-reused'
  /** Failed in the service itself (not SMTP) at every delivery. */
  | 'failed';

/** What became of one delivery of a command, told to `onOutcome` before it is acknowledged. */
export interface MailingOutcome {
  readonly commandId: string;
  /** Its sequence in the commands stream. */
  readonly seq: number;
  readonly outcome: 'sent' | 'already-sent' | 'retrying' | 'parked';
  readonly reason?: ParkReason;
  readonly detail?: string;
}

export interface MailingServiceOptions {
  readonly runtime: Pick<ServiceRuntime, 'nats' | 'names' | 'instanceId' | 'log'>;
  /** `SMTP_URL`: `smtp://[user:pass@]host:port`, or `smtps://` for TLS from the start. */
  readonly smtpUrl: string;
  /** `MAIL_FROM`: the From header, e.g. `ObeyForum <no-reply@example.org>`. Its domain ends the Message-IDs. */
  readonly mailFrom: string;
  /** Emails this instance sends at once; also its most SMTP connections. Default 8. */
  readonly concurrency?: number;
  /** The consumer's ack wait; an instance that dies mid-email has its command redelivered after it. Default 30 s. */
  readonly ackWaitMs?: number;
  /** Bound on one SMTP transaction. Default 60 s. */
  readonly sendTimeoutMs?: number;
  /** Redelivery delay while SMTP is unreachable or answers 4xx: doubling from `initial` up to `max`. Default 1 s to 30 s. */
  readonly retryDelayMs?: { readonly initial: number; readonly max: number };
  /** Deliveries after which a command failing in the service itself (not in SMTP) is parked. Default 20. */
  readonly maxDeliver?: number;
  /** How long a command id is remembered. Default 30 days. */
  readonly deliveryRecordTtlMs?: number;
  readonly smtp?: {
    readonly idleTimeoutMs?: number;
    readonly connectTimeoutMs?: number;
    readonly maxMessagesPerConnection?: number;
    readonly probeIntervalMs?: number;
  };
  /** Told of every settled delivery, after its record or dead letter is written and before the ack (metrics, tests). */
  readonly onOutcome?: (outcome: MailingOutcome) => void;
}

export interface MailingService {
  /** Opens the delivery records, creates the consumer and starts sending. */
  start(): Promise<void>;
  /** Stops taking commands and waits for the emails in flight. */
  stop(): Promise<void>;
  /** For /health/ready: started, not stopping, and the consumer is reachable. */
  ready(): Promise<boolean>;
  /** What an operator wants to see: emails in flight and whether the SMTP server answered lately. */
  status(): {
    readonly running: boolean;
    readonly inFlight: number;
    readonly smtp: { readonly reachable: boolean | undefined; readonly lastError: string | undefined };
  };
}

/** The durable consumer every mailing instance pulls from. */
export const MAILING_CONSUMER = 'mailing-email-senders';

/** A command ready to be sent: its envelope and the hash that identifies its body. */
interface ParsedCommand {
  readonly commandId: string;
  readonly email: SendEmail;
  readonly rendered: RenderedEmail;
  readonly payloadHash: string;
}

/** A claim (`sending`) was written and its outcome is not recorded yet. */
interface Attempt {
  claimed: boolean;
}

/** The `sending` record this delivery wrote. */
interface Claim {
  readonly revision: number;
  readonly startedAt: string;
}

class LostRace extends Error {
  override readonly name = 'LostRace';
}

/**
 * The mailing service: consumes `MailingSendEmailCommand` from the work-queue stream (any
 * number of instances share one durable consumer) and sends each email over SMTP, exactly
 * once as far as a crash allows (docs/mailing.md): a `sending` record is written in the
 * `<SVC>_SENT` bucket before the SMTP transaction and `sent` after the server accepted it, so
 * a command delivered again is never sent again; one whose earlier attempt ended without an
 * answer is parked as `delivery-uncertain` for an operator rather than sent twice.
 */
export function createMailingService(opts: MailingServiceOptions): MailingService {
  const { nats, names, instanceId } = opts.runtime;
  const def = MailingSendEmailCommand;
  if (def.subject === undefined) throw new Error(`${def.type} has no subject`);
  const subject = def.subject;
  const log = opts.runtime.log.child({ consumer: MAILING_CONSUMER, stream: names.commandsStream });
  const concurrency = opts.concurrency ?? 8;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1)
    throw new Error(`mailing concurrency must be at least 1 (got ${concurrency})`);
  const ackWaitMs = opts.ackWaitMs ?? 30_000;
  const sendTimeoutMs = opts.sendTimeoutMs ?? 60_000;
  // A `sending` record older than this was left by an attempt that is over, one way or another.
  const abandonedAfterMs = 2 * sendTimeoutMs + ackWaitMs;
  const delays = opts.retryDelayMs ?? { initial: 1_000, max: 30_000 };
  const maxDeliver = opts.maxDeliver ?? 20;
  const from = parseSender(opts.mailFrom);

  let records: DeliveryRecords | undefined;
  let pool: SmtpPool | undefined;
  let running = false;
  let stopping = false;
  let consumer: Promise<Consumer> | undefined;
  const workers: Promise<void>[] = [];
  const fetches = new Set<ConsumerMessages>();
  let inFlight = 0;
  // Commands pulled and not yet settled (sending, or waiting for a worker).
  let held = 0;
  const waiting: { m: JsMsg; heartbeat: NodeJS.Timeout }[] = [];
  const idleWorkers: ((m: JsMsg | undefined) => void)[] = [];
  let roomFreed: (() => void) | undefined;
  let unwatch: (() => void) | undefined;

  async function ensureConsumer(): Promise<Consumer> {
    const config = {
      durable_name: MAILING_CONSUMER,
      description: `${names.service}: email senders. Every instance pulls from this consumer; a command is acknowledged once its email is sent (record in ${names.commandsStream.replace(/_COMMANDS$/, '_SENT')}) or parked.`,
      filter_subject: subject,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(ackWaitMs),
      // SMTP outages are retried without end: a command waits in the queue until it is sent.
      max_deliver: -1,
      max_ack_pending: Math.max(1_000, concurrency * 4),
    };
    await ensureDurableConsumer(nats.jsm, names.commandsStream, config);
    return nats.js.consumers.get(names.commandsStream, MAILING_CONSUMER);
  }

  function getConsumer(): Promise<Consumer> {
    if (consumer === undefined) {
      const c = ensureConsumer();
      c.catch(() => {
        if (consumer === c) consumer = undefined;
      });
      consumer = c;
    }
    return consumer;
  }

  function retryDelay(m: JsMsg): number {
    const exponent = Math.min(Math.max(m.info.deliveryCount - 1, 0), 20);
    const delay = Math.min(delays.max, delays.initial * 2 ** exponent);
    // Emails that failed together should not all come back together.
    return Math.round(delay * (0.8 + 0.4 * Math.random()));
  }

  function observe(m: JsMsg, commandId: string, outcome: MailingOutcome['outcome'], reason?: ParkReason, detail?: string) {
    try {
      opts.onOutcome?.({
        commandId,
        seq: m.seq,
        outcome,
        ...(reason === undefined ? {} : { reason }),
        ...(detail === undefined ? {} : { detail }),
      });
    } catch (err) {
      log.warn({ err }, 'onOutcome observer failed');
    }
  }

  async function park(m: JsMsg, commandId: string, reason: ParkReason, detail: string, mlog: Logger): Promise<void> {
    await parkMessage(nats, names, { consumer: MAILING_CONSUMER, msg: m, error: `${reason}: ${detail}` });
    if (reason === 'delivery-uncertain' || reason === 'failed') mlog.error({ reason, detail }, 'email command parked');
    else mlog.warn({ reason, detail }, 'email command parked');
    observe(m, commandId, 'parked', reason, detail);
    m.ack();
  }

  function parse(m: JsMsg, commandId: string): ParsedCommand {
    if (!isUuid(commandId)) throw new InvalidMessageError('Nats-Msg-Id (or Obey-Command-Id) must be the command id, a UUID');
    const meta = decodeHeaders(m.headers);
    if (meta.type !== def.type) throw new InvalidMessageError(`Message-Type ${meta.type} on ${m.subject}`);
    if (meta.version !== def.version) {
      throw new InvalidMessageError(`${meta.type} version ${meta.version}; this service knows version ${def.version}`);
    }
    const body = decodeJson(m.data);
    if (!def.validator.check(body)) throw new InvalidMessageError(`invalid ${def.type}`, def.validator.issues(body));
    return {
      commandId,
      email: body,
      // Rendered before anything else, so that data no template can use (a javascript: link)
      // makes the command invalid.
      rendered: renderEmail(body),
      payloadHash: createHash('sha256')
        .update(canonicalize(body) ?? '')
        .digest('hex'),
    };
  }

  async function compose(cmd: ParsedCommand): Promise<{ raw: Buffer; messageId: string }> {
    const { rendered } = cmd;
    // Deterministic, so that whoever looks for an uncertain email (in the relay's logs, in a
    // mailbox) can find it by its command id.
    const messageId = `<${cmd.commandId}@${from.domain}>`;
    const raw = await new MailComposer({
      from: opts.mailFrom,
      to: cmd.email.to.name === undefined ? cmd.email.to.address : { name: cmd.email.to.name, address: cmd.email.to.address },
      subject: rendered.subject,
      text: rendered.text,
      html: rendered.html,
      messageId,
      date: new Date(),
      headers: { 'Auto-Submitted': 'auto-generated', ...traceHeader() },
      disableFileAccess: true,
      disableUrlAccess: true,
    })
      .compile()
      .build();
    return { raw, messageId };
  }

  /** With tracing on, the email's trace id, so that an email can be followed back to its cause. */
  function traceHeader(): Record<string, string> {
    const traceId = currentTraceId();
    return traceId === undefined ? {} : { 'X-Trace-Id': traceId };
  }

  /** One delivery in a consumer span, the child of the span that sent the command. */
  function handleTraced(m: JsMsg): Promise<void> {
    return inSpan(
      `process ${m.subject}`,
      {
        kind: 'consumer',
        parent: m.headers?.get(Header.TraceParent) || undefined,
        attributes: messageAttributes({
          service: names.service,
          destination: m.subject,
          messageId: m.headers?.get(Header.CommandId) || m.headers?.get(Header.MsgId) || undefined,
          correlationId: m.headers?.get(Header.CorrelationId) || undefined,
          consumer: MAILING_CONSUMER,
        }),
      },
      () => handle(m),
    );
  }

  async function handle(m: JsMsg): Promise<void> {
    const msgId = m.headers?.get(Header.MsgId) ?? '';
    const replayedId = m.headers?.get(Header.CommandId) ?? '';
    const commandId = replayedId || msgId;
    // `obey replay-dead-letter` sends a parked command with a fresh Nats-Msg-Id and its id in
    // Obey-Command-Id: an operator's decision, which may resend an uncertain email.
    const replay = replayedId !== '' && replayedId !== msgId;
    const correlationId = m.headers?.get(Header.CorrelationId) || undefined;
    const mlog = log.child({ seq: m.seq, commandId, correlationId, deliveries: m.info.deliveryCount });
    // A long SMTP transaction must not look like a dead instance.
    const heartbeat = setInterval(
      () => {
        try {
          m.working();
        } catch {
          // Disconnected: the ack wait may run out, and the redelivery finds this attempt's record.
        }
      },
      Math.max(100, Math.floor(ackWaitMs / 3)),
    );
    const attempt: Attempt = { claimed: false };
    try {
      let cmd: ParsedCommand;
      try {
        cmd = parse(m, commandId);
      } catch (err) {
        if (!(err instanceof InvalidMessageError)) throw err;
        await park(m, commandId, 'invalid-command', err.message, mlog);
        return;
      }
      await deliver(m, cmd, replay, attempt, mlog);
    } catch (err) {
      if (attempt.claimed) {
        // A claim whose outcome could not be written: the redelivery finds it and, not knowing
        // either, parks the command as uncertain. Never parked as a plain failure, which an
        // operator might replay into a second email.
        mlog.error({ err }, 'email attempt could not be settled; it will be treated as uncertain');
        m.nak(retryDelay(m));
      } else if (m.info.deliveryCount >= maxDeliver) {
        mlog.error({ err }, 'email command failed repeatedly');
        await park(m, commandId, 'failed', errorText(err), mlog).catch(() => m.nak(delays.max));
      } else {
        mlog.warn({ err }, 'email command failed, will be redelivered');
        m.nak(retryDelay(m));
      }
    } finally {
      clearInterval(heartbeat);
    }
  }

  async function deliver(m: JsMsg, cmd: ParsedCommand, replay: boolean, attempt: Attempt, mlog: Logger): Promise<void> {
    const recs = records!;
    const { commandId, payloadHash } = cmd;
    const sending = (): Extract<DeliveryRecord, { status: 'sending' }> => ({
      status: 'sending',
      attempt: m.seq,
      payloadHash,
      instanceId,
      startedAt: new Date().toISOString(),
    });
    const markUncertain = async (record: Extract<DeliveryRecord, { status: 'sending' }>, revision: number, reason: string) => {
      const uncertain: DeliveryRecord = { ...record, status: 'uncertain', reason };
      if ((await recs.update(commandId, uncertain, revision)) === false) return false;
      await park(m, commandId, 'delivery-uncertain', reason, mlog);
      return true;
    };

    // A first delivery (not a replay) almost never finds a record: it goes straight to its claim,
    // whose `create` fails if a record exists after all (a copy of the command published again,
    // past the duplicate window), and the next round reads it as any other delivery does. Nothing
    // is sent without the claim either way; this saves a read per email.
    let unread = m.info.deliveryCount === 1 && !replay;
    // Several rounds only when a record exists that this delivery had not read, or when another
    // copy of the command changed the record under us.
    for (let round = 1; round <= 5; round++) {
      const existing = unread ? undefined : await recs.get(commandId);
      unread = false;
      if (existing !== undefined && existing.record.payloadHash !== '' && existing.record.payloadHash !== payloadHash) {
        await park(
          m,
          commandId,
          'command-id-reused',
          `command id already used for another email (${existing.record.status})`,
          mlog,
        );
        return;
      }
      let claim: (record: DeliveryRecord) => Promise<number | false>;
      if (existing === undefined) {
        claim = (record) => recs.create(commandId, record);
      } else {
        const { record, revision } = existing;
        switch (record.status) {
          case 'sent':
            mlog.info({ messageId: record.messageId, sentAt: record.sentAt, replay }, 'email already sent; not sending it again');
            observe(m, commandId, 'already-sent');
            m.ack();
            return;
          case 'sending': {
            if (record.attempt === m.seq) {
              // This very message was being sent, and its delivery ended without an outcome:
              // that instance died or lost NATS mid-transaction.
              const reason = `an attempt by ${record.instanceId} started at ${record.startedAt} ended without an answer; the email may have been delivered`;
              if (await markUncertain(record, revision, reason)) return;
              continue;
            }
            const age = Date.now() - Date.parse(record.startedAt);
            if (age < abandonedAfterMs) {
              // Another copy of the command is being sent right now: wait for its outcome.
              mlog.info({ otherSeq: record.attempt, by: record.instanceId }, 'another copy of this email is being sent; waiting');
              observe(m, commandId, 'retrying', undefined, 'another copy is being sent');
              m.nak(Math.min(Math.max(abandonedAfterMs - age, 100), delays.max));
              return;
            }
            if (!replay) {
              const reason = `a copy of this command (sequence ${record.attempt}) was being sent by ${record.instanceId} at ${record.startedAt} and never finished; the email may have been delivered`;
              if (await markUncertain(record, revision, reason)) return;
              continue;
            }
            claim = (record) => recs.update(commandId, record, revision);
            break;
          }
          case 'uncertain':
            // Only an operator's replay sends an uncertain email: it is their decision that it
            // did not go out. A redelivery of the replay itself is not a new decision.
            if (!replay || record.attempt === m.seq) {
              await park(m, commandId, 'delivery-uncertain', record.reason, mlog);
              return;
            }
            claim = (record) => recs.update(commandId, record, revision);
            break;
        }
      }

      const { raw, messageId } = await compose(cmd);
      let claimed: Claim = { revision: 0, startedAt: '' };
      let outcome: SendOutcome;
      try {
        outcome = await inSpan(
          'smtp send',
          { kind: 'client', attributes: { 'obey.service': names.service, 'obey.template': cmd.email.template } },
          async (span) => {
            const sent = await pool!.send({ from: from.address, to: cmd.email.to.address, raw }, async () => {
              const record = sending();
              const revision = await claim(record);
              if (revision === false) throw new LostRace();
              claimed = { revision, startedAt: record.startedAt };
              attempt.claimed = true;
            });
            span.setAttribute('obey.smtp.outcome', sent.kind);
            return sent;
          },
        );
      } catch (err) {
        if (err instanceof LostRace) continue;
        throw err;
      }
      await settle(m, cmd, outcome, messageId, claimed, attempt, mlog);
      return;
    }
    throw new Error('the delivery record kept changing');
  }

  async function settle(
    m: JsMsg,
    cmd: ParsedCommand,
    outcome: SendOutcome,
    messageId: string,
    claimed: Claim,
    attempt: Attempt,
    mlog: Logger,
  ): Promise<void> {
    const recs = records!;
    const { commandId } = cmd;
    switch (outcome.kind) {
      case 'accepted': {
        await writeSent(commandId, {
          status: 'sent',
          attempt: m.seq,
          payloadHash: cmd.payloadHash,
          messageId,
          response: outcome.response,
          sentAt: new Date().toISOString(),
        });
        attempt.claimed = false;
        mlog.info({ messageId, template: cmd.email.template, response: outcome.response }, 'email sent');
        observe(m, commandId, 'sent', undefined, outcome.response);
        m.ack();
        return;
      }
      case 'uncertain': {
        const reason = `the SMTP transaction ended without an answer after the message was sent (${outcome.error}); the email may have been delivered`;
        await recs.put(commandId, {
          status: 'uncertain',
          attempt: m.seq,
          payloadHash: cmd.payloadHash,
          instanceId,
          startedAt: claimed.startedAt,
          reason,
        });
        attempt.claimed = false;
        await park(m, commandId, 'delivery-uncertain', reason, mlog);
        return;
      }
      case 'refused':
      case 'not-sent': {
        // Sure that nothing went out: the claim is withdrawn, so the next delivery sends.
        if (attempt.claimed) await recs.remove(commandId, claimed.revision);
        attempt.claimed = false;
        if (outcome.kind === 'refused' && outcome.permanent) {
          await park(m, commandId, 'smtp-refused', outcome.response, mlog);
          return;
        }
        const detail = outcome.kind === 'refused' ? outcome.response : outcome.error;
        const delay = retryDelay(m);
        mlog.warn({ detail, retryInMs: delay }, 'email not sent; will retry');
        observe(m, commandId, 'retrying', undefined, detail);
        m.nak(delay);
        return;
      }
    }
  }

  /** The server took the email: that must be written down, however long NATS takes to answer. */
  async function writeSent(commandId: string, record: DeliveryRecord): Promise<void> {
    const deadline = Date.now() + 2 * 60_000;
    for (let pause = 100; ; pause = Math.min(pause * 2, 5_000)) {
      try {
        await records!.put(commandId, record);
        return;
      } catch (err) {
        if (Date.now() + pause > deadline) throw err;
        log.warn({ err, commandId }, 'recording a sent email failed; retrying');
        await sleep(pause);
      }
    }
  }

  /**
   * Pulls commands for the workers: several per pull request (up to the room left), rather
   * than one pull per email. At most `concurrency` emails are in flight and at most
   * `concurrency` more commands wait for a worker; those have their ack wait extended while they
   * wait, so none is redelivered to another instance meanwhile. Pulls again once half the
   * waiting room is free.
   */
  async function puller(): Promise<void> {
    const capacity = 2 * concurrency;
    const refillAt = Math.ceil(concurrency / 2);
    while (!stopping) {
      const room = capacity - held;
      if (room < refillAt) {
        await new Promise<void>((resolve) => (roomFreed = resolve));
        roomFreed = undefined;
        continue;
      }
      let got = 0;
      const began = Date.now();
      try {
        const c = await getConsumer();
        const batch = await c.fetch({ max_messages: room, expires: 5_000 });
        fetches.add(batch);
        try {
          for await (const m of batch) {
            got++;
            if (stopping) m.nak();
            else hand(m);
          }
        } finally {
          fetches.delete(batch);
        }
      } catch (err) {
        if (stopping) break;
        log.warn({ err }, 'fetching email commands failed; retrying');
        consumer = undefined;
        await sleep(1_000);
        continue;
      }
      // A fetch that ends at once without a message (a consumer that was deleted, say) must
      // not spin.
      if (got === 0 && !stopping && Date.now() - began < 100) await sleep(500);
    }
  }

  /** Gives a pulled command to an idle worker, or queues it (its ack wait extended) until one is free. */
  function hand(m: JsMsg): void {
    held++;
    const idle = idleWorkers.shift();
    if (idle !== undefined) {
      idle(m);
      return;
    }
    const heartbeat = setInterval(
      () => {
        try {
          m.working();
        } catch {
          // Disconnected: the ack wait may run out, and the redelivery is handled as any other.
        }
      },
      Math.max(100, Math.floor(ackWaitMs / 3)),
    );
    waiting.push({ m, heartbeat });
  }

  /** The next command to send; undefined once stopping. */
  function next(): Promise<JsMsg | undefined> {
    const w = waiting.shift();
    if (w !== undefined) {
      clearInterval(w.heartbeat);
      return Promise.resolve(w.m);
    }
    if (stopping) return Promise.resolve(undefined);
    return new Promise((resolve) => idleWorkers.push(resolve));
  }

  async function worker(): Promise<void> {
    for (;;) {
      const m = await next();
      if (m === undefined) break;
      if (stopping) {
        m.nak();
        held--;
        continue;
      }
      inFlight++;
      try {
        await handleTraced(m);
      } catch (err) {
        log.error({ err, seq: m.seq }, 'email command handling failed');
      } finally {
        inFlight--;
        held--;
        roomFreed?.();
      }
    }
  }

  return {
    async start() {
      if (running) return;
      records = await openDeliveryRecords(nats, names, opts.deliveryRecordTtlMs ?? DELIVERY_RECORD_TTL_MS);
      await getConsumer();
      pool = createSmtpPool({
        url: opts.smtpUrl,
        maxConnections: concurrency,
        sendTimeoutMs,
        ...opts.smtp,
      });
      running = true;
      stopping = false;
      unwatch = watchConsumer(nats, names.commandsStream, MAILING_CONSUMER);
      workers.push(puller());
      for (let i = 0; i < concurrency; i++) workers.push(worker());
      log.info({ concurrency, instanceId }, 'mailing service started');
    },
    async stop() {
      if (!running) return;
      stopping = true;
      for (const f of fetches) f.stop();
      roomFreed?.();
      // Commands still waiting go back to the queue at once; idle workers end.
      for (const w of waiting.splice(0)) {
        clearInterval(w.heartbeat);
        w.m.nak();
        held--;
      }
      for (const idle of idleWorkers.splice(0)) idle(undefined);
      await Promise.allSettled(workers);
      workers.length = 0;
      pool?.close();
      unwatch?.();
      running = false;
      log.info('mailing service stopped');
    },
    async ready() {
      if (!running || stopping) return false;
      try {
        await nats.jsm.consumers.info(names.commandsStream, MAILING_CONSUMER);
        return true;
      } catch {
        return false;
      }
    },
    status() {
      return {
        running: running && !stopping,
        inFlight,
        smtp: pool?.health() ?? { reachable: undefined, lastError: undefined },
      };
    },
  };
}

/** The From address and the domain that ends Message-IDs, from `MAIL_FROM`. */
function parseSender(mailFrom: string): { address: string; domain: string } {
  const [first] = addressparser(mailFrom, { flatten: true });
  const address = first?.address ?? '';
  const at = address.lastIndexOf('@');
  if (at < 1 || at === address.length - 1) throw new Error(`MAIL_FROM must hold one email address (got "${mailFrom}")`);
  return { address, domain: address.slice(at + 1) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
