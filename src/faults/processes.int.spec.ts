import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthUserChangedNotification } from '../../schemas/auth.js';
import { ContentThreadRepliedNotification } from '../../schemas/content.js';
import { MailingSendEmailCommand } from '../../schemas/mailing.js';
import { listDeadLetters } from '../eventstore/dead-letters.js';
import { encodeHeaders } from '../eventstore/headers.js';
import { connectNats, type Nats } from '../eventstore/nats.js';
import { serviceNames } from '../eventstore/streams.js';
import { freshDatabase, type TestDatabase } from '../projections/testing/postgres.js';
import { ALERTS_REDIS_SETTINGS } from '../services/alerts/read-model.js';
import { forumEnv, serviceProcess, type ServiceProcess } from '../testing/processes.js';
import { freePort, startNatsServer, startRedisServer, type TestServer } from '../testing/servers.js';
import { startSmtpServer, type ReceivedMail, type TestSmtpServer } from '../testing/smtp.js';

/*
 * Each service as its own OS process (`node src/main.ts <service>`), under a steady load of
 * commands with known ids: replies posted in a thread (content), locks and unlocks of other
 * threads (content; each lock gives its author an alert and an email), sign-ups (auth; each gives
 * a verification email). Every command is sent with an Idempotency-Key and sent again with it
 * until it is acknowledged, as a careful client does. In turn, while the load goes on: auth,
 * content, alerts and mailing are killed (SIGKILL) and started again, then the SMTP server is
 * down for 30 s. After each fault the process is back, the load goes on through it and nothing
 * is doubled so far; at the end every acknowledged command's effect is there exactly once (read
 * models, alerts, emails), every command stored as succeeded, no consumer has a backlog, and the
 * dead-letter streams hold exactly the poison messages injected at the start.
 *
 * Mailing's one documented window (docs/mailing.md: a crash or a dropped connection between the
 * claim and the `sent` record parks the email as `delivery-uncertain` for an operator, rather than
 * risking a second one) is left out on purpose: mailing is killed, and the SMTP server taken
 * down, when no email is in flight (the lock and sign-up workers wait for that moment, briefly;
 * the replies go on).
 */

const RUN = randomBytes(3).toString('hex');
const ADMIN_EMAIL = `admin-${RUN}@forum.test`;
const JWT_SECRET = `processes-fault-test-${randomBytes(16).toString('hex')}`;
const PASSWORD = 'a long enough password';
/** How long a client keeps sending (or polling) one command before it gives up: a defect. */
const COMMAND_DEADLINE_MS = 90_000;
const SMTP_OUTAGE_MS = 30_000;

type Svc = 'auth' | 'content' | 'alerts' | 'mailing';
const SERVICES: readonly Svc[] = ['auth', 'content', 'alerts', 'mailing'];

let nats: TestServer;
let client: Nats;
const redis: TestServer[] = [];
let smtp: TestSmtpServer;
const databases: TestDatabase[] = [];
const procs = {} as Record<Svc, ServiceProcess>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  readonly status: number;
  readonly body: any;
  readonly retryAfterSeconds: number | undefined;
}

/** Requests under way per process: a kill is aimed at a moment when one is. */
const inFlight: Record<Svc, number> = { auth: 0, content: 0, alerts: 0, mailing: 0 };

async function http(
  svc: Exclude<Svc, 'mailing'>,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  path: string,
  opts: { body?: unknown; token?: string; key?: string; minPosition?: number | null; ip?: string } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.key !== undefined) headers['idempotency-key'] = opts.key;
  if (opts.minPosition !== undefined && opts.minPosition !== null) headers['obey-min-position'] = String(opts.minPosition);
  // The processes trust loopback as their proxy (the gateway): each simulated client has its address.
  if (opts.ip !== undefined) headers['x-forwarded-for'] = opts.ip;
  inFlight[svc]++;
  try {
    const res = await fetch(`${procs[svc].url}/api/${svc}${path}`, {
      method,
      headers,
      ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    let body: any;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      body = text;
    }
    const retryAfter = Number(res.headers.get('retry-after') ?? '');
    return {
      status: res.status,
      body,
      retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
    };
  } finally {
    inFlight[svc]--;
  }
}

