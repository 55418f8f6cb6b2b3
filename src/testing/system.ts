import type { FastifyInstance, RouteOptions } from 'fastify';
import type { Redis } from 'ioredis';
import { createCommandSender } from '../eventstore/commands.js';
import { connectNats, type Nats } from '../eventstore/nats.js';
import { createServiceRuntime, type ServiceRuntime } from '../eventstore/service-runtime.js';
import { testLog } from '../eventstore/testing/nats.js';
import { buildApp } from '../http/app.js';
import { connectRedis } from '../projections/redis.js';
import { freshDatabase, type TestDatabase } from '../projections/testing/postgres.js';
import { createAuthService, DEFAULT_LIMITS, type AuthService } from '../services/auth/index.js';
import {
  createContentService,
  DEFAULT_CONTENT_LIMITS,
  type ContentLimits,
  type ContentService,
} from '../services/content/index.js';
import { createMailingService, type MailingService } from '../services/mailing/index.js';
import { createAlertsService, type AlertsService } from '../services/alerts/index.js';
import { ALERTS_REDIS_SETTINGS } from '../services/alerts/read-model.js';
import { createMetrics, observeEmailOutcome, type Metrics } from '../observability/metrics.js';
import { registerMetricsRoute } from '../observability/metrics-route.js';
import { createTracing } from '../observability/tracing.js';
import type { Logger } from '../log.js';
import type { SpanExporter } from '@opentelemetry/sdk-trace-node';
import { startNatsServer, startRedisServer, type TestServer } from './servers.js';
import { startSmtpServer, type TestSmtpServer } from './smtp.js';

export const TEST_JWT_SECRET = 'system-tests-secret-0123456789abcdef0123456789';

/**
 * The forum as it runs, for a test file: a nats-server, a Redis per service and a database per
 * service of the file's own, a real SMTP server, and auth, content, alerts and mailing in this process
 * behind one fastify app (use `inject`), as `node dist/src/main.js` composes them.
 */
export interface TestSystem {
  readonly app: FastifyInstance;
  readonly nats: Nats;
  /** Its own nats-server; there is none (reading this throws) when it was given `opts.nats`. */
  readonly natsServer: TestServer;
  /** The Redis servers behind `redis`, to kill and restart (empty: they keep nothing on disk). */
  readonly redisServers: { readonly auth: TestServer; readonly content: TestServer; readonly alerts: TestServer };
  readonly smtp: TestSmtpServer;
  readonly redis: { readonly auth: Redis; readonly content: Redis; readonly alerts: Redis };
  readonly databases: { readonly auth: TestDatabase; readonly content: TestDatabase };
  readonly auth: AuthService;
  readonly content: ContentService;
  readonly alerts: AlertsService;
  readonly runtimes: Readonly<Record<'auth' | 'content' | 'alerts' | 'mailing', ServiceRuntime>>;
  /** The process's metrics, served at `GET /metrics`. */
  readonly metrics: Metrics;
  stop(): Promise<void>;
}

