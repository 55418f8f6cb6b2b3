import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import type { MessageDefinition, ValidationIssue } from '../../schemas/message.js';
import { InvalidMessageError } from '../eventstore/errors.js';
import { nameUuid, namespaceOf } from '../eventstore/ids.js';
import { encodeHeaders } from '../eventstore/headers.js';
import type { Leases } from '../eventstore/leases.js';
import type { Nats } from '../eventstore/nats.js';
import type { StoredEvent } from '../eventstore/store.js';
import { serviceNames, type ServiceNames } from '../eventstore/streams.js';
import type { JsMsg } from '@nats-io/jetstream';
import { createProjectionRunner, type ProjectionRunner, type ProjectionRunnerOptions, type ProjectionSource } from './runner.js';
import { SourceSequenceHeader } from './relay.js';
import { inSpan, messageAttributes } from '../observability/tracing.js';

const COMMAND_NAMESPACE = namespaceOf('9a3e1c52-1f0e-4c55-8d0b-1d8f1f0c7a11');

/** A command to send for an event. */
export interface RelayedCommand {
  readonly definition: MessageDefinition<TSchema>;
  readonly data: unknown;
  /**
   * What the command's id derives from, when not from its source event and its index there:
   * something that names the command itself (e.g. the alert an email is for), so that the same
   * command made again from another event gets the same id.
   */
  readonly key?: string;
  /**
   * The conversation the command belongs to, when not its source event's: an event that gathers
   * several (a batch of alerts) gives each command the trace of its own cause.
   */
  readonly trace?: { readonly correlationId: string; readonly traceparent?: string | undefined };
}

export interface CommandRelayOptions {
  readonly nats: Nats;
  /** The service whose events are read (and whose dead-letter stream gets what is invalid). */
  readonly names: ServiceNames;
  readonly leases: Leases;
  readonly instanceId: string;
  readonly log: Logger;
  /** Consumer name, lease key and checkpoint key. */
  readonly name: string;
  readonly description: string;
  /** Where the relay keeps its checkpoint (a KV bucket of the reading service). */
  readonly checkpoints: KV;
  /** The stream read: the service's own events stream unless given (e.g. another's notifications). */
  readonly stream?: string;
  readonly events: readonly MessageDefinition<TSchema>[];
  /**
   * The commands a message gives, in order. It may look things up (a failure is retried as an
   * outage); an InvalidMessageError parks the message.
   */
  toCommands(event: StoredEvent): readonly RelayedCommand[] | Promise<readonly RelayedCommand[]>;
  /** Events older than this are passed over (an email about a long-gone moment helps nobody). */
  readonly maxAgeMs?: number;
  /** See {@link ProjectionRunnerOptions.maxBufferBytes}: for a stream of large events. */
  readonly maxBufferBytes?: number;
  /** See {@link ProjectionSource.passOver}: events known by their headers to give no command. */
  passOver?(m: JsMsg): boolean;
}

/**
 * Sends commands to another service (e.g. `MailingSendEmailCommand`) from the reading service's
 * own events stream, the outbox: a crash between an append and its command loses nothing. Each
 * command's id derives from its source event (or its `key`), so a command sent again after a crash is dropped
 * by the target stream's duplicate window and recognised by the target by its id beyond it.
 * The checkpoint is stored after the commands of a batch are sent.
 */
export function createCommandRelay(opts: CommandRelayOptions): ProjectionRunner {
  const { nats, names, checkpoints } = opts;
  const key = `relay.${opts.name}`;
  return createProjectionRunner({
    nats,
    names,
    leases: opts.leases,
    instanceId: opts.instanceId,
    log: opts.log,
    ...(opts.maxBufferBytes === undefined ? {} : { maxBufferBytes: opts.maxBufferBytes }),
    source: {
      name: opts.name,
      description: opts.description,
      stream: opts.stream ?? names.eventsStream,
      events: opts.events,
      ...(opts.passOver === undefined ? {} : { passOver: opts.passOver }),
    },
    target: {
      watchCheckpoint: false,
      // A send that fails is an outage of the target stream, retried until it passes; only a
      // command the mapping makes invalid is parked.
      parkOnlyInvalid: true,
      async checkpoint() {
        const e = await checkpoints.get(key);
        return e === null || e.operation !== 'PUT' ? 0 : Number(e.string()) || 0;
      },
      async apply(events, upTo) {
        for (const e of events) {
          if (opts.maxAgeMs !== undefined && Date.now() - e.time.getTime() > opts.maxAgeMs) {
            opts.log.warn({ position: e.position, type: e.type }, 'event too old to relay, passed over');
            continue;
          }
          const commands = await opts.toCommands(e);
          // An invalid command does not hold back the valid ones of the same event (one email
          // among a thousand alerts): they are sent, and the event is parked afterwards naming
          // the invalid ones. A replay sends the valid ones again under the same ids, which the
          // target recognises.
          const invalid: ValidationIssue[] = [];
          let invalidCommands = 0;
          for (const [i, c] of commands.entries()) {
            const def = c.definition;
            if (def.subject === undefined) throw new Error(`${def.type} has no subject`);
            if (!def.validator.check(c.data)) {
              invalidCommands++;
              for (const issue of def.validator.issues(c.data)) {
                invalid.push({ path: `command ${i} (${def.type})${issue.path}`, message: issue.message });
              }
              continue;
            }
            const source = `${opts.stream ?? names.eventsStream}:${e.position}`;
            const commandId = nameUuid(c.key ?? `${source}:${i}`, COMMAND_NAMESPACE);
            const target = serviceNames(def.subject.split('.')[0] ?? '');
            const subject = def.subject;
            const trace = c.trace ?? e.meta;
            await inSpan(
              `send ${subject}`,
              {
                kind: 'producer',
                parent: trace.traceparent,
                attributes: messageAttributes({
                  service: names.service,
                  destination: subject,
                  messageId: commandId,
                  correlationId: trace.correlationId,
                  type: def.type,
                }),
              },
              (span) =>
                nats.js.publish(subject, JSON.stringify(c.data), {
                  msgID: commandId,
                  expect: { streamName: target.commandsStream },
                  headers: encodeHeaders(
                    {
                      type: def.type,
                      version: def.version,
                      correlationId: trace.correlationId,
                      causationId: source,
                      traceparent: span.traceparent,
                    },
                    { [SourceSequenceHeader]: String(e.position) },
                  ),
                }),
            );
          }
          if (invalidCommands > 0) {
            const sent = commands.length - invalidCommands;
            throw new InvalidMessageError(
              `relay made ${invalidCommands} invalid command(s) of ${commands.length} from ${e.type}` +
                (sent === 0 ? ', and sent none' : `, and sent the other ${sent}`),
              invalid,
            );
          }
        }
        await checkpoints.put(key, String(upTo));
      },
      async healthy() {
        try {
          await checkpoints.status();
          return true;
        } catch {
          return false;
        }
      },
    },
  });
}
