import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { v4 as uuidv4 } from 'uuid';
import {
  AuthGetUserByIdRequest,
  AuthGetUserByIdResponse,
  AuthUserBannedNotification,
  AuthUserChangedNotification,
  type UserProfile,
} from '../../../schemas/auth.js';
import {
  ContentPostRepliedNotification,
  ContentThreadLockedNotification,
  ContentThreadRepliedNotification,
} from '../../../schemas/content.js';
import { openBucket } from '../../eventstore/buckets.js';
import { createCommandProcessor, type CommandSender } from '../../eventstore/commands.js';
import { RemoteError } from '../../eventstore/errors.js';
import { createRecentAppends } from '../../eventstore/recent-appends.js';
import { request } from '../../eventstore/requests.js';
import type { ServiceRuntime } from '../../eventstore/service-runtime.js';
import { serviceNames } from '../../eventstore/streams.js';
import { createCommandRelay } from '../../projections/command-relay.js';
import { createRedisProjection } from '../../projections/redis.js';
import { createReplicaCache } from '../../projections/replicas.js';
import { createProjectionRunner, type ProjectionRunner } from '../../projections/runner.js';
import { alertsCommandHandlers } from './commands.js';
import { emailsOf } from './emails.js';
import { ALERTS_EVENTS, IMPORTANT_ALERTS_HEADER } from './events.js';
import { createAlertIntake } from './intake.js';
import { createAlertQueries, inboxProjection } from './read-model.js';
import { alertsRoutes } from './routes.js';

/** The key prefix (and consumer) of the users' replicas in alerts' Redis. */
const USERS_REPLICAS = 'alerts-users';

/**
 * What a reader of ALERTS_EVENTS buffers at most: an intake event holds up to 512 KiB of alerts,
 * so a buffer counted in messages (1,000) could hold half a gigabyte during a replay.
 */
const ALERTS_EVENTS_BUFFER_BYTES = 8 * 1024 * 1024;
/**
 * The inbox ends a batch once it holds this many bytes of events. A batch is one MULTI, which
 * Redis runs whole while alert reads wait: with half the buffer (4 MiB, some 7,000 alerts) a
 * backlog could hold Redis for 170 ms on a slow machine; with this, at most 1 MiB and one more
 * event (about 2,500 alerts). At 64 KiB (an event a batch) the inbox fell 65 events behind the
 * intake in bench:alerts, against 9–31 at 1 MiB (docs/alerts.md).
 */
const INBOX_BATCH_BYTES = 1024 * 1024;
/**
 * How much of the intakes' last events is kept for the inbox (see `createRecentAppends`), counted
 * as the intake bounds an event's size (`alertBytesBound`: 3–4 times the JSON of a usual alert).
 * The inbox ran up to 31 events behind the intake in bench:alerts, about 15 MiB so counted and
 * 4.5 MB of JSON.
 */
const RECENT_APPENDS_BYTES = 16 * 1024 * 1024;

export interface AlertsServiceOptions {
  readonly runtime: ServiceRuntime;
  readonly sender: CommandSender;
  /** Alerts' own Redis: the alerts (a projection), user replicas. */
  readonly redis: Redis;
  readonly jwtSecret: string;
  readonly publicUrl: string;
  readonly commandTimeoutMs: number;
  readonly readYourWritesTimeoutMs: number;
  readonly userRequestTimeoutMs?: number;
}

export interface AlertsService {
  /** Registers the HTTP API; mount it under `/api/alerts`. */
  routes(app: FastifyInstance): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  ready(): Promise<boolean>;
}

/**
 * The alerts service: notifications of content and auth become alerts (events in ALERTS_EVENTS,
 * projected into Redis), read through an API; important ones also go out by email.
 */
