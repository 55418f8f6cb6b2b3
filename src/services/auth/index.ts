import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import { AuthGetUserByIdRequest, AuthGetUserByIdResponse } from '../../../schemas/auth.js';
import { openBucket } from '../../eventstore/buckets.js';
import { createCommandProcessor, type CommandSender } from '../../eventstore/commands.js';
import { createAggregateRepository } from '../../eventstore/repository.js';
import type { ServiceRuntime } from '../../eventstore/service-runtime.js';
import { createCommandRelay } from '../../projections/command-relay.js';
import { createPostgresProjectionRunner } from '../../projections/rebuild.js';
import { createNotificationRelay } from '../../projections/relay.js';
import { createBanExpiry } from './ban-expiry.js';
import { createClaimer, defineClaimAggregate } from './claims.js';
import { authCommandHandlers } from './commands.js';
import { authErrors } from './errors.js';
import { USER_EVENTS } from './events.js';
import { createLimiter, DEFAULT_LIMITS, type AuthLimits } from './limits.js';
import { emailsOf, notificationOf } from './outbox.js';
import { createProfileCache } from './profiles.js';
import { usersProjection, type AuthReadDb } from './read-model.js';
import { verifyNothing } from './passwords.js';
import { authRoutes } from './routes.js';
import { createSessions } from './sessions.js';
import { deriveTokenKey } from './tokens.js';
import { RESET_TTL_MS, userAggregate, VERIFICATION_TTL_MS } from './user.js';

export { usersProjection, USERS_PROJECTION } from './read-model.js';
export { DEFAULT_LIMITS, type AuthLimits } from './limits.js';

export interface AuthServiceOptions {
  readonly runtime: ServiceRuntime;
  readonly sender: CommandSender;
  /** Auth's own database (the users read model). */
  readonly db: Kysely<any>;
  /** Auth's own Redis (sessions, rate limits). */
  readonly redis: Redis;
  readonly jwtSecret: string;
  readonly publicUrl: string;
  /** Normalised (lower case) emails that become admins when they sign up. */
  readonly adminEmails: readonly string[];
  readonly commandTimeoutMs: number;
  readonly readYourWritesTimeoutMs: number;
  readonly accessTokenTtlSeconds?: number;
  readonly refreshTokenTtlMs?: number;
  readonly limits?: AuthLimits;
  /** How often timed bans past their end are looked for. */
  readonly banSweepMs?: number;
}

export interface AuthService {
  /** Registers the HTTP API; mount it under `/api/auth`. */
  routes(app: FastifyInstance): Promise<void>;
  start(): Promise<void>;
  /** Stops taking work and finishes what is in flight. */
  stop(): Promise<void>;
  /** Whether the database and Redis answer. */
  ready(): Promise<boolean>;
}

/**
 * The auth service: accounts, sessions, bans, roles and permissions. Its commands run on the
 * `user` aggregate (and the email and nickname claims); a Postgres projection keeps the users
 * read model; relays publish its notifications and its emails from AUTH_EVENTS.
 */
