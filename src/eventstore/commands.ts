import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { AckPolicy, type JsMsg } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { openBucket } from './buckets.js';
import { nanos, nuid, type Msg, type Subscription } from '@nats-io/nats-core';
import type { Logger } from 'pino';
import type { Static, TSchema } from 'typebox';
import { v4 as uuidv4, v5 as uuidv5, validate as isUuid } from 'uuid';
import type { MessageDefinition } from '../../schemas/message.js';
import {
  commandResultValidator,
  storedCommandResultValidator,
  type CommandResult,
  type StoredCommandResult,
} from '../../schemas/platform.js';
import { parkMessage } from './dead-letters.js';
import type { AggregateDefinition, DomainEvent } from './decider.js';
import { DomainError, InvalidMessageError } from './errors.js';
import { decodeHeaders, decodeJson, encodeHeaders, encodeJson, Header, type MessageMeta, type TraceContext } from './headers.js';
import { PULL_EXPIRES_MS, type Nats } from './nats.js';
import { createAggregateRepository, type AggregateRepository } from './repository.js';
import type { EventStore } from './store.js';
import { ensureDurableConsumer, serviceNames, type ServiceNames } from './streams.js';
import { trackCommand, watchConsumer, type CommandOutcomeLabel } from '../observability/metrics.js';
import { currentTraceparent, inSpan, messageAttributes, startSpan, type SpanHandle } from '../observability/tracing.js';

const HOUR = 3_600_000;
/** How long a command's result is kept: a retry within this time gets the first answer. */
export const COMMAND_RESULT_TTL_MS = 48 * HOUR;
const RESULT_TYPE = 'CommandResult';

/** The answer a sender gets: the handler's result, or `pending` when it did not come in time. */
export type CommandOutcome = CommandResult | { readonly status: 'pending'; readonly commandId: string };

/**
 * A stable command id from a client's `Idempotency-Key`, scoped (by the caller: a user id, say)
 * so that two clients choosing the same key do not share results.
 */
export function commandIdFromIdempotencyKey(key: string, scope: string): string {
  return uuidv5(`${scope}\u0000${key}`, '6f1d3b52-6a3a-4e0f-9a43-2a1b6b1f4e55');
}

/** Opens (creating if needed) a service's bucket of command results. */
export async function openCommandResults(nats: Nats, names: ServiceNames): Promise<KV> {
  return openBucket(nats, names.commandResultsBucket, {
    ttlMs: COMMAND_RESULT_TTL_MS,
    description: `${names.service}: result of each command by command id, kept ${COMMAND_RESULT_TTL_MS / HOUR} h so that a retried command has no second effect.`,
  });
}

export interface CommandSender {
  /**
   * Publishes a command into its service's work-queue stream and waits, at most `timeoutMs`,
   * for its result. Past that the command stays safe in the stream and the outcome is
   * `pending`; {@link CommandSender.result} answers later.
   */
  send<S extends TSchema>(def: MessageDefinition<S>, body: Static<S>, opts: SendOptions): Promise<CommandOutcome>;
  /** The stored result of a command, undefined while it is pending or unknown. */
  result(service: string, commandId: string): Promise<CommandResult | undefined>;
}

export interface SendOptions {
  readonly commandId?: string | undefined;
  /**
   * Whether `commandId` was drawn at random for this send (no client's Idempotency-Key behind
   * it), so that no earlier command can have it; an id the sender draws itself always is.
   */
  readonly commandIdDrawn?: boolean;
  readonly trace: TraceContext;
  readonly timeoutMs?: number;
  /**
   * What makes two sends the same command, when not the whole body: e.g. the client's request,
   * when the body also carries what the server drew for it (a salted password hash, a nonce).
   * A retry with the same command id and the same identity gets the first result; another
   * identity under that id is `idempotency-key-reused`.
   */
  readonly identity?: unknown;
}

