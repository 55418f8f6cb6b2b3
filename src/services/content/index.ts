import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import { v4 as uuidv4 } from 'uuid';
import {
  AuthGetUserByIdRequest,
  AuthGetUserByIdResponse,
  AuthUserBannedNotification,
  AuthUserChangedNotification,
  AuthUserSignedUpNotification,
  type UserProfile,
} from '../../../schemas/auth.js';
import { createCommandProcessor, type CommandSender } from '../../eventstore/commands.js';
import { RemoteError } from '../../eventstore/errors.js';
import { createAggregateRepository } from '../../eventstore/repository.js';
import { request } from '../../eventstore/requests.js';
import type { ServiceRuntime } from '../../eventstore/service-runtime.js';
import { serviceNames } from '../../eventstore/streams.js';
import { createPostgresProjectionRunner } from '../../projections/rebuild.js';
import { createNotificationRelay } from '../../projections/relay.js';
import { createReplicaCache } from '../../projections/replicas.js';
import { categoryAggregate } from './category.js';
import { contentCommandHandlers } from './commands.js';
import { CONTENT_EVENTS } from './events.js';
import { notificationsOf } from './outbox.js';
import { postAggregate } from './post.js';
import { createQueries } from './queries.js';
import { forumProjection, type ContentReadDb } from './read-model.js';
import { contentRoutes, DEFAULT_CONTENT_LIMITS, type ContentLimits } from './routes.js';
import { threadAggregate } from './thread.js';

export { forumProjection, FORUM_PROJECTION } from './read-model.js';
export { DEFAULT_CONTENT_LIMITS, type ContentLimits } from './routes.js';

export interface ContentServiceOptions {
  readonly runtime: ServiceRuntime;
  readonly sender: CommandSender;
  /** Content's own database (the forum read model). */
  readonly db: Kysely<any>;
  /** Content's own Redis (user replicas, rate limits). */
  readonly redis: Redis;
  readonly jwtSecret: string;
  readonly commandTimeoutMs: number;
  readonly readYourWritesTimeoutMs: number;
  readonly limits?: ContentLimits;
  /** How long a first-sight request to auth may take. */
  readonly userRequestTimeoutMs?: number;
}

export interface ContentService {
  /** Registers the HTTP API; mount it under `/api/content`. */
  routes(app: FastifyInstance): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  ready(): Promise<boolean>;
}

/**
 * The content service: categories, sections, threads and posts. Commands run on the `category`,
 * `thread` and `post` aggregates; a Postgres projection keeps the forum read model; users are
 * replicas in content's Redis, fed by auth's notifications and fetched on first sight.
 */
export function createContentService(opts: ContentServiceOptions): ContentService {
  const { runtime, sender, redis } = opts;
  const { nats, names, store, snapshots, leases, instanceId, log } = runtime;
  const lookups = {
    categories: createAggregateRepository({ store, aggregate: categoryAggregate, log }),
    // Read for the facts of every post (locked, deleted), changed rarely: followed, not asked.
    threads: createAggregateRepository({ store, aggregate: threadAggregate, snapshots, log, follow: nats }),
    posts: createAggregateRepository({ store, aggregate: postAggregate, log }),
  };
  const processor = createCommandProcessor({
    nats,
    names,
    store,
    results: runtime.results,
    snapshots,
    log,
    handlers: contentCommandHandlers(lookups),
  });
  const { projection, runner: forumRunner } = createPostgresProjectionRunner({
    nats,
    names,
    leases,
    instanceId,
    log,
    db: opts.db,
    definition: forumProjection,
    source: {
      name: 'content-forum',
      description: 'content: the forum read model (Postgres schema content_forum): listings, thread pages, counts.',
      stream: names.eventsStream,
    },
  });
  const notifications = createNotificationRelay({
    nats,
    names,
    leases,
    instanceId,
    log,
    events: CONTENT_EVENTS,
    toNotification: notificationsOf,
  });
  const users = createReplicaCache<UserProfile>({
    nats,
    names,
    leases,
    instanceId,
    log,
    redis,
    name: 'content-users',
    description: "content: replicas of auth's users (nickname, ranks, permissions, ban, tokens-valid-after) in content's Redis.",
    stream: serviceNames('auth').notificationsStream,
    events: [AuthUserSignedUpNotification, AuthUserChangedNotification, AuthUserBannedNotification],
    fromNotification: (e) => {
      const user = (e.data as { user: UserProfile }).user;
      return { id: user.userId, revision: user.revision, value: user };
    },
    async fetch(userId) {
      try {
        const r = await request(
          nats.nc,
          { request: AuthGetUserByIdRequest, response: AuthGetUserByIdResponse },
          { userId },
          { trace: { correlationId: uuidv4() }, timeoutMs: opts.userRequestTimeoutMs ?? 2_000 },
        );
        return { id: userId, revision: r.user.revision, value: r.user };
      } catch (err) {
        if (err instanceof RemoteError && err.status === 404) return null;
        throw err;
      }
    },
  });
  const db = projection.db as Kysely<ContentReadDb>;

  return {
    async routes(app) {
      await contentRoutes(app, {
        sender,
        queries: createQueries(db),
        users,
        waitForForum: (position, timeoutMs) => forumRunner.waitForPosition(position, timeoutMs),
        redis,
        limits: opts.limits ?? DEFAULT_CONTENT_LIMITS,
        jwtSecret: opts.jwtSecret,
        commandTimeoutMs: opts.commandTimeoutMs,
        readYourWritesTimeoutMs: opts.readYourWritesTimeoutMs,
        log,
      });
    },
    async start() {
      await projection.setup();
      await users.startMemo();
      await processor.start();
      forumRunner.start();
      notifications.start();
      users.runner.start();
    },
    async stop() {
      await processor.stop();
      await Promise.all([
        forumRunner.stop(),
        notifications.stop(),
        users.runner.stop(),
        users.stopMemo(),
        lookups.threads.close(),
      ]);
      await users.projection.close();
    },
    async ready() {
      try {
        await Promise.all([projection.checkpoint(), redis.ping()]);
        return true;
      } catch {
        return false;
      }
    },
  };
}
