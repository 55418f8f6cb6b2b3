import { randomBytes } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import { openBucket } from './buckets.js';
import { createServiceEndpoints, type RequestService } from './requests.js';
import type { Logger } from 'pino';
import { openCommandResults } from './commands.js';
import { createLeases, type Leases } from './leases.js';
import type { Nats } from './nats.js';
import { createJetStreamEventStore, type EventStore } from './store.js';
import { ensureStreams, serviceNames, serviceStreamConfigs, type ServiceNames } from './streams.js';

/** What every service gets from the platform: its streams, buckets and event store. */
export interface ServiceRuntime {
  readonly names: ServiceNames;
  /** Unique per process and service: lease holder and NATS service id. */
  readonly instanceId: string;
  readonly nats: Nats;
  readonly store: EventStore;
  readonly results: KV;
  readonly snapshots: KV;
  readonly leases: Leases;
  /** The service's identity in the NATS service protocol (`nats micro ls`); endpoints join it. */
  readonly requests: RequestService;
  readonly log: Logger;
  /** Stops answering requests (draining those in flight). */
  stop(): Promise<void>;
}

/**
 * Creates (or brings up to date) a service's streams and buckets and opens them, each kept by
 * `nats.replicas` servers. Safe to call from any number of instances at once.
 */
export async function createServiceRuntime(
  nats: Nats,
  service: string,
  log: Logger,
  opts: { version: string; description: string },
): Promise<ServiceRuntime> {
  const names = serviceNames(service);
  await ensureStreams(nats.jsm, serviceStreamConfigs(names, { replicas: nats.replicas }));
  const snapshots = await openBucket(nats, names.snapshotsBucket, {
    description: `${service}: aggregate snapshots (key <aggregate>.<id>), so long histories are not replayed per command.`,
  });
  const slog = log.child({ svc: service });
  const requests = await createServiceEndpoints({
    nc: nats.nc,
    name: service,
    version: opts.version,
    description: opts.description,
    log,
  });
  return {
    names,
    instanceId: `${service}-${randomBytes(6).toString('hex')}`,
    nats,
    store: createJetStreamEventStore({ nats, names }),
    results: await openCommandResults(nats, names),
    snapshots,
    leases: await createLeases(nats, `${names.eventsStream.replace(/_EVENTS$/, '')}_LEASES`, slog),
    requests,
    log: slog,
    stop: () => requests.stop(),
  };
}