export function createCommandSender(nats: Nats, defaults: { timeoutMs: number }): CommandSender {
  const buckets = new Map<string, Promise<KV>>();
  const bucket = (names: ServiceNames) => {
    let kv = buckets.get(names.service);
    if (kv === undefined) {
      kv = openCommandResults(nats, names);
      kv.catch(() => buckets.delete(names.service));
      buckets.set(names.service, kv);
    }
    return kv;
  };

  // Results come back on one wildcard subscription per service, `<svc>.command-results.<inbox>.*`,
  // made on first use: a subscription per command would cost the server a SUB and an UNSUB
  // (and a rebuild of its subject cache) for every command.
  const inbox = nuid.next();
  const waiting = new Map<string, Set<(m: Msg) => void>>();
  const inboxes = new Map<string, Subscription>();
  function follow(names: ServiceNames): void {
    if (inboxes.has(names.service)) return;
    const prefix = `${names.service}.command-results.${inbox}.`;
    inboxes.set(
      names.service,
      nats.nc.subscribe(`${prefix}*`, {
        callback: (err, m) => {
          if (err !== null) return;
          for (const deliver of waiting.get(m.subject.slice(prefix.length)) ?? []) deliver(m);
        },
      }),
    );
  }
  /** The first valid result published for `commandId`; `stop()` ends the wait. */
  function awaitResult(commandId: string, accept: (r: CommandResult, hash: string | undefined) => CommandResult) {
    let deliver: ((m: Msg) => void) | undefined;
    const result = new Promise<CommandResult>((resolve) => {
      deliver = (m) => {
        let r: unknown;
        try {
          r = decodeJson(m.data);
        } catch {
          return;
        }
        if (commandResultValidator.check(r)) resolve(accept(r, m.headers?.get(PayloadHashHeader) || undefined));
      };
    });
    let set = waiting.get(commandId);
    if (set === undefined) waiting.set(commandId, (set = new Set()));
    set.add(deliver!);
    return {
      result,
      stop() {
        set.delete(deliver!);
        if (set.size === 0 && waiting.get(commandId) === set) waiting.delete(commandId);
      },
    };
  }

  async function storedResult(names: ServiceNames, commandId: string): Promise<StoredCommandResult | undefined> {
    const entry = await (await bucket(names)).get(commandId);
    if (entry === null || entry.operation !== 'PUT') return undefined;
    const stored: unknown = entry.json();
    return storedCommandResultValidator.check(stored) ? stored : undefined;
  }

  async function result(service: string, commandId: string): Promise<CommandResult | undefined> {
    try {
      return (await storedResult(serviceNames(service), commandId))?.result;
    } catch {
      // NATS unreachable or failing over: the client asks again.
      const message = 'the command results cannot be read now; ask again in a moment';
      throw new DomainError('commands-unavailable', 'unavailable', message, { retryAfterSeconds: 1, commandId });
    }
  }

  async function send<S extends TSchema>(def: MessageDefinition<S>, body: Static<S>, opts: SendOptions): Promise<CommandOutcome> {
    const subject = def.subject;
    if (subject === undefined || !subject.includes('.commands.')) throw new Error(`${def.type} is not a command`);
    if (!def.validator.check(body)) throw new InvalidMessageError(`invalid ${def.type}`, def.validator.issues(body));
    const drawn = opts.commandId === undefined || opts.commandIdDrawn === true;
    const commandId = opts.commandId ?? uuidv4();
    if (!isUuid(commandId)) throw new Error(`command id must be a UUID (got "${commandId}")`);
    const names = serviceNames(subject.split('.')[0] ?? '');
    const timeoutMs = opts.timeoutMs ?? defaults.timeoutMs;
    const data = encodeJson(body);
    const payloadHash = hashOfBody(opts.identity === undefined ? body : { identity: opts.identity });
    // Within the duplicate window the stream keeps the first command under this id, whatever
    // this one says: a result for another body means the id (an idempotency key) was reused.
    const mine = (r: CommandResult, hash: string | undefined): CommandResult =>
      hash === undefined || hash === payloadHash ? r : rejected(commandId, keyReused());
    // Waiting before publishing: the subscription reaches the server before the command does.
    follow(names);
    const wait = awaitResult(commandId, mine);
    // Looked for only once the command is in the stream: a result that cannot be read now (the
    // bucket's leader failing over, say) is pending, not an error; the command will be handled.
    const stored = async () => {
      const s = await storedResult(names, commandId).catch(() => undefined);
      return s === undefined ? undefined : mine(s.result, s.payloadHash);
    };
    let timer: NodeJS.Timeout | undefined;
    // The span covers the wait for the result too: the sender's view of the command's latency.
    const span = startSpan(`send ${subject}`, {
      kind: 'producer',
      parent: opts.trace.traceparent,
      attributes: messageAttributes({
        service: names.service,
        destination: subject,
        messageId: commandId,
        correlationId: opts.trace.correlationId,
        type: def.type,
      }),
    });
    try {
      let ack: Awaited<ReturnType<typeof nats.js.publish>>;
      try {
        ack = await nats.js.publish(subject, data, {
          msgID: commandId,
          expect: { streamName: names.commandsStream },
          headers: encodeHeaders(
            {
              type: def.type,
              version: def.version,
              correlationId: opts.trace.correlationId,
              causationId: opts.trace.causationId,
              traceparent: span.traceparent,
            },
            {
              [PayloadHashHeader]: payloadHash,
              [Header.ResultInbox]: inbox,
              ...(drawn ? { [Header.CommandIdDrawn]: 'true' } : {}),
            },
          ),
        });
      } catch {
        // NATS unreachable or slow (a restart, a failover): whether the command was stored is
        // unknown. Sending it again with the same id (Idempotency-Key) is safe: it has one effect.
        throw new DomainError(
          'commands-unavailable',
          'unavailable',
          'the command could not be confirmed; send it again (with the same Idempotency-Key) in a moment',
          { retryAfterSeconds: 1, commandId },
        );
      }
      const timedOut = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)));
      let r: CommandResult | undefined;
      if (ack.duplicate) {
        // The same command was sent before: its result may be in already, or will be answered
        // to the inbox of whoever sent it first (another instance, perhaps), so it is looked
        // for in the results bucket, more and more rarely, until the timeout.
        let done = false;
        void timedOut.then(() => (done = true));
        for (let pause = 25; r === undefined && !done; pause = Math.min(pause * 2, 500)) {
          r = await stored();
          if (r === undefined) r = await Promise.race([wait.result, delay(pause), timedOut]);
        }
      } else {
        r = await Promise.race([wait.result, timedOut]);
      }
      r ??= await stored();
      span.setAttribute('obey.command.status', r?.status ?? 'pending');
      return r ?? { status: 'pending', commandId };
    } catch (err) {
      span.fail(err);
      throw err;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      wait.stop();
      span.end();
    }
  }

  return { send, result };
}

