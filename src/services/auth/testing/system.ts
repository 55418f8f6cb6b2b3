import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { createCommandSender } from '../../../eventstore/commands.js';
import { connectNats, type Nats } from '../../../eventstore/nats.js';
import { createServiceRuntime } from '../../../eventstore/service-runtime.js';
import { testLog } from '../../../eventstore/testing/nats.js';
import { buildApp } from '../../../http/app.js';
import { freshDatabase, type TestDatabase } from '../../../projections/testing/postgres.js';
import { startNatsServer, startRedisServer, type TestServer } from '../../../testing/servers.js';
import { startSmtpServer, type TestSmtpServer } from '../../../testing/smtp.js';
import { createMailingService, type MailingService } from '../../mailing/index.js';
import { createAuthService, DEFAULT_LIMITS, type AuthLimits, type AuthService } from '../index.js';

export const TEST_JWT_SECRET = 'auth-tests-secret-0123456789abcdef0123456789';
export const PUBLIC_URL = 'http://forum.test';

/**
 * Auth as it runs, for a test file: its own nats-server (so the real `auth.*` and `mailing.*`
 * subjects are the file's own), its own Redis, a fresh database, a real SMTP server, the mailing
 * service delivering to it, and auth's HTTP API on a fastify app (use `inject`).
 */
export interface AuthSystem {
  readonly app: FastifyInstance;
  readonly nats: Nats;
  readonly natsServer: TestServer;
  readonly redis: Redis;
  readonly smtp: TestSmtpServer;
  readonly database: TestDatabase;
  readonly auth: AuthService;
  stop(): Promise<void>;
}

export async function startAuthSystem(
  opts: { adminEmails?: string[]; limits?: AuthLimits; banSweepMs?: number } = {},
): Promise<AuthSystem> {
  const [natsServer, redisServer, smtp, database] = await Promise.all([
    startNatsServer(),
    startRedisServer(),
    startSmtpServer(),
    freshDatabase(),
  ]);
  // A start that fails half way must not leave servers and databases behind.
  try {
    const nats = await connectNats({ url: natsServer.url, name: 'auth-test' });
    const redis = new Redis(redisServer.url, { maxRetriesPerRequest: 3 });
    const authRuntime = await createServiceRuntime(nats, 'auth', testLog, { version: '0.0.0', description: 'auth under test' });
    const mailingRuntime = await createServiceRuntime(nats, 'mailing', testLog, {
      version: '0.0.0',
      description: 'mailing under test',
    });
    const sender = createCommandSender(nats, { timeoutMs: 5_000 });
    const auth = createAuthService({
      runtime: authRuntime,
      sender,
      db: database.db,
      redis,
      jwtSecret: TEST_JWT_SECRET,
      publicUrl: PUBLIC_URL,
      adminEmails: opts.adminEmails ?? [],
      commandTimeoutMs: 5_000,
      readYourWritesTimeoutMs: 2_000,
      banSweepMs: opts.banSweepMs ?? 200,
      // Every test request comes from one address: per-IP sign-up limits are raised unless a test sets its own.
      limits: opts.limits ?? { ...DEFAULT_LIMITS, signUp: { perIp: 1_000_000, perAccount: 1_000, windowSeconds: 60 } },
    });
    const mailing: MailingService = createMailingService({
      runtime: mailingRuntime,
      smtpUrl: smtp.url,
      mailFrom: 'ObeyForum <no-reply@forum.test>',
      retryDelayMs: { initial: 100, max: 1_000 },
    });
    const app = buildApp({ log: testLog });
    await app.register(async (scope) => auth.routes(scope), { prefix: '/api/auth' });
    await app.ready();
    await Promise.all([auth.start(), mailing.start()]);
    return {
      app,
      nats,
      natsServer,
      redis,
      smtp,
      database,
      auth,
      async stop() {
        await app.close();
        await Promise.all([auth.stop(), mailing.stop()]);
        await authRuntime.stop();
        await mailingRuntime.stop();
        await nats.nc.drain();
        redis.disconnect();
        await Promise.all([natsServer.stop(), redisServer.stop(), smtp.close(), database.drop()]);
      },
    };
  } catch (err) {
    await Promise.allSettled([natsServer.stop(), redisServer.stop(), smtp.close(), database.drop()]);
    throw err;
  }
}

/** The token in the link of the newest mail to `address` whose subject matches. */
export async function tokenFromMail(smtp: TestSmtpServer, address: string, subject: RegExp, after = 0): Promise<string> {
  const mail = await smtp.waitForMail((m) => m.to.includes(address) && subject.test(m.subject) && smtp.mails.indexOf(m) >= after);
  const match = /token=([^\s"&<>]+)/.exec(mail.text);
  if (match?.[1] === undefined) throw new Error(`no token in mail "${mail.subject}"`);
  return decodeURIComponent(match[1]);
}