/** A read that must succeed (an outage is retried by the caller's `eventually`). */
async function read(svc: Exclude<Svc, 'mailing'>, path: string, opts: Parameters<typeof http>[3] = {}): Promise<any> {
  const r = await http(svc, 'GET', path, opts);
  if (r.status !== 200) throw new Error(`GET /api/${svc}${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    if (loadFailure !== undefined) throw loadFailure;
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`${what}: not met within ${timeoutMs} ms${last === undefined ? '' : ` (${String(last)})`}`);
    await sleep(200);
  }
}

interface Acknowledged {
  readonly commandId: string;
  readonly position: number | null;
  /** The answer's body (201/200), or the 202's merged with the stored result. */
  readonly body: any;
  /** Answers other than the acknowledgement first seen (errors, 202, 503, 429). */
  readonly retries: number;
}

/**
 * Sends a command as a careful client does: a request that failed (the process was killed) or
 * was answered 503 or 429 is sent again with the same Idempotency-Key; a 202 is followed at its
 * status URL until the command's result is stored. A 500, a rejection or any other answer is a
 * defect and throws, as does a command not acknowledged within the deadline.
 */
async function careful(
  svc: 'auth' | 'content',
  what: string,
  send: () => Promise<Answer>,
  token?: string,
): Promise<Acknowledged> {
  const deadline = Date.now() + COMMAND_DEADLINE_MS;
  let retries = 0;
  let last = '';
  for (;;) {
    let r: Answer | undefined;
    try {
      r = await send();
    } catch (err) {
      last = String((err as { cause?: unknown }).cause ?? err);
    }
    if (r !== undefined) {
      if (r.status === 200 || r.status === 201)
        return { commandId: r.body.commandId, position: r.body.position ?? null, body: r.body, retries };
      if (r.status === 202) {
        const result = await settled(svc, r.body.commandId, token, deadline, what);
        return {
          commandId: r.body.commandId,
          position: result.position ?? null,
          body: { ...r.body, ...result },
          retries: retries + 1,
        };
      }
      last = `${r.status} ${JSON.stringify(r.body)}`;
      if (r.status !== 503 && r.status !== 429) throw new Error(`${what}: ${last}`);
    }
    retries++;
    if (Date.now() > deadline) throw new Error(`${what}: not acknowledged within ${COMMAND_DEADLINE_MS} ms, last answer ${last}`);
    await sleep(
      r?.retryAfterSeconds !== undefined ? Math.min(2_000, r.retryAfterSeconds * 1_000) : Math.min(1_000, 100 * retries),
    );
  }
}

/** Polls a pending command's status until its result is stored; a rejection is a defect. */
async function settled(svc: 'auth' | 'content', commandId: string, token: string | undefined, deadline: number, what: string) {
  for (;;) {
    let r: Answer | undefined;
    try {
      r = await http(svc, 'GET', `/commands/${commandId}`, token === undefined ? {} : { token });
    } catch {
      // The process is down: poll again.
    }
    if (r?.status === 200 && r.body.status === 'succeeded') return r.body;
    if (r?.status === 200 && r.body.status === 'rejected') throw new Error(`${what}: rejected ${JSON.stringify(r.body)}`);
    if (r !== undefined && r.status !== 200 && r.status !== 503)
      throw new Error(`${what}: status ${r.status} ${JSON.stringify(r.body)}`);
    if (Date.now() > deadline) throw new Error(`${what}: command ${commandId} still pending after ${COMMAND_DEADLINE_MS} ms`);
    await sleep(250);
  }
}

interface User {
  readonly userId: string;
  readonly email: string;
  readonly nickname: string;
  readonly token: string;
}

let ipCounter = 0;
/** A client address of its own: sign-ups and sign-ins are rate-limited per address. */
const nextIp = () => {
  ipCounter++;
  return `10.${(ipCounter >> 16) & 255}.${(ipCounter >> 8) & 255}.${ipCounter & 255}`;
};

const mailsTo = (address: string) => smtp.mails.filter((m) => m.to.includes(address));
const isVerification = (m: ReceivedMail) => /confirm/i.test(m.subject);

/** Signs a user up, verifies the address from the emailed link and signs in. */
async function signedInUser(email: string, nickname: string): Promise<User> {
  const ip = nextIp();
  const up = await careful('auth', `sign up ${email}`, () =>
    http('auth', 'POST', '/sign-up', { body: { email, nickname, password: PASSWORD }, key: `sign-up-${email}`, ip }),
  );
  const mail = await smtp.waitForMail((m) => m.to.includes(email) && isVerification(m), 30_000);
  const token = decodeURIComponent(/token=([^\s"&<>]+)/.exec(mail.text)?.[1] ?? '');
  await careful('auth', `verify ${email}`, () => http('auth', 'POST', '/verify-email', { body: { token }, ip }));
  const signIn = await http('auth', 'POST', '/sign-in', { body: { email, password: PASSWORD }, ip });
  if (signIn.status !== 200) throw new Error(`sign in ${email}: ${signIn.status} ${JSON.stringify(signIn.body)}`);
  return { userId: up.body.userId ?? up.body.aggregateId, email, nickname, token: signIn.body.accessToken };
}

/** The fault under way (or last) when a command was acknowledged: failures name it. */
let phase = 'before the faults';

interface Reply {
  readonly key: string;
  readonly body: string;
  readonly id: string;
  readonly commandId: string;
  readonly position: number;
  readonly phase: string;
  readonly at: number;
}
interface Lock {
  readonly threadId: string;
  readonly reason: string;
  readonly commandId: string;
  readonly phase: string;
  readonly at: number;
}
interface SignUp {
  readonly email: string;
  readonly nickname: string;
  readonly userId: string;
  readonly commandId: string;
  readonly phase: string;
  readonly at: number;
}

const replies: Reply[] = [];
const locks: Lock[] = [];
const unlocks: { threadId: string; commandId: string; position: number }[] = [];
const signUps: SignUp[] = [];
const retried = { replies: 0, locks: 0, signUps: 0 };

/**
 * Email producers (lock and sign-up workers) pass this gate before each command: closed, they
 * wait, so that mailing can be left with no email in flight for a moment.
 */
const emailGate = {
  closed: false,
  waiting: 0,
  reopened: Promise.resolve(),
  reopen: () => {},
  async pass(): Promise<void> {
    while (this.closed) {
      this.waiting++;
      await this.reopened;
      this.waiting--;
    }
  },
  close(): void {
    this.closed = true;
    this.reopened = new Promise<void>((resolve) => (this.reopen = resolve));
  },
  open(): void {
    this.closed = false;
    this.reopen();
  },
};
/** Two lock workers and two sign-up workers. */
const EMAIL_PRODUCERS = 4;

let loadOn = true;
/** Why a worker of the load failed: every wait of the test ends with it. */
let loadFailure: unknown;

async function replier(user: User, threadId: string, n: number): Promise<void> {
  for (let i = 0; loadOn; i++) {
    const key = `${RUN}-reply-${n}-${i}`;
    const body = `reply ${RUN} ${n}#${i}`;
    const a = await careful(
      'content',
      `reply ${key}`,
      () => http('content', 'POST', `/threads/${threadId}/posts`, { body: { body }, token: user.token, key }),
      user.token,
    );
    replies.push({ key, body, id: a.body.id, commandId: a.commandId, position: a.position!, phase, at: Date.now() });
    if (a.retries > 0) retried.replies++;
    await sleep(150);
  }
}