/**
 * How a command of one type is handled: which aggregate it addresses and how its body becomes
 * the decider's command (the place to add the time, ids and looked-up facts).
 */
export interface CommandHandlerDefinition<S extends TSchema, Command, Event extends DomainEvent, State> {
  readonly command: MessageDefinition<S>;
  readonly aggregate: AggregateDefinition<Command, Event, State>;
  /** The aggregate's id; for a creation it must come from the body, so a retry finds the same one. */
  aggregateId(body: Static<S>): string;
  toCommand(body: Static<S>, ctx: CommandContext): Command | Promise<Command>;
}

export interface CommandContext {
  readonly commandId: string;
  readonly receivedAt: Date;
  readonly meta: MessageMeta;
}

export function defineCommandHandler<S extends TSchema, Command, Event extends DomainEvent, State>(
  def: CommandHandlerDefinition<S, Command, Event, State>,
): CommandHandlerDefinition<S, Command, Event, State> {
  return def;
}

export interface CommandProcessorOptions {
  readonly nats: Nats;
  readonly names: ServiceNames;
  readonly store: EventStore;
  readonly results: KV;
  readonly snapshots?: KV | undefined;
  // Handlers differ in their types; each is consistent within itself.
  readonly handlers: readonly CommandHandlerDefinition<any, any, any, any>[];
  readonly log: Logger;
  /** Commands handled at once by this instance. */
  readonly concurrency?: number;
  /** Deliveries of a failing command before it is parked. */
  readonly maxDeliver?: number;
  readonly retryDelayMs?: { readonly initial: number; readonly max: number };
}

export interface CommandProcessor {
  start(): Promise<void>;
  /** Stops taking commands and waits for those in flight. */
  stop(): Promise<void>;
}

/**
 * Consumes a service's commands from its work-queue stream (any number of instances share the
 * durable consumer), runs each through its aggregate's decider with optimistic concurrency,
 * stores the result under the command id and publishes it to the waiting sender.
 */