export function createAlertsService(opts: AlertsServiceOptions): AlertsService {
  const { runtime, sender, redis } = opts;
  const { nats, names, store, snapshots, leases, instanceId, log } = runtime;
  const timeoutMs = opts.userRequestTimeoutMs ?? 2_000;
  const askAuth = async (userId: string, includeEmail: boolean) => {
    try {
      return await request(
        nats.nc,
        { request: AuthGetUserByIdRequest, response: AuthGetUserByIdResponse },
        includeEmail ? { userId, includeEmail } : { userId },
        { trace: { correlationId: uuidv4() }, timeoutMs },
      );
    } catch (err) {
      if (err instanceof RemoteError && err.status === 404) return null;
      throw err;
    }
  };
  const users = createReplicaCache<UserProfile>({
    nats,
    names,
    leases,
    instanceId,
    log,
    redis,
    name: USERS_REPLICAS,
    description:
      "alerts: replicas of auth's users (nickname; ban and tokens-valid-after to refuse ended sessions) in alerts' Redis.",
    stream: serviceNames('auth').notificationsStream,
    events: [AuthUserChangedNotification, AuthUserBannedNotification],
    fromNotification: (e) => {
      const user = (e.data as { user: UserProfile }).user;
      return { id: user.userId, revision: user.revision, value: user };
    },
    async fetch(userId) {
      const r = await askAuth(userId, false);
      return r === null ? null : { id: userId, revision: r.user.revision, value: r.user };
    },
  });
  const queries = createAlertQueries(redis, { replicaPrefix: USERS_REPLICAS });
  const processor = createCommandProcessor({
    nats,
    names,
    store,
    results: runtime.results,
    snapshots,
    log,
    handlers: alertsCommandHandlers({ eventAt: (position) => store.at(position) }),
  });
  // The intakes' events, handed to the inbox of this process as the objects they were built
  // from; kept only while this instance leads the inbox, which takes each one as it reads it.
  const appended = createRecentAppends({ maxBytes: RECENT_APPENDS_BYTES, wanted: () => inboxRunner.leading });
  const inbox = createRedisProjection(inboxProjection, redis);
  const inboxRunner: ProjectionRunner = createProjectionRunner({
    nats,
    names,
    leases,
    instanceId,
    log,
    target: inbox,
    maxBufferBytes: ALERTS_EVENTS_BUFFER_BYTES,
    maxBatchBytes: INBOX_BATCH_BYTES,
    source: {
      name: 'alerts-inbox',
      description: "alerts: the alerts in alerts' Redis (lists, unread sets, read states), from ALERTS_EVENTS.",
      stream: names.eventsStream,
      events: ALERTS_EVENTS,
      known: (m) => appended.take(m),
    },
  });
  const runners: ProjectionRunner[] = [];

  return {
    async routes(app) {
      await alertsRoutes(app, {
        sender,
        queries,
        users,
        async nicknames(ids) {
          const found = await users.getMany(ids);
          return new Map([...found].map(([id, u]) => [id, u.nickname]));
        },
        waitForAlerts: (position, ms) => inboxRunner.waitForPosition(position, ms),
        jwtSecret: opts.jwtSecret,
        commandTimeoutMs: opts.commandTimeoutMs,
        readYourWritesTimeoutMs: opts.readYourWritesTimeoutMs,
      });
    },
    async start() {
      const checkpoints = await openBucket(nats, `${names.service.toUpperCase()}_CHECKPOINTS`, {
        description: `${names.service}: checkpoints of the consumers that raise alerts from notifications and send their emails.`,
      });
      const intake = (name: string, stream: string, events: Parameters<typeof createAlertIntake>[0]['events']) =>
        createAlertIntake({
          nats,
          names,
          leases,
          instanceId,
          log,
          name,
          stream,
          events,
          store,
          checkpoints,
          // A user's first alert fetches their replica (for their nickname).
          recipient: (userId) => users.get(userId),
          appended,
        });
      runners.push(
        intake('alerts-from-content', serviceNames('content').notificationsStream, [
          ContentThreadRepliedNotification,
          ContentPostRepliedNotification,
          ContentThreadLockedNotification,
        ]),
        intake('alerts-from-auth', serviceNames('auth').notificationsStream, [AuthUserBannedNotification]),
        createCommandRelay({
          nats,
          names,
          leases,
          instanceId,
          log,
          name: 'alerts-emails',
          description: 'alerts: sends MailingSendEmailCommand for important alerts (a ban, a locked thread).',
          checkpoints,
          events: ALERTS_EVENTS,
          maxBufferBytes: ALERTS_EVENTS_BUFFER_BYTES,
          // An event of replies only (its header says so) gives no email: its body is not read.
          passOver: (m) => m.headers?.get(IMPORTANT_ALERTS_HEADER) === '0',
          toCommands: (e) =>
            emailsOf(e, {
              publicUrl: opts.publicUrl,
              async addressee(userId) {
                const r = await askAuth(userId, true);
                return r === null || r.email === undefined ? null : { email: r.email, nickname: r.user.nickname };
              },
            }),
        }),
        inboxRunner,
        users.runner,
      );
      await users.startMemo();
      await processor.start();
      for (const r of runners) r.start();
    },
    async stop() {
      await processor.stop();
      await Promise.all([...runners.map((r) => r.stop()), users.stopMemo()]);
      await Promise.all([inbox.close(), users.projection.close()]);
    },
    async ready() {
      try {
        await redis.ping();
        return true;
      } catch {
        return false;
      }
    },
  };
}
