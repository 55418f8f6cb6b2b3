import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { createCommandSender } from '../eventstore/commands.js';
import { connectNats, type Nats } from '../eventstore/nats.js';
import { createServiceRuntime, type ServiceRuntime } from '../eventstore/service-runtime.js';
import { testLog } from '../eventstore/testing/nats.js';
import { buildApp } from '../http/app.js';
import { freshDatabase, type TestDatabase } from '../projections/testing/postgres.js';
import { createAlertsService, type AlertsService } from '../services/alerts/index.js';
import { createAuthService, DEFAULT_LIMITS, type AuthService } from '../services/auth/index.js';
import { createContentService, DEFAULT_CONTENT_LIMITS, type ContentService } from '../services/content/index.js';
import { createMailingService, type MailingService } from '../services/mailing/index.js';
import { ALERTS_REDIS_SETTINGS } from '../services/alerts/read-model.js';
import { startNatsServer, startRedisServer, type TestServer } from './servers.js';
import { startSmtpServer, type TestSmtpServer } from './smtp.js';
import { TEST_JWT_SECRET } from './system.js';

/** The services, each with a NATS user of its own in nats.conf. */
export const SERVICES = ['auth', 'content', 'alerts', 'mailing'] as const;
export type ServiceName = (typeof SERVICES)[number];
/** Every user nats.conf defines: one per service, the all-in-one process's, the operator's. */
export type NatsUser = ServiceName | 'obeyforum' | 'operator';
export const USERS: readonly NatsUser[] = [...SERVICES, 'obeyforum', 'operator'];

/** The environment variable nats.conf reads a user's password from, e.g. `AUTH_NATS_PASSWORD`. */
export function passwordVariable(user: NatsUser): string {
  return `${user.toUpperCase()}_NATS_PASSWORD`;
}

/** The project's nats.conf, the one compose.yaml mounts. */
export const NATS_CONF = fileURLToPath(new URL('../../nats.conf', import.meta.url));

export interface SecuredNatsServer extends TestServer {
  /** The password of each user (random, given to the server through the environment). */
  readonly passwords: Readonly<Record<NatsUser, string>>;
  /** Connects as `user` (with its password unless another is given). */
  connect(user: NatsUser, opts?: { name?: string; password?: string }): Promise<Nats>;
}

/**
 * A nats-server running the project's nats.conf as it is, users and permissions included, on a
 * free loopback port: only the lines that would clash with a test's server (the fixed store
 * directory, the monitoring port) are left out of a temporary copy. Each user gets a random
 * password through the environment variable nats.conf names, as compose.yaml passes them.
 */
