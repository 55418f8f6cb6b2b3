import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from './config.js';
import { createLogger } from './log.js';
import { connectNats } from './eventstore/nats.js';
import { createServiceRuntime, type ServiceRuntime } from './eventstore/service-runtime.js';
import { buildApp } from './http/app.js';
import { describeRoute, openObject } from './http/openapi.js';
import { Type } from 'typebox';
import { connectPostgres } from './projections/postgres.js';
import { connectRedis } from './projections/redis.js';
import { createCommandSender } from './eventstore/commands.js';
import { createMetrics, observeEmailOutcome } from './observability/metrics.js';
import { registerMetricsRoute } from './observability/metrics-route.js';
import { createTracing } from './observability/tracing.js';

const SERVICES = ['auth', 'content', 'alerts', 'mailing'] as const;
const DESCRIPTIONS: Record<(typeof SERVICES)[number], string> = {
  auth: 'ObeyForum accounts, sessions, bans, roles and permissions',
  content: 'ObeyForum categories, sections, threads and posts',
  alerts: 'ObeyForum per-user alerts',
  mailing: 'ObeyForum outgoing email',
};
const VERSION = packageVersion();

/** The version in the project's package.json, from src/ (tsx) as from dist/src/ (built). */
function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  }
  return '0.0.0';
}
type ServiceName = (typeof SERVICES)[number];

