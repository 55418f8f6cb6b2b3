import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { AckPolicy } from '@nats-io/jetstream';
import { errors as natsErrors } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthGetUserByIdRequest, AuthGetUserByIdResponse } from '../../schemas/auth.js';
import { ContentThreadRepliedNotification } from '../../schemas/content.js';
import { encodeHeaders, encodeJson } from '../eventstore/headers.js';
import type { Nats } from '../eventstore/nats.js';
import { request } from '../eventstore/requests.js';
import { MAILING_CONSUMER } from '../services/mailing/index.js';
import {
  NATS_CONF,
  passwordVariable,
  SERVICES,
  startSecuredTestSystem,
  USERS,
  watchNatsErrors,
  type NatsUser,
  type SecuredTestSystem,
} from './secured-system.js';
import { eventually } from './eventually.js';

/**
 * nats.conf's users and permissions, on a nats-server started with that very file: each service
 * runs the whole forum as its own NATS user (and all of them as `obeyforum`), and what a service
 * does not do is refused.
 */

interface ForumUser {
  readonly userId: string;
  readonly email: string;
  readonly nickname: string;
  readonly accessToken: string;
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

function client(sys: SecuredTestSystem) {
  async function call(method: Method, url: string, opts: { body?: unknown; as?: ForumUser; minPosition?: number } = {}) {
    const headers: Record<string, string> = {};
    if (opts.as !== undefined) headers.authorization = `Bearer ${opts.as.accessToken}`;
    if (opts.minPosition !== undefined) headers['obey-min-position'] = String(opts.minPosition);
    const res = await sys.app.inject({
      method,
      url,
      headers,
      ...(opts.body === undefined ? {} : { payload: opts.body as object }),
    });
    return { status: res.statusCode, body: res.body === '' ? undefined : (res.json() as any) };
  }
  async function ok(method: Method, url: string, opts: Parameters<typeof call>[2] = {}) {
    const r = await call(method, url, opts);
    expect(r.status, `${method} ${url}: ${JSON.stringify(r.body)}`).toBeLessThan(300);
    expect(r.status, `${method} ${url} answered 202: its command was not handled in time`).not.toBe(202);
    return r.body;
  }
  /** Signs up, follows the emailed link (auth → MAILING_COMMANDS → mailing → SMTP), signs in. */
  async function signedInUser(email = `u${randomBytes(4).toString('hex')}@forum.test`): Promise<ForumUser> {
    const nickname = `user_${randomBytes(4).toString('hex')}`;
    const password = 'a long enough password';
    const { userId } = await ok('POST', '/api/auth/sign-up', { body: { email, nickname, password } });
    const mail = await sys.smtp.waitForMail((m) => m.to.includes(email) && /confirm/i.test(m.subject));
    const token = decodeURIComponent(/token=([^\s"&<>]+)/.exec(mail.text)?.[1] ?? '');
    await ok('POST', '/api/auth/verify-email', { body: { token } });
    const { accessToken } = await ok('POST', '/api/auth/sign-in', { body: { email, password } });
    return { userId, email, nickname, accessToken };
  }
  return { call, ok, signedInUser };
}

/**
 * The forum end to end: sign-up email (auth → mailing), verification, sign-in, an admin's
 * category and section, a thread, a reply (content asks auth for the replier on first sight,
 * follows auth's notifications), the alert it raises (alerts reads content's notifications and
 * asks auth), and the email of an important alert (alerts → mailing).
 */
async function runForum(sys: SecuredTestSystem, adminEmail: string): Promise<void> {
  const { ok, signedInUser } = client(sys);
  const admin = await signedInUser(adminEmail);
  const alice = await signedInUser();
  const bob = await signedInUser();
  const category = await ok('POST', '/api/content/categories', { body: { name: 'Permissions' }, as: admin });
  const section = await ok('POST', `/api/content/categories/${category.id}/sections`, {
    body: { name: 'General' },
    as: admin,
    minPosition: category.position,
  });
  const thread = await ok('POST', `/api/content/sections/${section.id}/threads`, {
    body: { title: 'Who may do what', body: 'Each service its own user.' },
    as: alice,
    minPosition: section.position,
  });
  const reply = await ok('POST', `/api/content/threads/${thread.id}/posts`, {
    body: { body: 'Hello Alice' },
    as: bob,
    minPosition: thread.position,
  });
  const page = await ok('GET', `/api/content/threads/${thread.id}/posts`, { minPosition: reply.position });
  expect(page.items.map((p: any) => p.author?.nickname)).toContain(bob.nickname);

  const alerts = await eventually(async () => {
    const a = await ok('GET', '/api/alerts?limit=10', { as: alice });
    return a.items.length >= 1 ? a.items : undefined;
  });
  expect(alerts[0]).toMatchObject({
    read: false,
    content: { kind: 'thread-replied', threadId: thread.id, actor: { userId: bob.userId, nickname: bob.nickname } },
  });
  expect(await ok('GET', '/api/alerts/unread-count', { as: alice })).toMatchObject({ unread: 1 });

  // Locking is important: alerts has mailing email Alice, asking auth for her address.
  await ok('PUT', `/api/content/threads/${thread.id}/lock`, { body: { reason: 'Settled' }, as: admin });
  const locked = await sys.smtp.waitForMail((m) => m.to.includes(alice.email) && /locked/i.test(m.subject));
  expect(locked.text).toContain('Settled');

  // Nothing a service did was refused along the way.
  expect(sys.natsErrors.map((e) => e.message)).toEqual([]);
}

/** The error, or its cause, is the server refusing a publish or a subscription. */
function isPermissionViolation(err: unknown): boolean {
  for (let e: unknown = err; e !== undefined && e !== null; e = (e as { cause?: unknown }).cause) {
    if (e instanceof natsErrors.PermissionViolationError) return true;
    if (e instanceof Error && /permissions violation/i.test(e.message)) return true;
    if (!(e instanceof Error)) break;
  }
  return false;
}

async function expectRefused(what: string, attempt: Promise<unknown>): Promise<void> {
  const outcome = await attempt.then(
    (value) => ({ value }),
    (err: unknown) => ({ err }),
  );
  expect('err' in outcome, `${what}: was allowed`).toBe(true);
  if ('err' in outcome) expect(isPermissionViolation(outcome.err), `${what}: ${String(outcome.err)}`).toBe(true);
}

/** A core NATS publish (no acknowledgement): the server answers a refusal with an error on the connection. */
async function expectPublishRefused(nats: Nats, errors: Error[], subject: string, data: Uint8Array, headers?: any) {
  nats.nc.publish(subject, data, headers === undefined ? {} : { headers });
  await nats.nc.flush();
  await eventually(async () =>
    errors.some((e) => e instanceof natsErrors.PermissionViolationError && e.subject === subject) ? true : undefined,
  );
}

async function expectSubscribeRefused(nats: Nats, subject: string, queue?: string): Promise<void> {
  const sub = nats.nc.subscribe(subject, queue === undefined ? {} : { queue });
  await nats.nc.flush();
  const closed = await Promise.race([sub.closed, new Promise((r) => setTimeout(() => r('still open'), 5_000))]);
  expect(isPermissionViolation(closed), `subscribe ${subject}: ${String(closed)}`).toBe(true);
}

describe('nats.conf: each service as its own NATS user', () => {
  const ADMIN = `admin-${randomBytes(3).toString('hex')}@forum.test`;
  let sys: SecuredTestSystem;
  /** Connections of the test's own, as a given user, closed at the end. */
  const extra: Nats[] = [];
  const as = async (user: NatsUser) => {
    const nats = await sys.natsServer.connect(user);
    extra.push(nats);
    return { nats, errors: watchNatsErrors(nats) };
  };
  const lastSeq = async (stream: string) => (await sys.operator.jsm.streams.info(stream)).state.last_seq;

  beforeAll(async () => {
    sys = await startSecuredTestSystem({ mode: 'per-service', adminEmails: [ADMIN] });
  });
  afterAll(async () => {
    await Promise.allSettled(extra.map((n) => n.nc.close()));
    await sys?.stop();
  });

  it('runs the whole forum with one connection per service, each as its own user', async () => {
    expect(new Set(Object.values(sys.connections)).size).toBe(SERVICES.length);
    await runForum(sys, ADMIN);
  });

  it('refuses a connection without a user, with a wrong password, or as an unknown user', async () => {
    for (const attempt of [
      sys.natsServer.connect('auth', { password: 'wrong' }),
      sys.natsServer.connect('nobody' as NatsUser, { password: 'x' }),
    ]) {
      const err = await attempt.then(
        (n) => n.nc.close().then(() => undefined),
        (e: unknown) => e,
      );
      expect(err, 'connected').toBeInstanceOf(natsErrors.AuthorizationError);
    }
    const anonymous = await connect({ servers: sys.natsServer.url, maxReconnectAttempts: 0 }).then(
      (nc) => nc.close().then(() => undefined),
      (e: unknown) => e,
    );
    expect(anonymous).toBeInstanceOf(natsErrors.AuthorizationError);
  });

  it('alerts cannot publish into AUTH_EVENTS: refused, and JetStream never stores it', async () => {
    const { nats, errors } = await as('alerts');
    const subject = `auth.events.user.${randomUUID()}`;
    const before = await lastSeq('AUTH_EVENTS');
    const headers = encodeHeaders({
      type: 'UserSignedUp',
      version: 1,
      correlationId: randomUUID(),
      causationId: undefined,
      traceparent: undefined,
    });
    await expectRefused(
      'alerts: JetStream publish to auth.events.user.<id>',
      nats.js.publish(subject, encodeJson({ forged: true }), { headers, expect: { streamName: 'AUTH_EVENTS' } }),
    );
    await expectPublishRefused(nats, errors, subject, encodeJson({ forged: true }), headers);
    // Nor another service's notifications, nor its commands.
    await expectRefused(
      'alerts: publish a content notification',
      nats.js.publish(ContentThreadRepliedNotification.subject!, encodeJson({ forged: true })),
    );
    await expectRefused('alerts: publish an auth command', nats.js.publish('auth.commands.ban-user', encodeJson({})));
    await new Promise((r) => setTimeout(r, 200));
    expect(await sys.operator.jsm.direct.getMessage('AUTH_EVENTS', { last_by_subj: subject })).toBeNull();
    expect(await lastSeq('AUTH_EVENTS')).toBe(before);
    // What alerts does do still works on that connection: its own events stream.
    expect((await nats.jsm.streams.info('ALERTS_EVENTS')).config.name).toBe('ALERTS_EVENTS');
  });

  it('content cannot consume MAILING_COMMANDS: no consumer of its own, no pulling from mailing’s', async () => {
    const { nats } = await as('content');
    await expectRefused(
      'content: create a consumer on MAILING_COMMANDS',
      nats.jsm.consumers.add('MAILING_COMMANDS', {
        durable_name: 'content-reads-emails',
        filter_subject: 'mailing.commands.send-email',
        ack_policy: AckPolicy.Explicit,
      }),
    );
    await expectRefused(
      'content: an ephemeral consumer on MAILING_COMMANDS',
      nats.jsm.consumers.add('MAILING_COMMANDS', { ack_policy: AckPolicy.None }),
    );
    await expectRefused('content: look up mailing’s consumer', nats.js.consumers.get('MAILING_COMMANDS', MAILING_CONSUMER));
    await expectRefused(
      'content: pull from mailing’s consumer',
      nats.nc.request(`$JS.API.CONSUMER.MSG.NEXT.MAILING_COMMANDS.${MAILING_CONSUMER}`, encodeJson({ batch: 1, no_wait: true })),
    );
    await expectRefused('content: read MAILING_COMMANDS messages', nats.jsm.streams.getMessage('MAILING_COMMANDS', { seq: 1 }));
    await expectRefused('content: MAILING_COMMANDS stream info', nats.jsm.streams.info('MAILING_COMMANDS'));
    const consumers: string[] = [];
    for await (const c of sys.operator.jsm.consumers.list('MAILING_COMMANDS')) consumers.push(c.name);
    expect(consumers).toEqual([MAILING_CONSUMER]);
    // Whereas mailing reads its own queue.
    const mailing = await as('mailing');
    expect((await mailing.nats.jsm.consumers.info('MAILING_COMMANDS', MAILING_CONSUMER)).name).toBe(MAILING_CONSUMER);
  });

  it('mailing cannot read AUTH_EVENTS: no consumer, no message get, no subscription', async () => {
    const { nats } = await as('mailing');
    await expectRefused(
      'mailing: an ephemeral consumer on AUTH_EVENTS',
      nats.jsm.consumers.add('AUTH_EVENTS', { ack_policy: AckPolicy.None }),
    );
    await expectRefused(
      'mailing: a durable consumer on AUTH_EVENTS',
      nats.jsm.consumers.add('AUTH_EVENTS', { durable_name: 'mailing-reads-users', ack_policy: AckPolicy.Explicit }),
    );
    await expectRefused(
      'mailing: ordered consumer on AUTH_EVENTS',
      nats.js.consumers.get('AUTH_EVENTS').then((c) => c.next()),
    );
    await expectRefused('mailing: direct get from AUTH_EVENTS', nats.jsm.direct.getMessage('AUTH_EVENTS', { seq: 1 }));
    await expectRefused(
      'mailing: last event of a user',
      nats.jsm.direct.getMessage('AUTH_EVENTS', { last_by_subj: `auth.events.user.${randomUUID()}` }),
    );
    await expectRefused('mailing: message get from AUTH_EVENTS', nats.jsm.streams.getMessage('AUTH_EVENTS', { seq: 1 }));
    await expectSubscribeRefused(nats, 'auth.events.>');
    // Nor does it read the other buckets: auth's snapshots hold users' state.
    await expectRefused('mailing: open AUTH_SNAPSHOTS', nats.jsm.streams.info('KV_AUTH_SNAPSHOTS'));
  });

  it('content cannot send auth commands (auth.commands.ban-user) nor wait for their results', async () => {
    const { nats, errors } = await as('content');
    const before = await lastSeq('AUTH_COMMANDS');
    const body = encodeJson({ userId: randomUUID(), by: randomUUID(), reason: 'forged' });
    const headers = encodeHeaders({
      type: 'AuthBanUserCommand',
      version: 1,
      correlationId: randomUUID(),
      causationId: undefined,
      traceparent: undefined,
    });
    await expectRefused(
      'content: JetStream publish auth.commands.ban-user',
      nats.js.publish('auth.commands.ban-user', body, { msgID: randomUUID(), headers }),
    );
    await expectPublishRefused(nats, errors, 'auth.commands.ban-user', body, headers);
    await expectSubscribeRefused(nats, 'auth.command-results.>');
    await new Promise((r) => setTimeout(r, 200));
    expect(await lastSeq('AUTH_COMMANDS')).toBe(before);
  });

  it('no service passes for another: requests, consumers and discovery are each one’s own', async () => {
    const content = await as('content');
    // Answering auth's requests (and so reading who asks what) is auth's alone.
    await expectSubscribeRefused(content.nats, 'auth.requests.get-user-by-id', 'auth');
    await expectSubscribeRefused(content.nats, '$SRV.PING.auth');
    // Nor does it read what the others receive: replies and pulled messages (an email command
    // delivered to mailing, auth's answer to alerts with an address) go to each user's own inboxes.
    for (const subject of ['_INBOX.>', '_INBOX_mailing.>', '_INBOX_alerts.>', '>']) {
      await expectSubscribeRefused(content.nats, subject);
    }
    // content follows AUTH_NOTIFICATIONS through its own consumer only, not alerts'.
    await expectRefused(
      'content: take over alerts-users on AUTH_NOTIFICATIONS',
      content.nats.jsm.consumers.add('AUTH_NOTIFICATIONS', { durable_name: 'alerts-users', ack_policy: AckPolicy.All }),
    );
    await expectRefused(
      'content: delete alerts-from-content',
      content.nats.jsm.consumers.delete('CONTENT_NOTIFICATIONS', 'alerts-from-content'),
    );
    // mailing asks auth nothing; content does.
    const mailing = await as('mailing');
    await expectRefused(
      'mailing: AuthGetUserByIdRequest',
      request(
        mailing.nats.nc,
        { request: AuthGetUserByIdRequest, response: AuthGetUserByIdResponse },
        { userId: randomUUID() },
        { trace: { correlationId: randomUUID() }, timeoutMs: 2_000 },
      ),
    );
    // Emails are asked for by auth and alerts only.
    await expectRefused('content: send an email command', content.nats.js.publish('mailing.commands.send-email', encodeJson({})));
  });

  it('no service deletes or purges a stream, its own included; the operator may', async () => {
    const alerts = await as('alerts');
    await expectRefused('alerts: delete ALERTS_EVENTS', alerts.nats.jsm.streams.delete('ALERTS_EVENTS'));
    await expectRefused('alerts: purge ALERTS_DEAD_LETTERS', alerts.nats.jsm.streams.purge('ALERTS_DEAD_LETTERS'));
    await expectRefused('alerts: delete AUTH_EVENTS', alerts.nats.jsm.streams.delete('AUTH_EVENTS'));
    await expectRefused('alerts: delete a message of ALERTS_EVENTS', alerts.nats.jsm.streams.deleteMessage('ALERTS_EVENTS', 1));
    await expectRefused(
      'alerts: create a stream of its choice',
      alerts.nats.jsm.streams.add({ name: 'ALERTS_SIDE', subjects: ['auth.events.>'] }),
    );
    // The operator (nats CLI, obey CLI) sees and may do everything.
    const names: string[] = [];
    for await (const s of sys.operator.jsm.streams.names()) names.push(s);
    for (const svc of SERVICES) expect(names).toContain(`${svc.toUpperCase()}_EVENTS`);
    expect(await sys.operator.jsm.streams.purge('ALERTS_DEAD_LETTERS')).toMatchObject({ success: true });
  });
});

describe('nats.conf: all services in one process as obeyforum', () => {
  const ADMIN = `admin-${randomBytes(3).toString('hex')}@forum.test`;
  let sys: SecuredTestSystem;

  beforeAll(async () => {
    sys = await startSecuredTestSystem({ mode: 'all-in-one', adminEmails: [ADMIN] });
  });
  afterAll(async () => {
    await sys?.stop();
  });

  it('runs the whole forum on one connection', async () => {
    expect(new Set(Object.values(sys.connections)).size).toBe(1);
    await runForum(sys, ADMIN);
  });

  it('is still refused what no service does', async () => {
    const nats = await sys.natsServer.connect('obeyforum');
    try {
      await expectRefused('obeyforum: delete AUTH_EVENTS', nats.jsm.streams.delete('AUTH_EVENTS'));
      await expectRefused('obeyforum: publish outside the services', nats.js.publish('elsewhere.events.x', encodeJson({})));
      await expectSubscribeRefused(nats, 'auth.events.>');
    } finally {
      await nats.nc.close();
    }
  });
});

describe('nats.conf, read as a file', () => {
  /** The quoted subjects of one `<NAME>_PERMISSIONS` block's publish and subscribe lists. */
  function permissionsOf(conf: string, name: string): { publish: Set<string>; subscribe: Set<string> } {
    const start = conf.indexOf(`${name}_PERMISSIONS = {`);
    expect(start, `${name}_PERMISSIONS`).toBeGreaterThanOrEqual(0);
    const block = conf.slice(start, conf.indexOf('\n}\n', start));
    const subjects = (text: string) =>
      new Set(
        text
          .split('\n')
          .filter((line) => !line.trim().startsWith('#'))
          .flatMap((line) => [...line.matchAll(/"([^"]+)"/g)].map((m) => m[1]!)),
      );
    const sub = block.indexOf('subscribe: {');
    return { publish: subjects(block.slice(0, sub)), subscribe: subjects(block.slice(sub)) };
  }

  it('gives obeyforum the union of the four services, with its own inboxes', async () => {
    const conf = await readFile(NATS_CONF, 'utf8');
    const union = { publish: new Set<string>(), subscribe: new Set<string>() };
    for (const svc of SERVICES) {
      const p = permissionsOf(conf, svc.toUpperCase());
      // Each service subscribes to its own inboxes, and to no one else's.
      expect([...p.subscribe].filter((s) => s.startsWith('_INBOX'))).toEqual([`_INBOX_${svc}.>`]);
      for (const s of p.publish) union.publish.add(s);
      for (const s of p.subscribe) if (!s.startsWith('_INBOX')) union.subscribe.add(s);
    }
    union.subscribe.add('_INBOX_obeyforum.>');
    const obeyforum = permissionsOf(conf, 'OBEYFORUM');
    expect([...obeyforum.publish].sort()).toEqual([...union.publish].sort());
    expect([...obeyforum.subscribe].sort()).toEqual([...union.subscribe].sort());
  });
});

describe('nats.conf without its passwords', () => {
  it('does not load: nats-server has no default for a variable the environment lacks', () => {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.endsWith('_NATS_PASSWORD')));
    const missing = spawnSync('nats-server', ['-c', NATS_CONF, '-t'], { env, encoding: 'utf8' });
    expect(missing.status).not.toBe(0);
    expect(`${missing.stdout}${missing.stderr}`).toMatch(
      /variable reference for '[A-Z]+_NATS_PASSWORD'.*(can ?not|could not) be found/i,
    );
    const withAll = { ...env, ...Object.fromEntries(USERS.map((u) => [passwordVariable(u), 'x'])) };
    const set = spawnSync('nats-server', ['-c', NATS_CONF, '-t'], { env: withAll, encoding: 'utf8' });
    expect(`${set.stdout}${set.stderr}`).toMatch(/is valid/);
    expect(set.status).toBe(0);
  });
});