export async function startSecuredNatsServer(): Promise<SecuredNatsServer> {
  const source = await readFile(NATS_CONF, 'utf8');
  const dropped = [/^\s*store_dir:.*$/m, /^\s*http_port:.*$/m];
  let copy = source;
  for (const line of dropped) {
    if (!line.test(copy)) throw new Error(`nats.conf has no line matching ${line}: update this harness`);
    copy = copy.replace(line, '');
  }
  const dir = await mkdtemp(join(tmpdir(), 'obey-nats-conf-'));
  const conf = join(dir, 'nats.conf');
  await writeFile(conf, copy);
  // nats-server parses a variable's value as a configuration value: a password must start with a
  // letter and hold only letters and digits ("8e12…" would be a number, "a#b" would end at "#").
  const passwords = Object.fromEntries(USERS.map((u) => [u, `p${randomBytes(12).toString('hex')}`])) as Record<NatsUser, string>;
  // nats-server resolves `$AUTH_NATS_PASSWORD` (and the others) from its environment, which the
  // spawned server inherits from this process.
  for (const u of USERS) process.env[passwordVariable(u)] = passwords[u];
  let server: TestServer;
  try {
    server = await startNatsServer({ args: ['-c', conf] });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    ...server,
    passwords,
    connect: (user, opts = {}) =>
      connectNats({ url: server.url, name: opts.name ?? `test:${user}`, user, password: opts.password ?? passwords[user] }),
    async stop() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The errors the server reports on a connection (permission violations among them), to assert there were none. */
export function watchNatsErrors(nats: Nats): Error[] {
  const errors: Error[] = [];
  void (async () => {
    for await (const s of nats.nc.status()) {
      if (s.type === 'error') errors.push(s.error);
    }
  })();
  return errors;
}

/**
 * The forum as `startTestSystem` runs it (src/testing/system.ts), but on a nats-server with the
 * project's nats.conf: either each service with a connection of its own as its own NATS user
 * (`per-service`: how separate deployments of each service run), or all four on one connection
 * as `obeyforum` (`all-in-one`: `node dist/src/main.js`).
 */
export interface SecuredTestSystem {
  readonly mode: 'per-service' | 'all-in-one';
  readonly app: FastifyInstance;
  readonly natsServer: SecuredNatsServer;
  readonly smtp: TestSmtpServer;
  /** The connection each service runs on (one and the same in `all-in-one`). */
  readonly connections: Readonly<Record<ServiceName, Nats>>;
  /** Errors the server reported on the services' connections (a permission violation is one). */
  readonly natsErrors: readonly Error[];
  /** A connection as `operator`, for looking at streams from outside. */
  readonly operator: Nats;
  readonly auth: AuthService;
  readonly content: ContentService;
  readonly alerts: AlertsService;
  readonly mailing: MailingService;
  readonly runtimes: Readonly<Record<ServiceName, ServiceRuntime>>;
  stop(): Promise<void>;
}

export async function startSecuredTestSystem(opts: {
  mode: 'per-service' | 'all-in-one';
  adminEmails?: string[];
}): Promise<SecuredTestSystem> {
  const [natsServer, authRedisServer, contentRedisServer, alertsRedisServer, smtp, authDb, contentDb] = await Promise.all([
    startSecuredNatsServer(),
    startRedisServer(),
    startRedisServer(),
    startRedisServer({ args: ALERTS_REDIS_SETTINGS }),
    startSmtpServer(),
    freshDatabase(),
    freshDatabase(),
  ]);
  const opened: Nats[] = [];
  const stopServers = async (dbs: readonly TestDatabase[]) => {
    await Promise.allSettled(opened.map((n) => n.nc.close()));
    await Promise.allSettled([
      natsServer.stop(),
      authRedisServer.stop(),
      contentRedisServer.stop(),
      alertsRedisServer.stop(),
      smtp.close(),
      ...dbs.map((d) => d.drop()),
    ]);
  };
  try {
    const watched: Error[][] = [];
    const open = async (user: NatsUser) => {
      const nats = await natsServer.connect(user, { name: `secured-system:${user}` });
      opened.push(nats);
      return nats;
    };
    let connections: Record<ServiceName, Nats>;
    if (opts.mode === 'per-service') {
      connections = {
        auth: await open('auth'),
        content: await open('content'),
        alerts: await open('alerts'),
        mailing: await open('mailing'),
      };
    } else {
      const one = await open('obeyforum');
      connections = { auth: one, content: one, alerts: one, mailing: one };
    }
    for (const nats of new Set(Object.values(connections))) watched.push(watchNatsErrors(nats));
    const operator = await open('operator');
    const redis = {
      auth: new Redis(authRedisServer.url, { maxRetriesPerRequest: 3 }),
      content: new Redis(contentRedisServer.url, { maxRetriesPerRequest: 3 }),
      alerts: new Redis(alertsRedisServer.url, { maxRetriesPerRequest: 3 }),
    };
    const runtime = (svc: ServiceName) =>
      createServiceRuntime(connections[svc], svc, testLog, { version: '0.0.0', description: `${svc} under test` });
    const runtimes = {
      auth: await runtime('auth'),
      content: await runtime('content'),
      alerts: await runtime('alerts'),
      mailing: await runtime('mailing'),
    };
    // Each service sends its own commands on its own connection, as its own process would.
    const common = (svc: ServiceName) => ({
      sender: createCommandSender(connections[svc], { timeoutMs: 5_000 }),
      jwtSecret: TEST_JWT_SECRET,
      commandTimeoutMs: 5_000,
      readYourWritesTimeoutMs: 3_000,
    });
    const auth = createAuthService({
      ...common('auth'),
      runtime: runtimes.auth,
      db: authDb.db,
      redis: redis.auth,
      publicUrl: 'http://forum.test',
      adminEmails: opts.adminEmails ?? [],
      banSweepMs: 200,
      limits: { ...DEFAULT_LIMITS, signIn: { perIp: 10_000, perAccount: 1_000, windowSeconds: 60 } },
    });
    const content = createContentService({
      ...common('content'),
      runtime: runtimes.content,
      db: contentDb.db,
      redis: redis.content,
      limits: { ...DEFAULT_CONTENT_LIMITS, postsPerMinute: 10_000, newAccountPostsPerMinute: 10_000 },
    });
    const alerts = createAlertsService({
      ...common('alerts'),
      runtime: runtimes.alerts,
      redis: redis.alerts,
      publicUrl: 'http://forum.test',
    });
    const mailing = createMailingService({
      runtime: runtimes.mailing,
      smtpUrl: smtp.url,
      mailFrom: 'ObeyForum <no-reply@forum.test>',
      retryDelayMs: { initial: 100, max: 1_000 },
    });
    const app = buildApp({ log: testLog });
    await app.register(async (scope) => auth.routes(scope), { prefix: '/api/auth' });
    await app.register(async (scope) => content.routes(scope), { prefix: '/api/content' });
    await app.register(async (scope) => alerts.routes(scope), { prefix: '/api/alerts' });
    await app.ready();
    await Promise.all([auth.start(), content.start(), alerts.start(), mailing.start()]);
    return {
      mode: opts.mode,
      app,
      natsServer,
      smtp,
      connections,
      get natsErrors() {
        return watched.flat();
      },
      operator,
      auth,
      content,
      alerts,
      mailing,
      runtimes,
      async stop() {
        await app.close();
        await Promise.all([auth.stop(), content.stop(), alerts.stop(), mailing.stop()]);
        for (const r of Object.values(runtimes)) await r.stop();
        for (const n of opened) await n.nc.drain().catch(() => undefined);
        redis.auth.disconnect();
        redis.content.disconnect();
        redis.alerts.disconnect();
        opened.length = 0;
        await stopServers([authDb, contentDb]);
      },
    };
  } catch (err) {
    await stopServers([authDb, contentDb]);
    throw err;
  }
}