async function locker(admin: User, threadId: string, n: number): Promise<void> {
  for (let i = 0; loadOn; i++) {
    await emailGate.pass();
    if (!loadOn) break;
    // Bracketed: no reason is a part of another.
    const reason = `[lock ${RUN} ${n}#${i}]`;
    const lock = await careful(
      'content',
      reason,
      () =>
        http('content', 'PUT', `/threads/${threadId}/lock`, {
          body: { reason },
          token: admin.token,
          key: `${RUN}-lock-${n}-${i}`,
        }),
      admin.token,
    );
    locks.push({ threadId, reason, commandId: lock.commandId, phase, at: Date.now() });
    if (lock.retries > 0) retried.locks++;
    await sleep(250);
    const unlock = await careful(
      'content',
      `unlock ${n}#${i}`,
      () => http('content', 'DELETE', `/threads/${threadId}/lock`, { token: admin.token, key: `${RUN}-unlock-${n}-${i}` }),
      admin.token,
    );
    unlocks.push({ threadId, commandId: unlock.commandId, position: unlock.position! });
    await sleep(250);
  }
}

async function signer(n: number): Promise<void> {
  for (let i = 0; loadOn; i++) {
    await emailGate.pass();
    if (!loadOn) break;
    const email = `load-${n}-${i}-${RUN}@forum.test`;
    const nickname = `load_${RUN}_${n}_${i}`;
    const ip = nextIp();
    const a = await careful('auth', `sign up ${email}`, () =>
      http('auth', 'POST', '/sign-up', { body: { email, nickname, password: PASSWORD }, key: `sign-up-${n}-${i}`, ip }),
    );
    signUps.push({ email, nickname, userId: a.body.userId ?? a.body.aggregateId, commandId: a.commandId, phase, at: Date.now() });
    if (a.retries > 0) retried.signUps++;
    await sleep(1_400);
  }
}