/**
 * The composition root: `node dist/src/main.js [service…]` runs the named services (all of
 * them by default) in one process behind one HTTP listener, and stops them gracefully on
 * SIGTERM/SIGINT: it stops taking requests, stops each service (which finishes the commands and
 * batches in flight), then drains NATS.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel, { app: 'obeyforum' });
  const requested = process.argv.slice(2);
  const unknown = requested.filter((s) => !(SERVICES as readonly string[]).includes(s));
  if (unknown.length > 0) {
    log.fatal({ unknown, known: SERVICES }, 'unknown services');
    process.exit(2);
  }
  const services = (requested.length === 0 ? [...SERVICES] : requested) as ServiceName[];
  // Before anything that sends, handles or serves: the platform traces and counts from then on.
  const tracing = await createTracing({
    serviceName: `obeyforum:${services.join(',')}`,
    serviceVersion: VERSION,
    otlpEndpoint: config.otlpEndpoint,
  });
  const metrics = createMetrics();

  const nats = await connectNats({
    url: config.natsUrl,
    name: `obeyforum:${services.join(',')}`,
    user: config.natsUser,
    password: config.natsPassword,
    replicas: config.natsReplicas,
  });
  log.info({ server: nats.serverVersion, services, replicas: nats.replicas }, 'connected to NATS');
  const runtimes: ServiceRuntime[] = [];
  for (const s of services)
    runtimes.push(await createServiceRuntime(nats, s, log, { version: VERSION, description: DESCRIPTIONS[s] }));
  const runtimeOf = (name: ServiceName) => runtimes.find((r) => r.names.service === name)!;
  const sender = createCommandSender(nats, { timeoutMs: config.commandTimeoutMs });

  /** A running service: what it serves over HTTP, how to stop it, whether it is ready. */
  interface Running {
    readonly name: ServiceName;
    stop(): Promise<void>;
    ready(): Promise<boolean>;
  }
  const running: Running[] = [];
  const closers: (() => Promise<unknown>)[] = [];
  const app = buildApp({ log, trustProxy: config.trustProxy, openapi: true });

  if (services.includes('auth')) {
    const db = connectPostgres(config.auth.databaseUrl, { log });
    const redis = connectRedis(config.auth.redisUrl, { log });
    closers.push(
      () => db.destroy(),
      () => redis.quit(),
    );
    // Each service's modules are loaded only where it runs: a process of one service does not
    // carry the others' code and libraries (Argon2, nodemailer...) in its memory.
    const { createAuthService } = await import('./services/auth/index.js');
    const auth = createAuthService({
      runtime: runtimeOf('auth'),
      sender,
      db,
      redis,
      jwtSecret: config.jwtSecret,
      publicUrl: config.publicUrl,
      adminEmails: config.adminEmails,
      commandTimeoutMs: config.commandTimeoutMs,
      readYourWritesTimeoutMs: config.readYourWritesTimeoutMs,
    });
    await app.register(async (scope) => auth.routes(scope), { prefix: '/api/auth' });
    await auth.start();
    running.push({ name: 'auth', stop: () => auth.stop(), ready: () => auth.ready() });
  }
  if (services.includes('content')) {
    const db = connectPostgres(config.content.databaseUrl, { log });
    const redis = connectRedis(config.content.redisUrl, { log });
    closers.push(
      () => db.destroy(),
      () => redis.quit(),
    );
    const { createContentService, DEFAULT_CONTENT_LIMITS } = await import('./services/content/index.js');
    const content = createContentService({
      runtime: runtimeOf('content'),
      sender,
      db,
      redis,
      jwtSecret: config.jwtSecret,
      commandTimeoutMs: config.commandTimeoutMs,
      readYourWritesTimeoutMs: config.readYourWritesTimeoutMs,
      limits: {
        ...DEFAULT_CONTENT_LIMITS,
        postsPerMinute: config.content.postsPerMinute ?? DEFAULT_CONTENT_LIMITS.postsPerMinute,
        newAccountPostsPerMinute: config.content.newAccountPostsPerMinute ?? DEFAULT_CONTENT_LIMITS.newAccountPostsPerMinute,
      },
    });
    await app.register(async (scope) => content.routes(scope), { prefix: '/api/content' });
    await content.start();
    running.push({ name: 'content', stop: () => content.stop(), ready: () => content.ready() });
  }
  if (services.includes('alerts')) {
    const redis = connectRedis(config.alerts.redisUrl, { log });
    closers.push(() => redis.quit());
    const { createAlertsService } = await import('./services/alerts/index.js');
    const alerts = createAlertsService({
      runtime: runtimeOf('alerts'),
      sender,
      redis,
      jwtSecret: config.jwtSecret,
      publicUrl: config.publicUrl,
      commandTimeoutMs: config.commandTimeoutMs,
      readYourWritesTimeoutMs: config.readYourWritesTimeoutMs,
    });
    await app.register(async (scope) => alerts.routes(scope), { prefix: '/api/alerts' });
    await alerts.start();
    running.push({ name: 'alerts', stop: () => alerts.stop(), ready: () => alerts.ready() });
  }
  if (services.includes('mailing')) {
    const { createMailingService } = await import('./services/mailing/index.js');
    const mailing = createMailingService({
      runtime: runtimeOf('mailing'),
      smtpUrl: config.smtpUrl,
      mailFrom: config.mailFrom,
      concurrency: config.mailingConcurrency,
      onOutcome: observeEmailOutcome,
    });
    await mailing.start();
    running.push({ name: 'mailing', stop: () => mailing.stop(), ready: () => mailing.ready() });
  }

  await app.after();
  registerMetricsRoute(app, metrics);
  const Health = openObject({
    status: Type.String({ enum: ['ok', 'unavailable'] }),
    checks: Type.Record(Type.String(), Type.String(), { description: "Each dependency's answer: `ok`, or `error`'s reason" }),
  });
  app.get(
    '/health/live',
    {
      schema: describeRoute('health', {
        summary: 'Liveness: the process answers',
        ok: { 200: openObject({ status: Type.String({ enum: ['ok'] }) }, 'Alive') },
      }),
    },
    async () => ({ status: 'ok' }),
  );
  const ready = describeRoute('health', {
    summary: "Readiness: NATS, the services' streams, databases, caches and consumers answer",
    ok: { 200: { ...Health, description: 'Ready' } },
  });
  // Not ready is answered as JSON with the checks, not as a problem.
  ready.response['503'] = { ...Health, description: 'Not ready: `checks` says what failed' };
  app.get('/health/ready', { schema: ready }, async (_request, reply) => {
    const checks: Record<string, string> = {};
    try {
      await nats.nc.rtt();
      checks.nats = 'ok';
      for (const r of runtimes) {
        await nats.jsm.streams.info(r.names.eventsStream);
        // Its work consumer must exist (deleted, it is recreated by the running processor).
        const worker = r.names.service === 'mailing' ? 'mailing-email-senders' : `${r.names.service}-command-handlers`;
        await nats.jsm.consumers.info(r.names.commandsStream, worker);
        const service = running.find((x) => x.name === r.names.service);
        if (service !== undefined && !(await service.ready())) throw new Error(`${r.names.service} is not ready`);
        checks[r.names.service] = 'ok';
      }
    } catch (err) {
      checks.error = err instanceof Error ? err.message : String(err);
      return reply.code(503).send({ status: 'unavailable', checks });
    }
    return { status: 'ok', checks };
  });
  await app.listen({ port: config.port, host: '0.0.0.0' });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    await app.close();
    for (const r of running) await r.stop();
    for (const r of runtimes) await r.stop();
    await nats.nc.drain();
    await Promise.allSettled(closers.map((c) => c()));
    // The spans of the last requests and commands are exported before the process ends.
    await tracing.shutdown().catch((err: unknown) => log.warn({ err }, 'spans not exported'));
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
