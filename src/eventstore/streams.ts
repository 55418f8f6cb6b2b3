import {
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

/**
 * The names a service uses on NATS. Everything a service publishes or stores lives under its
 * own subject prefix and stream prefix, which is also what NATS permissions are cut along.
 */
export interface ServiceNames {
  readonly service: string;
  readonly eventsStream: string;
  readonly commandsStream: string;
  readonly notificationsStream: string;
  readonly deadLettersStream: string;
  readonly snapshotsBucket: string;
  readonly commandResultsBucket: string;
  eventSubject(aggregate: string, id: string): string;
  commandSubject(command: string): string;
  commandResultSubject(commandId: string): string;
  notificationSubject(notification: string): string;
  deadLetterSubject(consumer: string): string;
  requestSubject(request: string): string;
}

const TOKEN = /^[a-z][a-z0-9-]*$/;

export function serviceNames(service: string): ServiceNames {
  if (!TOKEN.test(service)) throw new Error(`invalid service name "${service}"`);
  const upper = service.toUpperCase().replaceAll('-', '_');
  return {
    service,
    eventsStream: `${upper}_EVENTS`,
    commandsStream: `${upper}_COMMANDS`,
    notificationsStream: `${upper}_NOTIFICATIONS`,
    deadLettersStream: `${upper}_DEAD_LETTERS`,
    snapshotsBucket: `${upper}_SNAPSHOTS`,
    commandResultsBucket: `${upper}_COMMAND_RESULTS`,
    eventSubject: (aggregate, id) => `${service}.events.${token(aggregate)}.${token(id)}`,
    commandSubject: (command) => `${service}.commands.${token(command)}`,
    commandResultSubject: (commandId) => `${service}.command-results.${token(commandId)}`,
    notificationSubject: (n) => `${service}.notifications.${token(n)}`,
    deadLetterSubject: (consumer) => `${service}.dead-letters.${token(consumer)}`,
    requestSubject: (r) => `${service}.requests.${token(r)}`,
  };
}

/** A subject token must not be empty nor contain separators or wildcards. */
function token(value: string): string {
  if (value === '' || /[\s.*>]/.test(value)) {
    throw new Error(`"${value}" cannot be a NATS subject token`);
  }
  return value;
}

/** The four streams of a service (DESIGN.md §2), described for operators. */
export type NamedStreamConfig = Partial<StreamConfig> & { name: string };

/**
 * `replicas`: how many servers of the cluster keep each stream (default 1). The durable
 * consumers on them are created without a replica count of their own, so they follow it.
 */
export function serviceStreamConfigs(names: ServiceNames, opts: { replicas?: number } = {}): NamedStreamConfig[] {
  const s = names.service;
  const num_replicas = opts.replicas ?? 1;
  return [
    {
      name: names.eventsStream,
      description: `${s}: domain events, private to ${s}. One subject per aggregate: ${s}.events.<aggregate>.<id>. The source of truth; never deleted.`,
      subjects: [`${s}.events.>`],
      num_replicas,
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      // Were a limit ever set, refuse new events rather than drop the oldest: this is the source of truth.
      discard: DiscardPolicy.New,
      deny_delete: true,
      deny_purge: true,
      allow_direct: true,
      duplicate_window: nanos(2 * MINUTE),
    },
    {
      name: names.commandsStream,
      description: `${s}: commands waiting for the ${s} command handlers (work queue: a command stays until handled). Subjects ${s}.commands.<command>; Nats-Msg-Id is the command id.`,
      subjects: [`${s}.commands.>`],
      num_replicas,
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.New,
      duplicate_window: nanos(2 * MINUTE),
    },
    {
      name: names.notificationsStream,
      description: `${s}: public notifications, derived from the ${s} events by the relay (Nats-Msg-Id <stream>:<sequence> of the source event). Subjects ${s}.notifications.<name>.`,
      subjects: [`${s}.notifications.>`],
      num_replicas,
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.New,
      deny_delete: true,
      deny_purge: true,
      // A relay that restarts republishes what it had not acknowledged; a wider window than
      // the default keeps those out even after a long outage.
      duplicate_window: nanos(60 * MINUTE),
    },
    {
      name: names.deadLettersStream,
      description: `${s}: parked messages that failed repeatedly or were invalid, with their origin and error in Obey-Dead-Letter-* headers. Subjects ${s}.dead-letters.<consumer>.`,
      subjects: [`${s}.dead-letters.>`],
      num_replicas,
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(30 * DAY),
      duplicate_window: nanos(2 * MINUTE),
    },
  ];
}

/**
 * Creates the streams that are missing and brings existing ones to the given configuration
 * (only the settings JetStream lets change; a stream's retention, for one, is fixed; its
 * replica count can change on a cluster).
 */
export async function ensureStreams(jsm: JetStreamManager, configs: readonly NamedStreamConfig[]): Promise<void> {
  for (const config of configs) {
    const name = config.name;
    try {
      await jsm.streams.info(name);
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === 10059) {
        try {
          await jsm.streams.add(config);
          continue;
        } catch (addErr) {
          // Another instance created it between our info and add.
          if (!(addErr instanceof JetStreamApiError && addErr.code === 10058)) throw addErr;
        }
      } else {
        throw err;
      }
    }
    await jsm.streams.update(name, config);
  }
}

/**
 * Creates a durable pull consumer that is missing, or brings an existing one's description, ack
 * wait and ack-pending limit to `config` (the settings its users may change between versions).
 * It is written only when they differ: every instance runs this at every start, and nats-server
 * 2.9 can fail a write to a consumer that was deleted and recreated moments before.
 */
export async function ensureDurableConsumer(
  jsm: JetStreamManager,
  stream: string,
  config: Partial<ConsumerConfig> & { durable_name: string },
): Promise<void> {
  let current: ConsumerConfig;
  try {
    current = (await jsm.consumers.info(stream, config.durable_name)).config;
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === 10014)) throw err;
    // Adding the same configuration twice is no error, so two instances may race here.
    await jsm.consumers.add(stream, config);
    return;
  }
  const changed: Partial<ConsumerConfig> = {};
  if (config.description !== undefined && current.description !== config.description) changed.description = config.description;
  if (config.ack_wait !== undefined && current.ack_wait !== config.ack_wait) changed.ack_wait = config.ack_wait;
  if (config.max_ack_pending !== undefined && current.max_ack_pending !== config.max_ack_pending) {
    changed.max_ack_pending = config.max_ack_pending;
  }
  if (Object.keys(changed).length > 0) await jsm.consumers.update(stream, config.durable_name, changed);
}