async function allPosts(threadId: string, minPosition: number | null): Promise<any[]> {
  const out: any[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 1_000; page++) {
    const r: any = await read('content', `/threads/${threadId}/posts?limit=100${cursor === null ? '' : `&cursor=${cursor}`}`, {
      minPosition,
    });
    out.push(...r.items);
    cursor = r.nextCursor;
    if (cursor === null) return out;
  }
  throw new Error('too many pages of posts');
}

async function allAlerts(user: User): Promise<any[]> {
  const out: any[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 1_000; page++) {
    const r: any = await read('alerts', `?limit=100${cursor === null ? '' : `&cursor=${cursor}`}`, { token: user.token });
    out.push(...r.items);
    cursor = r.nextCursor ?? null;
    if (cursor === null || r.items.length === 0) return out;
  }
  throw new Error('too many pages of alerts');
}

const countBy = <T>(items: readonly T[], key: (t: T) => string | undefined) => {
  const m = new Map<string, number>();
  for (const i of items) {
    const k = key(i);
    if (k !== undefined) m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
};
const doubled = (m: Map<string, number>) => [...m.entries()].filter(([, n]) => n > 1);

/** The emails a lock gives: its reason is quoted in the text. */
const lockMailsOf = (reason: string, to: string) => mailsTo(to).filter((m) => m.text.includes(reason));

/** Dead letters each service's stream must hold: the poison the test injected, nothing else. */
const poisoned: Record<Svc, { subject: string; msgId: string }[]> = { auth: [], content: [], alerts: [], mailing: [] };

async function inject(subject: string, type: string, version: number, body: string, parkedBy: Svc[]): Promise<void> {
  const msgId = randomUUID();
  await client.js.publish(subject, new TextEncoder().encode(body), {
    msgID: msgId,
    headers: encodeHeaders({ type, version, correlationId: `poison-${RUN}`, causationId: undefined, traceparent: undefined }),
  });
  for (const svc of parkedBy) poisoned[svc].push({ subject, msgId });
}

/** The parked messages of a service, as an operator lists them (`obey dead-letters <svc>`). */
async function deadLetters(svc: Svc): Promise<{ subject: string; msgId: string | undefined; error: string }[]> {
  const letters = await listDeadLetters(client, serviceNames(svc), 1_000);
  return letters.map((l) => ({ subject: l.origin.subject, msgId: l.msgId, error: l.error }));
}

beforeAll(async () => {
  // Each kept as soon as it runs: afterAll stops what a failed start left.
  const [authRedis, contentRedis, alertsRedis, authDb, contentDb] = await Promise.all([
    startRedisServer().then((r) => (redis.push(r), r)),
    startRedisServer().then((r) => (redis.push(r), r)),
    startRedisServer({ args: ALERTS_REDIS_SETTINGS }).then((r) => (redis.push(r), r)),
    freshDatabase().then((d) => (databases.push(d), d)),
    freshDatabase().then((d) => (databases.push(d), d)),
    startNatsServer().then((n) => (nats = n)),
    startSmtpServer().then((m) => (smtp = m)),
  ]);
  client = await connectNats({ url: nats.url, name: 'processes-fault-test' });
  const env: Record<string, string> = {
    ...forumEnv({
      natsUrl: nats.url,
      databases: { auth: authDb, content: contentDb },
      redisUrls: { auth: authRedis.url, content: contentRedis.url, alerts: alertsRedis.url },
      smtpUrl: smtp.url,
      adminEmails: ADMIN_EMAIL,
    }),
    NODE_ENV: 'test',
    LOG_LEVEL: 'warn',
    JWT_SECRET,
    // The load posts faster than a forum lets one person post.
    OBEY_POSTS_PER_MINUTE: '1000000',
    OBEY_NEW_ACCOUNT_POSTS_PER_MINUTE: '1000000',
    OBEY_READ_YOUR_WRITES_TIMEOUT_MS: '3000',
  };
  for (const svc of SERVICES) procs[svc] = serviceProcess({ services: [svc], port: await freePort(), env });
  await Promise.all(SERVICES.map((svc) => procs[svc].start()));
}, 150_000);

afterAll(async () => {
  await Promise.allSettled(SERVICES.map((svc) => procs[svc]?.stop()));
  await client?.nc.close();
  await Promise.allSettled([
    nats?.stop(),
    ...redis.map((r) => r.stop()),
    smtp?.close({ dropConnections: true }),
    ...databases.map((d) => d.drop()),
  ]);
}, 60_000);

describe('each service as its own process, under load', () => {
  it('loses and doubles nothing when each process is killed in turn and the SMTP server is down for 30 s', async () => {
    const started = Date.now();
    const log = (what: string) => console.info(`[processes ${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);
    try {
      // Poison for every consumer that takes messages from outside its service, injected first.
      await inject('auth.commands.change-nickname', 'AuthChangeNicknameCommand', 1, '{"userId":"not a uuid"}', ['auth']);
      await inject('content.commands.create-post', 'ContentCreatePostCommand', 1, 'not json', ['content']);
      await inject('alerts.commands.mark-alert-read', 'AlertsMarkAlertReadCommand', 1, '{}', ['alerts']);
      await inject(
        MailingSendEmailCommand.subject!,
        MailingSendEmailCommand.type,
        MailingSendEmailCommand.version,
        '{"template":"none"}',
        ['mailing'],
      );
      // Read by alerts-from-content.
      await inject(ContentThreadRepliedNotification.subject!, ContentThreadRepliedNotification.type, 1, '{"threadId":"x"}', [
        'alerts',
      ]);
      // Read by content's and alerts' replicas of users.
      await inject(AuthUserChangedNotification.subject!, AuthUserChangedNotification.type, 1, '{}', ['content', 'alerts']);
      for (const svc of SERVICES) {
        await eventually(`${svc}'s poison parked`, async () =>
          (await deadLetters(svc)).length >= poisoned[svc].length ? true : undefined,
        );
      }

      const admin = await signedInUser(ADMIN_EMAIL, `admin_${RUN}`);
      const author = await signedInUser(`author-${RUN}@forum.test`, `author_${RUN}`);
      const repliers = await Promise.all(
        [1, 2].map((n) => signedInUser(`replier-${n}-${RUN}@forum.test`, `replier_${n}_${RUN}`)),
      );
      // Each step waits for the read model to have the one before (a thread is refused in a
      // section the read model does not show yet).
      let minPosition: number | null = null;
      const setup = async (what: string, path: string, body: object, token: string) => {
        const a = await careful(
          'content',
          what,
          () => http('content', 'POST', path, { body, token, key: `${RUN}-${what}`, minPosition }),
          token,
        );
        minPosition = Math.max(minPosition ?? 0, a.position ?? 0);
        return a.body;
      };
      const category = await setup('category', '/categories', { name: 'Faults' }, admin.token);
      const section = await setup('section', `/categories/${category.id}/sections`, { name: 'Processes' }, admin.token);
      const thread = await setup('thread', `/sections/${section.id}/threads`, { title: 'Replies', body: 'first' }, author.token);
      const lockThreads = [
        await setup(
          'lock-thread-0',
          `/sections/${section.id}/threads`,
          { title: 'Locked now and then', body: 'first' },
          author.token,
        ),
        await setup(
          'lock-thread-1',
          `/sections/${section.id}/threads`,
          { title: 'Locked now and then too', body: 'first' },
          author.token,
        ),
      ];
      log('set up; load starts');

      const workers = Promise.all([
        ...repliers.map((u, n) => replier(u, thread.id, n)),
        ...lockThreads.map((t, n) => locker(admin, t.id, n)),
        signer(0),
        signer(1),
      ]);
      // A worker that fails (a defect) ends the load at once, and the test with it.
      workers.catch((err: unknown) => {
        loadFailure = err;
        loadOn = false;
      });

      /** Every reply acknowledged so far is in the thread once; no alert and no email is doubled. */
      const nothingLostOrDoubledSoFar = async (fault: string) => {
        const acked = [...replies];
        const upTo = Math.max(...acked.map((r) => r.position));
        const posts = await eventually(`${fault}: the thread shows the replies acknowledged so far`, async () => {
          const p = await allPosts(thread.id, upTo);
          const bodies = new Set(p.map((x) => x.body));
          return acked.every((r) => bodies.has(r.body)) ? p : undefined;
        });
        expect(doubled(countBy(posts, (p) => p.body)), `${fault}: replies doubled`).toEqual([]);
        const alerts = await allAlerts(author);
        expect(doubled(countBy(alerts, (a) => a.content.postId ?? a.content.reason)), `${fault}: alerts doubled`).toEqual([]);
        expect(doubled(countBy(smtp.mails, (m) => `${m.to.join()} ${m.subject} ${m.text}`)), `${fault}: emails doubled`).toEqual(
          [],
        );
      };

      /**
       * Holds the email producers and waits until mailing has nothing in flight: every email
       * asked for so far delivered, its consumer with nothing pending or unacknowledged.
       */
      const emailsQuiet = async (fault: string) => {
        emailGate.close();
        // One may be waiting for a command the last kill left to its ack wait.
        await eventually(
          `${fault}: email producers waiting`,
          async () => (emailGate.waiting === EMAIL_PRODUCERS || !loadOn ? true : undefined),
          60_000,
        );
        await eventually(
          `${fault}: every email so far delivered`,
          async () => {
            const missing =
              locks.filter((l) => lockMailsOf(l.reason, author.email).length === 0).length +
              signUps.filter((s) => mailsTo(s.email).length === 0).length;
            if (missing > 0) return undefined;
            const ci = await client.jsm.consumers.info('MAILING_COMMANDS', 'mailing-email-senders');
            return ci.num_pending === 0 && ci.num_ack_pending === 0 ? true : undefined;
          },
          60_000,
        );
      };

      const killAndRestart = async (svc: Svc, opts: { whileBusy?: boolean } = {}) => {
        phase = `${svc} killed`;
        if (opts.whileBusy === true) {
          // Aimed at a moment when the process is answering a command.
          await eventually(`a request to ${svc} under way`, async () => (inFlight[svc] > 0 ? true : undefined), 10_000).catch(
            () => undefined,
          );
        }
        const busy = inFlight[svc];
        await procs[svc].kill();
        log(`${svc} killed (${busy} requests under way)`);
        await sleep(500);
        await procs[svc].start();
        phase = `after ${svc} was restarted`;
        log(`${svc} ready again`);
        return Date.now();
      };

      await sleep(3_000);

      // auth: sign-ups under way (one the killed process had taken waits for its ack wait, 30 s;
      // the other worker goes on).
      let back = await killAndRestart('auth', { whileBusy: true });
      await eventually(
        'auth: a sign-up acknowledged after its restart',
        async () => (signUps.some((s) => s.at > back) ? true : undefined),
        60_000,
      );
      await nothingLostOrDoubledSoFar('auth killed');

      // content: replies, locks and unlocks under way. A command the killed process had taken
      // comes back to the queue after its ack wait (30 s): its client waits meanwhile, the others go on.
      back = await killAndRestart('content', { whileBusy: true });
      await eventually(
        'content: a reply acknowledged after its restart',
        async () => (replies.some((r) => r.at > back) ? true : undefined),
        60_000,
      );
      await nothingLostOrDoubledSoFar('content killed');

      // alerts: raising alerts from the replies as they come.
      back = await killAndRestart('alerts');
      await eventually(
        'alerts: an alert raised for a reply acknowledged after its restart',
        async () => {
          const after = new Set(replies.filter((r) => r.at > back).map((r) => r.id));
          const newest = await read('alerts', '?limit=50', { token: author.token });
          return newest.items.some((a: any) => after.has(a.content.postId)) ? true : undefined;
        },
        60_000,
      );
      await nothingLostOrDoubledSoFar('alerts killed');

      // mailing: killed with no email in flight; emails asked for meanwhile wait for it.
      await emailsQuiet('mailing killed');
      phase = 'mailing killed';
      await procs.mailing.kill();
      emailGate.open();
      log('mailing killed');
      await sleep(500);
      await procs.mailing.start();
      back = Date.now();
      phase = 'after mailing was restarted';
      log('mailing ready again');
      await eventually(
        'mailing: an email for a lock acknowledged after its restart delivered',
        async () => (locks.some((l) => l.at > back && lockMailsOf(l.reason, author.email).length > 0) ? true : undefined),
        60_000,
      );
      await nothingLostOrDoubledSoFar('mailing killed');

      // SMTP down for 30 s: emails wait, then go out once.
      await emailsQuiet('SMTP down');
      phase = 'SMTP down';
      const mailsBefore = smtp.mails.length;
      await smtp.close({ dropConnections: true });
      emailGate.open();
      log('SMTP down');
      await sleep(SMTP_OUTAGE_MS);
      const asked = locks.filter((l) => l.phase === 'SMTP down').length + signUps.filter((s) => s.phase === 'SMTP down').length;
      expect(smtp.mails.length).toBe(mailsBefore);
      expect(asked, 'emails asked for during the outage').toBeGreaterThan(0);
      await smtp.open();
      back = Date.now();
      phase = 'after SMTP was back';
      log(`SMTP back (${asked} emails asked for meanwhile)`);
      await eventually(
        'SMTP: the emails asked for during the outage delivered',
        async () =>
          locks.filter((l) => l.phase === 'SMTP down').every((l) => lockMailsOf(l.reason, author.email).length > 0) &&
          signUps.filter((s) => s.phase === 'SMTP down').every((s) => mailsTo(s.email).length > 0)
            ? true
            : undefined,
        60_000,
      );
      await nothingLostOrDoubledSoFar('SMTP down');

      loadOn = false;
      emailGate.open();
      await workers;
      log(
        `load stopped: ${replies.length} replies, ${locks.length} locks, ${unlocks.length} unlocks, ${signUps.length} sign-ups acknowledged; ` +
          `retried ${retried.replies} replies, ${retried.locks} locks, ${retried.signUps} sign-ups`,
      );

      // Replies: each acknowledged one in the thread exactly once, nothing else.
      const upTo = Math.max(...replies.map((r) => r.position));
      const posts = await eventually('every reply in the thread', async () => {
        const p = await allPosts(thread.id, upTo);
        return p.length >= replies.length + 1 ? p : undefined;
      });
      expect(posts[0].body).toBe('first');
      const postCounts = countBy(posts.slice(1), (p) => p.body);
      expect(
        replies.filter((r) => postCounts.get(r.body) !== 1).map((r) => `${r.key} (${r.phase}): ${postCounts.get(r.body) ?? 0}`),
      ).toEqual([]);
      expect(posts).toHaveLength(replies.length + 1);
      expect(new Set(posts.slice(1).map((p) => p.id))).toEqual(new Set(replies.map((r) => r.id)));
      const threadView = await read('content', `/threads/${thread.id}`, { minPosition: upTo });
      expect(threadView.postCount).toBe(replies.length + 1);
      // Each lock was followed by its unlock: the threads are open.
      for (const t of lockThreads) {
        const last = Math.max(...unlocks.filter((u) => u.threadId === t.id).map((u) => u.position));
        expect((await read('content', `/threads/${t.id}`, { minPosition: last })).locked).toBe(false);
      }

      // Every command stored as succeeded: nothing pending.
      const statuses = async (svc: 'auth' | 'content', ids: readonly string[], token: string) => {
        const out: string[] = [];
        for (let i = 0; i < ids.length; i += 20) {
          const page = await Promise.all(ids.slice(i, i + 20).map((id) => read(svc, `/commands/${id}`, { token })));
          out.push(...page.filter((s) => s.status !== 'succeeded').map((s) => `${s.commandId}: ${s.status}`));
        }
        return out;
      };
      expect(
        await statuses(
          'content',
          replies.map((r) => r.commandId),
          repliers[0]!.token,
        ),
      ).toEqual([]);
      expect(
        await statuses(
          'content',
          [...locks, ...unlocks].map((l) => l.commandId),
          admin.token,
        ),
      ).toEqual([]);
      expect(
        await statuses(
          'auth',
          signUps.map((s) => s.commandId),
          admin.token,
        ),
      ).toEqual([]);

      // Sign-ups: each acknowledged one is one user in auth's read model.
      const users = await eventually('every signed-up user listed', async () => {
        const out: any[] = [];
        let cursor: string | null = null;
        for (let page = 0; page < 100; page++) {
          const r: any = await read(
            'auth',
            `/users?limit=100&nickname=load_${RUN}_${cursor === null ? '' : `&cursor=${cursor}`}`,
            {
              token: admin.token,
            },
          );
          out.push(...r.items);
          cursor = r.nextCursor;
          if (cursor === null) break;
        }
        return out.length >= signUps.length ? out : undefined;
      });
      expect(users).toHaveLength(signUps.length);
      expect(new Set(users.map((u) => u.userId ?? u.id))).toEqual(new Set(signUps.map((s) => s.userId)));

      // Alerts: the author has one per reply and one per lock, each once, and no other.
      const alerts = await eventually(
        "every alert in the author's list",
        async () => {
          const a = await allAlerts(author);
          return a.length >= replies.length + locks.length ? a : undefined;
        },
        60_000,
      );
      const byPost = countBy(alerts, (a) => (a.content.kind === 'thread-replied' ? a.content.postId : undefined));
      const byReason = countBy(alerts, (a) => (a.content.kind === 'thread-locked' ? a.content.reason : undefined));
      expect(replies.filter((r) => byPost.get(r.id) !== 1).map((r) => `${r.key} (${r.phase}): ${byPost.get(r.id) ?? 0}`)).toEqual(
        [],
      );
      expect(
        locks.filter((l) => byReason.get(l.reason) !== 1).map((l) => `${l.reason} (${l.phase}): ${byReason.get(l.reason) ?? 0}`),
      ).toEqual([]);
      expect(alerts).toHaveLength(replies.length + locks.length);

      // Emails: one per lock to the author, one verification per sign-up, and no other.
      await eventually(
        'every email delivered',
        async () =>
          locks.every((l) => lockMailsOf(l.reason, author.email).length > 0) && signUps.every((s) => mailsTo(s.email).length > 0)
            ? true
            : undefined,
        60_000,
      );
      await sleep(1_000);
      expect(
        locks.filter((l) => lockMailsOf(l.reason, author.email).length !== 1).map((l) => `${l.reason} (${l.phase})`),
      ).toEqual([]);
      expect(
        signUps.filter((s) => mailsTo(s.email).filter(isVerification).length !== 1).map((s) => `${s.email} (${s.phase})`),
      ).toEqual([]);
      // The four users of the set-up had one verification each too.
      expect(smtp.mails).toHaveLength(locks.length + signUps.length + 4);

      // No durable consumer (the work of every instance) has a backlog, no command waits in a
      // queue. Consumers of one instance (an ordered consumer following events, a read) are not
      // work: a killed instance's are left to the server, which removes them once inactive.
      await eventually(
        'every consumer caught up',
        async () => {
          const behind: string[] = [];
          for (const svc of SERVICES) {
            for (const kind of ['EVENTS', 'COMMANDS', 'NOTIFICATIONS']) {
              const stream = `${svc.toUpperCase()}_${kind}`;
              for await (const ci of client.jsm.consumers.list(stream)) {
                if (ci.config.durable_name === undefined) continue;
                if (ci.num_pending > 0 || ci.num_ack_pending > 0)
                  behind.push(`${stream}/${ci.name}: ${ci.num_pending}+${ci.num_ack_pending}`);
              }
              if (kind === 'COMMANDS') {
                const left = (await client.jsm.streams.info(stream)).state.messages;
                if (left > 0) behind.push(`${stream}: ${left} commands left`);
              }
            }
          }
          if (behind.length > 0) throw new Error(behind.join('; '));
          return true;
        },
        30_000,
      );

      // The dead letters are the poison, nothing else.
      for (const svc of SERVICES) {
        const letters = await deadLetters(svc);
        expect(
          letters.map((l) => ({ subject: l.subject, msgId: l.msgId })),
          `${svc.toUpperCase()}_DEAD_LETTERS: ${JSON.stringify(letters.map((l) => l.error))}`,
        ).toEqual(expect.arrayContaining(poisoned[svc]));
        expect(letters, `${svc.toUpperCase()}_DEAD_LETTERS: ${JSON.stringify(letters)}`).toHaveLength(poisoned[svc].length);
      }
      log('checked');
    } catch (err) {
      for (const svc of SERVICES) {
        const problems = procs[svc]
          .output()
          .split('\n')
          .filter((l) => /"level":(40|50|60)|Error|---/.test(l))
          .slice(-30);
        console.error(`--- ${svc} (last warnings and errors) ---\n${problems.join('\n')}`);
      }
      throw err;
    } finally {
      loadOn = false;
      emailGate.open();
    }
  }, 300_000);
});