export function createAuthService(opts: AuthServiceOptions): AuthService {
  const { runtime, sender, redis } = opts;
  const { nats, names, store, snapshots, leases, instanceId, log } = runtime;
  const emailClaims = createClaimer(
    'email-claim',
    createAggregateRepository({ store, aggregate: defineClaimAggregate('email-claim', authErrors.emailTaken), log }),
  );
  const nicknameTaken = () => authErrors.nicknameTaken('requested');
  const nicknameClaims = createClaimer(
    'nickname-claim',
    createAggregateRepository({ store, aggregate: defineClaimAggregate('nickname-claim', nicknameTaken), log }),
  );
  const users = createAggregateRepository({ store, aggregate: userAggregate, snapshots, log });
  const processor = createCommandProcessor({
    nats,
    names,
    store,
    results: runtime.results,
    snapshots,
    log,
    handlers: authCommandHandlers({ emailClaims, nicknameClaims, users, adminEmails: opts.adminEmails }),
  });
  const { projection, runner: usersRunner } = createPostgresProjectionRunner({
    nats,
    names,
    leases,
    instanceId,
    log,
    db: opts.db,
    definition: usersProjection,
    source: {
      name: 'auth-users',
      description: 'auth: the users read model (Postgres schema auth_users): sign-in lookups, profiles, admin lists.',
      stream: names.eventsStream,
      filterSubject: `${names.service}.events.user.*`,
    },
  });
  const db = projection.db as Kysely<AuthReadDb>;
  const notifications = createNotificationRelay({
    nats,
    names,
    leases,
    instanceId,
    log,
    events: USER_EVENTS,
    toNotification: notificationOf,
  });
  const tokenKey = deriveTokenKey(opts.jwtSecret);
  let mailRelay: ReturnType<typeof createCommandRelay> | undefined;
  const banExpiry = createBanExpiry({ db, sender, leases, instanceId, everyMs: opts.banSweepMs ?? 5_000, log });
  const sessions = createSessions(redis, { ttlMs: opts.refreshTokenTtlMs ?? 30 * 24 * 3_600_000 });
  const limits = opts.limits ?? DEFAULT_LIMITS;
  const profiles = createProfileCache({ db, nats, names, log });

  return {
    async routes(app) {
      await authRoutes(app, {
        sender,
        db,
        waitForUsers: (position, timeoutMs) => usersRunner.waitForPosition(position, timeoutMs),
        sessions,
        limiters: {
          signUp: createLimiter(redis, 'sign-up', limits.signUp),
          signIn: createLimiter(redis, 'sign-in', limits.signIn),
          recovery: createLimiter(redis, 'recovery', limits.recovery),
          verificationResend: createLimiter(redis, 'verification-resend', limits.verificationResend),
        },
        tokenKey,
        jwtSecret: opts.jwtSecret,
        accessTokenTtlSeconds: opts.accessTokenTtlSeconds ?? 15 * 60,
        commandTimeoutMs: opts.commandTimeoutMs,
        readYourWritesTimeoutMs: opts.readYourWritesTimeoutMs,
        log,
      });
    },
    async start() {
      // Queries may come before the runner leads: the read model's tables must exist by then.
      await projection.setup();
      // The decoy hash for sign-ins of unknown emails, made now so that no sign-in pays for it.
      await verifyNothing('warm-up');
      await profiles.start();
      const checkpoints = await openBucket(nats, `${names.service.toUpperCase()}_CHECKPOINTS`, {
        description: `${names.service}: checkpoints of relays that send commands to other services (the position of the last event relayed).`,
      });
      mailRelay = createCommandRelay({
        nats,
        names,
        leases,
        instanceId,
        log,
        name: 'auth-emails',
        description: 'auth: sends MailingSendEmailCommand for verification, password-changed and password-reset events.',
        checkpoints,
        events: USER_EVENTS,
        toCommands: (e) => emailsOf(e, { publicUrl: opts.publicUrl, tokenKey }),
        // An email whose link has expired helps nobody.
        maxAgeMs: Math.min(VERIFICATION_TTL_MS, RESET_TTL_MS),
      });
      await runtime.requests.addEndpoint({
        request: AuthGetUserByIdRequest,
        response: AuthGetUserByIdResponse,
        async handler(body) {
          const found = await profiles.get(body.userId);
          if (found === null) throw authErrors.userNotFound(body.userId);
          return body.includeEmail === true ? { user: found.profile, email: found.email } : { user: found.profile };
        },
      });
      await processor.start();
      usersRunner.start();
      notifications.start();
      mailRelay.start();
      banExpiry.start();
    },
    async stop() {
      await processor.stop();
      await Promise.all([usersRunner.stop(), notifications.stop(), mailRelay?.stop(), banExpiry.stop()]);
      await profiles.stop();
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