export function createCommandProcessor(opts: CommandProcessorOptions): CommandProcessor {
  const { nats, names, results } = opts;
  const consumerName = `${names.service}-command-handlers`;
  const log = opts.log.child({ consumer: consumerName, stream: names.commandsStream });
  const concurrency = opts.concurrency ?? 64;
  const maxDeliver = opts.maxDeliver ?? 10;
  const delays = opts.retryDelayMs ?? { initial: 200, max: 10_000 };
  const handlers = new Map<
    string,
    { def: CommandHandlerDefinition<any, any, any, any>; repo: AggregateRepository<unknown, unknown> }
  >();
  const repos = new Map<string, AggregateRepository<unknown, unknown>>();
  for (const def of opts.handlers) {
    if (def.command.subject === undefined) throw new Error(`${def.command.type} has no subject`);
    let repo = repos.get(def.aggregate.name);
    if (repo === undefined) {
      repo = createAggregateRepository({ store: opts.store, aggregate: def.aggregate, snapshots: opts.snapshots, log });
      repos.set(def.aggregate.name, repo);
    }
    handlers.set(def.command.subject, { def, repo });
  }
  let stopped = false;
  let loop: Promise<void> | undefined;
  const inFlight = new Set<Promise<void>>();
  let current: { stop(): void } | undefined;

  async function ensureConsumer(): Promise<void> {
    const config = {
      durable_name: consumerName,
      description: `${names.service} command handlers: every instance pulls from this consumer; a command is acknowledged once its result is stored.`,
      filter_subject: `${names.service}.commands.>`,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(30_000),
      max_ack_pending: Math.max(1_000, concurrency * 4),
    };
    await ensureDurableConsumer(nats.jsm, names.commandsStream, config);
  }

  /** Answers a waiting sender; `payloadHash` is that of the command the result belongs to. */
  function reply(
    commandId: string,
    result: CommandResult,
    payloadHash: string,
    meta: MessageMeta | undefined,
    inbox: string | undefined,
  ): void {
    const subject =
      inbox === undefined ? names.commandResultSubject(commandId) : `${names.service}.command-results.${inbox}.${commandId}`;
    nats.nc.publish(subject, encodeJson(result), {
      headers: encodeHeaders(
        {
          type: RESULT_TYPE,
          version: 1,
          correlationId: meta?.correlationId ?? commandId,
          causationId: commandId,
          traceparent: currentTraceparent(meta?.traceparent),
        },
        { [PayloadHashHeader]: payloadHash },
      ),
    });
  }

  /** Stores a final answer and sends it; a failure to store leaves the message to redelivery. */
  async function settle(m: JsMsg, commandId: string, result: CommandResult, payloadHash: string, meta: MessageMeta | undefined) {
    const kept = await storeResult(commandId, result, payloadHash);
    reply(
      commandId,
      kept.payloadHash === payloadHash ? kept.result : rejected(commandId, keyReused()),
      payloadHash,
      meta,
      inboxOf(m),
    );
    m.ack();
  }

  /**
   * Stores a command's result unless one is stored already: the first result of a command id
   * stands (a success is never overwritten by a later failure, nor one body's result by
   * another's). Returns the result that is kept.
   */
  async function storeResult(commandId: string, result: CommandResult, payloadHash: string): Promise<StoredCommandResult> {
    const stored: StoredCommandResult = { result, payloadHash, storedAt: new Date().toISOString() };
    try {
      await results.create(commandId, JSON.stringify(stored));
      return stored;
    } catch (err) {
      const existing = await results.get(commandId);
      const value: unknown = existing?.operation === 'PUT' ? existing.json() : undefined;
      if (storedCommandResultValidator.check(value)) return value;
      throw err;
    }
  }

  /** Handles one delivery in a consumer span, the child of the span that sent the command. */
  function handle(m: JsMsg): Promise<void> {
    const commandId = m.headers?.get(Header.CommandId) || (m.headers?.get(Header.MsgId) ?? '');
    const correlationId = m.headers?.get(Header.CorrelationId) || undefined;
    return inSpan(
      `process ${m.subject}`,
      {
        kind: 'consumer',
        parent: m.headers?.get(Header.TraceParent) || undefined,
        attributes: messageAttributes({
          service: names.service,
          destination: m.subject,
          messageId: commandId,
          correlationId,
          consumer: consumerName,
        }),
      },
      (span) => handleCommand(m, commandId, correlationId, span),
    );
  }

  async function handleCommand(m: JsMsg, commandId: string, correlationId: string | undefined, span: SpanHandle): Promise<void> {
    const mlog = log.child({ seq: m.seq, subject: m.subject, commandId, correlationId });
    const track = trackCommand(names.service, commandId);
    let outcome: CommandOutcomeLabel = 'retried';
    // The sender states what identifies the command (commands come only from the service's own
    // senders); without it, the body does.
    const payloadHash = m.headers?.get(PayloadHashHeader) || hashOfMessage(m.data);
    let meta: MessageMeta | undefined;
    try {
      if (!isUuid(commandId)) throw new InvalidMessageError('Nats-Msg-Id must be the command id (a UUID)');
      // A command whose sender drew its id, delivered for the first time, cannot have a result
      // yet; any other may (a retry with an Idempotency-Key past the duplicate window, a
      // redelivery, a replay), and then gets that result instead of a second effect.
      const previous = firstOfItsId(m) ? null : await results.get(commandId);
      if (previous !== null && previous.operation === 'PUT') {
        const stored: unknown = previous.json();
        if (storedCommandResultValidator.check(stored)) {
          const same = stored.payloadHash === payloadHash;
          reply(commandId, same ? stored.result : rejected(commandId, keyReused()), payloadHash, meta, inboxOf(m));
          m.ack();
          outcome = 'duplicate';
          return;
        }
      }
      const handler = handlers.get(m.subject);
      // Not invalid: during a rolling deploy a new command can reach an instance that does not
      // know it yet. Redelivered with backoff, it finds a newer instance, or is parked.
      if (handler === undefined) throw new Error(`no handler for ${m.subject} in this instance`);
      track.named(handler.def.command.type);
      meta = decodeHeaders(m.headers);
      const { def, repo } = handler;
      if (meta.type !== def.command.type) throw new InvalidMessageError(`Message-Type ${meta.type} on ${m.subject}`);
      if (meta.version !== def.command.version) {
        throw new InvalidMessageError(`${meta.type} version ${meta.version}; this handler knows version ${def.command.version}`);
      }
      const body = decodeJson(m.data);
      if (!def.command.validator.check(body)) {
        throw new InvalidMessageError(`invalid ${def.command.type}`, def.command.validator.issues(body));
      }
      // A command seen before (redelivered, or replayed from the dead letters) may have been
      // applied by a handler that died before storing the result: its event says so.
      const since = commandSince(m);
      let result: CommandResult;
      try {
        const aggregateId = def.aggregateId(body);
        const command = await def.toCommand(body, { commandId, receivedAt: m.time, meta });
        const r = await repo.execute(aggregateId, command, {
          commandId,
          trace: { correlationId: meta.correlationId, traceparent: meta.traceparent },
          since,
        });
        result = { commandId, status: 'succeeded', aggregateId, position: r.position, revision: r.revision, event: r.event };
      } catch (err) {
        if (!(err instanceof DomainError)) throw err;
        result = rejected(commandId, err);
      }
      await settle(m, commandId, result, payloadHash, meta);
      outcome = result.status;
    } catch (err) {
      span.fail(err);
      if (err instanceof InvalidMessageError) {
        outcome = 'invalid';
        mlog.warn({ error: err.message }, 'invalid command parked');
        await parkMessage(nats, names, { consumer: consumerName, msg: m, error: err.message });
        if (!isUuid(commandId)) {
          m.ack();
          return;
        }
        const invalid = new DomainError('invalid-command', 'invalid', err.message, { issues: err.issues });
        await settle(m, commandId, rejected(commandId, invalid), payloadHash, meta).catch(() => m.nak(delays.max));
        return;
      }
      const deliveries = m.info.deliveryCount;
      if (deliveries >= maxDeliver) {
        outcome = 'parked';
        mlog.error({ err, deliveries }, 'command failed repeatedly, parked');
        await parkMessage(nats, names, { consumer: consumerName, msg: m, error: errorText(err) });
        // Stored, so a client polling its status URL learns the outcome; a replay clears it.
        const failed = new DomainError('command-failed', 'internal', 'the command could not be handled');
        await settle(m, commandId, rejected(commandId, failed), payloadHash, meta).catch((storeErr: unknown) => {
          // Unstored, a failure must not be announced: the command may have had its effect
          // (a result that could not be stored is what failed). Redelivered, it is decided again.
          mlog.error({ err: storeErr }, 'failure of a command could not be stored; redelivering it');
          m.nak(delays.max);
        });
        return;
      }
      mlog.warn({ err, deliveries }, 'command failed, will be redelivered');
      m.nak(Math.min(delays.max, delays.initial * 2 ** (deliveries - 1)));
    } finally {
      track.done(outcome);
      mlog.debug({ outcome, type: meta?.type }, 'command handled');
    }
  }

  async function run(): Promise<void> {
    while (!stopped) {
      try {
        await ensureConsumer();
        const consumer = await nats.js.consumers.get(names.commandsStream, consumerName);
        const iter = await consumer.consume({ max_messages: concurrency, expires: PULL_EXPIRES_MS });
        current = iter;
        // A stop() that came while the consumer was being set up had nothing to stop yet.
        if (stopped) iter.stop();
        void (async () => {
          for await (const s of iter.status()) {
            if (s.type === 'consumer_deleted' || s.type === 'consumer_not_found') {
              log.warn({ status: s.type }, 'command consumer gone, recreating it');
              iter.stop();
            }
          }
        })();
        for await (const m of iter) {
          // Once stopped, what is still buffered is left to redelivery; the iterator is drained
          // rather than abandoned, as nats.js finishes stopping it only as it is read.
          if (stopped) {
            iter.stop();
            continue;
          }
          // A message that crashed its handler's process again and again is parked unread.
          const task = (m.info.deliveryCount > maxDeliver + 1 ? parkUnread(m) : handle(m)).catch((err: unknown) => {
            log.error({ err, seq: m.seq }, 'command handling failed');
          });
          inFlight.add(task);
          void task.finally(() => inFlight.delete(task));
          while (inFlight.size >= concurrency) await Promise.race(inFlight);
        }
        iter.stop();
      } catch (err) {
        if (stopped) break;
        log.error({ err }, 'command consumer failed, restarting');
        await new Promise((r) => setTimeout(r, delays.max / 4));
      }
    }
  }

  function firstOfItsId(m: JsMsg): boolean {
    return (
      m.headers?.get(Header.CommandIdDrawn) === 'true' &&
      m.info.deliveryCount === 1 &&
      (m.headers?.get(Header.CommandSince) ?? '') === ''
    );
  }

  function commandSince(m: JsMsg): Date | undefined {
    const first = m.headers?.get(Header.CommandSince);
    if (first !== undefined && first !== '' && !Number.isNaN(Date.parse(first))) return new Date(first);
    return m.info.deliveryCount > 1 ? m.time : undefined;
  }

  async function parkUnread(m: JsMsg): Promise<void> {
    await parkMessage(nats, names, {
      consumer: consumerName,
      msg: m,
      error: `delivered ${m.info.deliveryCount} times without an answer`,
    });
    m.ack();
  }

  let unwatch: (() => void) | undefined;
  return {
    async start() {
      await ensureConsumer();
      unwatch = watchConsumer(nats, names.commandsStream, consumerName);
      loop = run();
    },
    async stop() {
      stopped = true;
      current?.stop();
      await loop;
      await Promise.allSettled([...inFlight]);
      unwatch?.();
    },
  };
}

/** Carries the SHA-256 of a command's body, and of the command a result belongs to. */
export const PayloadHashHeader = 'Obey-Payload-Hash';

/**
 * The hash of a command body in its canonical JSON (RFC 8785): the same command retried with
 * its keys in another order is still the same command.
 */
function hashOfBody(body: unknown): string {
  return createHash('sha256')
    .update(canonicalize(body) ?? '')
    .digest('hex');
}

function hashOfMessage(data: Uint8Array): string {
  try {
    return hashOfBody(JSON.parse(new TextDecoder().decode(data)));
  } catch {
    return createHash('sha256').update(data).digest('hex');
  }
}

/** The sender's result inbox, when it names one that can be a subject token. */
function inboxOf(m: JsMsg): string | undefined {
  const inbox = m.headers?.get(Header.ResultInbox) ?? '';
  return /^[A-Za-z0-9_-]{1,64}$/.test(inbox) ? inbox : undefined;
}

const delay = (ms: number) => new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), ms));

function keyReused(): DomainError {
  return new DomainError('idempotency-key-reused', 'conflict', 'this idempotency key was used for another command');
}

function rejected(commandId: string, err: DomainError): CommandResult {
  return { commandId, status: 'rejected', error: err.toBody() };
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