export async function startTestSystem(
  opts: {
    adminEmails?: string[];
    contentLimits?: ContentLimits;
    /** Sees every route as it is registered (fastify's `onRoute` hook). */
    onRoute?: (route: RouteOptions) => void;
    /** The logger of the app and every service (default: silent, or `LOG_LEVEL`). */
    log?: Logger;
    /** Turns tracing on for the process, every span handed to this exporter as it ends. */
    spanExporter?: SpanExporter;
    /** The Postgres server (its maintenance database) the databases are made on; default the local one. */
    postgres?: { url: string };
    /**
     * The NATS servers to run on (a cluster, say) instead of a nats-server of its own, and the
     * replicas of what the platform creates there. They are the caller's to stop.
     */
    nats?: { urls: readonly string[]; replicas: number };
  } = {},
): Promise<TestSystem> {
  const [natsServer, authRedisServer, contentRedisServer, alertsRedisServer, smtp, authDb, contentDb] = await Promise.all([
    opts.nats === undefined ? startNatsServer() : undefined,
    startRedisServer(),
    startRedisServer(),
    startRedisServer({ args: ALERTS_REDIS_SETTINGS }),
    startSmtpServer(),
    freshDatabase(opts.postgres?.url),
    freshDatabase(opts.postgres?.url),
  ]);
  const log = opts.log ?? testLog;
  const tracing = await createTracing({ serviceName: 'obeyforum-test', exporter: opts.spanExporter });
  const metrics = createMetrics();
  // A start that fails half way must not leave servers and databases behind.
  try {
    const nats = await connectNats({
      url: opts.nats?.urls.join(',') ?? natsServer!.url,
      name: 'system-test',
      replicas: opts.nats?.replicas,
    });
    const redis = {
      auth: connectRedis(authRedisServer.url, { log }),
      content: connectRedis(contentRedisServer.url, { log }),
      alerts: connectRedis(alertsRedisServer.url, { log }),
    };
    const runtime = (svc: string) => createServiceRuntime(nats, svc, log, { version: '0.0.0', description: `${svc} under test` });
    const runtimes = {
      auth: await runtime('auth'),
      content: await runtime('content'),
      alerts: await runtime('alerts'),
      mailing: await runtime('mailing'),
    };
    const sender = createCommandSender(nats, { timeoutMs: 5_000 });
    const common = { sender, jwtSecret: TEST_JWT_SECRET, commandTimeoutMs: 5_000, readYourWritesTimeoutMs: 3_000 };
    const auth = createAuthService({
      ...common,
      runtime: runtimes.auth,
      db: authDb.db,
      redis: redis.auth,
      publicUrl: 'http://forum.test',
      adminEmails: opts.adminEmails ?? [],
      banSweepMs: 200,
      limits: {
        ...DEFAULT_LIMITS,
        signUp: { perIp: 1_000_000, perAccount: 1_000, windowSeconds: 60 },
        signIn: { perIp: 1_000_000, perAccount: 1_000, windowSeconds: 60 },
      },
    });
    const content = createContentService({
      ...common,
      runtime: runtimes.content,
      db: contentDb.db,
      redis: redis.content,
      limits: opts.contentLimits ?? { ...DEFAULT_CONTENT_LIMITS, postsPerMinute: 10_000, newAccountPostsPerMinute: 10_000 },
    });
    const alerts = createAlertsService({
      ...common,
      runtime: runtimes.alerts,
      redis: redis.alerts,
      publicUrl: 'http://forum.test',
    });
    const mailing: MailingService = createMailingService({
      runtime: runtimes.mailing,
      smtpUrl: smtp.url,
      mailFrom: 'ObeyForum <no-reply@forum.test>',
      retryDelayMs: { initial: 100, max: 1_000 },
      onOutcome: observeEmailOutcome,
    });
    const app = buildApp({ log, openapi: true });
    if (opts.onRoute !== undefined) app.addHook('onRoute', opts.onRoute);
    await app.register(async (scope) => auth.routes(scope), { prefix: '/api/auth' });
    await app.register(async (scope) => content.routes(scope), { prefix: '/api/content' });
    await app.register(async (scope) => alerts.routes(scope), { prefix: '/api/alerts' });
    // After an awaited registration: the OpenAPI plugin sees the routes added once it is loaded.
    registerMetricsRoute(app, metrics);
    await app.ready();
    await Promise.all([auth.start(), content.start(), alerts.start(), mailing.start()]);
    return {
      app,
      nats,
      get natsServer() {
        if (natsServer === undefined) throw new Error('this test system runs on the NATS servers it was given');
        return natsServer;
      },
      redisServers: { auth: authRedisServer, content: contentRedisServer, alerts: alertsRedisServer },
      smtp,
      redis,
      databases: { auth: authDb, content: contentDb },
      auth,
      content,
      alerts,
      runtimes,
      metrics,
      async stop() {
        await app.close();
        await Promise.all([auth.stop(), content.stop(), alerts.stop(), mailing.stop()]);
        for (const r of Object.values(runtimes)) await r.stop();
        await nats.nc.drain();
        redis.auth.disconnect();
        redis.content.disconnect();
        redis.alerts.disconnect();
        await Promise.all([
          natsServer?.stop(),
          authRedisServer.stop(),
          contentRedisServer.stop(),
          alertsRedisServer.stop(),
          smtp.close(),
          authDb.drop(),
          contentDb.drop(),
        ]);
        metrics.close();
        await tracing.shutdown();
      },
    };
  } catch (err) {
    metrics.close();
    await tracing.shutdown();
    await Promise.allSettled([
      natsServer?.stop(),
      authRedisServer.stop(),
      contentRedisServer.stop(),
      alertsRedisServer.stop(),
      smtp.close(),
      authDb.drop(),
      contentDb.drop(),
    ]);
    throw err;
  }
}

/** A signed-in user of a test system. */
export interface TestUser {
  readonly userId: string;
  readonly email: string;
  readonly nickname: string;
  readonly accessToken: string;
}

/** Signs a user up, verifies the address from the emailed link, and signs in. */
export async function signedInUser(sys: TestSystem, opts: { email?: string; nickname?: string } = {}): Promise<TestUser> {
  const tag = Math.random().toString(36).slice(2, 10);
  const email = opts.email ?? `u${tag}@forum.test`;
  const nickname = opts.nickname ?? `user_${tag}`;
  const password = 'a long enough password';
  const call = async (url: string, payload: object) => {
    const r = await sys.app.inject({ method: 'POST', url: `/api/auth${url}`, payload });
    if (r.statusCode >= 300) throw new Error(`${url}: ${r.statusCode} ${r.body}`);
    return r.json() as Record<string, any>;
  };
  const { userId } = await call('/sign-up', { email, nickname, password });
  const mail = await sys.smtp.waitForMail((m) => m.to.includes(email) && /confirm/i.test(m.subject));
  const token = decodeURIComponent(/token=([^\s"&<>]+)/.exec(mail.text)?.[1] ?? '');
  await call('/verify-email', { token });
  const { accessToken } = await call('/sign-in', { email, password });
  return { userId, email, nickname, accessToken };
}
