import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';

/** One NATS connection with its JetStream client and manager, shared by a process. */
export interface Nats {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  /** The server's version. The platform uses nothing newer than nats-server 2.9 offers, so it needs no feature detection. */
  readonly serverVersion: string;
  /**
   * How many servers keep each stream, bucket and durable consumer the platform creates through
   * this connection: 1 on a single server, 3 on a 3-node cluster (`NATS_REPLICAS`).
   */
  readonly replicas: number;
}

export interface NatsOptions {
  /** One server, or several comma-separated (the servers of a cluster; any one of them will do). */
  readonly url: string;
  readonly name: string;
  readonly user?: string | undefined;
  readonly password?: string | undefined;
  /** See {@link Nats.replicas}; default 1. */
  readonly replicas?: number | undefined;
}

/**
 * How long one pull of a consumer waits on the server (nats.js's default is 30 s). A pull waits
 * on the consumer's leader: when that server dies (a NATS cluster failing over), the client
 * notices only by two missed idle heartbeats, half this long each, and then pulls from the new
 * leader. So this bounds how long a consumer stalls on a failover.
 */
export const PULL_EXPIRES_MS = 5_000;

/**
 * Where replies to a user's requests arrive (JetStream API answers, pulled messages, request
 * replies): `_INBOX_<user>`, so nats.conf can let each user subscribe to its own inboxes only and
 * no service reads what another receives. Without a user, the default `_INBOX`.
 */
export function inboxPrefixOf(user: string | undefined): string | undefined {
  return user === undefined || user === '' ? undefined : `_INBOX_${user.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

/**
 * Connects with endless reconnects: a service outlives a NATS restart, and in-flight work
 * resumes from its durable consumers once the server is back.
 */
export async function connectNats(opts: NatsOptions): Promise<Nats> {
  const inboxPrefix = inboxPrefixOf(opts.user);
  const nc = await connect({
    servers: opts.url
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
    name: opts.name,
    user: opts.user,
    pass: opts.password,
    ...(inboxPrefix === undefined ? {} : { inboxPrefix }),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    // Capturing a stack for every request and publish costs about half the client's CPU at high
    // rates (bench:eventstore); errors still say what failed, only without the caller's frames.
    noAsyncTraces: true,
  });
  const jsm = await jetstreamManager(nc);
  return { nc, js: jetstream(nc), jsm, serverVersion: nc.info?.version ?? '0.0.0', replicas: opts.replicas ?? 1 };
}
