import { randomBytes } from 'node:crypto';
import { createLeases, type Leases } from '../../eventstore/leases.js';
import { connectNats, type Nats } from '../../eventstore/nats.js';
import { createJetStreamEventStore, type EventStore } from '../../eventstore/store.js';
import { freshService, NATS_URL, testLog, type TestService } from '../../eventstore/testing/nats.js';
import { createProjectionRunner, type ProjectionRunner, type ProjectionRunnerOptions, type ProjectionTarget } from '../runner.js';
import { createLedgerWriter, ledgerSource, type LedgerWriter } from './ledger.js';

/** Runner settings that keep tests fast: short retries, a quick checkpoint watch. */
const FAST = {
  retryDelayMs: { initial: 20, max: 200 },
  checkpointCheckMs: 200,
} as const;

/**
 * Everything a projection test needs on NATS, fresh: a service (its own streams), a leases
 * bucket, an event store, a ledger writer, and runners that are stopped at cleanup.
 */
export interface ProjectionBed {
  readonly service: TestService;
  readonly nats: Nats;
  readonly store: EventStore;
  readonly leasesBucket: string;
  readonly leases: Leases;
  readonly ledger: LedgerWriter;
  /**
   * Starts a runner of a ledger balances projection (source `ledgerSource(names, name)`), with
   * a fresh instance id and the bed's leases unless given.
   */
  startRunner(
    name: string,
    target: ProjectionTarget,
    options?: Partial<Omit<ProjectionRunnerOptions, 'target'>>,
  ): ProjectionRunner;
  /** Another connection, as another process would have; closed at cleanup. */
  connect(): Promise<Nats>;
  cleanup(): Promise<void>;
}

export async function createProjectionBed(opts: { leaseTtlMs?: number } = {}): Promise<ProjectionBed> {
  const service = await freshService();
  const { nats, names } = service;
  const leasesBucket = `${names.service.toUpperCase()}_LEASES`;
  const leases = await createLeases(nats, leasesBucket, testLog, opts.leaseTtlMs ?? 1_500);
  const store = createJetStreamEventStore({ nats, names });
  const runners: ProjectionRunner[] = [];
  const connections: Nats[] = [];
  return {
    service,
    nats,
    store,
    leasesBucket,
    leases,
    ledger: createLedgerWriter(store),
    startRunner(name, target, options = {}) {
      const runner = createProjectionRunner({
        nats,
        names,
        leases,
        instanceId: `i-${randomBytes(4).toString('hex')}`,
        source: ledgerSource(names, name),
        log: testLog,
        ...FAST,
        ...options,
        target,
      });
      runners.push(runner);
      runner.start();
      return runner;
    },
    async connect() {
      const c = await connectNats({ url: NATS_URL, name: 'obeyforum-test' });
      connections.push(c);
      return c;
    },
    async cleanup() {
      await Promise.all(runners.map((r) => r.stop()));
      await Promise.all(connections.map((c) => (c.nc.isClosed() ? undefined : c.nc.close())));
      await nats.jsm.streams.delete(`KV_${leasesBucket}`).catch(() => false);
      await service.cleanup();
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
